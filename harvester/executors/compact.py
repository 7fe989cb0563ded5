"""``harvester compact``: merge committed work units into one Parquet file, deduplicated.

Only units with a manifest (the commit marker) are read, and each data object must match the
sha256 in its manifest. Records are deduplicated across units and runs on the source's dedup key
(cones at cell edges can fetch the same epochs in two units); the first unit in key order wins.

The merge streams: one unit's object is read at a time; records become Arrow columns every
:data:`CHUNK_BYTES` of JSON, and a row group is written every :data:`ROW_GROUP_BYTES` of Arrow
data. Memory holds one unit, one chunk as Python objects, one row group as Arrow columns and a
16-byte digest per distinct record (about 100 bytes each with its set slot), whatever the size of
the output.

The Parquet schema comes from the record model (``docs/schema.md``), not from the data, so every
file of a source has the same columns and types, even when a column is null in every row:
``str``/``Literal`` → string, ``float`` → float64, ``int`` → int64, ``bool`` → bool,
``datetime`` → timestamp[us, UTC], ``list[float]`` → list<float64> (TESS ``time``, ``flux``,
``flux_err``). Required fields are non-nullable. ``provenance`` is flattened into
``provenance_archive``, ``provenance_url``, ``provenance_service`` and ``provenance_sample``, the
columns of ``harvester.to_table`` and ``to_pandas``.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import types
import typing
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import BaseModel, ValidationError

from harvester import archives
from harvester.errors import ConfigError, OutputError
from harvester.io.files import TMP_SUFFIX, fsync_folder, fsync_path, make_folder, output_error
from harvester.io.objectstore import ObjectStore
from harvester.records import BaseRecord, key_digest

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["CHUNK_BYTES", "ROW_GROUP_BYTES", "arrow_schema", "committed_records", "compact", "flat_row"]

#: JSON bytes of records turned into Arrow columns at once (a TESS light curve is ~1 MB of JSON;
#: a ZTF epoch ~650 bytes, ~2.6 KB as Python objects).
CHUNK_BYTES = 4 * 1024 * 1024
#: Arrow bytes per Parquet row group (~130,000 ZTF epochs).
ROW_GROUP_BYTES = 32 * 1024 * 1024


class Dropped:
    """Records left out as duplicates of one already kept (counted while streaming)."""

    def __init__(self) -> None:
        self.count = 0


def committed_records(
    source: str, root: str, dropped: Dropped | None = None
) -> Iterator[tuple[BaseRecord, int]]:
    """Every committed unit's records, validated, first occurrence of each dedup key only, in a
    deterministic order, as (record, size of its JSON line); ``dropped`` counts the duplicates."""
    store = ObjectStore(root)
    model = archives.record_model(source)
    manifests = store.list(f"_units/{source}")
    if not manifests:
        raise ConfigError(f"no committed {source} units under {root}: nothing to compact (is --input right?)")
    seen: set[bytes] = set()
    for key in manifests:
        manifest = orjson.loads(store.get(key) or b"{}")
        data = manifest["data"]
        body = hashlib.sha256()
        # streamed: a unit's object can be large (a TESS bucket); its records are checked against
        # the manifest's sha256 once read, before the output file is put in place
        with store.open(data) as fh:
            for number, line in enumerate(fh, 1):
                body.update(line)
                if not line.strip():
                    continue
                try:
                    record = model.model_validate_json(line)
                except ValidationError as exc:
                    problem = exc.errors()[0]
                    where = ".".join(str(p) for p in problem["loc"]) or "line"
                    raise OutputError(
                        f"unit data {data} line {number} is not a valid {source} record: "
                        f"{where}: {problem['msg']}"
                    ) from None
                digest = key_digest(record.dedup_key())
                if digest in seen:
                    if dropped is not None:
                        dropped.count += 1
                    continue
                seen.add(digest)
                yield record, len(line)
        if body.hexdigest() != manifest["sha256"]:
            raise OutputError(f"unit data {data} does not match its manifest (sha256)")


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    """The Parquet schema of a record model (see the module's docstring for the mapping)."""
    import pyarrow as pa

    fields = []
    for name, info in model.model_fields.items():
        inner, nullable = _unwrap_optional(info.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):  # flattened: name_subfield
            for sub, sub_info in inner.model_fields.items():
                field = _arrow_field(f"{name}_{sub}", sub_info.annotation)
                fields.append(field.with_nullable(field.nullable or nullable))
        else:
            fields.append(_arrow_field(name, info.annotation))
    return pa.schema(fields)


def flat_row(record: BaseModel) -> dict[str, Any]:
    """A record as one Parquet row: nested models flattened as in :func:`arrow_schema`."""
    row: dict[str, Any] = {}
    for name, value in record.model_dump().items():
        if isinstance(value, dict):
            row.update({f"{name}_{sub}": v for sub, v in value.items()})
        else:
            row[name] = value
    return row


def _arrow_field(name: str, annotation: Any) -> pa.Field:
    import pyarrow as pa

    inner, nullable = _unwrap_optional(annotation)
    return pa.field(name, _arrow_type(inner), nullable=nullable)


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"no Parquet type for the union {annotation!r}")
        return args[0], True
    return annotation, False


