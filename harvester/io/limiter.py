"""Per-host politeness: a request-rate limiter plus a cap on requests in flight.

One :class:`HostLimiter` exists per upstream host for a whole run, shared by every source that
talks to that host (TESS and MAST both use mast.stsci.edu, so they draw from one budget).

The rate part is a GCRA-style scheduler ("virtual scheduling"): request starts are spaced at least
``1 / requests_per_second`` apart, so *no* one-second window ever holds more than the configured
rate (a classic token bucket with a burst allowance would let ``burst + rate`` through in one
second). Start times are booked under a lock, so concurrent waiters queue in FIFO order and the
rate is reached, not merely respected, when there is enough work.

A 429/503 with ``Retry-After`` pauses the whole host (:meth:`HostLimiter.pause_for`): every task
waiting on that host waits out the pause, not just the one that was told.

The clock and sleep are injectable so tests can run the limiter on a fake clock.

:class:`Limiter` is the interface the HTTP session needs (``async with limiter.slot()`` and
``pause_for``); :class:`HostLimiter` is the in-process implementation, and
``harvester.executors.dask_limiter`` holds one shared by every Dask worker. A registry subclass
chooses the implementation by overriding :meth:`LimiterRegistry.create`.

:func:`on_cpu` runs the record path's CPU work (parsing a response, encoding a batch, checking its
keys) on a worker thread, at most one per core at a time for the whole event loop. More threads
than cores would not finish sooner, and each one a fast archive wakes costs memory that outlasts
the burst (the allocators keep heaps and caches per thread): a warm fake archive on loopback
peaked ≈ 130 MB higher with eight parse threads than with two, at the same speed.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar, TypeVarTuple

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

__all__ = ["HostLimiter", "Limiter", "LimiterRegistry", "LimiterStats", "cpu_slots", "on_cpu"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
_CPU_SLOTS: RunVar[anyio.CapacityLimiter] = RunVar("harvester_cpu_slots")


def cpu_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_slots() -> anyio.CapacityLimiter:
    """The event loop's limiter for CPU work: one token per core (see :func:`on_cpu`)."""
    try:
        return _CPU_SLOTS.get()
    except LookupError:
        slots = anyio.CapacityLimiter(cpu_cores())
        _CPU_SLOTS.set(slots)
        return slots


async def on_cpu(fn: Callable[[*Ts], T], *args: *Ts) -> T:
    """``fn(*args)`` on a worker thread, waiting for one of the event loop's :func:`cpu_slots`."""
    return await anyio.to_thread.run_sync(fn, *args, limiter=cpu_slots())


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class LimiterStats:
    """What a limiter has let through, for the run report and benchmarks."""

    acquired: int = 0
    waited_s: float = 0.0
    pauses: int = 0


class Limiter(Protocol):
    """One host's budget as the HTTP session sees it: a slot per request, and a shared pause."""

    host: str
    requests_per_second: float
    max_concurrency: int
    stats: LimiterStats

    def slot(self) -> AbstractAsyncContextManager[None]:
        """Hold one in-flight slot and a start time that respects the rate, for one request."""
        ...

    def pause_for(self, seconds: float) -> None:
        """Hold back every new request to this host for ``seconds`` (from a Retry-After)."""
        ...


class HostLimiter:
    """Spacing of request starts plus a concurrency cap, for one host."""

    def __init__(
        self,
        host: str,
        requests_per_second: float,
        max_concurrency: int,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        if requests_per_second <= 0:
            raise ValueError("requests_per_second must be > 0")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.host = host
        self.requests_per_second = requests_per_second
        self.max_concurrency = max_concurrency
        self.interval = 1.0 / requests_per_second
        self._clock = clock
        self._sleep = sleep
        self._next_start = float("-inf")
        self._paused_until = float("-inf")
        self._book = anyio.Lock()
        self._slots = anyio.Semaphore(max_concurrency)
        self.stats = LimiterStats()

    def pause_for(self, seconds: float) -> None:
        """Hold back every new request to this host for ``seconds`` (from a Retry-After)."""
        until = self._clock() + max(0.0, seconds)
        if until > self._paused_until:
            self._paused_until = until
            self.stats.pauses += 1

    async def _wait_turn(self) -> None:
        async with self._book:
            now = self._clock()
            start = max(now, self._next_start, self._paused_until)
            self._next_start = start + self.interval
            delay = start - now
            if delay > 0:
                self.stats.waited_s += delay
                await self._sleep(delay)
                # A busy event loop can wake us late; the next start is spaced from when this one
                # really left, so a late wake-up never bunches two requests together.
                self._next_start = max(self._next_start, self._clock() + self.interval)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one in-flight slot and a start time that respects the rate, for one request."""
        async with self._slots:
            await self._wait_turn()
            self.stats.acquired += 1
            yield


class LimiterRegistry:
    """The run's limiters, keyed by host; the strictest configured budget wins for a shared host."""

    def __init__(self, *, clock: Clock = time.monotonic, sleep: Sleep = anyio.sleep) -> None:
        self._limiters: dict[str, Limiter] = {}
        self._clock = clock
        self._sleep = sleep

    def register(self, host: str, requests_per_second: float, max_concurrency: int) -> Limiter:
        """Create the limiter for ``host``, or tighten an existing one to the stricter budget."""
        host = host.lower()
        existing = self._limiters.get(host)
        if existing is not None:
            rps = min(existing.requests_per_second, requests_per_second)
            conc = min(existing.max_concurrency, max_concurrency)
            if (rps, conc) == (existing.requests_per_second, existing.max_concurrency):
                return existing
        else:
            rps, conc = requests_per_second, max_concurrency
        limiter = self.create(host, rps, conc)
        self._limiters[host] = limiter
        return limiter

    def create(self, host: str, requests_per_second: float, max_concurrency: int) -> Limiter:
        """A new limiter for ``host`` (in-process here; subclasses share it across processes)."""
        return HostLimiter(host, requests_per_second, max_concurrency, clock=self._clock, sleep=self._sleep)

    def get(self, host: str) -> Limiter | None:
        return self._limiters.get(host.lower())

    def budgets(self) -> dict[str, tuple[float, int]]:
        """Each host's budget in force, ``{host: (requests per second, max concurrency)}``: what a
        work unit carries to its worker, where the cluster-wide limiters are built from it."""
        return {host: (lim.requests_per_second, lim.max_concurrency) for host, lim in self._limiters.items()}

    def __iter__(self) -> Iterator[Limiter]:
        return iter(self._limiters.values())


class AmountBudget:
    """How much of something (rows, bytes) is in flight. ``acquire(n)`` waits while ``n`` more
    would exceed ``limit`` (unless nothing is in flight: an amount larger than the whole budget
    still goes, alone); ``release(n)`` gives it back."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._changed = anyio.Condition()

    async def acquire(self, amount: int) -> None:
        async with self._changed:
            while self.used and self.used + amount > self.limit:
                await self._changed.wait()
            self.used += amount

    async def release(self, amount: int) -> None:
        if amount <= 0:
            return
        async with self._changed:
            self.used = max(0, self.used - amount)
            self._changed.notify_all()
