"""--format parquet: typed, compressed shards with the record model's schema, holding exactly what
the jsonl layout holds, under the same ledger (rerun, lost and damaged shards)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import harvester
from harvester import archives
from harvester.io.arrow import arrow_schema
from harvester.run.report import RunReport
from harvester.testing import FakeArchive

CONES = [{"ra": 210.8023, "dec": 54.3489, "radius": 0.05}, {"ra": 10.0, "dec": 20.0, "radius": 0.05}]


async def harvest(source: str, out: Path, fmt: str, transport: httpx.AsyncBaseTransport) -> RunReport:
    extra: dict[str, Any] = {"ztf": {"irsa": {"targets": CONES}}} if source == "ztf" else {}
    return await harvester.harvest(
        source, transport=transport, output=out, format=fmt, jsonl_shard_records=60, data_sources=extra
    )


def content(folder: Path) -> dict[tuple[str, ...], dict[str, Any]]:
    """Every record of a folder by dedup key, as JSON values, without fetched_at (the one field
    two runs differ in); a key present twice fails."""
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    for record in harvester.read_records(folder):
        key = record.dedup_key()
        assert key not in found, f"{key} is in {folder} twice"
        found[key] = record.model_dump(mode="json", exclude={"fetched_at"})
    return found


@pytest.mark.parametrize("source", ["ztf", "tess", "mast"])
async def test_parquet_holds_exactly_what_jsonl_holds(source: str, tmp_path: Path) -> None:
    """The same harvest as jsonl and as Parquet reads back record for record, value for value
    (TESS cadences in their order, nulls as nulls)."""
    transport = httpx.ASGITransport(app=FakeArchive())
    for fmt in ("jsonl", "parquet"):
        report = await harvest(source, tmp_path / fmt, fmt, transport)
        assert report.ok and report.sources[source].written > 0
    jsonl, parquet = content(tmp_path / "jsonl" / source), content(tmp_path / "parquet" / source)
    assert parquet == jsonl
    shards = sorted((tmp_path / "parquet" / source).glob("part-*.parquet"))
    assert sum(pq.read_metadata(s).num_rows for s in shards) == len(jsonl)


def test_a_shard_carries_the_record_model_s_schema_with_units(tmp_path: Path) -> None:
    """Column types come from the model, not the data; units and descriptions travel in the file."""
    report = harvester.harvest_sync("all", offline=True, output=tmp_path, format="parquet")
    assert report.ok
    for source in ("ztf", "tess", "mast"):
        (shard,) = sorted((tmp_path / source).glob("part-*.parquet"))
        schema = pq.read_schema(shard)
        assert schema.equals(arrow_schema(archives.record_model(source)), check_metadata=True)
        assert schema.metadata[b"harvester.source"] == source.encode()
    ztf = pq.read_schema(next((tmp_path / "ztf").glob("part-*.parquet")))
    assert ztf.field("mjd").type == pa.float64() and ztf.field("mjd").metadata[b"unit"] == b"d"
    assert ztf.field("expid").type == pa.int64()
    assert ztf.field("fetched_at").type == pa.timestamp("us", tz="UTC")
    tess = pq.read_table(next((tmp_path / "tess").glob("part-*.parquet")))
    assert tess.schema.field("flux").type == pa.list_(pa.field("element", pa.float64(), nullable=False))
    lengths = [len(t) for t in tess.column("time").to_pylist()]
    assert lengths == tess.column("n_points").to_pylist()  # one row per light curve, whole


def assert_harvester_encoding(path: Path) -> None:
    """Every column chunk of ``path`` is zstd, with a dictionary exactly when it holds strings."""
    meta = pq.read_metadata(path)
    schema = pq.read_schema(path)
    for g in range(meta.num_row_groups):
        for i in range(meta.num_columns):
            column = meta.row_group(g).column(i)
            dictionary = "RLE_DICTIONARY" in column.encodings or "PLAIN_DICTIONARY" in column.encodings
            top = column.path_in_schema.split(".")[0]
            assert dictionary == (schema.field(top).type == pa.string()), column
            assert column.compression == "ZSTD", column


def test_shards_dictionary_encode_strings_only_and_read_in_polars_and_nested_pandas(tmp_path: Path) -> None:
    """Numbers are written PLAIN (a dictionary of nearly distinct magnitudes only costs time and
    bytes), strings with a dictionary; polars and nested-pandas (a pandas frame) read the shard as
    pyarrow does."""
    import nested_pandas
    import polars

    report = harvester.harvest_sync("ztf", offline=True, output=tmp_path, format="parquet")
    assert report.ok
    (shard,) = sorted((tmp_path / "ztf").glob("part-*.parquet"))
    assert_harvester_encoding(shard)
    table = pq.read_table(shard)
    assert polars.read_parquet(shard).to_arrow().cast(table.schema).equals(table)
    frame = nested_pandas.read_parquet(str(shard))
    assert frame["mag"].tolist() == table.column("mag").to_pylist()
    assert frame["object_id"].tolist() == table.column("object_id").to_pylist()


async def test_rerun_lost_and_damaged_shards(tmp_path: Path) -> None:
    """A rerun writes nothing; a deleted shard and a truncated one are found by the ledger and
    their records fetched again; the output ends as the clean run left it."""
    transport = httpx.ASGITransport(app=FakeArchive())
    out = tmp_path / "out"
    assert (await harvest("ztf", out, "parquet", transport)).ok
    folder = out / "ztf"
    clean = content(folder)
    shards = sorted(folder.glob("part-*.parquet"))
    assert len(shards) >= 3

    again = (await harvest("ztf", out, "parquet", transport)).sources["ztf"]
    assert again.written == 0 and sorted(folder.glob("part-*.parquet")) == shards

    lost = pq.read_metadata(shards[0]).num_rows
    shards[0].unlink()
    data = shards[1].read_bytes()
    shards[1].write_bytes(data[: len(data) // 2])
    src = (await harvest("ztf", out, "parquet", transport)).sources["ztf"]
    assert src.missing_on_disk == lost and src.damaged_on_disk > 0
    assert src.refetched == src.missing_on_disk + src.damaged_on_disk == src.written
    assert content(folder) == clean
