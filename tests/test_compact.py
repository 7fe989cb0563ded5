"""`harvester compact`: committed units → one Parquet file, typed by the record model, streamed."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harvester.distributed import compact as compact_module
from harvester.distributed.compact import arrow_schema, compact, flat_row
from harvester.distributed.objectstore import ObjectStore
from harvester.errors import OutputError
from harvester.pipeline.writers import dumps_record
from harvester.records import BaseRecord, TessRecord, ZtfRecord
from tests.test_tables import tess, ztf


def commit_unit(root: Path, source: str, unit: str, records: Sequence[BaseRecord], run: str = "r1") -> None:
    """Write one unit as a worker does: its data object, then its manifest (the commit marker)."""
    store = ObjectStore(root)
    body = b"".join(dumps_record(r) + b"\n" for r in records)
    data = f"{source}/units/{unit}/{run}-d.jsonl"
    assert store.put_new(data, body)
    manifest = {"data": data, "sha256": hashlib.sha256(body).hexdigest()}
    assert store.put_new(f"_units/{source}/{unit}/{run}-d.json", orjson.dumps(manifest))


def test_tess_light_curves_become_list_columns_that_round_trip_exactly(tmp_path: Path) -> None:
    """time/flux/flux_err are list<double> (nulls kept), provenance is flattened as in to_table,
    fetched_at is a UTC timestamp: reading the file back gives the records that were committed."""
    curves = [tess(261136679, 50), tess(261136680, 7, sector=59)]
    commit_unit(tmp_path / "out", "tess", "b07", curves)
    rows, dropped = compact("tess", str(tmp_path / "out"), tmp_path / "tess.parquet")
    table = pq.read_table(tmp_path / "tess.parquet")
    assert (rows, dropped) == (2, 0)
    assert table.schema.field("time").type == pa.list_(pa.field("item", pa.float64(), nullable=False))
    assert table.schema.field("fetched_at").type == pa.timestamp("us", tz="UTC")
    assert "provenance_url" in table.column_names and "provenance" not in table.column_names
    assert table.column("flux_err").to_pylist()[0][1] is None
    assert table.to_pylist() == [flat_row(c) for c in curves]


def test_a_column_null_in_every_row_keeps_its_model_type(tmp_path: Path) -> None:
    """The schema comes from the model, not the data: every file of a source has the same types."""
    commit_unit(tmp_path / "out", "ztf", "c1", [ztf(58000.1, mag=None), ztf(58000.2, mag=None)])
    compact("ztf", str(tmp_path / "out"), tmp_path / "ztf.parquet")
    schema = pq.read_schema(tmp_path / "ztf.parquet")
    assert schema.field("mag").type == pa.float64() and schema.field("hjd").type == pa.float64()
    assert schema == arrow_schema(ZtfRecord) != arrow_schema(TessRecord)


def test_records_are_streamed_in_row_groups_and_deduplicated_across_units(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With small chunks and row groups, the rows go out in several row groups (never all held at
    once); an epoch fetched by two units at a cell edge is kept once, from the first unit in key order."""
    monkeypatch.setattr(compact_module, "CHUNK_BYTES", 2_000)
    monkeypatch.setattr(compact_module, "ROW_GROUP_BYTES", 5_000)
    first = [ztf(58000.0 + k / 100, mag=18.0) for k in range(40)]
    second = [ztf(58000.39, mag=99.0), *(ztf(58001.0 + k / 100) for k in range(40))]
    commit_unit(tmp_path / "out", "ztf", "c1", first)
    commit_unit(tmp_path / "out", "ztf", "c2", second)
    rows, dropped = compact("ztf", str(tmp_path / "out"), tmp_path / "ztf.parquet")
    parquet = pq.ParquetFile(tmp_path / "ztf.parquet")
    assert (rows, dropped) == (80, 1) and parquet.metadata.num_rows == 80
    assert parquet.metadata.num_row_groups >= 4
    mags = dict(zip(*parquet.read(columns=["mjd", "mag"]).to_pydict().values(), strict=True))
    assert mags[58000.39] == 18.0  # the first unit's copy


def test_a_corrupt_unit_leaves_the_previous_file_untouched(tmp_path: Path) -> None:
    """A data object that no longer matches its manifest stops compact in one line; the Parquet
    file of the previous compact is still there, whole, and no temporary file is left behind."""
    out = tmp_path / "out"
    commit_unit(out, "ztf", "c1", [ztf(58000.1)])
    target = tmp_path / "processed" / "ztf.parquet"
    compact("ztf", str(out), target)
    before = target.read_bytes()
    commit_unit(out, "ztf", "c2", [ztf(58000.2)])
    (out / "ztf" / "units" / "c2" / "r1-d.jsonl").write_bytes(b"truncated")
    with pytest.raises(OutputError, match=r"ztf/units/c2/r1-d\.jsonl is missing or does not match"):
        compact("ztf", str(out), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["ztf.parquet"]
