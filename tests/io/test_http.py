"""The HTTP layer: retries with backoff, Retry-After, terminal errors, size caps, tokens per host."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from harvester.errors import HttpStatusError, SizeLimitError, TerminalError, TransientError
from harvester.io.http import Http, HttpSession, RetryPolicy, parse_retry_after
from harvester.io.limiter import LimiterRegistry

Handler = Callable[[httpx.Request], httpx.Response]


async def no_wait(seconds: float) -> None:
    """Host pauses (Retry-After) are checked through stats, not waited out in tests."""


def registry(*hosts: str) -> LimiterRegistry:
    reg = LimiterRegistry(sleep=no_wait)
    for host in hosts or ("example.org",):
        reg.register(host, 1000, 8)
    return reg


def session(http: Http, sleeps: list[float], **kw: object) -> HttpSession:
    """A session whose sleeps are recorded instead of waited."""
    s = http.session("test", retry=RetryPolicy(retries=3, backoff_base_s=0.5, backoff_cap_s=4.0), **kw)  # type: ignore[arg-type]

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    s._sleep = fake_sleep
    return s


def sequence(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handler, seen


async def test_transient_statuses_are_retried_then_succeed() -> None:
    """503, 502 and a connection reset are retried; the 4th attempt's 200 is returned."""
    handler, seen = sequence(
        httpx.Response(503), httpx.Response(502), httpx.ReadError("reset"), httpx.Response(200, content=b"ok")
    )
    sleeps: list[float] = []
    async with Http(registry(), transport=httpx.MockTransport(handler)) as http:
        s = session(http, sleeps)
        response = await s.fetch("GET", "https://example.org/x", target="t")
    assert response.content == b"ok"
    assert len(seen) == 4 and s.stats.retries == 3
    assert all(
        0 <= d <= cap for d, cap in zip(sleeps, (0.5, 1.0, 2.0), strict=True)
    )  # full jitter under the cap


