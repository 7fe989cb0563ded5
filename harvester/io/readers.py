"""Reading back what the writers wrote: one source folder's records, in one order.

A source folder holds per-record files (``record_<key>.json``), jsonl shards
(``part-<run>-<seq>.jsonl``) and Parquet shards (``part-<run>-<seq>.parquet``); hidden temporary
files (``.…tmp``) never match. Every reader of
records (:func:`harvester.read_records`, the feature tables and plots, the work-unit worker)
goes through :func:`record_files` and :func:`iter_raw`, so they agree on what a folder holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "RawRecord",
    "is_record_file",
    "iter_raw",
    "iter_raw_parquet",
    "iter_shard_records",
    "record_files",
]

_RECORD_FILE = re.compile(r"record_.+\.json|part-.+\.(jsonl|parquet)")


def is_record_file(name: str) -> bool:
    """A file name the writers produce: ``record_*.json``, ``part-*.jsonl`` or ``part-*.parquet``
    (not temporaries)."""
    return _RECORD_FILE.fullmatch(name) is not None


def record_files(folder: Path) -> list[Path]:
    """The record files of a source folder: per-record files, then jsonl and Parquet shards, each
    in name order."""
    files = [*sorted(folder.glob("record_*.json")), *sorted(folder.glob("part-*.jsonl"))]
    files += sorted(folder.glob("part-*.parquet"))
    return [f for f in files if f.is_file()]


@dataclass(frozen=True)
class RawRecord:
    """One record's JSON text and where it was read (``line`` is None for a per-record file)."""

    path: Path
    line: int | None
    data: bytes

    @property
    def where(self) -> str:
        return str(self.path) if self.line is None else f"{self.path} line {self.line}"


def iter_raw(files: Iterable[Path]) -> Iterator[RawRecord]:
    """Every record of ``files`` as JSON text, file by file and line by line (bounded memory);
    blank lines are skipped; a Parquet row is given as the JSON of its record (``line`` is its
    row number). An unreadable file raises OSError (``filename`` names it)."""
    for path in files:
        if path.suffix == ".parquet":
            yield from _parquet_rows(path)
        elif path.suffix == ".jsonl":
            with path.open("rb") as fh:
                for number, raw in enumerate(fh, start=1):
                    line = raw.strip()
                    if line:
                        yield RawRecord(path, number, line)
        else:
            yield RawRecord(path, None, path.read_bytes())


def iter_shard_records(folder: Path) -> Iterator[dict[str, Any]]:
    """Every record dict in a folder's jsonl shards (a work unit's staging output)."""
    shards = [f for f in record_files(folder) if f.suffix == ".jsonl"]
    for raw in iter_raw(shards):
        yield orjson.loads(raw.data)


def _parquet_rows(path: Path) -> Iterator[RawRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        shard = pq.ParquetFile(path)
    except pa.ArrowInvalid as exc:
        raise OSError(0, f"not a Parquet file ({exc})", str(path)) from None
    for number, data in iter_raw_parquet(shard, str(path)):
        yield RawRecord(path, number, data)


def iter_raw_parquet(shard: Any, where: str) -> Iterator[tuple[int, bytes]]:
    """The rows of a harvester Parquet file (a ``pyarrow.parquet.ParquetFile``) as the JSON of
    their records, with their row numbers, a batch in memory at a time."""
    from harvester.io.arrow import nested_row

    model = _model_of(shard.schema_arrow, where)
    number = 0
    for batch in shard.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield number, orjson.dumps(nested_row(row, model))


def _model_of(schema: Any, where: str) -> Any:
    from harvester import archives

    source = (schema.metadata or {}).get(b"harvester.source", b"").decode()
    if source not in archives.names():
        raise OSError(0, f"a Parquet file without a known harvester source ({source!r})", where)
    return archives.record_model(source)
