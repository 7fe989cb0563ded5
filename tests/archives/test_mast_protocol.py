"""The MAST invoke protocol: request shape, long polling, envelope checks, paging, completeness, products."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
import httpx
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harvester.archives.mast_invoke import (
    MastClient,
    MastPage,
    MastQueryStats,
    discrete,
    position,
    value_range,
)
from harvester.errors import ArchiveResponseError, SizeLimitError, TransientError
from harvester.io.http import Http, RetryPolicy
from harvester.io.limiter import LimiterRegistry

DATA = Path(__file__).resolve().parents[1] / "data" / "mast"
MAST = "https://mast.stsci.edu"
INVOKE = f"{MAST}/api/v0/invoke"

Handler = Callable[[httpx.Request], httpx.Response]


class FakeTime:
    """A clock that only moves when someone sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@asynccontextmanager
async def mast_client(
    handler: Handler, fake: FakeTime | None = None, **kwargs: Any
) -> AsyncIterator[MastClient]:
    fake = fake or FakeTime()
    limiters = LimiterRegistry()
    limiters.register("mast.stsci.edu", 1000, 8)
    async with Http(limiters, transport=httpx.MockTransport(handler)) as http:
        session = http.session("tess", retry=RetryPolicy(retries=2, backoff_base_s=0.0))
        yield MastClient(session, clock=fake.clock, sleep=fake.sleep, **kwargs)


def envelope(
    rows: list[dict[str, Any]],
    *,
    page: int = 1,
    pages: int = 1,
    rows_total: int | None = None,
    status: str = "COMPLETE",
) -> dict[str, Any]:
    total = len(rows) if rows_total is None else rows_total
    return {
        "status": status,
        "msg": "",
        "data": rows,
        "fields": [{"name": k, "type": "string"} for k in (rows[0] if rows else {})],
        "paging": {
            "page": page,
            "pageSize": 50000,
            "pagesFiltered": pages,
            "rows": len(rows),
            "rowsFiltered": total,
            "rowsTotal": total,
        },
    }


def answer(body: object) -> httpx.Response:
    return httpx.Response(200, content=json.dumps(body).encode())


def executing() -> httpx.Response:
    return answer({"status": "EXECUTING", "msg": "", "data": [], "fields": [], "paging": {}})


def sent(request: httpx.Request) -> dict[str, Any]:
    """The JSON object in the ``request`` form field of an invoke POST."""
    form = parse_qs(request.content.decode(), strict_parsing=True)
    assert list(form) == ["request"]
    decoded: dict[str, Any] = json.loads(form["request"][0])
    return decoded


def recorded(name: str) -> bytes:
    return (DATA / name).read_bytes()


# --------------------------------------------------------------------------- the request


async def test_request_field_is_compact_json_with_format_page_pagesize_and_cachebreaker() -> None:
    """A query POSTs one form field ``request``: compact JSON, format json, page 1, pagesize, cachebreaker."""
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return answer(envelope([{"a": 1}]))

    async with mast_client(handler, pagesize=2000) as client:
        await client.query("Mast.Caom.Cone", {"ra": 1.5, "dec": -2.0, "radius": 0.2}, target="t")

    (request,) = requests
    assert request.method == "POST"
    assert str(request.url) == INVOKE
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    raw = parse_qs(request.content.decode())["request"][0]
    assert ", " not in raw
    assert ": " not in raw
    body = sent(request)
    cachebreaker = body.pop("cachebreaker")
    assert isinstance(cachebreaker, str)
    assert cachebreaker
    assert body == {
        "service": "Mast.Caom.Cone",
        "params": {"ra": 1.5, "dec": -2.0, "radius": 0.2},
        "format": "json",
        "pagesize": 2000,
        "page": 1,
        "removenullcolumns": False,
    }


