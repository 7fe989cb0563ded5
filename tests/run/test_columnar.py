"""The columnar record path: ZTF records travel as Arrow batches from the IRSA body to the disk,
and what reaches the disk is exactly what the record-at-a-time path wrote (issue 17).

- the vectorised IRSA parser gives the same records, or the same error, as the row parser for
  every body (odd cells go to the row parser);
- a batch's JSON is byte for byte ``dumps_record`` of the same model;
- a fixed harvest writes the output captured before the change (tests/data/golden), in every
  format: no row lost, duplicated, changed in value or type, or reordered within a light curve;
- the run's dedup keys leave memory for a temporary file past a threshold, with the same result;
- batches wait for the writer (a budget of rows in flight) instead of piling up in memory.
"""

from __future__ import annotations

import math
import shutil
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pyarrow.parquet as pq
import pytest

import harvester
from harvester.archives.ztf import source as ztf_source
from harvester.archives.ztf.records import ZtfRecord
from harvester.archives.ztf.source import IRSA_COLUMNS, parse_irsa_batch, parse_irsa_csv
from harvester.errors import ArchiveResponseError
from harvester.io.writers import JsonlWriter, dumps_record
from harvester.records import Provenance
from harvester.run import pipeline, seen
from harvester.run.pipeline import RowBudget
from harvester.run.seen import SeenKeys
from harvester.testing import FakeArchive
from tests.conftest import ROW, irsa_csv, irsa_row

GOLDEN = Path(__file__).parents[1] / "data" / "golden" / "ztf_fake_harvest.jsonl"
#: the harvest the golden file holds (see tests/data/golden/README.md)
GOLDEN_CONES = [
    {"ra": 210.8023, "dec": 54.3489, "radius": 0.02},
    {"ra": 210.81, "dec": 54.35, "radius": 0.02},
]
PROVENANCE = Provenance(archive="irsa", url="https://irsa.example/lc?POS=CIRCLE+1+2+3")
NOW = datetime(2026, 12, 7, 6, 0, 0, 123456, tzinfo=UTC)


def row_records(body: bytes) -> list[ZtfRecord]:
    """The record-at-a-time path: the row parser, then one model per row."""
    return [ZtfRecord(**row, fetched_at=NOW, provenance=PROVENANCE) for row in parse_irsa_csv(body, "t")]


def batch_records(body: bytes) -> list[Any]:
    return parse_irsa_batch(body, "t", PROVENANCE, NOW).records()


BODIES = {
    "measured row": irsa_csv(ROW, irsa_row(mjd=58300.5), irsa_row(oid=1, mjd=58400.25)),
    "header only": irsa_csv(),
    "nan, null, empty and inf cells": irsa_csv(
        irsa_row(mag="nan", chi="NaN", sharp="", limitmag="inf", magzp="-Infinity", clrcounc="null"),
        irsa_row(mjd=58300.5, airmass="None", exptime="1e400", expid="", catflags="nan"),
    ),
    "hex ccdid and qid": irsa_csv(irsa_row(ccdid="0x0a", qid="0X3")),
    "integers printed as floats": irsa_csv(irsa_row(field="675.0", programid="1.0")),
    "oid with leading zeros": irsa_csv(irsa_row(oid=42).replace("42,", "00042,", 1)),
    "oid longer than int64": irsa_csv(irsa_row().replace("675103300002930", "99999999999999999999", 1)),
    "underscored number": irsa_csv(irsa_row(expid="44_835_315")),
    "underscored float": irsa_csv(irsa_row(mag="1_8.5")),
    "integral floats": irsa_csv(irsa_row(mag="15", magerr="0", ra="210", dec="-0.0")),
    "signs and exponents": irsa_csv(irsa_row(chi="+1.5", sharp="-2e-3", clrcoeff=".5", clrcounc="5.")),
    "whitespace around cells": irsa_csv(irsa_row(mag=" 18.5 ", filtercode=" zr ", field=" 7")),
    "quoted cells": irsa_csv(irsa_row(filtercode='"zi"', mag='"18.25"')),
    "crlf and blank lines": (
        ",".join(IRSA_COLUMNS) + "\r\n" + ROW + "\r\n\r\n" + irsa_row(mjd=1.5) + "\r\n"
    ).encode(),
    "upper-case header, extra column, another order": (
        ",".join(["EXTRA", *(c.upper() for c in reversed(IRSA_COLUMNS))])
        + "\n"
        + ",".join(["x", *reversed(ROW.split(","))])
        + "\n"
    ).encode(),
    "no final newline": irsa_csv(ROW).rstrip(b"\n"),
}

