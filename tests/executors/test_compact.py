"""`harvester compact`: committed units → one Parquet file, typed by the record model, streamed."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harvester.archives.mast.records import MastRecord
from harvester.archives.tess.records import TessRecord
from harvester.archives.ztf.records import ZtfRecord
from harvester.errors import OutputError
from harvester.executors import compact as compact_module
from harvester.executors.compact import compact
from harvester.io.arrow import arrow_schema, flat_row
from harvester.io.objectstore import ObjectStore
from harvester.io.writers import dumps_record
from harvester.records import BaseRecord, Provenance
from tests.display.test_tables import FETCHED, tess, ztf
from tests.io.test_parquet import assert_harvester_encoding


def mast_record() -> MastRecord:
    """A CAOM observation with a few columns null."""
    required = {"source", "object_id", "fetched_at", "provenance", "obsid"}
    optional = dict.fromkeys(MastRecord.model_fields.keys() - required)
    return MastRecord(
        object_id="TIC 261136679",
        fetched_at=FETCHED,
        provenance=Provenance(archive="mast", url="https://mast.example/invoke", service="Mast.Caom.Cone"),
        obsid="27621455",
        **{**optional, "obs_collection": "TESS", "ra": 10.5, "t_obs_release": 59000.25},
    )


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
    assert table.schema.field("time").type == pa.list_(pa.field("element", pa.float64(), nullable=False))
    assert table.schema.field("fetched_at").type == pa.timestamp("us", tz="UTC")
    assert "provenance_url" in table.column_names and "provenance" not in table.column_names
    assert table.column("flux_err").to_pylist()[0][1] is None
    assert table.to_pylist() == [flat_row(c) for c in curves]


def test_compact_writes_as_the_shards_do(tmp_path: Path) -> None:
    """zstd, a dictionary for string columns only (list columns of numbers included)."""
    commit_unit(tmp_path / "out", "tess", "b07", [tess(261136679, 50)])
    commit_unit(tmp_path / "out", "ztf", "c1", [ztf(58000.1), ztf(58000.2)])
    for source in ("tess", "ztf"):
        compact(source, str(tmp_path / "out"), tmp_path / f"{source}.parquet")
        assert_harvester_encoding(tmp_path / f"{source}.parquet")


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


DAMAGED = "unit data ztf/units/c2/r1-d.jsonl"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (dumps_record(ztf(58009.9)) + b"\n", f"{DAMAGED} does not match its manifest (sha256)"),
        (b'{"source": "zt', f"{DAMAGED} line 1 is not a valid ztf record: line: Invalid JSON"),
        (None, "/out/ztf/units/c2/r1-d.jsonl: it does not exist"),
    ],
    ids=["other-bytes", "truncated", "missing"],
)
def test_a_damaged_unit_leaves_the_previous_file_untouched(
    tmp_path: Path, damage: bytes | None, message: str
) -> None:
    """A data object that no longer matches its manifest (other bytes, cut short, gone) stops
    compact in one line; the Parquet file of the previous compact is still there, whole, and no
    temporary file is left behind."""
    out = tmp_path / "out"
    commit_unit(out, "ztf", "c1", [ztf(58000.1)])
    target = tmp_path / "processed" / "ztf.parquet"
    compact("ztf", str(out), target)
    before = target.read_bytes()
    commit_unit(out, "ztf", "c2", [ztf(58000.2)])
    data = out / "ztf" / "units" / "c2" / "r1-d.jsonl"
    if damage is None:
        data.unlink()
    else:
        data.write_bytes(damage)
    with pytest.raises(OutputError, match=re.escape(message)):
        compact("ztf", str(out), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["ztf.parquet"]


@pytest.mark.parametrize("model", [ZtfRecord, TessRecord, MastRecord], ids=lambda m: m.__name__)
def test_every_record_model_has_a_parquet_schema_matching_its_rows(model: type[BaseRecord]) -> None:
    """The schema derived from each model holds the rows flat_row makes of its records."""
    record = {ZtfRecord: ztf(58000.1), TessRecord: tess(261136679, 5), MastRecord: mast_record()}[model]
    schema = arrow_schema(model)
    table = pa.Table.from_pylist([flat_row(record)], schema=schema)
    assert table.schema == schema and table.to_pylist() == [flat_row(record)]


def test_rows_go_out_before_the_last_unit_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Streamed, not gathered: the first row group is written while later units are still unread."""
    monkeypatch.setattr(compact_module, "CHUNK_BYTES", 2_000)
    monkeypatch.setattr(compact_module, "ROW_GROUP_BYTES", 5_000)
    for unit in range(4):
        commit_unit(tmp_path / "out", "ztf", f"c{unit}", [ztf(58000.0 + unit + k / 100) for k in range(30)])
    events: list[str] = []
    open_object, write_group = ObjectStore.open, compact_module._write_group

    def opened(store: ObjectStore, key: str) -> Any:
        events.append(f"read {key.split('/')[2]}")
        return open_object(store, key)

    def written(*args: Any) -> int:
        events.append("row group")
        return write_group(*args)

    monkeypatch.setattr(ObjectStore, "open", opened)
    monkeypatch.setattr(compact_module, "_write_group", written)
    compact("ztf", str(tmp_path / "out"), tmp_path / "ztf.parquet")
    assert events.index("row group") < events.index("read c3")


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_a_unit_object_gives_back_the_keys_of_the_records_it_holds(suffix: str) -> None:
    """What a worker reads back from a data object an earlier attempt left (it adopts it):
    the same keys, in the same order, whichever layout the object has."""
    from harvester.executors.worker import _encode, _keys_in

    records = [ztf(58000.0 + i / 7, mag=None if i % 4 == 0 else 18.0) for i in range(12)]
    lines = [(r.dedup_key(), dumps_record(r) + b"\n") for r in records]
    body = _encode("ztf", lines, suffix)
    assert _keys_in("ztf", body, suffix) == [r.dedup_key() for r in records]
