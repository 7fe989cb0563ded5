"""Anonymous S3 reads through harvester's HTTP session: byte ranges, listings, the sparse file."""

from __future__ import annotations

import io

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import respx

from harvester.errors import ArchiveResponseError
from harvester.io.http import Http
from harvester.io.limiter import LimiterRegistry
from harvester.io.s3 import CloudRoute, ObjectReader, SparseFile, merge_ranges, split_s3_url

ROUTE = CloudRoute("ipac-irsa-ztf")
DATA = bytes(range(256)) * 40  # 10,240 bytes


def test_s3_urls_split_into_bucket_and_prefix() -> None:
    assert split_s3_url("s3://ipac-irsa-ztf/ztf/enhanced/dr24/lc/hats/") == (
        "ipac-irsa-ztf",
        "ztf/enhanced/dr24/lc/hats",
    )
    assert split_s3_url("s3://stpubdata") == ("stpubdata", "")
    for bad in ("https://x.org/a", "s3://A_B/x", "s3://a..b/x", "s3:/x"):
        with pytest.raises(ValueError, match="s3://bucket/prefix"):
            split_s3_url(bad)


def test_neighbouring_ranges_merge_within_the_gap() -> None:
    assert merge_ranges([(50, 60), (0, 10), (12, 20)], gap=2) == [(0, 20), (50, 60)]
    assert merge_ranges([(0, 10), (12, 20)], gap=1) == [(0, 10), (12, 20)]
    assert merge_ranges([(0, 10), (5, 8)], gap=0) == [(0, 10)]


def test_a_sparse_file_serves_only_what_was_fetched() -> None:
    f = SparseFile("s3://b/k", len(DATA), {100: DATA[100:200]})
    f.add(9000, DATA[9000:])
    f.seek(150)
    assert f.read(50) == DATA[150:200]
    f.seek(-10, io.SEEK_END)
    assert f.read() == DATA[-10:]
    f.seek(190)
    with pytest.raises(OSError, match="bytes 190-210 were not fetched"):
        f.read(20)


def test_pyarrow_reads_a_parquet_file_from_its_fetched_ranges() -> None:
    sink = io.BytesIO()
    rows = 200_000
    table = pa.table({"a": list(range(rows)), "b": [str(i) for i in range(rows)]})
    pq.write_table(table, sink, row_group_size=20_000, compression="none")
    data = sink.getvalue()
    tail = 64 * 1024  # what pyarrow reads first from a file's end (its footer read size)
    assert len(data) > 10 * tail
    column = pq.read_metadata(io.BytesIO(data)).row_group(3).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    f = SparseFile("x", len(data), {len(data) - tail: data[-tail:]})
    f.add(start, data[start : start + column.total_compressed_size])
    got = pq.ParquetFile(f).read_row_group(3, columns=["a"]).column("a").to_pylist()
    assert got == list(range(60_000, 80_000))


def reader(retries: int = 0) -> tuple[Http, ObjectReader]:
    from harvester.io.http import RetryPolicy

    limiters = LimiterRegistry()
    limiters.register(ROUTE.host, 1000, 8)
    http = Http(limiters)
    session = http.session("ztf", retry=RetryPolicy(retries=retries, backoff_base_s=0.0))
    return http, ObjectReader(session, ROUTE, max_bytes=1 << 20)


@respx.mock
async def test_a_range_is_asked_for_and_checked() -> None:
    url = ROUTE.url("ztf/x.parquet")

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["range"] == "bytes=100-199" and "authorization" not in request.headers
        return httpx.Response(
            206, content=DATA[100:200], headers={"Content-Range": f"bytes 100-199/{len(DATA)}"}
        )

    respx.get(url).mock(side_effect=answer)
    http, objects = reader()
    async with http:
        assert await objects.range("ztf/x.parquet", 100, 200, target="t") == DATA[100:200]


@respx.mock
async def test_a_short_or_misplaced_range_is_refused() -> None:
    respx.get(ROUTE.url("short")).mock(
        return_value=httpx.Response(
            206, content=DATA[100:150], headers={"Content-Range": "bytes 100-149/10240"}
        )
    )
    respx.get(ROUTE.url("moved")).mock(
        return_value=httpx.Response(206, content=DATA[0:100], headers={"Content-Range": "bytes 0-99/10240"})
    )
    http, objects = reader()
    async with http:
        with pytest.raises(ArchiveResponseError, match="answered 50 of 100 bytes of short"):
            await objects.range("short", 100, 200, target="t")
        with pytest.raises(ArchiveResponseError, match="bytes from 0 of moved, asked from 100"):
            await objects.range("moved", 100, 200, target="t")


@respx.mock
async def test_a_server_ignoring_range_still_gives_the_right_bytes() -> None:
    respx.get(ROUTE.url("whole")).mock(return_value=httpx.Response(200, content=DATA))
    http, objects = reader()
    async with http:
        assert await objects.range("whole", 100, 200, target="t") == DATA[100:200]
        assert await objects.tail("whole", 64, target="t") == (len(DATA), 0, DATA)


@respx.mock
async def test_the_tail_reports_the_object_size() -> None:
    respx.get(ROUTE.url("k")).mock(
        return_value=httpx.Response(
            206, content=DATA[-64:], headers={"Content-Range": f"bytes 10176-10239/{len(DATA)}"}
        )
    )
    http, objects = reader()
    async with http:
        assert await objects.tail("k", 64, target="t") == (len(DATA), 10176, DATA[-64:])


@respx.mock
async def test_a_slow_down_is_retried() -> None:
    slow = httpx.Response(503, content=b"<Error><Code>SlowDown</Code></Error>", headers={"Retry-After": "0"})
    ok = httpx.Response(206, content=DATA[:10], headers={"Content-Range": f"bytes 0-9/{len(DATA)}"})
    route = respx.get(ROUTE.url("k")).mock(side_effect=[slow, ok])
    http, objects = reader(retries=2)
    async with http:
        assert await objects.range("k", 0, 10, target="t") == DATA[:10]
    assert route.call_count == 2


@respx.mock
async def test_a_listing_follows_every_page() -> None:
    page1 = (
        "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>p/b&amp;1</Key></Contents>"
        "<NextContinuationToken>tok/2</NextContinuationToken></ListBucketResult>"
    )
    page2 = (
        "<ListBucketResult><IsTruncated>false</IsTruncated>"
        "<Contents><Key>p/a</Key></Contents></ListBucketResult>"
    )

    def answer(request: httpx.Request) -> httpx.Response:
        params = request.url.params
        assert params["list-type"] == "2" and params["prefix"] == "p/"
        return httpx.Response(200, text=page2 if params.get("continuation-token") == "tok/2" else page1)

    respx.get(ROUTE.base + "/").mock(side_effect=answer)
    http, objects = reader()
    async with http:
        assert await objects.list("p/", target="t") == ["p/a", "p/b&1"]
