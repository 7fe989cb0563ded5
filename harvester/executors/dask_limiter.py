"""One per-host budget shared by every Dask worker: concurrency, rate and Retry-After pauses.

Three objects held by the Dask scheduler, per host:

- ``Semaphore(max_leases=max_concurrency, name=f"harvester-{host}-c{max_concurrency}")``: a lease
  per request in flight, across all workers;
- ``Semaphore(max_leases=R, name=f"harvester-rate-{host}-r{R}-h{hold}")`` with ``R = max(1, floor(rps))``: a
  lease per request *start*, released ``hold = max(1, R / rps)`` seconds (plus 100 ms) after
  the start, never earlier. Every start of the last ``hold`` seconds still holds its lease, so no
  window shorter than ``hold`` (≥ 1 s) ever sees more than ``R ≤ rps`` starts, whatever the number
  of workers; waiters are woken by the scheduler as soon as a lease comes back, which keeps the
  budget ~97 % used (docs/scaling.md);
- the scheduler's metadata ``["harvester-pause", host]``: a wall-clock "paused until" time. A 429/503
  with Retry-After on any worker sets it; every worker waits it out before its next start.

Blocking Dask calls run on worker threads with short timeouts, so every wait is bounded and a
cancelled request never leaks a lease. A call that loses its connection to the scheduler is tried
again a few times (a lease granted whose answer was lost is freed by the lease timeout: the budget
is under-used for that time, never over-spent); if the scheduler stays out of reach (a cluster
closing under a stopped run) :class:`BudgetUnavailable` stops the whole unit, which writes nothing
and is retried, instead of recording its targets as failed.

Start leases are given back by one releaser thread per worker process at their due time, so a unit
ends without waiting for them. Leases held by a worker that dies are freed by the scheduler after
``distributed.scheduler.locks.lease-timeout``.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import structlog

from harvester.errors import BudgetUnavailable
from harvester.io.limiter import Limiter, LimiterRegistry, LimiterStats

__all__ = ["DaskHostLimiter", "DaskLimiterRegistry", "pause_key", "read_pause"]

_POLL_S = 1.0  # longest single blocking call to the scheduler
_COMM_RETRY_DELAYS_S = (0.1, 0.3, 0.9, 2.7)  # a dropped connection to the scheduler, then give up
_CALL_TIMEOUT_S = 5.0  # a pause read or write that takes longer counts as a dropped connection
#: transit jitter between a lease and the archive's clock: seen 7-20 ms on a loaded machine, and
#: past 70 ms on 2 busy cores (CI: a worker or the archive's thread waiting for the CPU), where a
#: 50 ms margin let the archive count 2-4 starts too many. 100 ms costs ~5 % of the budget.
_HOLD_MARGIN_S = 0.1


log = structlog.get_logger("harvester.executors")


class _Deferred:
    """One daemon thread per process running blocking calls at their due time (monotonic clock)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], Any]]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def call_at(self, due: float, fn: Callable[[], Any]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._seq), fn))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="harvester-releaser", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    wait = self._heap[0][0] - time.monotonic() if self._heap else 60.0
                    self._cond.wait(timeout=max(0.0, min(wait, 60.0)))
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception as exc:  # the scheduler frees the lease after its timeout anyway
                log.warning("deferred_call_failed", cause=f"{type(exc).__name__}: {exc}")


_DEFERRED = _Deferred()
_SHARED: dict[str, Any] = {}  # Dask objects per name, reused by every unit this process runs
_SHARED_LOCK = threading.Lock()


def _shared(name: str, factory: Callable[[], Any]) -> Any:
    with _SHARED_LOCK:
        if name not in _SHARED:
            _SHARED[name] = factory()
        return _SHARED[name]


def pause_key(host: str) -> list[str]:
    """Where the scheduler's metadata holds the host's "paused until" time (wall clock)."""
    return ["harvester-pause", host.lower()]


def read_pause(client: Any, host: str) -> float:
    """The host's "paused until" time; 0.0 when no pause was ever published."""
    return float(client.get_metadata(pause_key(host), default=0.0))


def rate_leases(requests_per_second: float) -> tuple[int, float]:
    """(leases, hold seconds) for a rate: at most ``leases`` starts in any ``hold``-second window."""
    leases = max(1, math.floor(requests_per_second))
    return leases, max(1.0, leases / requests_per_second) + _HOLD_MARGIN_S