async def test_one_cachebreaker_across_polls_and_pages() -> None:
    """Polls and later pages of one query carry the same cachebreaker, pages counted from 1."""
    bodies: list[dict[str, Any]] = []
    script = [
        executing(),
        answer(envelope([{"a": 1}], pages=2, rows_total=2)),
        answer(envelope([{"a": 2}], page=2, pages=2, rows_total=2)),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(sent(request))
        return script.pop(0)

    async with mast_client(handler) as client:
        await client.query("S", {}, target="t")

    assert [b["page"] for b in bodies] == [1, 1, 2]
    assert len({b["cachebreaker"] for b in bodies}) == 1


async def test_polls_resend_the_byte_identical_request() -> None:
    """While MAST is EXECUTING the same encoded body is sent again, byte for byte."""
    contents: list[bytes] = []
    script = [executing(), executing(), answer(envelope([{"a": 1}]))]

    def handler(request: httpx.Request) -> httpx.Response:
        contents.append(request.content)
        return script.pop(0)

    async with mast_client(handler) as client:
        await client.query("S", {"x": [1, 2]}, target="t")

    assert len(contents) == 3
    assert len(set(contents)) == 1


async def test_each_query_has_its_own_cachebreaker() -> None:
    """Two queries, even identical ones, send different cachebreakers."""
    breakers: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        breakers.append(sent(request)["cachebreaker"])
        return answer(envelope([]))

    async with mast_client(handler) as client:
        await client.query("S", {}, target="t")
        await client.query("S", {}, target="t")

    assert len(set(breakers)) == 2


# --------------------------------------------------------------------------- long polling


async def test_executing_twice_then_complete_backs_off_before_each_poll() -> None:
    """EXECUTING, EXECUTING, COMPLETE: two polls after 1 s then 2 s, and the rows arrive."""
    script = [executing(), executing(), answer(envelope([{"a": 1}]))]
    fake = FakeTime()
    async with mast_client(lambda r: script.pop(0), fake, poll_initial_s=1.0, poll_max_s=5.0) as client:
        stats = MastQueryStats()
        pages = [p async for p in client.pages("S", {}, target="t", stats=stats)]

    assert fake.sleeps == [1.0, 2.0]
    assert [p.rows for p in pages] == [[{"a": 1}]]
    assert stats.polls == 2


async def test_poll_backoff_doubles_up_to_poll_max() -> None:
    """The delay between polls doubles from poll_initial_s and stays at poll_max_s."""
    script = [executing() for _ in range(6)] + [answer(envelope([]))]
    fake = FakeTime()
    async with mast_client(lambda r: script.pop(0), fake, poll_initial_s=1.0, poll_max_s=5.0) as client:
        await client.query("S", {}, target="t")

    assert fake.sleeps == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


async def test_executing_forever_raises_transient_error_within_budget() -> None:
    """A job that never completes ends in TransientError once poll_budget_s has passed, not later."""
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return executing()

    fake = FakeTime()
    async with mast_client(handler, fake, poll_budget_s=30.0) as client:
        with pytest.raises(TransientError, match=r"MAST still EXECUTING after 30 s") as info:
            await client.query("Mast.Caom.Filtered", {}, target="TIC 1")

    assert sum(fake.sleeps) == pytest.approx(30.0)
    assert calls == len(fake.sleeps) + 1
    assert info.value.transient
    assert info.value.target == "TIC 1"


# --------------------------------------------------------------------------- bad answers


async def test_status_error_raises_archive_response_error_with_msg() -> None:
    """status ERROR becomes ArchiveResponseError carrying MAST's msg."""
    body = {"status": "ERROR", "msg": "Column 'foo' does not exist", "data": None}
    async with mast_client(lambda r: answer(body)) as client:
        with pytest.raises(ArchiveResponseError, match="Column 'foo' does not exist"):
            await client.query("Mast.Caom.Filtered", {}, target="t")


async def test_html_page_with_200_raises_archive_response_error() -> None:
    """An HTML error page served with 200 is an ArchiveResponseError quoting the body's start on one line."""
    html = b"<!DOCTYPE html>\n<html><head><title>Service Unavailable</title></head>\n<body>" + b"x" * 500
    async with mast_client(lambda r: httpx.Response(200, content=html)) as client:
        with pytest.raises(ArchiveResponseError) as info:
            await client.query("S", {}, target="t")

    message = str(info.value)
    assert "not JSON" in message
    assert "<!DOCTYPE html> <html><head><title>Service Unavailable" in message
    assert "\n" not in message
    assert len(message) < 250


async def test_empty_body_raises_archive_response_error() -> None:
    """An empty 200 body is an ArchiveResponseError that says so."""
    async with mast_client(lambda r: httpx.Response(200, content=b"")) as client:
        with pytest.raises(ArchiveResponseError, match=r"\(empty body\)"):
            await client.query("S", {}, target="t")


async def test_extjs_shaped_answer_raises_archive_response_error() -> None:
    """The extjs shape (format ignored) is refused by name, not parsed."""
    extjs = {
        "status": "COMPLETE",
        "msg": "",
        "data": {
            "name": "NewDataSet",
            "Tables": [
                {
                    "name": "Table",
                    "ExtendedProperties": {"Paging": {"page": 0, "pagesFiltered": 0, "rowsTotal": 0}},
                    "Columns": [],
                    "Fields": [],
                    "Rows": [],
                }
            ],
        },
    }
    async with mast_client(lambda r: answer(extjs)) as client:
        with pytest.raises(ArchiveResponseError, match="extjs"):
            await client.query("Mast.Caom.All", {}, target="t")


GOOD_PAGING = {"page": 1, "pagesFiltered": 1, "rowsTotal": 1}


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ([], "got an array"),
        ("COMPLETE", "got a string"),
        (None, "got null"),
        ({"msg": "", "data": [], "paging": GOOD_PAGING}, "no 'status'"),
        ({"status": "DONE", "data": [], "paging": GOOD_PAGING}, "unknown status 'DONE'"),
        ({"status": "COMPLETE", "paging": GOOD_PAGING}, "no 'data'"),
        ({"status": "COMPLETE", "data": "rows", "paging": GOOD_PAGING}, "'data' is a string"),
        ({"status": "COMPLETE", "data": [[1, 2]], "paging": GOOD_PAGING}, "'data' holds an array"),
        ({"status": "COMPLETE", "data": [{"a": 1}, 7], "paging": GOOD_PAGING}, "'data' holds a number"),
        ({"status": "COMPLETE", "data": [], "fields": "obsid", "paging": GOOD_PAGING}, "'fields'"),
        ({"status": "COMPLETE", "data": []}, "no 'paging'"),
        ({"status": "COMPLETE", "data": [], "paging": [1]}, "'paging' is an array"),
        ({"status": "COMPLETE", "data": [], "paging": {"rowsTotal": 0}}, "pagesFiltered is None"),
        ({"status": "COMPLETE", "data": [], "paging": {"pagesFiltered": "1"}}, "pagesFiltered is '1'"),
        ({"status": "COMPLETE", "data": [], "paging": {"pagesFiltered": -1}}, "pagesFiltered is -1"),
        ({"status": "COMPLETE", "data": [], "paging": {"pagesFiltered": True}}, "pagesFiltered is True"),
        (
            {"status": "COMPLETE", "data": [], "paging": {"pagesFiltered": 1, "rowsTotal": 1.5}},
            "rowsTotal is 1.5",
        ),
    ],
)
async def test_json_that_is_not_the_envelope_raises_archive_response_error(
    body: object, complaint: str
) -> None:
    """JSON of the wrong shape or types is an ArchiveResponseError naming what is wrong."""
    async with mast_client(lambda r: answer(body)) as client:
        with pytest.raises(ArchiveResponseError) as info:
            await client.query("S", {}, target="t")

    assert complaint in str(info.value)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- paging and completeness


