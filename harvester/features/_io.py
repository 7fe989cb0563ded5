"""Record readers and table writers for the feature and plot commands.

Owns: finding a source's record files under an input root (both layouts the harvester writes:
``record_*.json``, one record per file, and ``part-*.jsonl``, one record per line), parsing them
one at a time with orjson (never through the pydantic models, which would cost ~100× more for a
million epochs), and writing the CSV tables and their READMEs atomically (temporary file in the
same folder, then ``os.replace``), so a reader never sees a partial table.

Errors are :class:`FeatureInputError` (missing folder, no records, a file that is not JSON or not a
record of the source: the CLI's exit code 2) or :class:`harvester.errors.OutputError` (exit 1).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from harvester.errors import ConfigError
from harvester.io.files import atomic_open, write_bytes_atomic, write_text_atomic
from harvester.io.readers import iter_raw, record_files

__all__ = [
    "Column",
    "FeatureInputError",
    "FeatureOptions",
    "FeatureSummary",
    "RecordSource",
    "columns_markdown",
    "iter_records",
    "open_source",
    "write_bytes_atomic",
    "write_csv_atomic",
    "write_text_atomic",
]


class FeatureInputError(ConfigError):
    """The input folder is missing, holds no records of the source, or a file in it is not a record."""


@dataclass(frozen=True)
class Column:
    """One documented column of a feature table."""

    name: str
    unit: str
    meaning: str


@dataclass(frozen=True)
class FeatureOptions:
    """The tuning knobs of ``harvester features`` and ``harvester plot``; each archive's builder
    reads the ones it uses (named in the CLI help as ``ZTF:`` or ``TESS:``)."""

    chunk_records: int = 100_000
    ls_oversample: float = 5.0
    ls_max_frequencies: int = 200_000


@dataclass(frozen=True)
class FeatureSummary:
    """What a feature build read and wrote."""

    source: str
    records: int
    files: int
    rows: int
    table: Path
    readme: Path


@dataclass(frozen=True)
class RecordSource:
    """A source's record files under an input root, in a stable order (json files, then shards)."""

    source: str
    folder: Path
    files: tuple[Path, ...]


def open_source(input_root: Path, source: str) -> RecordSource:
    """The record files of ``source`` under ``input_root``; FeatureInputError if there are none."""
    folder = input_root / source
    if not folder.is_dir():
        raise FeatureInputError(f"no {source} records under {folder} (no such folder)")
    files = tuple(record_files(folder))
    if not files:
        raise FeatureInputError(f"no {source} records under {folder}")
    return RecordSource(source=source, folder=folder, files=files)


def iter_records(records: RecordSource, required: Sequence[str] = ()) -> Iterator[dict[str, Any]]:
    """Every record of ``records`` as a dict, file by file and line by line (bounded memory).

    Each record must be a JSON object whose ``source`` is the expected one and that has the
    ``required`` keys; anything else raises FeatureInputError naming the file (and line).
    """
    try:
        for raw in iter_raw(records.files):
            yield _checked(_loads(raw.data, raw.where), records.source, required, raw.path)
    except OSError as exc:
        raise FeatureInputError(f"cannot read {exc.filename}: {exc.strerror or exc}") from None


def _loads(data: bytes, where: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise FeatureInputError(f"{where}: not valid JSON ({exc})") from None


def _checked(obj: Any, source: str, required: Sequence[str], path: Path) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("source") != source:
        raise FeatureInputError(f"{path}: not a {source} record")
    missing = [key for key in required if key not in obj]
    if missing:
        raise FeatureInputError(f"{path}: {source} record without {', '.join(missing)}")
    return obj


def _cell(value: object) -> object:
    """A CSV cell: NaN (undefined) is the empty cell; floats round-trip exactly (repr)."""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return "" if value is None else value


def write_csv_atomic(path: Path, header: Sequence[str], rows: Iterator[Sequence[object]]) -> int:
    """Write a CSV table atomically; returns the number of data rows."""
    count = 0
    with atomic_open(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([_cell(v) for v in row])
            count += 1
    return count


def columns_markdown(columns: Sequence[Column]) -> str:
    """The columns as a Markdown table (used by the generated READMEs and docs/features.md)."""
    lines = ["| column | unit | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{c.name}` | {c.unit or '—'} | {c.meaning} |" for c in columns]
    return "\n".join(lines) + "\n"
