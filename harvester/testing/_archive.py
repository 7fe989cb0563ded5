"""The fake archive as one ASGI 3 application: routing, politeness checks, faults, pacing, the log.

:class:`FakeArchive` answers IRSA's ZTF light-curve API and the MAST API on any host name, so one
instance stands in for irsa.ipac.caltech.edu and mast.stsci.edu at once in-process
(``httpx.ASGITransport(app=archive)``), or for 127.0.0.1 on loopback (:mod:`._server`).

Per request, in order: log the arrival and count rate-limit violations → 429 (enforce mode) →
503 (archive down) → the first matching :class:`Fault` → ``latency_s`` → the service answer →
the body, paced at ``bandwidth_bps``. Routes are matched on the path's ending; they are the
``fake`` routes of every registered archive (:class:`FakeRoute`, ``ArchiveSpec.fake``), read when
the archive is made. The built-in ones:

========================================  ==========================================
``.../nph_light_curves``                  IRSA ZTF light curves (GET)
``.../api/v0/invoke``                     MAST invoke (POST form ``request=``, or GET)
``.../api/v0.1/Download/file?uri=``       TESS light-curve files (GET, HEAD)
``.../Mashup.asmx/columnsconfig``         MAST column metadata (POST or GET)
``.../whoami``                            MAST token check (GET)
``[/<bucket>]/tess/public/tid/s…/<file>``  MAST's public S3 bucket, TESS files (GET, HEAD;
                                          path-style, or virtual-hosted by Host)
========================================  ==========================================
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple, cast, get_args
from urllib.parse import parse_qs, unquote

import anyio
import anyio.to_thread
import httpx

from harvester.testing._asgi import (
    FakeRequest,
    FakeRoute,
    Receive,
    Reply,
    Scope,
    Send,
    not_allowed,
    text_reply,
)
from harvester.testing._fits_gen import make_spoc_lightcurve
from harvester.testing._irsa import ZtfObject, irsa_error, objects_in_cone
from harvester.testing._mast import PollBook, mast_error, mast_executing
from harvester.testing._tess import TessProduct, TessTarget, tess_target

__all__ = ["TRANSPORT_EXTENSION", "FakeArchive", "Fault", "FaultKind", "RequestLogEntry"]

FaultKind = Literal[
    "status",
    "html",
    "votable_error",
    "truncate",
    "slow",
    "reset",
    "mast_error",
    "executing_forever",
    "lie_rows_total",
    "redirect",
]
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))

#: Scope extension through which the loopback server hands the connection's transport to the app,
#: so "truncate" and "reset" can cut a real TCP connection (see :mod:`._server`).
TRANSPORT_EXTENSION = "harvester.transport"

RATE_WINDOW_S = 1.0
RATE_TOLERANCE_S = 0.02
MAX_BODY_BYTES = 2 * 1024 * 1024
FILE_CACHE_BYTES = 256 * 1024 * 1024  # generated FITS files kept, least recently used dropped first

_HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Service Temporarily Unavailable</title></head>\n"
    "<body><h1>Service Temporarily Unavailable</h1>\n<p>{message}</p>\n"
    "<hr><address>Apache Server</address></body></html>\n"
)


@dataclass
class Fault:
    """One injected misbehaviour, for requests whose path, MAST service, download file name or query
    contains ``match`` (``""`` matches everything).

    ``kind``:

    - ``"status"``: answer ``status`` (default 503), with ``Retry-After: retry_after`` when set
      (seconds or an HTTP date, sent verbatim).
    - ``"html"``: HTTP 200 ``text/html`` error page (a proxy or maintenance page).
    - ``"votable_error"``: HTTP 200 IRSA VOTable with ``QUERY_STATUS=ERROR`` and ``message``.
    - ``"truncate"``: the real headers (full Content-Length), then ``fraction`` of the body, then the
      connection ends (loopback: closed → httpx ``RemoteProtocolError``; in-process: the app raises
      ``httpx.RemoteProtocolError`` mid-body, the closest ASGITransport allows).
    - ``"slow"``: the real answer, with ``delay_s`` of silence between the headers and the body.
    - ``"reset"``: no answer at all (loopback: the connection is aborted; in-process: the app raises
      ``httpx.RemoteProtocolError("Server disconnected without sending a response.")``).
    - ``"mast_error"``: MAST ``{"status": "ERROR", "msg": message}`` (HTTP 200).
    - ``"executing_forever"``: MAST ``{"status": "EXECUTING"}`` whatever the poll count.
    - ``"lie_rows_total"``: the real MAST page, but ``paging.rowsTotal``/``rowsFiltered`` claim
      ``extra_rows`` more rows than exist (``pagesFiltered`` stays true): a client must report the
      shortfall.
    - ``"redirect"``: 302 to ``location``.

    ``after`` matching requests pass untouched first; then the fault hits ``times`` requests
    (None: for ever). Faults are tried in the order they were added and a request meets at most one,
    so ``[Fault(kind="status", times=3), ...]`` is "503 three times, then recover".
    """

    match: str = ""
    kind: FaultKind = "status"
    status: int = 503
    retry_after: str | None = None
    message: str = "injected fault"
    delay_s: float = 1.0
    fraction: float = 0.5
    extra_rows: int = 10
    location: str | None = None
    times: int | None = None
    after: int = 0
    seen: int = field(default=0, init=False)
    hits: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(FAULT_KINDS)}")
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0 or None")
        if self.after < 0 or self.delay_s < 0 or not 0.0 <= self.fraction < 1.0:
            raise ValueError("after and delay_s must be >= 0, fraction in [0, 1)")
        if self.kind == "redirect" and not self.location:
            raise ValueError("a redirect fault needs a location")

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


class RequestLogEntry(NamedTuple):
    """One request as the archive saw it."""

    t: float  #: time.monotonic() at arrival
    host: str  #: Host header, lower-case, without the port
    method: str
    path: str
    params: dict[str, Any]  #: query (name -> list of values), or the parsed MAST invoke request
    status: int  #: HTTP status sent; 0 when the connection was dropped without an answer
    fault: str | None  #: kind of the fault that hit this request, if any


class FakeArchive:
    """A deterministic fake of IRSA (ZTF light curves) and MAST (CAOM, products, TESS files).

    :param seed: the sky: which ZTF objects and non-TESS observations exist, and the noise in files.
    :param latency_s: sleep before answering each request.
    :param bandwidth_bps: pace every response body at this many bytes per second (per request).
    :param rate_limit_rps: server-side politeness check per host (None: off). An arrival is a
        *violation* when, counting itself, more than ``rate_limit_rps`` requests from that host
        arrived within the preceding ``1.0 - 0.02`` s: the window is 20 ms short of a second to
        tolerate loopback and scheduler jitter, so a client spacing requests exactly ``1/rps``
        apart is never flagged.
    :param rate_limit_mode: ``"count"`` only counts violations in :attr:`violations`; ``"enforce"``
        also answers them ``429`` with ``Retry-After: 1``.
    :param now_mjd: the archive's "today": ZTF epochs, CAOM rows and TESS sectors after it do not
        exist yet. Assign a later value to make the archive gain data.
    :param executing_polls: how many identical MAST requests (service, params, cachebreaker) are
        answered ``EXECUTING`` before the first ``COMPLETE``.
    :param sample: mark every answer with ``X-Harvester-Sample: true`` (the built-in sample archive
        behind ``--offline``), so a client can tell sample data from real data.
    :param tess_cadences: rows per served 2-minute (and 20-second) light-curve file; real files
        have about 19,000.
    """

    def __init__(
        self,
        seed: int = 0,
        latency_s: float = 0.0,
        bandwidth_bps: float | None = None,
        rate_limit_rps: float | None = None,
        rate_limit_mode: Literal["count", "enforce"] = "count",
        now_mjd: float = 60600.0,
        executing_polls: int = 1,
        sample: bool = False,
        *,
        tess_cadences: int = 2000,
    ) -> None:
        if latency_s < 0 or (bandwidth_bps is not None and bandwidth_bps <= 0):
            raise ValueError("latency_s must be >= 0 and bandwidth_bps > 0")
        if rate_limit_rps is not None and rate_limit_rps <= 0:
            raise ValueError("rate_limit_rps must be > 0 or None")
        if rate_limit_mode not in ("count", "enforce"):
            raise ValueError("rate_limit_mode must be 'count' or 'enforce'")
        if executing_polls < 0 or tess_cadences < 1:
            raise ValueError("executing_polls must be >= 0 and tess_cadences >= 1")
        self.seed = seed
        self.latency_s = latency_s
        self.bandwidth_bps = bandwidth_bps
        self.rate_limit_rps = rate_limit_rps
        self.rate_limit_mode: Literal["count", "enforce"] = rate_limit_mode
        self.now_mjd = now_mjd
        self.executing_polls = executing_polls
        self.sample = sample
        self.tess_cadences = tess_cadences
        #: Extra objects of IRSA's public bucket (key → bytes), e.g. a real HATS catalog for tests.
        self.bucket_files: dict[str, bytes] = {}
        #: More centres (ra, dec) around which the fake data release has pixels (read on first use).
        self.hats_regions: list[tuple[float, float]] = []
        #: Every request, in arrival order (appended when its answer starts).
        self.requests: list[RequestLogEntry] = []
        #: Rate-limit violations per host (hosts appear at their first request when limiting is on).
        self.violations: dict[str, int] = {}
        self._faults: list[Fault] = []
        self._down = False
        self._arrivals: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        #: MAST's long polling: how often each request was answered EXECUTING.
        self.polls = PollBook()
        #: The paths answered: every registered archive's fake routes (``ArchiveSpec.fake``).
        self.routes: tuple[FakeRoute, ...] = _registered_routes()
        self._files: OrderedDict[tuple[int, int, int, int], bytes] = OrderedDict()
        self._files_bytes = 0

    # ---- control

    def add_fault(self, fault: Fault) -> Fault:
        """Inject ``fault`` (after those already added); returns it so tests can read ``hits``."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> tuple[Fault, ...]:
        return tuple(self._faults)

    def forget_arrivals(self) -> None:
        """Count rate-limit violations afresh from now on, as for a new client: arrivals of an
        earlier, independent run (its own budget) no longer share a 1-s window with the next one's.
        The violations already counted stay in :attr:`violations`."""
        with self._lock:
            self._arrivals.clear()

    def set_down(self, down: bool = True) -> None:
        """An outage: while down, every request is answered 503."""
        self._down = down

    @property
    def down(self) -> bool:
        return self._down

    # ---- the universe, for tests that aim at known objects

    def ztf_objects(self, ra: float, dec: float, radius_deg: float) -> list[ZtfObject]:
        """The ZTF objects a cone query would return (before BANDNAME/TIME filtering)."""
        return objects_in_cone(self.seed, ra, dec, radius_deg)

    def tess_target(self, tic_id: int) -> TessTarget:
        """What the fake knows about a TIC target: position, sectors, true period and amplitude."""
        return tess_target(tic_id)

    async def lightcurve(self, product: TessProduct) -> bytes:
        """The bytes served for a TESS light curve (generated in a worker thread, then cached)."""
        key = (product.tic_id, product.sector, product.cadence_s, self.tess_cadences)
        cached = self._files.get(key)
        if cached is not None:
            self._files.move_to_end(key)
            return cached
        data = await anyio.to_thread.run_sync(
            lambda: make_spoc_lightcurve(
                product.tic_id, product.sector, seed=self.seed, n_cadences=key[3], cadence_s=product.cadence_s
            )
        )
        if key not in self._files:  # a concurrent request may have made it meanwhile (same bytes)
            self._files[key] = data
            self._files_bytes += len(data)
            while self._files_bytes > FILE_CACHE_BYTES and len(self._files) > 1:
                _, dropped = self._files.popitem(last=False)
                self._files_bytes -= len(dropped)
        return data

    # ---- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        arrival = time.monotonic()
        req = await self._read_request(scope, receive)
        violation = self._count_arrival(req.host, arrival)

        fault: Fault | None = None
        reply: Reply | None = None
        if violation and self.rate_limit_mode == "enforce":
            reply = text_reply(429, "Too Many Requests")
            reply.headers.append(("Retry-After", "1"))
        elif self._down:
            reply = text_reply(503, "Service Unavailable: the archive is down")
        else:
            fault = self._pick_fault(req)
        if self.latency_s > 0:
            await anyio.sleep(self.latency_s)
        if reply is None:
            reply = await (self._faulty_reply(req, fault) if fault else self._answer(req, lie_rows=0))
        if self.sample:
            reply.headers.append(("X-Harvester-Sample", "true"))
        if req.method == "HEAD":
            reply = replace(reply, body=b"", content_length=len(reply.body))

        kind = fault.kind if fault is not None else None
        transport = (scope.get("extensions") or {}).get(TRANSPORT_EXTENSION)
        if kind == "reset":
            self._log(req, arrival, 0, kind)
            if transport is None:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            transport.abort()
            await _wait_disconnect(receive)
            return
        self._log(req, arrival, reply.status, kind)
        await send({"type": "http.response.start", "status": reply.status, "headers": reply.raw_headers()})
        body = reply.body
        if kind == "slow":
            await anyio.sleep(cast(Fault, fault).delay_s)
        if kind == "truncate" and body:
            cut = int(len(body) * cast(Fault, fault).fraction)
            await self._send_body(send, body[:cut], more=True)
            if transport is None:
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body (fake archive truncate)"
                )
            transport.close()
            await _wait_disconnect(receive)
            return
        await self._send_body(send, body, more=False)

    async def _send_body(self, send: Send, body: bytes, *, more: bool) -> None:
        bps = self.bandwidth_bps
        if bps is None or not body:
            await send({"type": "http.response.body", "body": body, "more_body": more})
            return
        chunk = max(256, int(bps / 20))
        for start in range(0, len(body), chunk):
            piece = body[start : start + chunk]
            last = start + chunk >= len(body)
            await anyio.sleep(len(piece) / bps)
            await send({"type": "http.response.body", "body": piece, "more_body": more or not last})

    # ---- request intake

    async def _read_request(self, scope: Scope, receive: Receive) -> FakeRequest:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body.extend(message.get("body", b""))
            if len(body) > MAX_BODY_BYTES or not message.get("more_body", False):
                break
        method = str(scope["method"]).upper()
        path = str(scope["path"])
        query = bytes(scope.get("query_string", b"")).decode("latin-1")
        host = _host_of(headers.get("host"), scope.get("server"))
        qdict: dict[str, Any] = dict(parse_qs(query, keep_blank_values=True))
        subjects = (path, unquote(query))
        req = FakeRequest(method, path, query, host, headers, bytes(body), qdict, subjects)
        req.route = next((r for r in self.routes if r.matches(path)), None)
        if req.route is not None and req.route.parse is not None:
            req.route.parse(req)
        return req

    def _count_arrival(self, host: str, now: float) -> bool:
        limit = self.rate_limit_rps
        if limit is None:
            return False
        with self._lock:
            window = self._arrivals.setdefault(host, deque())
            self.violations.setdefault(host, 0)
            horizon = now - (RATE_WINDOW_S - RATE_TOLERANCE_S)
            while window and window[0] <= horizon:
                window.popleft()
            window.append(now)
            if len(window) > limit:
                self.violations[host] += 1
                return True
        return False

    def _pick_fault(self, req: FakeRequest) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.exhausted or not any(fault.match in s for s in req.subjects):
                    continue
                fault.seen += 1
                if fault.seen <= fault.after:
                    continue
                fault.hits += 1
                return fault
        return None

    def _log(self, req: FakeRequest, arrival: float, status: int, fault: str | None) -> None:
        entry = RequestLogEntry(arrival, req.host, req.method, req.path, req.params, status, fault)
        self.requests.append(entry)

    # ---- answers

    async def _faulty_reply(self, req: FakeRequest, fault: Fault) -> Reply:
        kind = fault.kind
        if kind == "status":
            reply = text_reply(fault.status, f"{fault.status} {fault.message}")
            if fault.retry_after is not None:
                reply.headers.append(("Retry-After", fault.retry_after))
            return reply
        if kind == "html":
            return text_reply(200, _HTML_PAGE.format(message=fault.message), "text/html; charset=utf-8")
        if kind == "votable_error":
            return irsa_error(fault.message)
        if kind == "mast_error":
            return mast_error(fault.message)
        if kind == "executing_forever":
            return mast_executing()
        if kind == "redirect":
            return Reply(302, b"", "text/plain", [("Location", cast(str, fault.location))])
        if kind == "reset":
            return Reply(0, b"", "text/plain")  # never sent
        lie = fault.extra_rows if kind == "lie_rows_total" else 0
        return await self._answer(req, lie_rows=lie)  # truncate, slow, lie_rows_total: the real answer

    async def _answer(self, req: FakeRequest, *, lie_rows: int) -> Reply:
        route = req.route
        if route is None:
            return text_reply(404, f"Not Found: {req.path}")
        if req.method not in route.methods:
            return not_allowed()
        req.lie_rows = lie_rows
        return await route.answer(req, self)


def _host_of(header: str | None, server: Any) -> str:
    """The Host header, lower-case, without the port (``[::1]:80`` → ``[::1]``)."""
    if header:
        host = header.strip().lower()
        if host.startswith("["):
            return host[: host.find("]") + 1]
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if isinstance(server, (tuple, list)) and server:
        return str(server[0]).lower()
    return ""


def _registered_routes() -> tuple[FakeRoute, ...]:
    from harvester import archives

    found: list[FakeRoute] = []
    for path in dict.fromkeys(s.fake for s in archives.specs() if s.fake):
        found.extend(r for r in archives.load(path) if r not in found)
    return tuple(found)


async def _wait_disconnect(receive: Receive) -> None:
    """Wait (briefly) until the server notices the connection we closed, so it logs nothing."""
    with anyio.move_on_after(1.0):
        while (await receive())["type"] != "http.disconnect":
            pass


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