async def test_three_pages_are_collected_in_order() -> None:
    """pagesFiltered 3: pages 1, 2, 3 are requested and their rows concatenated in order."""
    asked: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        page = sent(request)["page"]
        asked.append(page)
        rows = [{"n": 2 * (page - 1)}, {"n": 2 * (page - 1) + 1}] if page < 3 else [{"n": 4}]
        return answer(envelope(rows, page=page, pages=3, rows_total=5))

    async with mast_client(handler, pagesize=2) as client:
        result = await client.query("S", {}, target="t")

    assert asked == [1, 2, 3]
    assert [r["n"] for r in result.rows] == [0, 1, 2, 3, 4]
    assert (result.pages, result.rows_total, result.shortfall) == (3, 5, None)
    assert result.complete


async def test_paging_that_lies_about_rows_total_reports_shortfall_and_logs_warning() -> None:
    """Recorded spectra.json (26 rows, rowsTotal 45762): the shortfall is reported and logged, rows kept."""
    body = recorded("spectra.json")
    with structlog.testing.capture_logs() as logs:
        async with mast_client(lambda r: httpx.Response(200, content=body)) as client:
            result = await client.query("Mast.HscSpectra.Db.All", {}, target="t")

    assert len(result.rows) == 26
    assert result.shortfall == (
        "received 26 of 45762 rows (rowsTotal) for Mast.HscSpectra.Db.All: result incomplete"
    )
    assert not result.complete
    warnings = [e for e in logs if e["event"] == "mast_result_incomplete"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert (warnings[0]["rows_received"], warnings[0]["rows_total"]) == (26, 45762)


async def test_rows_total_over_max_rows_asks_to_narrow_the_query() -> None:
    """rowsTotal beyond max_rows stops paging at max_rows and says to narrow the query."""
    asked: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        page = sent(request)["page"]
        asked.append(page)
        return answer(envelope([{"n": page}, {"n": page}], page=page, pages=50, rows_total=100))

    async with mast_client(handler, pagesize=2, max_rows=4) as client:
        result = await client.query("Mast.Caom.Filtered", {}, target="t")

    assert asked == [1, 2]
    assert len(result.rows) == 4
    assert result.shortfall is not None
    assert "rowsTotal 100 exceeds max_rows 4 for Mast.Caom.Filtered" in result.shortfall
    assert "narrow the query" in result.shortfall
    assert "received 4 of 100 rows" in result.shortfall


async def test_streaming_stats_show_the_running_count() -> None:
    """pages(stats=...) counts rows before each page is yielded and holds the shortfall at the end."""

    def handler(request: httpx.Request) -> httpx.Response:
        page = sent(request)["page"]
        return answer(envelope([{"n": page}], page=page, pages=2, rows_total=3))

    stats = MastQueryStats()
    seen: list[tuple[int, int, bool]] = []
    async with mast_client(handler) as client:
        async for page in client.pages("S", {}, target="t", stats=stats):
            seen.append((page.page, stats.rows_received, stats.finished))

    assert seen == [(1, 1, False), (2, 2, False)]
    assert stats.finished
    assert stats.shortfall == "received 2 of 3 rows (rowsTotal) for S: result incomplete"


async def test_an_empty_page_before_pages_filtered_stops_paging() -> None:
    """A page with no rows although more are announced ends paging instead of walking every page."""
    asked: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        page = sent(request)["page"]
        asked.append(page)
        rows = [{"n": 1}] if page == 1 else []
        return answer(envelope(rows, page=page, pages=1_000_000, rows_total=1))

    async with mast_client(handler, pagesize=1) as client:
        result = await client.query("S", {}, target="t")

    assert asked == [1, 2]
    assert result.shortfall is None


async def test_an_empty_result_is_one_request_and_complete() -> None:
    """pagesFiltered 0 and rowsTotal 0: one request, no rows, no shortfall."""
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return answer(envelope([], pages=0, rows_total=0))

    async with mast_client(handler) as client:
        result = await client.query("S", {}, target="t")

    assert (calls, result.rows, result.shortfall) == (1, [], None)


# --------------------------------------------------------------------------- row normalisation


async def test_int_obsid_becomes_a_string() -> None:
    """Recorded caom.json: obsid 2003585980 and objID served as JSON ints come out as strings."""
    body = recorded("caom.json")
    async with mast_client(lambda r: httpx.Response(200, content=body)) as client:
        result = await client.query("Mast.Caom.Cone", {}, target="t")

    assert result.rows[0]["obsid"] == "2003585980"
    assert result.rows[0]["objID"] == "2012765872"


async def test_every_id_column_is_normalised() -> None:
    """obsid, obsID, objID, objID1 and parent_obsid ints become strings; a null id stays null."""
    row = {"obsid": 1, "obsID": 2, "objID": 3, "objID1": 4, "parent_obsid": 5, "obs_id": None}
    async with mast_client(lambda r: answer(envelope([row]))) as client:
        result = await client.query("S", {}, target="t")

    assert result.rows == [
        {"obsid": "1", "obsID": "2", "objID": "3", "objID1": "4", "parent_obsid": "5", "obs_id": None}
    ]


async def test_other_values_are_not_coerced() -> None:
    """Non-id columns keep their JSON types: ints, floats, nulls, strings."""
    body = recorded("caom.json")
    async with mast_client(lambda r: httpx.Response(200, content=body)) as client:
        result = await client.query("Mast.Caom.Cone", {}, target="t")

    first = result.rows[0]
    assert type(first["calib_level"]) is int
    assert first["calib_level"] == 3
    assert type(first["t_exptime"]) is int
    assert first["t_exptime"] == 1500
    assert first["proposal_id"] == "5371"
    assert first["dataURL"] is None
    assert first["t_min"] == 49756.25506


async def test_selected_column_is_dropped() -> None:
    """The UI-only _selected_ column is gone from rows and from fields."""
    body = recorded("caom.json")
    async with mast_client(lambda r: httpx.Response(200, content=body)) as client:
        pages = [p async for p in client.pages("Mast.Caom.Cone", {}, target="t")]

    assert all("_selected_" not in row for row in pages[0].rows)
    assert "_selected_" not in {f["name"] for f in pages[0].fields}


# --------------------------------------------------------------------------- recorded answers


async def test_recorded_caom_json_parses() -> None:
    """Recorded Mast.Caom.Cone answer: 19 rows, 27 fields, one page, complete."""
    body = recorded("caom.json")
    async with mast_client(lambda r: httpx.Response(200, content=body)) as client:
        pages = [p async for p in client.pages("Mast.Caom.Cone", {}, target="t")]

    (page,) = pages
    assert (page.page, page.pages, page.rows_total, len(page.rows)) == (1, 1, 19, 19)
    assert len(page.fields) == 27
    assert page.rows[0]["obs_id"] == "U27XCS01T"


async def test_recorded_products_json_parses() -> None:
    """Recorded Mast.Caom.Products answer: 22 product rows with string obsID and int size."""
    body = recorded("products.json")
    async with mast_client(lambda r: httpx.Response(200, content=body)) as client:
        result = await client.query("Mast.Caom.Products", {"obsid": "2003738726"}, target="t")

    assert (len(result.rows), result.rows_total, result.shortfall) == (22, 22, None)
    assert all(isinstance(r["obsID"], str) for r in result.rows)
    assert all(isinstance(r["size"], int) for r in result.rows)
    assert all(r["dataURI"].startswith("mast:") for r in result.rows)


# --------------------------------------------------------------------------- products


async def test_products_are_requested_in_batches_of_at_most_500() -> None:
    """1,201 obsids go out as Mast.Caom.Products requests of 500, 500 and 201 ids, in order."""
    batches: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = sent(request)
        assert body["service"] == "Mast.Caom.Products"
        batches.append(body["params"]["obsid"].split(","))
        return answer(envelope([]))

    obsids = [str(17000000000 + i) for i in range(1201)]
    async with mast_client(handler) as client:
        await client.products(obsids, target="t")

    assert [len(b) for b in batches] == [500, 500, 201]
    assert [i for b in batches for i in b] == obsids


async def test_products_are_deduplicated_on_data_uri_keeping_first_occurrence() -> None:
    """A product shared by several obsids (and batches) appears once, at its first place."""

    def product(obsid: str, uri: str) -> dict[str, Any]:
        return {"obsID": int(obsid), "dataURI": uri, "_selected_": None}

    def handler(request: httpx.Request) -> httpx.Response:
        ids = sent(request)["params"]["obsid"].split(",")
        rows = [product(ids[0], "mast:TESS/product/shared.fits")]
        rows += [product(i, f"mast:TESS/product/{i}_lc.fits") for i in ids]
        return answer(envelope(rows))

    async with mast_client(handler) as client:
        rows = await client.products(["1", "2", "3"], target="t", batch_size=2)

    assert [r["dataURI"] for r in rows] == [
        "mast:TESS/product/shared.fits",
        "mast:TESS/product/1_lc.fits",
        "mast:TESS/product/2_lc.fits",
        "mast:TESS/product/3_lc.fits",
    ]
    assert rows[0] == {"obsID": "1", "dataURI": "mast:TESS/product/shared.fits"}


async def test_incomplete_product_list_raises() -> None:
    """A product batch that comes back short is an ArchiveResponseError, not a partial list."""
    async with mast_client(lambda r: answer(envelope([{"dataURI": "mast:x"}], rows_total=9))) as client:
        with pytest.raises(ArchiveResponseError, match="received 1 of 9 rows"):
            await client.products(["1"], target="t")


async def test_products_of_no_obsids_sends_nothing() -> None:
    """An empty obsid list is answered without a request."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    async with mast_client(handler) as client:
        assert await client.products([], target="t") == []


# --------------------------------------------------------------------------- filters


def test_discrete_filter_sends_values_as_strings() -> None:
    """discrete() turns every value, numeric ones included, into a string."""
    assert discrete("sequence_number", [1, 2]) == {"paramName": "sequence_number", "values": ["1", "2"]}
    assert discrete("obs_collection", ["TESS"], separator=";") == {
        "paramName": "obs_collection",
        "values": ["TESS"],
        "separator": ";",
    }


def test_value_range_filter_is_one_min_max_interval() -> None:
    """value_range() makes one {min, max} value; an inverted range is refused."""
    assert value_range("t_exptime", 60.0, 200.0) == {
        "paramName": "t_exptime",
        "values": [{"min": 60.0, "max": 200.0}],
    }
    with pytest.raises(ValueError, match="lo <= hi"):
        value_range("t_exptime", 2.0, 1.0)


def test_position_is_joined_with_comma_space() -> None:
    """position() is the string "ra, dec, radius"."""
    assert position(254.28746, -4.09933, 0.2) == "254.28746, -4.09933, 0.2"


# --------------------------------------------------------------------------- downloads


async def test_download_url_escapes_the_uri_like_astroquery() -> None:
    """download_url() keeps ':' and '/' and escapes the rest of the data URI."""
    async with mast_client(lambda r: answer({})) as client:
        url = client.download_url("mast:TESS/product/a b+c.fits")

    assert url == f"{MAST}/api/v0.1/Download/file?uri=mast:TESS/product/a%20b%2Bc.fits"


async def test_download_gets_the_file_bytes() -> None:
    """download() GETs the download URL and returns the body."""
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, content=b"SIMPLE  =                    T")

    uri = "mast:TESS/product/tess2018206045859-s0001-0000000261136679-0120-s_lc.fits"
    async with mast_client(handler) as client:
        content = await client.download(uri, target="t", max_bytes=1000)

    assert content.startswith(b"SIMPLE")
    assert requests[0].method == "GET"
    assert str(requests[0].url) == client.download_url(uri)


async def test_download_over_max_bytes_raises_size_limit_error() -> None:
    """download() passes max_bytes on, so a too-large file is a SizeLimitError."""
    async with mast_client(lambda r: httpx.Response(200, content=b"x" * 100)) as client:
        with pytest.raises(SizeLimitError):
            await client.download("mast:TESS/product/x.fits", target="t", max_bytes=10)


# --------------------------------------------------------------------------- any body at all

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
row_keys = st.sampled_from(["obsid", "obsID", "objID1", "_selected_", "dataURI", "x"]) | st.text(max_size=6)
envelopes = st.fixed_dictionaries(
    {"status": st.sampled_from(["COMPLETE", "EXECUTING", "ERROR"]) | json_values},
    optional={
        "msg": json_values,
        "data": st.lists(st.dictionaries(row_keys, json_values, max_size=4), max_size=4) | json_values,
        "fields": st.lists(st.fixed_dictionaries({"name": row_keys}), max_size=3) | json_values,
        "paging": st.fixed_dictionaries(
            {},
            optional={
                "page": json_values,
                "pagesFiltered": st.integers(-2, 10**12) | json_values,
                "rowsTotal": st.integers(-2, 10**12) | json_values,
                "rowsFiltered": json_values,
            },
        )
        | json_values,
    },
)
bodies = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | envelopes.map(lambda v: json.dumps(v).encode())
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies)
def test_any_body_gives_pages_or_an_archive_or_transient_error(body: bytes) -> None:
    """Whatever the body, pages() yields normalised MastPages or raises ArchiveResponse/TransientError."""

    async def main() -> None:
        async with mast_client(
            lambda r: httpx.Response(200, content=body), poll_budget_s=3.0, pagesize=5, max_rows=10
        ) as client:
            try:
                async for page in client.pages("S", {}, target="t"):
                    assert isinstance(page, MastPage)
                    assert page.page >= 1
                    assert page.pages >= 0
                    for row in page.rows:
                        assert "_selected_" not in row
                        assert all(type(row[k]) is not int for k in ("obsid", "obsID", "objID1") if k in row)
            except (ArchiveResponseError, TransientError):
                pass

    anyio.run(main)