def _arrow_type(annotation: Any) -> pa.DataType:
    import pyarrow as pa

    origin = typing.get_origin(annotation)
    if origin is Literal:
        kinds = {type(v) for v in typing.get_args(annotation)}
        if len(kinds) != 1:
            raise TypeError(f"no Parquet type for the literal {annotation!r}")
        return _arrow_type(kinds.pop())
    if origin is list:
        (item,) = typing.get_args(annotation)
        inner, nullable = _unwrap_optional(item)
        return pa.list_(pa.field("item", _arrow_type(inner), nullable=nullable))
    scalars: dict[Any, pa.DataType] = {
        str: pa.string(),
        float: pa.float64(),
        int: pa.int64(),
        bool: pa.bool_(),
        datetime: pa.timestamp("us", tz="UTC"),
    }
    if annotation in scalars:
        return scalars[annotation]
    raise TypeError(f"no Parquet type for {annotation!r}")


def compact(source: str, root: str, output: Path) -> tuple[int, int]:
    """Write ``output`` (Parquet) from the committed units under ``root``; (records, duplicates).

    The file appears complete or not at all: it is written under a hidden temporary name, flushed
    to disk, then renamed over ``output``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(archives.record_model(source))
    dropped = Dropped()
    rows = committed_records(source, root, dropped)
    written = 0
    try:
        make_folder(output.parent)
        _remove_stale_temporaries(output)
    except OSError as exc:
        raise output_error(output.parent, exc) from None
    tmp = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            chunk: list[dict[str, Any]] = []
            group: list[pa.RecordBatch] = []
            chunk_size = group_size = 0
            for record, length in rows:
                chunk.append(flat_row(record))
                chunk_size += length
                if chunk_size >= CHUNK_BYTES:
                    group.append(pa.RecordBatch.from_pylist(chunk, schema=schema))
                    group_size += group[-1].nbytes
                    chunk, chunk_size = [], 0
                    if group_size >= ROW_GROUP_BYTES:
                        written += _write_group(writer, group, schema)
                        group, group_size = [], 0
            group.append(pa.RecordBatch.from_pylist(chunk, schema=schema))
            written += _write_group(writer, group, schema)
        fsync_path(tmp)
        tmp.replace(output)
    except OSError as exc:
        raise output_error(output.parent, exc) from None
    except pa.ArrowException as exc:  # a value the model allows but Arrow refuses: a bug, in one line
        raise OutputError(f"cannot write {output}: {type(exc).__name__}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_folder(output.parent)
    return written, dropped.count


def _remove_stale_temporaries(output: Path) -> None:
    """Temporary files of compacts into ``output`` that were killed more than an hour ago."""
    now = time.time()
    for leftover in output.parent.glob(f".{output.name}.*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            if now - leftover.stat().st_mtime > 3600:
                leftover.unlink()


def _write_group(writer: Any, batches: list[pa.RecordBatch], schema: pa.Schema) -> int:
    """Write ``batches`` as one row group; the number of rows."""
    import pyarrow as pa

    table = pa.Table.from_batches(batches, schema=schema)
    rows: int = table.num_rows
    writer.write_table(table, row_group_size=max(1, rows))
    return rows