BAD_BODIES = {
    "empty": b"",
    "foreign csv": b"hello,world\n1,2\n",
    "not utf-8": b"\xff\xfe\x00bad",
    "truncated": irsa_csv(ROW)[:-40],
    "bad filter": irsa_csv(irsa_row(filtercode="g")),
    "missing mjd": irsa_csv(irsa_row(mjd=math.nan)),
    "bad oid": irsa_csv(ROW.replace("675103300002930", "67510330000293x")),
    "negative oid": irsa_csv(ROW.replace("675103300002930", "-675103300002930")),
    "html page": b"<!DOCTYPE html><html><head><title>Down</title></head></html>",
    "fractional integer": irsa_csv(irsa_row(field="675.5")),
    "second row short": irsa_csv(ROW, ROW[:-5]),
    "nan with a payload": irsa_csv(irsa_row(mag="nan(123)")),
}


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_the_vectorised_parser_gives_the_row_parser_s_records(body: bytes) -> None:
    """Same records, field for field and type for type, in the same order."""
    expected = row_records(body)
    got = batch_records(body)
    assert [r.model_dump() for r in got] == [r.model_dump() for r in expected]
    assert [[type(v) for v in r.model_dump().values()] for r in got] == [
        [type(v) for v in r.model_dump().values()] for r in expected
    ]


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_bad_body_is_the_same_one_line_error_on_both_paths(body: bytes) -> None:
    with pytest.raises(ArchiveResponseError) as row_error:
        parse_irsa_csv(body, "t")
    with pytest.raises(ArchiveResponseError) as batch_error:
        parse_irsa_batch(body, "t", PROVENANCE, NOW)
    assert str(batch_error.value) == str(row_error.value)
    assert batch_error.value.target == "t" and "\n" not in str(batch_error.value)


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_a_batch_s_json_is_dumps_record_byte_for_byte(body: bytes) -> None:
    batch = parse_irsa_batch(body, "t", PROVENANCE, NOW)
    assert list(batch.json_lines()) == [dumps_record(r) for r in row_records(body)]
    assert batch.keys == [r.dedup_key() for r in row_records(body)]


def golden() -> list[dict[str, Any]]:
    """The captured records, with the fields added since (issue 18's routes) after the captured
    ones, at an API record's values."""
    return [{**orjson.loads(line), **API_ROUTE_FIELDS} for line in GOLDEN.read_bytes().splitlines()]


async def golden_harvest(out: Path, fmt: str) -> None:
    report = await harvester.harvest(
        "ztf",
        transport=httpx.ASGITransport(app=FakeArchive()),
        output=out,
        format=fmt,
        jsonl_shard_records=100,  # several shards: rows cross shard boundaries
        data_sources={"ztf": {"irsa": {"targets": GOLDEN_CONES, "mjd_range": None, "filters": []}}},
    )
    source = report.sources["ztf"]
    assert report.ok and source.written == source.records == len(golden())


def written(folder: Path, fmt: str) -> list[dict[str, Any]]:
    """Every record of a folder as parsed JSON, in the order written (shards in order)."""
    if fmt == "jsonl":
        return [
            orjson.loads(line)
            for p in sorted(folder.glob("part-*.jsonl"))
            for line in p.read_bytes().splitlines()
        ]
    if fmt == "json":
        return [orjson.loads(p.read_bytes()) for p in sorted(folder.glob("record_*.json"))]
    return [r.model_dump() for r in harvester.read_records(folder)]


