"""``harvester compact``: merge committed work units into one Parquet file, deduplicated.

Only units with a manifest (the commit marker) are read, and each data object must match the
sha256 in its manifest. Records are deduplicated across units and runs on the source's dedup key
(cones at cell edges can fetch the same epochs in two units); the first unit in key order wins.

The merge streams: one unit's object is read at a time; records become Arrow columns every
:data:`CHUNK_BYTES` of JSON, and a row group is written every :data:`ROW_GROUP_BYTES` of Arrow
data. Memory holds one unit, one chunk as Python objects, one row group as Arrow columns and a
16-byte digest per distinct record (about 100 bytes each with its set slot), whatever the size of
the output.

The Parquet schema comes from the record model (:mod:`harvester.io.arrow`).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from harvester import archives
from harvester.errors import ConfigError, OutputError
from harvester.io.arrow import arrow_schema, parquet_options, records_table
from harvester.io.files import TMP_SUFFIX, fsync_folder, fsync_path, make_folder, output_error
from harvester.io.objectstore import ObjectStore
from harvester.records import BaseRecord, key_digest

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["CHUNK_BYTES", "ROW_GROUP_BYTES", "committed_records", "compact"]

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
        for number, line in _unit_lines(store, data, body):
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


def _unit_lines(store: ObjectStore, data: str, body: Any) -> Iterator[tuple[int, bytes]]:
    """A unit object's records as JSON text with their line (or row) number, feeding ``body``
    (a sha256) with the object's bytes. A jsonl object is streamed line by line (a TESS bucket
    can be large); a Parquet object is read whole, then row by row."""
    if data.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        from harvester.io.readers import iter_raw_parquet

        raw = store.get(data) or b""
        body.update(raw)
        try:
            shard = pq.ParquetFile(pa.BufferReader(raw))
        except pa.ArrowInvalid as exc:
            raise OutputError(f"unit data {data} is not a Parquet file ({exc})") from None
        yield from iter_raw_parquet(shard, data)
        return
    with store.open(data) as fh:
        for number, line in enumerate(fh, 1):
            body.update(line)
            if line.strip():
                yield number, line


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
        with pq.ParquetWriter(tmp, schema, **parquet_options(schema)) as writer:
            chunk: list[BaseRecord] = []
            group: list[pa.RecordBatch] = []
            chunk_size = group_size = 0
            for record, length in rows:
                chunk.append(record)
                chunk_size += length
                if chunk_size >= CHUNK_BYTES:
                    table = records_table(chunk, schema)
                    group.extend(table.to_batches())
                    group_size += table.nbytes
                    chunk, chunk_size = [], 0
                    if group_size >= ROW_GROUP_BYTES:
                        written += _write_group(writer, group, schema)
                        group, group_size = [], 0
            if chunk:
                group.extend(records_table(chunk, schema).to_batches())
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
