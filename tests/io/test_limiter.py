"""The per-host limiter: never over the rate, close to it, capped concurrency, shared pauses."""

from __future__ import annotations

import math

import anyio
import pytest

from harvester.io.limiter import HostLimiter, LimiterRegistry


class FakeClock:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await anyio.lowlevel.checkpoint()


def max_in_window(starts: list[float], window: float = 1.0) -> int:
    """The most starts in any half-open window [t, t + window)."""
    starts = sorted(starts)
    best = j = 0
    for i, t in enumerate(starts):
        while j < len(starts) and starts[j] < t + window - 1e-9:
            j += 1
        best = max(best, j - i)
    return best


@pytest.mark.parametrize("rate", [2.0, 3.0, 10.0, 7.5])
async def test_never_over_the_rate_and_close_to_it(rate: float) -> None:
    """100 eager requests on a fake clock: no 1-s window holds over ceil(rate); the rate is reached."""
    clock = FakeClock()
    limiter = HostLimiter("h", rate, 50, clock=clock, sleep=clock.sleep)
    starts: list[float] = []

    async def request() -> None:
        async with limiter.slot():
            starts.append(clock())

    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(request)
    assert max_in_window(starts) <= math.ceil(rate)
    achieved = (len(starts) - 1) / (max(starts) - min(starts))
    assert achieved >= 0.99 * rate


async def test_concurrency_cap_holds() -> None:
    """No more than max_concurrency requests are in flight at once."""
    limiter = HostLimiter("h", 1000.0, 3)
    in_flight = peak = 0

    async def request() -> None:
        nonlocal in_flight, peak
        async with limiter.slot():
            in_flight += 1
            peak = max(peak, in_flight)
            await anyio.sleep(0.01)
            in_flight -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(request)
    assert peak == 3


async def test_pause_holds_back_every_request_to_the_host() -> None:
    """After pause_for(30), the next request to the host starts 30 s later (fake clock)."""
    clock = FakeClock()
    limiter = HostLimiter("h", 100.0, 4, clock=clock, sleep=clock.sleep)
    limiter.pause_for(30.0)
    start = clock()
    async with limiter.slot():
        assert clock() - start == pytest.approx(30.0)


def test_registry_shares_one_limiter_per_host_with_the_stricter_budget() -> None:
    """Two sources on one host share a limiter that has the stricter of their budgets."""
    registry = LimiterRegistry()
    registry.register("mast.stsci.edu", 10, 8)
    shared = registry.register("MAST.stsci.edu", 5, 12)
    assert registry.get("mast.stsci.edu") is shared
    assert (shared.requests_per_second, shared.max_concurrency) == (5, 8)
    assert len(list(registry)) == 1
