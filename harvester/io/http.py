"""The HTTP layer every source shares: one client per run, per-host limits, retries, secrets.

- One :class:`httpx.AsyncClient` per run (:class:`Http`), with an honest ``User-Agent``, explicit
  connect/read timeouts and TLS verification on.
- Every request goes through the :class:`~harvester.io.limiter.HostLimiter` of its host, for the
  whole time it is in flight (body included).
- Retries with exponential backoff and full jitter on connect/read errors, timeouts, 408, 429 and
  5xx, honouring ``Retry-After`` (seconds or HTTP date) up to a cap. Other 4xx are terminal.
- A source's token is attached by a request hook that runs for *every* request httpx sends,
  redirects included, and only when the request's host is the token's own host. A redirect to another host
  therefore goes out without the header (httpx strips it too; this does not rely on that).
- Bodies are read in chunks against a size cap, announced (Content-Length) or actual.
"""

from __future__ import annotations

import email.utils
import functools
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx
import structlog

from harvester._version import __version__
from harvester.errors import HttpStatusError, SizeLimitError, TerminalError, TransientError
from harvester.io.limiter import LimiterRegistry

__all__ = [
    "CREDENTIAL_HEADERS",
    "Http",
    "HttpSession",
    "HttpStats",
    "Response",
    "RetryPolicy",
    "Signer",
    "parse_retry_after",
]

log = structlog.get_logger("harvester.http")

USER_AGENT = f"harvester/{__version__} (+https://github.com/harvester-astro/harvester)"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 522, 524})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure."""

    retries: int = 4
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    retry_after_cap_s: float = 120.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (attempt counts from 0)."""
        return rng.uniform(0.0, min(self.backoff_cap_s, self.backoff_base_s * 2.0**attempt))


@dataclass(frozen=True)
class Timeouts:
    """Per-attempt bounds: connect and read as httpx knows them, plus a total for slow drips."""

    connect_s: float = 10.0
    read_s: float = 120.0
    total_s: float = 600.0


