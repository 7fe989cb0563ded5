"""The MAST ``invoke`` protocol (``/api/v0/invoke``), shared by the TESS and MAST sources.

This module owns, and nothing else does:

- building Mashup requests: one ``request`` form field holding compact JSON with ``format: "json"``
  (the server default is ``extjs``), a 1-based ``page``, ``pagesize`` and one ``cachebreaker`` per
  query. Each page's request is built afresh from a dict (astroquery rewrites the encoded body);
- long polling: an ``EXECUTING`` answer is re-sent byte for byte (MAST requires the *same* request,
  cachebreaker included) after a backoff that doubles from ``poll_initial_s`` up to ``poll_max_s``,
  within ``poll_budget_s`` per page request;
- checking the JSON envelope (``status``/``msg``/``data``/``fields``/``paging``): anything else, an
  HTML page served with 200, an empty body or the ``extjs`` shape is an :class:`ArchiveResponseError`;
- paging up to ``paging.pagesFiltered``, normalising id columns that MAST declares ``"string"`` but
  serves as JSON integers, dropping the UI-only ``_selected_`` column, and never coercing anything else;
- the completeness check: fewer rows than ``rowsTotal``, or a ``rowsTotal`` over ``max_rows`` (MAST
  serves at most about 500,000 rows a query), is reported as a shortfall and logged as
  ``mast_result_incomplete``. Results are never truncated silently;
- filter helpers with astroquery's ``build_filter_set`` semantics, product lists and file downloads.

Rate limits, retries of transient HTTP failures and tokens belong to :mod:`harvester.io.http`.
"""

from __future__ import annotations

import functools
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard
from urllib.parse import quote

import anyio
import orjson
import structlog

from harvester.errors import ArchiveResponseError, TransientError
from harvester.io.http import HttpSession, snippet

__all__ = [
    "ID_COLUMNS",
    "MAST_ROW_CEILING",
    "PRODUCTS_SERVICE",
    "MastClient",
    "MastPage",
    "MastQueryStats",
    "MastResult",
    "decode_answer",
    "discrete",
    "position",
    "value_range",
]

log = structlog.get_logger("harvester.mast")

DEFAULT_BASE_URL: Final = "https://mast.stsci.edu"
INVOKE_PATH: Final = "/api/v0/invoke"
DOWNLOAD_PATH: Final = "/api/v0.1/Download/file"
PRODUCTS_SERVICE: Final = "Mast.Caom.Products"

#: "The maximum result size for a Mashup Query is roughly 500,000 records" (MAST API index page).
MAST_ROW_CEILING: Final = 500_000

#: Id columns declared ``"string"`` in ``fields`` but served as JSON integers; their ints become str.
ID_COLUMNS: Final = frozenset({"obsid", "obsID", "objID", "objID1", "parent_obsid"})

#: Columns that exist only for MAST's web UI (astroquery drops them too).
UI_COLUMNS: Final = frozenset({"_selected_"})

#: How much of an unexpected body goes into an error message.
SNIPPET_BYTES: Final = 100

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class MastPage:
    """One COMPLETE page of a MAST answer, rows normalised.

    ``page`` is 1-based; ``pages`` is ``paging.pagesFiltered`` (0 for an empty result);
    ``rows_total`` is ``paging.rowsTotal`` (``rowsFiltered`` if absent, None if neither is served).
    """

    rows: list[dict[str, Any]]
    page: int
    pages: int
    rows_total: int | None
    fields: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class MastResult:
    """Every page of one query. ``shortfall`` is None when the result is complete."""

    rows: list[dict[str, Any]]
    rows_total: int | None
    pages: int
    shortfall: str | None
    fields: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.shortfall is None