class DaskHostLimiter:
    """A host budget held by the Dask scheduler; use inside a task on a Dask worker."""

    def __init__(self, host: str, requests_per_second: float, max_concurrency: int) -> None:
        from distributed import Semaphore, get_client

        self.host = host
        self.requests_per_second = requests_per_second
        self.max_concurrency = max_concurrency
        self.stats = LimiterStats()
        leases, self.hold_s = rate_leases(requests_per_second)
        # the sizes are part of the names: a run with another budget for the host (changed
        # settings on a long-lived cluster) gets its own semaphores instead of the scheduler
        # refusing "inconsistent max leases" or workers silently keeping the old sizes
        names = (
            f"harvester-{host}-c{max_concurrency}",
            f"harvester-rate-{host}-r{leases}-h{self.hold_s:.3f}",
        )
        self._inflight = _shared(names[0], lambda: Semaphore(max_leases=max_concurrency, name=names[0]))
        self._starts = _shared(names[1], lambda: Semaphore(max_leases=leases, name=names[1]))
        self._client: Any = get_client()  # the worker's client: the pause lives in the scheduler's metadata
        self._paused_until = 0.0  # wall clock: comparable across machines

    def pause_for(self, seconds: float) -> None:
        """Hold back every new request to this host, on every worker, for ``seconds``."""
        until = time.time() + max(0.0, seconds)
        if until > self._paused_until:
            self._paused_until = until
            self.stats.pauses += 1
            _DEFERRED.call_at(time.monotonic(), lambda: self._publish_pause(until))

    def _publish_pause(self, until: float) -> None:
        if until > self._read_pause():
            self._client.set_metadata(pause_key(self.host), until)

    def _read_pause(self) -> float:
        return read_pause(self._client, self.host)

    async def _call(self, fn: Callable[..., Any], *args: Any, lease: bool = False) -> Any:
        """``fn(*args)``, a blocking call to the scheduler, on a worker thread; a dropped
        connection is tried again, then :class:`BudgetUnavailable` stops the unit.

        A lease request (``lease``) is shielded: a lease granted must be recorded, then released;
        it is bounded by its own 1 s wait plus Dask's connect timeout. Any other call is given up
        after :data:`_CALL_TIMEOUT_S` (its thread finishes on its own).
        """
        for attempt, delay in enumerate((*_COMM_RETRY_DELAYS_S, None)):
            try:
                if lease:
                    with anyio.CancelScope(shield=True):
                        return await anyio.to_thread.run_sync(fn, *args)
                with anyio.fail_after(_CALL_TIMEOUT_S):
                    return await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)
            except (OSError, RuntimeError) as exc:
                # CommClosedError or a timeout (OSError) may pass; "ConnectionPool is closed"
                # (RuntimeError: this worker is shutting down with its cluster) will not
                cause = f"{type(exc).__name__}: {exc}"
                if delay is None or not isinstance(exc, OSError):
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    raise BudgetUnavailable(
                        f"the Dask scheduler holding the budget of {self.host} is out of reach{tries} "
                        f"({cause})"
                    ) from None
                log.warning("budget_call_retried", host=self.host, attempt=attempt + 1, cause=cause)
                await anyio.sleep(delay)
        return None  # not reached: the last attempt returns or raises

    async def _acquire(self, semaphore: Any) -> None:
        while True:
            got = await self._call(semaphore.acquire, _POLL_S, lease=True)
            if got:
                try:
                    await anyio.lowlevel.checkpoint()
                except BaseException:
                    _DEFERRED.call_at(time.monotonic(), semaphore.release)
                    raise
                return
            await anyio.lowlevel.checkpoint()

    async def _wait_pause(self) -> None:
        while True:
            remote = await self._call(self._read_pause)
            self._paused_until = max(self._paused_until, remote)
            delay = self._paused_until - time.time()
            if delay <= 0:
                return
            self.stats.waited_s += delay
            await anyio.sleep(min(delay, _POLL_S))

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a cluster-wide in-flight lease and a start lease, for one request."""
        waited = time.monotonic()
        await self._acquire(self._inflight)
        try:
            await self._acquire(self._starts)
            # the pause is read last, right before the start: a request that queued for its start
            # lease while another worker received a Retry-After must not go out during the pause
            try:
                await self._wait_pause()
            except BaseException:
                _DEFERRED.call_at(time.monotonic() + self.hold_s, self._starts.release)
                raise
            started = time.monotonic()
            _DEFERRED.call_at(started + self.hold_s, self._starts.release)  # never before hold_s
            self.stats.waited_s += started - waited
            self.stats.acquired += 1
            yield
        finally:
            _DEFERRED.call_at(time.monotonic(), self._inflight.release)


class DaskLimiterRegistry(LimiterRegistry):
    """A :class:`LimiterRegistry` whose limiters are shared by the whole Dask cluster.

    ``budgets`` (host → (requests per second, max concurrency)) are fixed by the driver, so every
    worker creates its semaphores with the same sizes whatever sources its unit runs.
    """

    def __init__(self, budgets: dict[str, tuple[float, int]]) -> None:
        super().__init__()
        self._budgets = {h.lower(): b for h, b in budgets.items()}

    def create(self, host: str, requests_per_second: float, max_concurrency: int) -> Limiter:
        rps, conc = self._budgets.get(host, (requests_per_second, max_concurrency))
        return DaskHostLimiter(host, rps, conc)

    def register(self, host: str, requests_per_second: float, max_concurrency: int) -> Limiter:
        existing = self.get(host)
        if existing is not None:
            return existing  # the driver's budget is already the strictest of all sources
        return super().register(host, requests_per_second, max_concurrency)