@dataclass
class HttpStats:
    """Counters for one source in one run."""

    requests: int = 0
    retries: int = 0
    bytes_received: int = 0
    failures: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    """A fully read, successful (2xx) response."""

    status_code: int
    url: str
    headers: Mapping[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; None if absent/odd."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


_AUTH_EXTENSION = "harvester_auth"

#: Signs one request in place (sets its ``Authorization`` and ``x-amz-*`` headers): an S3 route
#: with credentials (:class:`harvester.io.s3.AwsSigner`).
Signer = Callable[[httpx.Request], Awaitable[None]]
#: What a session authenticates with: ``(host, Authorization header value or a signer)``.
Auth = tuple[str, str | Signer]
#: Headers that carry or reveal credentials: only ever sent to their session's own host.
CREDENTIAL_HEADERS = ("authorization", "x-amz-security-token", "x-amz-date", "x-amz-content-sha256")


async def _apply_token(request: httpx.Request) -> None:
    """Attach a session's credentials to requests for its own host only, redirects included.

    They travel in ``request.extensions`` (which httpx carries over to redirect requests) as
    ``((host, header value or signer), the first request's (scheme, host, port))``. The header is
    set (or the request signed, afresh for each attempt and each redirect) only when the request's
    host is that host and its scheme and port are the first request's; every credential header is
    removed otherwise.
    """
    carried = request.extensions.get(_AUTH_EXTENSION)
    here = (request.url.scheme, request.url.host.lower(), request.url.port)
    # the session's host, and the first request's scheme and port: a redirect to http:// or to
    # another port of the same host carries no credentials (no downgrade to cleartext)
    if carried is not None and here[1] == carried[0][0] and here == carried[1]:
        value = carried[0][1]
        if isinstance(value, str):
            request.headers["Authorization"] = value
        else:
            await value(request)
    else:
        for name in CREDENTIAL_HEADERS:
            request.headers.pop(name, None)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """httpx's default verification (system CAs via certifi), built once per process: a new
    context per client costs ~20 ms, which every work unit would pay."""
    return httpx.create_ssl_context()


class Http:
    """One run's HTTP machinery: the client and the host limiters, shared by every source."""

    def __init__(
        self,
        limiters: LimiterRegistry,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str = USER_AGENT,
        max_connections: int = 64,
    ) -> None:
        self.limiters = limiters
        self._client = httpx.AsyncClient(
            transport=transport,
            headers={"User-Agent": user_agent},
            follow_redirects=True,
            max_redirects=5,
            verify=_ssl_context(),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            event_hooks={"request": [_apply_token]},
        )

    async def __aenter__(self) -> Http:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._client.aclose()

    def session(
        self,
        source: str,
        *,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        auth: Auth | None = None,
        on_response: Callable[[HttpStats], None] | None = None,
    ) -> HttpSession:
        """A per-source view with its own retry policy, timeouts, token and counters.

        ``auth`` is ``(host, Authorization header value)``: sent to that host only.
        """
        auth = (auth[0].lower(), auth[1]) if auth else None
        return HttpSession(self, source, retry or RetryPolicy(), timeouts or Timeouts(), auth, on_response)


class HttpSession:
    """Requests for one source: limited per host, retried, counted."""

    def __init__(
        self,
        http: Http,
        source: str,
        retry: RetryPolicy,
        timeouts: Timeouts,
        auth: Auth | None,
        on_response: Callable[[HttpStats], None] | None,
    ) -> None:
        self._http = http
        self._auth = auth
        self.source = source
        self.retry = retry
        self.timeouts = timeouts
        self.stats = HttpStats()
        self._on_response = on_response
        self._rng = random.Random()  # noqa: S311  # backoff jitter, not cryptography
        self._sleep: Callable[[float], Any] = anyio.sleep

    def anonymous(self) -> HttpSession:
        """The same session without its token: for a source's requests to a host that must never
        see it (a public bucket). Retry policy, timeouts and counters are shared with this one, so
        the source's report counts both; the token hook then strips any ``Authorization``."""
        twin = HttpSession(self._http, self.source, self.retry, self.timeouts, None, self._on_response)
        twin.stats = self.stats
        twin._sleep = self._sleep
        return twin

    def signed(self, host: str, signer: Signer) -> HttpSession:
        """The same session signing its requests to ``host`` with ``signer`` instead of sending
        its token (an S3 route with credentials); requests to any other host carry neither."""
        twin = self.anonymous()
        twin._auth = (host.lower(), signer)
        return twin

    async def fetch(
        self,
        method: str,
        url: str,
        *,
        target: str,
        params: Sequence[tuple[str, str]] | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        max_bytes: int | None = None,
    ) -> Response:
        """Send one logical request, retrying transient failures; return a fully read 2xx response.

        Raises :class:`TransientError` once retries are exhausted and :class:`TerminalError`
        (or a subclass) for failures a retry cannot fix. Messages name ``target``.
        """
        attempt = 0
        while True:
            try:
                return await self._attempt(
                    method, url, params=params, data=data, headers=headers, max_bytes=max_bytes, target=target
                )
            except TransientError as exc:
                if attempt >= self.retry.retries:
                    self.stats.failures += 1
                    raise TransientError(
                        f"{exc.message} (gave up after {attempt + 1} attempts)", target=target
                    ) from exc
                delay = self.retry.backoff(attempt, self._rng)
                retry_after = getattr(exc, "retry_after", None)
                if retry_after is not None:
                    delay = max(delay, min(retry_after, self.retry.retry_after_cap_s))
                attempt += 1
                self.stats.retries += 1
                log.info(
                    "retrying",
                    source=self.source,
                    target=target,
                    attempt=attempt,
                    delay_s=round(delay, 3),
                    cause=exc.message,
                )
                await self._sleep(delay)
            except TerminalError:
                self.stats.failures += 1
                raise

    async def _attempt(
        self,
        method: str,
        url: str,
        *,
        params: Sequence[tuple[str, str]] | None,
        data: Mapping[str, str] | None,
        headers: Mapping[str, str] | None = None,
        max_bytes: int | None,
        target: str,
    ) -> Response:
        client = self._http._client
        request = client.build_request(
            method,
            url,
            params=list(params) if params is not None else None,
            data=data,
            headers=dict(headers) if headers else None,
            timeout=httpx.Timeout(self.timeouts.read_s, connect=self.timeouts.connect_s),
        )
        if self._auth:  # httpx carries extensions over to redirect requests: the origin stays the first's
            origin = (request.url.scheme, request.url.host.lower(), request.url.port)
            request.extensions[_AUTH_EXTENSION] = (self._auth, origin)
        host = request.url.host
        limiter = self._http.limiters.get(host)
        if limiter is None:
            raise TerminalError(f"no rate limit is configured for host {host!r}", target=target)
        async with limiter.slot():
            self.stats.requests += 1
            started = time.monotonic()
            try:
                with anyio.fail_after(self.timeouts.total_s):
                    response = await client.send(request, stream=True)
                    try:
                        content = await self._read_body(response, max_bytes, target)
                    finally:
                        await response.aclose()
            except TimeoutError as exc:
                raise TransientError(
                    f"no complete answer within {self.timeouts.total_s:g} s", target=target
                ) from exc
            except httpx.TimeoutException as exc:
                raise TransientError(f"timed out ({type(exc).__name__})", target=target) from exc
            except httpx.TooManyRedirects as exc:
                raise TerminalError("too many redirects", target=target) from exc
            except (httpx.TransportError, httpx.StreamError) as exc:
                raise TransientError(
                    f"connection failed ({type(exc).__name__}: {exc})", target=target
                ) from exc
        status = response.status_code
        self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
        if self._on_response is not None:
            self._on_response(self.stats)
        log.debug(
            "http_response",
            source=self.source,
            target=target,
            method=method,
            url=str(response.url),
            status=status,
            bytes=len(content),
            elapsed_s=round(time.monotonic() - started, 4),
        )
        if 200 <= status < 300:
            return Response(status, str(response.url), dict(response.headers), content)
        if status in RETRY_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None and status in (429, 503):
                limiter.pause_for(min(retry_after, self.retry.retry_after_cap_s))
            err = TransientError(f"HTTP {status} from {host}", target=target)
            err.retry_after = retry_after  # type: ignore[attr-defined]
            raise err
        message = f"HTTP {status} from {host}: {snippet(content)}"
        raise HttpStatusError(message, status=status, body=content[:4096], target=target)

    async def _read_body(self, response: httpx.Response, max_bytes: int | None, target: str) -> bytes:
        announced = response.headers.get("Content-Length")
        if (
            max_bytes is not None
            and announced is not None
            and announced.isdigit()
            and int(announced) > max_bytes
        ):
            raise SizeLimitError(
                f"response announces {int(announced):,} bytes, over the {max_bytes:,}-byte cap", target=target
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            self.stats.bytes_received += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise SizeLimitError(f"response exceeds the {max_bytes:,}-byte cap", target=target)
            chunks.append(chunk)
        return b"".join(chunks)


def snippet(content: bytes, n: int = 120) -> str:
    """The first ``n`` bytes of a body on one printable line, for error messages: what an archive
    said instead of data (an HTML page, a JSON error), with "…" when there is more."""
    if not content:
        return "(empty body)"
    text = content[:n].decode("utf-8", errors="replace")
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    if not text:
        return "(blank body)"
    return text + ("…" if len(content) > n else "")