def by_key(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        key = (record["object_id"], repr(record["mjd"]))
        assert key not in found, f"{key} written twice"
        found[key] = record
    return found


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet"])
async def test_a_fixed_harvest_writes_what_the_record_path_wrote_before(fmt: str, tmp_path: Path) -> None:
    """Compared with the output captured before the columnar path: the same records, value for
    value and JSON type for JSON type, none lost or twice, each object's epochs in the same order."""
    await golden_harvest(tmp_path, fmt)
    got = written(tmp_path / "ztf", fmt)
    for record in got:
        fetched_at = record.pop("fetched_at")
        assert isinstance(fetched_at, str | datetime)
    if fmt == "parquet":  # read back through the models: compare as JSON values
        got = [orjson.loads(orjson.dumps(r)) for r in got]
    before = golden()
    assert len(got) == len(before)
    now, then = by_key(got), by_key(before)
    assert now.keys() == then.keys()
    for key, record in then.items():
        assert list(now[key].items()) == list(record.items()), key  # field order, values and types
    if fmt != "json":  # shards keep the order epochs came in; per-record files have no order
        assert _epochs(got) == _epochs(before)


#: fields ZtfRecord gained after the golden output was captured, as an API record holds them
API_ROUTE_FIELDS = {
    "route": "api",
    "data_release": None,
    "hmjd": None,
    "hmjd_seq": None,
    "objra": None,
    "objdec": None,
}


def _epochs(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    order: dict[str, list[float]] = defaultdict(list)
    for record in records:
        order[record["object_id"]].append(record["mjd"])
    return dict(order)


async def test_parquet_columns_keep_their_types(tmp_path: Path) -> None:
    await golden_harvest(tmp_path, "parquet")
    (shard, *_rest) = sorted((tmp_path / "ztf").glob("part-*.parquet"))
    schema = pq.read_schema(shard)
    assert str(schema.field("mjd").type) == "double" and str(schema.field("expid").type) == "int64"
    assert str(schema.field("object_id").type) == "string"
    assert str(schema.field("fetched_at").type) == "timestamp[us, tz=UTC]"


async def test_dedup_keys_past_the_memory_threshold_move_to_disk_with_the_same_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seen, "MEMORY_KEYS", 50)
    await golden_harvest(tmp_path, "jsonl")
    got = by_key(
        [{k: v for k, v in r.items() if k != "fetched_at"} for r in written(tmp_path / "ztf", "jsonl")]
    )
    assert got == by_key(golden())


def test_seen_keys_spill_to_a_temporary_file_and_forget_it_on_close() -> None:
    keys = SeenKeys(memory_keys=3)
    assert keys.admit(["a", "b", "a"]) == ([0, 1], 1)
    assert not keys.on_disk
    assert keys.admit(["c", "d", "b"]) == ([0, 1], 1)  # 5 keys > 3: moved to disk
    assert keys.on_disk and len(keys) == 4
    assert keys.admit(["d", "e", "e"]) == ([1], 2)
    assert keys._folder is not None
    folder = Path(keys._folder.name)
    assert folder.exists()
    keys.close()
    assert not folder.exists()


def test_seen_keys_pass_new_keys_whole_and_catch_repeats_within_and_across_batches() -> None:
    keys = SeenKeys()
    assert keys.admit(["a", "b", "c"]) == ([0, 1, 2], 0)
    assert keys.admit(["d", "e"], room=2) == ([0, 1], 0)
    assert keys.admit(["f", "g", "f"]) == ([0, 1], 1)  # a repeat inside the batch
    assert keys.admit(["h", "a"]) == ([0], 1)  # a key of an earlier batch
    assert len(keys) == 8


def test_seen_keys_stop_at_the_room_left_and_still_count_duplicates() -> None:
    keys = SeenKeys()
    assert keys.admit(["a", "b", "c"], room=2) == ([0, 1], 0)
    assert keys.admit(["a", "c", "d"], room=1) == ([1], 1)  # "c" was not remembered
    assert len(keys) == 3


async def test_a_limit_cuts_a_batch_at_exactly_the_limit(tmp_path: Path) -> None:
    report = await harvester.harvest(
        "ztf",
        transport=httpx.ASGITransport(app=FakeArchive()),
        output=tmp_path,
        format="jsonl",
        limit=7,
        data_sources={"ztf": {"irsa": {"targets": GOLDEN_CONES, "mjd_range": None, "filters": []}}},
    )
    assert report.sources["ztf"].written == 7 and report.sources["ztf"].limit_reached
    assert len(written(tmp_path / "ztf", "jsonl")) == 7


async def test_a_producer_waits_while_the_rows_in_flight_would_exceed_the_budget() -> None:
    budget = RowBudget(10)
    await budget.acquire(8)
    got: list[str] = []

    async def second() -> None:
        await budget.acquire(5)
        got.append("second")

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await anyio.sleep(0.05)
        assert got == [] and budget.used == 8  # 8 + 5 > 10: waits
        await budget.release(8)
    assert got == ["second"] and budget.used == 5


async def test_a_batch_larger_than_the_budget_goes_alone() -> None:
    budget = RowBudget(10)
    with anyio.fail_after(1):
        await budget.acquire(25)
    assert budget.used == 25


async def test_a_tiny_row_budget_changes_nothing_in_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches wait for the writer instead of piling up in the streams, and all arrive."""
    monkeypatch.setattr(pipeline, "ROWS_IN_FLIGHT", 5)
    monkeypatch.setattr(ztf_source, "BATCH_ROWS", 3)
    await golden_harvest(tmp_path, "jsonl")
    got = by_key(
        [{k: v for k, v in r.items() if k != "fetched_at"} for r in written(tmp_path / "ztf", "jsonl")]
    )
    assert got == by_key(golden())


@pytest.mark.parametrize("ahead", [1, 2])
async def test_batches_prepared_ahead_of_the_row_budget_are_bounded_across_producers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ahead: int
) -> None:
    """Producers encode a batch before they wait for room, but never more than ``AHEAD`` of
    them at once, however many producers wait: memory stays bounded."""
    monkeypatch.setattr(pipeline, "ROWS_IN_FLIGHT", 5)
    monkeypatch.setattr(pipeline, "AHEAD", ahead)
    monkeypatch.setattr(ztf_source, "BATCH_ROWS", 3)
    waiting, most = [0], [0]
    prepare, acquire = JsonlWriter.prepare, RowBudget.acquire

    def counted_prepare(self: Any, batch: Any) -> None:
        prepare(self, batch)
        waiting[0] += 1
        most[0] = max(most[0], waiting[0])

    async def counted_acquire(self: RowBudget, amount: int) -> None:
        await acquire(self, amount)
        waiting[0] -= 1

    write_batch = pipeline._write_batch

    async def slow_write_batch(*args: Any) -> None:  # a slow disk: producers wait for room
        await anyio.sleep(0.02)
        await write_batch(*args)

    monkeypatch.setattr(JsonlWriter, "prepare", counted_prepare)
    monkeypatch.setattr(RowBudget, "acquire", counted_acquire)
    monkeypatch.setattr(pipeline, "_write_batch", slow_write_batch)
    # 6 producers: 6 targets over the same objects (the later copies are dropped as duplicates)
    cones = [{"ra": 210.8023, "dec": 54.3489, "radius": 0.02 + 0.001 * i} for i in range(6)]
    report = await harvester.harvest(
        "ztf",
        transport=httpx.ASGITransport(app=FakeArchive()),
        output=tmp_path,
        format="jsonl",
        data_sources={
            "ztf": {
                "irsa": {"targets": cones, "mjd_range": None, "filters": []},
                "rate_limit": {"requests_per_second": 1000, "max_concurrency": 8},
            }
        },
    )
    source = report.sources["ztf"]
    assert report.ok and source.written == source.records > 0
    assert most[0] == ahead  # prepared, not yet let in: one per producer (6) without the bound


async def test_a_first_harvest_asks_the_ledger_nothing_and_a_rerun_finds_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Into an empty folder every key the dedup stage passes on is new: no presence lookups.
    A rerun (the folder holds records) looks every key up and writes nothing."""
    from harvester.io.ledger import Ledger

    asked: list[int] = []
    present = Ledger.present_texts

    async def counting(self: Ledger, texts: Any) -> Any:
        asked.append(len(texts))
        return await present(self, texts)

    monkeypatch.setattr(Ledger, "present_texts", counting)
    await golden_harvest(tmp_path, "jsonl")
    assert asked == []
    report = await harvester.harvest(
        "ztf",
        transport=httpx.ASGITransport(app=FakeArchive()),
        output=tmp_path,
        format="jsonl",
        full=True,  # no watermark: the archive serves every epoch again
        data_sources={"ztf": {"irsa": {"targets": GOLDEN_CONES, "mjd_range": None, "filters": []}}},
    )
    source = report.sources["ztf"]
    assert sum(asked) >= len(golden()) and source.written == 0
    assert source.already_present == len(golden())


async def test_a_parquet_output_written_before_the_route_fields_is_still_whole(tmp_path: Path) -> None:
    """Shards written before ZtfRecord gained its five route fields (the columns a prefix of
    today's): a new ledger adopts every record, none is damaged or written again, and they read
    back with the fields at an API record's values."""
    await golden_harvest(tmp_path, "parquet")
    folder = tmp_path / "ztf"
    for shard in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(shard)
        old = table.select(table.schema.names[: -len(API_ROUTE_FIELDS)])
        pq.write_table(old.replace_schema_metadata(table.schema.metadata), shard)
    shutil.rmtree(folder / ".harvester")  # the ledger is rebuilt from the files
    report = await harvester.harvest(
        "ztf",
        transport=httpx.ASGITransport(app=FakeArchive()),
        output=tmp_path,
        format="parquet",
        jsonl_shard_records=100,
        data_sources={"ztf": {"irsa": {"targets": GOLDEN_CONES, "mjd_range": None, "filters": []}}},
    )
    src = report.sources["ztf"]
    assert (src.damaged_on_disk, src.written, src.already_present) == (0, 0, len(golden()))
    assert src.adopted == len(golden())
    back = [r.model_dump(mode="json") for r in harvester.read_records(folder)]
    assert all({k: r[k] for k in API_ROUTE_FIELDS} == API_ROUTE_FIELDS for r in back)