async def test_gives_up_after_the_retry_budget_with_a_clear_error() -> None:
    """A 503 storm ends in a TransientError naming the target and the attempts."""
    handler, seen = sequence(httpx.Response(503))
    async with Http(registry(), transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(
            TransientError, match=r"cone-1: HTTP 503 from example.org \(gave up after 4 attempts\)"
        ):
            await session(http, []).fetch("GET", "https://example.org/x", target="cone-1")
    assert len(seen) == 4


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
async def test_client_errors_are_terminal_and_not_retried(status: int) -> None:
    """4xx other than 408/429 fail at once with the status and the start of the body."""
    handler, seen = sequence(httpx.Response(status, text="<html>nope</html>"))
    async with Http(registry(), transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(TerminalError, match=f"HTTP {status} from example.org: <html>nope</html>"):
            await session(http, []).fetch("GET", "https://example.org/x", target="t")
    assert len(seen) == 1


async def test_retry_after_seconds_is_honoured_and_pauses_the_host() -> None:
    """429 with Retry-After: 7 waits at least 7 s and pauses every request to that host."""
    handler, _ = sequence(httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200))
    sleeps: list[float] = []
    reg = registry()
    async with Http(reg, transport=httpx.MockTransport(handler)) as http:
        await session(http, sleeps).fetch("GET", "https://example.org/x", target="t")
    assert sleeps[0] >= 7.0
    limiter = reg.get("example.org")
    assert limiter is not None and limiter.stats.pauses == 1


async def test_retry_after_http_date_is_honoured() -> None:
    """503 with an HTTP-date Retry-After ~20 s ahead waits about that long."""
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    handler, _ = sequence(httpx.Response(503, headers={"Retry-After": when}), httpx.Response(200))
    sleeps: list[float] = []
    async with Http(registry(), transport=httpx.MockTransport(handler)) as http:
        await session(http, sleeps).fetch("GET", "https://example.org/x", target="t")
    assert 17.0 <= sleeps[0] <= 21.0


async def test_retry_after_is_capped() -> None:
    """A Retry-After of a day is waited only up to retry_after_cap_s."""
    handler, _ = sequence(httpx.Response(503, headers={"Retry-After": "86400"}), httpx.Response(200))
    sleeps: list[float] = []
    async with Http(registry(), transport=httpx.MockTransport(handler)) as http:
        await session(http, sleeps).fetch("GET", "https://example.org/x", target="t")
    assert sleeps == [120.0]


def test_parse_retry_after_forms() -> None:
    """Delta-seconds, HTTP dates and junk are all understood or ignored."""
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 30) == pytest.approx(30.0)
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_announced_size_over_the_cap_is_refused() -> None:
    """A Content-Length over max_bytes fails before the body is read."""
    handler, _ = sequence(httpx.Response(200, headers={"Content-Length": str(5 * 1024**3)}, content=b"x"))
    async with Http(registry(), transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(SizeLimitError, match="announces 5,368,709,120 bytes"):
            await session(http, []).fetch("GET", "https://example.org/x", target="t", max_bytes=1000)


async def test_actual_size_over_the_cap_is_refused() -> None:
    """A body that grows past max_bytes is cut off with a SizeLimitError."""

    async def body() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * 1000

    handler, _ = sequence(httpx.Response(200, content=body()))  # chunked: no Content-Length
    async with Http(registry(), transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(SizeLimitError, match="exceeds the 1,000-byte cap"):
            await session(http, []).fetch("GET", "https://example.org/x", target="t", max_bytes=1000)


async def test_token_goes_only_to_its_own_host_even_after_a_redirect() -> None:
    """The Authorization header reaches mast.stsci.edu, and not the host it redirects to."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "mast.stsci.edu":
            return httpx.Response(302, headers={"Location": "https://evil.example/steal"})
        return httpx.Response(200, content=b"ok")

    async with Http(
        registry("mast.stsci.edu", "evil.example"), transport=httpx.MockTransport(handler)
    ) as http:
        s = session(http, [], auth=("mast.stsci.edu", "token s3cret"))
        await s.fetch("GET", "https://mast.stsci.edu/api", target="t")
    assert seen[0].headers["Authorization"] == "token s3cret"
    assert seen[1].url.host == "evil.example"
    assert "Authorization" not in seen[1].headers


async def test_no_token_for_other_sessions_on_other_hosts() -> None:
    """A session without a token sends no Authorization header at all."""
    handler, seen = sequence(httpx.Response(200))
    async with Http(registry(), transport=httpx.MockTransport(handler)) as http:
        await session(http, []).fetch("GET", "https://example.org/x", target="t")
    assert "Authorization" not in seen[0].headers
    assert seen[0].headers["User-Agent"].startswith("harvester/")


async def test_anonymous_twin_sends_no_token_even_to_the_tokens_host() -> None:
    """``anonymous()`` drops the token (even for the token's own host) and shares the counters."""
    handler, seen = sequence(httpx.Response(200, content=b"ok"))
    async with Http(registry("mast.stsci.edu"), transport=httpx.MockTransport(handler)) as http:
        s = session(http, [], auth=("mast.stsci.edu", "token s3cret"))
        await s.anonymous().fetch("GET", "https://mast.stsci.edu/public", target="t")
        await s.fetch("GET", "https://mast.stsci.edu/api", target="t")
    assert "Authorization" not in seen[0].headers and seen[1].headers["Authorization"] == "token s3cret"
    assert s.stats.requests == 2 and s.stats.bytes_received == 4


async def test_a_terminal_status_keeps_its_code_and_body() -> None:
    """A 404 is an HttpStatusError with the status and the start of the body (an S3 error code)."""
    body = b"<Error><Code>NoSuchKey</Code></Error>"
    handler, _ = sequence(httpx.Response(404, content=body))
    async with Http(registry(), transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(HttpStatusError, match=r"^t: HTTP 404 from example\.org: <Error>") as caught:
            await session(http, []).fetch("GET", "https://example.org/k", target="t")
    assert (caught.value.status, caught.value.body) == (404, body)


async def test_unknown_host_is_refused() -> None:
    """A request to a host without a configured budget is refused rather than sent unthrottled."""
    handler, seen = sequence(httpx.Response(200))
    async with Http(registry(), transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(TerminalError, match=r"no rate limit is configured for host 'other\.org'"):
            await session(http, []).fetch("GET", "https://other.org/x", target="t")
    assert seen == []