@dataclass
class MastQueryStats:
    """Running counts of one :meth:`MastClient.pages` iteration, for streaming callers.

    Pass a fresh one per call as ``pages(..., stats=stats)``: it is updated *before* each page is
    yielded, so the caller always sees the rows received so far. ``finished`` turns True when
    paging ended on its own (not when the caller stopped early); :attr:`shortfall` is final from
    then on. :meth:`MastClient.query` uses the same object, so both paths apply the same checks.
    """

    service: str = ""
    max_rows: int = MAST_ROW_CEILING
    pages_fetched: int = 0
    pages_total: int | None = None
    rows_received: int = 0
    rows_total: int | None = None
    polls: int = 0
    stopped_early: bool = False
    finished: bool = False

    @property
    def shortfall(self) -> str | None:
        """A one-line account of what is missing, or None if nothing is known to be missing."""
        problems: list[str] = []
        total = self.rows_total
        if total is not None and total > self.max_rows:
            problems.append(
                f"rowsTotal {total} exceeds max_rows {self.max_rows} for {self.service} "
                f"(MAST serves at most ~{MAST_ROW_CEILING:,} rows a query): narrow the query"
            )
        if total is not None and self.rows_received < total:
            problems.append(
                f"received {self.rows_received} of {total} rows (rowsTotal) for {self.service}: "
                "result incomplete"
            )
        elif total is None and self.stopped_early:
            problems.append(
                f"stopped after page {self.pages_fetched} of {self.pages_total} (pagesFiltered) for "
                f"{self.service}, which served no rowsTotal: result may be incomplete"
            )
        return "; ".join(problems) or None


# --------------------------------------------------------------------------- filter helpers


def discrete(param: str, values: Iterable[object], *, separator: str | None = None) -> dict[str, Any]:
    """A filter on a discrete column: values are sent as strings, even numeric ones.

    ``separator`` is for multi-valued columns (``obs_collection``, ``project``, ``filters``, … use
    ``";"`` per MAST's columnsconfig), as astroquery adds it.
    """
    strings = [str(v) for v in values]
    if not strings:
        raise ValueError(f"filter on {param!r} needs at least one value")
    entry: dict[str, Any] = {"paramName": param, "values": strings}
    if separator is not None:
        entry["separator"] = separator
    return entry


def value_range(param: str, lo: float, hi: float) -> dict[str, Any]:
    """A filter on a continuous column (float/double/numeric): one ``{min, max}`` interval."""
    if not lo <= hi:
        raise ValueError(f"range filter on {param!r} needs lo <= hi, got {lo!r} > {hi!r}")
    return {"paramName": param, "values": [{"min": lo, "max": hi}]}


def position(ra: float, dec: float, radius: float) -> str:
    """The ``position`` parameter of ``*.Filtered.Position`` services: ``"ra, dec, radius"`` in degrees."""
    return ", ".join(str(v) for v in (ra, dec, radius))


# --------------------------------------------------------------------------- the client


class MastClient:
    """Queries, product lists and downloads against one MAST server, through one HttpSession.

    The client holds no per-query state, so one instance may serve several concurrent queries.
    """

    def __init__(
        self,
        session: HttpSession,
        base_url: str = DEFAULT_BASE_URL,
        *,
        pagesize: int = 50_000,
        poll_budget_s: float = 600.0,
        poll_initial_s: float = 1.0,
        poll_max_s: float = 5.0,
        max_rows: int = MAST_ROW_CEILING,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        if pagesize < 1:
            raise ValueError("pagesize must be >= 1")
        if max_rows < 1:
            raise ValueError("max_rows must be >= 1")
        if poll_budget_s < 0 or poll_initial_s <= 0 or poll_max_s < poll_initial_s:
            raise ValueError("need poll_budget_s >= 0 and 0 < poll_initial_s <= poll_max_s")
        self._session = session
        self.base_url = base_url.rstrip("/")
        self.invoke_url = self.base_url + INVOKE_PATH
        self.pagesize = pagesize
        self.poll_budget_s = poll_budget_s
        self.poll_initial_s = poll_initial_s
        self.poll_max_s = poll_max_s
        self.max_rows = max_rows
        self._clock = clock
        self._sleep = sleep

    # ---- queries

    def request_body(self, service: str, params: dict[str, Any], *, page: int, cachebreaker: str) -> str:
        """The compact JSON that goes into the ``request`` form field for one page.

        ``removenullcolumns`` is sent as False (the server default, made explicit) so that every
        page of a query has the same columns; a column that is null on one page stays a key.
        """
        return orjson.dumps(
            {
                "service": service,
                "params": params,
                "format": "json",
                "pagesize": self.pagesize,
                "page": page,
                "removenullcolumns": False,
                "cachebreaker": cachebreaker,
            }
        ).decode()

    async def pages(
        self,
        service: str,
        params: dict[str, Any],
        *,
        target: str,
        stats: MastQueryStats | None = None,
    ) -> AsyncIterator[MastPage]:
        """Yield the COMPLETE pages of one query in order, polling while MAST is EXECUTING.

        Paging stops at ``paging.pagesFiltered``, and earlier (``stats.stopped_early``) on an empty
        page, once ``max_rows`` rows have arrived or after ``ceil(max_rows / pagesize)`` pages, so a
        lying ``paging`` cannot loop for ever. When paging ends on its own with something missing,
        a ``mast_result_incomplete`` warning is logged and ``stats.shortfall`` says what.
        Raises :class:`ArchiveResponseError` (status ERROR or a malformed answer) and
        :class:`TransientError` (still EXECUTING after the budget, or the HTTP layer gave up).
        """
        if stats is None:
            stats = MastQueryStats()
        stats.service = service
        stats.max_rows = self.max_rows
        cachebreaker = uuid.uuid4().hex
        max_pages = math.ceil(self.max_rows / self.pagesize)
        page_no = 1
        while True:
            page = await self._fetch_page(service, params, page_no, cachebreaker, target, stats)
            stats.pages_fetched += 1
            stats.pages_total = page.pages
            stats.rows_received += len(page.rows)
            if page.rows_total is not None:
                stats.rows_total = max(stats.rows_total or 0, page.rows_total)
            log.debug(
                "mast_page",
                service=service,
                target=target,
                page=page_no,
                pages=page.pages,
                rows=len(page.rows),
                rows_total=page.rows_total,
            )
            yield page
            if page_no >= page.pages:
                break
            if not page.rows or stats.rows_received >= self.max_rows or page_no >= max_pages:
                stats.stopped_early = True
                break
            page_no += 1
        stats.finished = True
        shortfall = stats.shortfall
        if shortfall is not None:
            log.warning(
                "mast_result_incomplete",
                service=service,
                target=target,
                rows_received=stats.rows_received,
                rows_total=stats.rows_total,
                pages_fetched=stats.pages_fetched,
                pages_total=stats.pages_total,
                max_rows=self.max_rows,
                shortfall=shortfall,
            )

    async def query(self, service: str, params: dict[str, Any], *, target: str) -> MastResult:
        """Collect every page of one query; check ``result.shortfall`` before trusting it as complete."""
        stats = MastQueryStats()
        rows: list[dict[str, Any]] = []
        fields: list[dict[str, Any]] = []
        async for page in self.pages(service, params, target=target, stats=stats):
            rows.extend(page.rows)
            if not fields:
                fields = page.fields
        return MastResult(
            rows=rows,
            rows_total=stats.rows_total,
            pages=stats.pages_fetched,
            shortfall=stats.shortfall,
            fields=fields,
        )

    async def _fetch_page(
        self,
        service: str,
        params: dict[str, Any],
        page_no: int,
        cachebreaker: str,
        target: str,
        stats: MastQueryStats,
    ) -> MastPage:
        """One page, re-sending the identical body while MAST answers EXECUTING."""
        body = self.request_body(service, params, page=page_no, cachebreaker=cachebreaker)
        started = self._clock()
        delay = self.poll_initial_s
        while True:
            response = await self._session.fetch(
                "POST", self.invoke_url, target=target, data={"request": body}
            )
            page = await anyio.to_thread.run_sync(  # a 50,000-row page is tens of MB of JSON
                functools.partial(
                    decode_answer, response.content, service=service, page=page_no, target=target
                )
            )
            if page is not None:
                return page
            stats.polls += 1
            elapsed = self._clock() - started
            if elapsed >= self.poll_budget_s:
                raise TransientError(
                    f"MAST still EXECUTING after {elapsed:.0f} s ({service}, page {page_no})", target=target
                )
            wait = min(delay, self.poll_budget_s - elapsed)
            log.debug(
                "mast_executing",
                service=service,
                target=target,
                page=page_no,
                elapsed_s=round(elapsed, 3),
                wait_s=round(wait, 3),
            )
            await self._sleep(wait)
            delay = min(delay * 2.0, self.poll_max_s)

    # ---- products

    async def products(
        self, obsids: Sequence[str], *, target: str, batch_size: int = 500
    ) -> list[dict[str, Any]]:
        """The product rows of CAOM ``obsid`` values, de-duplicated on ``dataURI`` (first one kept).

        ``obsid`` is the numeric CAOM id (not ``obs_id``). Repeated obsids are asked for once; batches
        of at most ``batch_size`` go out one after the other. Rows without a string ``dataURI`` are
        all kept. An incomplete product list raises :class:`ArchiveResponseError` rather than
        passing for the whole list.
        """
        if isinstance(obsids, str):
            raise TypeError("obsids must be a sequence of ids, not one string")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        ids = list(dict.fromkeys(obsids))
        for obsid in ids:
            if not obsid or "," in obsid:
                raise ValueError(f"not a usable obsid: {obsid!r}")
        seen: set[str] = set()
        out: list[dict[str, Any]] = []
        for start in range(0, len(ids), batch_size):
            batch = ids[start : start + batch_size]
            result = await self.query(PRODUCTS_SERVICE, {"obsid": ",".join(batch)}, target=target)
            if result.shortfall is not None:
                raise ArchiveResponseError(
                    f"product list for {len(batch)} obsids is incomplete: {result.shortfall}", target=target
                )
            for row in result.rows:
                uri = row.get("dataURI")
                if isinstance(uri, str):
                    if uri in seen:
                        continue
                    seen.add(uri)
                out.append(row)
        return out

    # ---- downloads

    def download_url(self, data_uri: str) -> str:
        """The single-file download URL of a ``mast:...`` data URI (escaped as astroquery does)."""
        return f"{self.base_url}{DOWNLOAD_PATH}?uri={quote(data_uri, safe=':/')}"

    async def download(self, data_uri: str, *, target: str, max_bytes: int | None) -> bytes:
        """The bytes of one file, read against ``max_bytes`` (SizeLimitError past it)."""
        response = await self._session.fetch(
            "GET", self.download_url(data_uri), target=target, max_bytes=max_bytes
        )
        return response.content


# --------------------------------------------------------------------------- the envelope


def decode_answer(content: bytes, *, service: str, page: int, target: str | None = None) -> MastPage | None:
    """Check one invoke answer: a normalised :class:`MastPage` if COMPLETE, None if EXECUTING.

    Raises :class:`ArchiveResponseError` for status ERROR (with MAST's ``msg``) and for anything that
    is not the JSON envelope; the message is one line and quotes the start of the body.
    """

    def bad(problem: str) -> ArchiveResponseError:
        return ArchiveResponseError(
            f"MAST {service} page {page}: {problem}: {snippet(content, SNIPPET_BYTES)}", target=target
        )

    try:
        envelope = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise bad("not JSON") from exc
    if not isinstance(envelope, dict):
        raise bad(f"expected the JSON envelope object, got {_json_type(envelope)}")
    status = envelope.get("status")
    if status == "EXECUTING":
        return None
    if status == "ERROR":
        msg = envelope.get("msg")
        text = " ".join(msg.split()) if isinstance(msg, str) else ""
        raise ArchiveResponseError(f"MAST {service} returned ERROR: {text or '(no message)'}", target=target)
    if status != "COMPLETE":
        raise bad("no 'status' in the answer" if status is None else f"unknown status {_short(status)}")

    data = envelope.get("data")
    if isinstance(data, dict) and "Tables" in data:
        raise bad("got the extjs shape (data.Tables), not format=json")
    if not isinstance(data, list):
        raise bad("no 'data' in the answer" if data is None else f"'data' is {_json_type(data)}, not a list")
    for row in data:
        if not isinstance(row, dict):
            raise bad(f"'data' holds {_json_type(row)}, not row objects")

    fields = envelope.get("fields")
    if fields is None:
        fields = []
    if not isinstance(fields, list) or not all(isinstance(f, dict) for f in fields):
        raise bad("'fields' is not a list of objects")

    paging = envelope.get("paging")
    if not isinstance(paging, dict):
        raise bad("no 'paging' in the answer" if paging is None else f"'paging' is {_json_type(paging)}")
    pages = paging.get("pagesFiltered")
    if not _is_count(pages):
        raise bad(f"paging.pagesFiltered is {_short(pages)}, not a count")
    rows_total = paging.get("rowsTotal", paging.get("rowsFiltered"))
    if rows_total is not None and not _is_count(rows_total):
        raise bad(f"paging.rowsTotal is {_short(rows_total)}, not a count")

    return MastPage(
        rows=[_normalise_row(row) for row in data],
        page=page,
        pages=pages,
        rows_total=rows_total,
        fields=[f for f in fields if f.get("name") not in UI_COLUMNS],
    )


def _normalise_row(row: dict[str, Any]) -> dict[str, Any]:
    # type(...) is int, not isinstance: a JSON true in an id column is odd, but it is not an id.
    return {
        key: str(value) if key in ID_COLUMNS and type(value) is int else value
        for key, value in row.items()
        if key not in UI_COLUMNS
    }


def _is_count(value: object) -> TypeGuard[int]:
    return type(value) is int and value >= 0


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _short(value: object, n: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n] + "…"
