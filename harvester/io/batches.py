"""Records as columns: the batch that travels the columnar record path.

A :class:`Batch` is the records of one source as one Arrow table in the record model's flat
schema (:func:`harvester.io.arrow.arrow_schema`: one column per field, ``provenance`` flattened),
one row per record. A source that can build its records column by column (ZTF parses an IRSA CSV
with a vectorised reader) emits batches instead of one model per record; the pipeline dedups them
on their key columns and the writers write them without building a model per row:

- Parquet: the table itself;
- jsonl and per-record JSON: :meth:`Batch.json_text` (:meth:`Batch.json_lines`), byte for byte what
  :func:`harvester.io.writers.dumps_record` writes for the same record (same field order, the same
  float and time forms, null for missing values).

The record models stay the documented schema: a batch is built to the model's schema and checked
against it, and :meth:`Batch.records` gives the validated models (``stream()``, notebooks, the
sample record of a dry run).
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from harvester.io.arrow import arrow_schema
from harvester.records import (
    KEY_SEPARATOR,
    BaseRecord,
    alternate_part,
    key_columns,
    key_from_text,
    key_part,
    key_text,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Batch", "Key", "batch_from_columns", "constant", "parquet_keys"]

#: A record's dedup key (:meth:`harvester.records.BaseRecord.dedup_key`).
Key = tuple[str, ...]


class Batch:
    """Records of one model as one Arrow table of the model's flat schema, with their dedup keys
    (worked out once, from the key columns)."""

    __slots__ = ("_json", "_keys", "_texts", "model", "table")

    def __init__(
        self,
        model: type[BaseRecord],
        table: pa.Table,
        keys: list[Key] | None = None,
        json: tuple[bytes | memoryview, Any] | None = None,
        texts: list[str] | None = None,
    ) -> None:
        self.model = model
        self.table = table
        self._keys = keys
        #: the keys' text form (:func:`harvester.records.key_text`), once worked out
        self._texts = texts
        #: the JSON text once worked out (:meth:`encode_json`), with the end of each line
        self._json = json

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def __repr__(self) -> str:
        return f"Batch({self.model.__name__}, {len(self)} rows)"

    @property
    def keys(self) -> list[Key]:
        """Each row's dedup key, as :meth:`BaseRecord.dedup_key` gives it for the same record."""
        if self._keys is None:
            if self._texts is not None:
                self._keys = list(map(key_from_text, self._texts))
            else:
                parts = [self._key_part(name) for name in self.model.key_fields]
                self._keys = list(zip(*parts, strict=True))
        return self._keys

    @property
    def key_texts(self) -> list[str]:
        """Each row's dedup key as one text (:func:`harvester.records.key_text`): what the
        pipeline's dedup stage and the ledger work on. Built column by column (polars joins
        the key columns) when every key part is a string, an integer or a double that Python
        prints without an exponent; otherwise from :attr:`keys`."""
        if self._texts is None:
            texts = None if self._keys is not None else _vector_key_texts(self.model, self.table)
            self._texts = texts if texts is not None else list(map(key_text, self.keys))
        return self._texts

    def _key_part(self, name: str) -> list[str]:
        column = self.table.column(name)
        alternate = self.model.key_alternates.get(name)
        if column.null_count == 0:
            return _key_strings(column.to_pylist())
        if alternate is None or alternate[0] not in self.table.schema.names:
            raise ValueError(f"key field {name} is null")
        names = self.table.schema.names
        others = [self.table.column(a).to_pylist() if a in names else [None] * len(self) for a in alternate]
        return [
            key_part(value) if value is not None else alternate_part(alternate, [o[i] for o in others])
            for i, value in enumerate(column.to_pylist())
        ]

    def take(self, rows: Sequence[int]) -> Batch:
        """The rows at ``rows`` (in that order), keys kept, and the JSON text too when ``rows``
        go up (the dedup stage's positions do)."""
        import numpy as np
        import pyarrow as pa

        picked = np.asarray(rows, np.int64)
        if len(picked) == len(self) and bool(np.all(picked == np.arange(len(self)))):
            return self
        keys = None if self._keys is None else [self._keys[i] for i in rows]
        texts = self.key_texts
        json = None
        if self._json is not None and (len(picked) < 2 or bool(np.all(np.diff(picked) > 0))):
            json = _take_lines(*self._json, picked)
        return Batch(self.model, self.table.take(pa.array(picked)), keys, json, [texts[i] for i in rows])

    def slice(self, start: int, stop: int) -> Batch:
        """Rows ``start`` to ``stop`` (not included), with their keys and JSON text if known."""
        stop = max(start, min(stop, len(self)))
        keys = None if self._keys is None else self._keys[start:stop]
        texts = None if self._texts is None else self._texts[start:stop]
        json = None
        if self._json is not None:
            text, ends = self._json
            first = int(ends[start - 1]) + 1 if start else 0
            last = int(ends[stop - 1]) + 1 if stop else 0
            json = (memoryview(text)[first:last], ends[start:stop] - first)  # a view: no copy
        return Batch(self.model, self.table.slice(start, stop - start), keys, json, texts)

    def column_max(self, name: str) -> float | None:
        """The largest value of a numeric column (None when it is empty or all null)."""
        import pyarrow.compute as pc

        value = pc.max(self.table.column(name)).as_py()
        return None if value is None else float(value)

    def json_text(self) -> bytes:
        """Every record as one line of compact JSON (with a final newline), byte for byte what
        ``dumps_record`` writes for each model: the same field order, numbers, escapes and times.

        Written by polars' JSON encoder (``struct.json_encode``: columnar, in Rust) from a table
        shaped like the model (``provenance`` as a struct, times as their ISO text); tested value
        for value against orjson, which writes the record files of the record-at-a-time path.
        Worked out once (:meth:`encode_json`) and kept: slices of this batch share it."""
        return bytes(self.json_buffer())

    def json_buffer(self) -> bytes | memoryview:
        """:meth:`json_text` without a copy: a slice's text is a view into its batch's."""
        if self._json is None:
            self.encode_json()
            assert self._json is not None
        return self._json[0]

    @property
    def json_ready(self) -> bool:
        """Whether :meth:`json_text` is already worked out."""
        return self._json is not None

    def encode_json(self) -> None:
        """Work out :meth:`json_text` now and keep it, with where each line ends, so slices of
        this batch (a shard's worth) cut the text instead of encoding again. The pipeline calls
        it on a worker thread before the writer needs it."""
        if self._json is not None:
            return
        import numpy as np

        if not len(self):
            self._json = (b"", np.zeros(0, np.int64))
            return
        import polars as pl
        import pyarrow as pa

        frame = pl.from_arrow(_json_table(self.model, self.table))
        assert isinstance(frame, pl.DataFrame)
        # Each row's object and its newline as one string column: its data buffer is the text
        # and its offsets are where the lines end. polars escapes a newline inside a value
        # (tests/io/test_batches.py), so no line is checked for one here. ≈ 1.5x less CPU than
        # write_ndjson into a buffer and a scan of that for the newlines.
        line = pl.concat_str([pl.struct(pl.all()).struct.json_encode(), pl.lit("\n")])
        lines = frame.select(line).to_series().to_arrow()
        if isinstance(lines, pa.ChunkedArray):
            lines = lines.combine_chunks()
        if lines.type != pa.large_string():
            lines = lines.cast(pa.large_string())
        if lines.null_count:  # one line a row, from the same frame: only a null can be missing
            raise ValueError(f"{self!r}: {lines.null_count} records have no JSON text")
        _, offsets, data = lines.buffers()
        bounds = np.frombuffer(offsets, np.int64, count=len(lines) + 1, offset=8 * lines.offset)
        first = int(bounds[0])
        text = memoryview(data).cast("B")  # pyarrow exports signed bytes; a view like bytes
        self._json = (text[first : int(bounds[-1])], bounds[1:] - first - 1)

    def json_lines(self) -> list[bytes]:
        """Each record as compact JSON (no newline), as :meth:`json_text` writes it."""
        return self.json_text().split(b"\n")[:-1]

    def json_views(self) -> Iterator[memoryview]:
        """Each record's line of :meth:`json_text`, newline included, as a view into the text
        (no copy): a record file's bytes."""
        text = memoryview(self.json_buffer())
        assert self._json is not None  # worked out by json_buffer()
        start = 0
        for end in (self._json[1] + 1).tolist():
            yield text[start:end]
            start = end

    def rows(self) -> Iterator[dict[str, Any]]:
        """Each record as the dict ``model.model_dump()`` gives (nested provenance)."""
        n = self.table.num_rows
        names, columns = [], []
        for name, column in _json_columns(self.model, self.table):
            names.append(name)
            columns.append([column.value] * n if isinstance(column, _Constant) else column.values)
        for row in zip(*columns, strict=True):
            yield dict(zip(names, row, strict=True))

    def records(self) -> list[BaseRecord]:
        """The validated models (slow: one model per row; for notebooks and ``stream()``)."""
        return [self.model.model_validate(row) for row in self.rows()]


def keep_ctrl_c_from_polars() -> None:
    """Import polars and leave Ctrl-C to the run's own handler.

    polars hooks SIGINT when first imported (chained to the handler already there) and then
    raises KeyboardInterrupt inside whatever query runs next, on any thread. In a run that is a
    worker thread encoding a batch or a shard: a run cancelled by Ctrl-C would print that thread's
    traceback and lose the shard a persist lane was writing. The run's own handler (asyncio's,
    the daemon's) already cancels it cleanly, and harvester's queries take milliseconds, so the
    Python-level handler is installed again (``signal.signal`` with the handler Python has on
    record), which removes the hook. Only the main thread may set handlers: elsewhere (a Dask
    worker's thread) this only imports polars. Called when the ZTF source is imported (the one
    source whose records travel as batches), that is when a run builds its sources, before
    anything runs concurrently; runs of the other sources never import polars. Idempotent.
    """
    import polars  # noqa: F401

    if threading.current_thread() is not threading.main_thread():
        return
    handler = signal.getsignal(signal.SIGINT)
    if handler is not None:  # None: not installed from Python, nothing to put back
        signal.signal(signal.SIGINT, handler)


def _vector_key_texts(model: type[BaseRecord], table: pa.Table) -> list[str] | None:
    """The key texts of ``table``'s rows joined by polars, or None when a key part could print
    otherwise than :func:`harvester.records.key_part` does: a null (an alternate stands in), a
    type other than string, integer or float64, or a double outside [1e-4, 1e16) or zero (where
    Python's ``repr`` takes an exponent or a sign that polars writes another way; inside that
    range both write the shortest digits that read back exactly, tested on random doubles)."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.compute as pc

    if not table.num_rows:
        return []
    columns: dict[str, Any] = {}
    parts = []
    for i, name in enumerate(model.key_fields):
        column = table.column(name)
        kind = column.type
        if column.null_count:
            return None
        if pa.types.is_floating(kind):
            if kind != pa.float64():
                return None
            size = pc.abs(column)
            inside = pc.and_(pc.greater_equal(size, 1e-4), pc.less(size, 1e16))
            if not pc.all(inside).as_py():  # also false for NaN
                return None
            parts.append(pl.col(f"k{i}").cast(pl.String))
        elif pa.types.is_integer(kind):
            parts.append(pl.col(f"k{i}").cast(pl.String))
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            if pc.any(pc.match_substring(column, KEY_SEPARATOR)).as_py():
                return None  # the text would not split back into the same parts
            parts.append(pl.col(f"k{i}"))
        else:
            return None
        columns[f"k{i}"] = column
    frame = pl.from_arrow(pa.table(columns))
    assert isinstance(frame, pl.DataFrame)
    return frame.select(pl.concat_str(parts, separator=KEY_SEPARATOR)).to_series().to_list()


def _take_lines(text: bytes | memoryview, ends: Any, rows: Any) -> tuple[bytes, Any]:
    """The lines ``rows`` (increasing) of ``text`` whose lines end at ``ends``, with their ends."""
    import numpy as np

    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1  # each line with its newline
    keep = np.zeros(len(ends), bool)
    keep[rows] = True
    picked = np.frombuffer(text, np.uint8)[np.repeat(keep, lengths)].tobytes()
    return picked, np.cumsum(lengths[rows]) - 1


def _key_strings(values: list[Any]) -> list[str]:
    if values and all(type(v) is str for v in values):
        return values
    if all(type(v) is float for v in values):
        return list(map(float.__repr__, values))
    return list(map(key_part, values))


class _Constant:
    """A column whose rows all hold one value."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _Values:
    """A column's Python values."""

    __slots__ = ("values",)

    def __init__(self, values: list[Any]) -> None:
        self.values = values


def _json_columns(model: type[BaseRecord], table: pa.Table) -> list[tuple[str, _Constant | _Values]]:
    """The model's top-level fields in ``model_dump`` order, each with its values (a nested
    model's values as dicts)."""
    n = table.num_rows
    out: list[tuple[str, _Constant | _Values]] = []
    for name, subfields in _dump_plan(model):
        if subfields is None:
            out.append((name, _constant_or_list(table.column(name))))
            continue
        parts = [_constant_or_list(table.column(f"{name}_{sub}")) for sub in subfields]
        shared = [p for p in parts if isinstance(p, _Constant)]
        if len(shared) == len(parts):  # one value for the whole batch: one dict
            out.append((name, _Constant({sub: p.value for sub, p in zip(subfields, shared, strict=True)})))
        else:
            lists = [[p.value] * n if isinstance(p, _Constant) else p.values for p in parts]
            dicts = [dict(zip(subfields, values, strict=True)) for values in zip(*lists, strict=True)]
            out.append((name, _Values(dicts)))
    return out


def _constant_or_list(column: pa.ChunkedArray) -> _Constant | _Values:
    """A column whose rows all hold one value (a batch's provenance, its fetch time) as that
    value, else its values. Numbers are listed directly: checking them would cost more than it
    saves."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return _Values(column.to_pylist())
    nulls = column.null_count
    if len(column) and (nulls == len(column) or (nulls == 0 and pc.count_distinct(column).as_py() == 1)):
        return _Constant(_utc(column[0].as_py()))
    if pa.types.is_timestamp(kind):
        return _Values([_utc(v) for v in column.to_pylist()])
    return _Values(column.to_pylist())


def _utc(value: Any) -> Any:
    """pyarrow's UTC datetimes carry ``zoneinfo.ZoneInfo("UTC")``; the same instant with
    ``datetime.UTC`` prints the same (``+00:00``) and orjson formats it ~10× faster."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value


def _json_table(model: type[BaseRecord], table: pa.Table) -> pa.Table:
    """``table`` in the shape ``model_dump`` gives: top-level fields in order, a nested model as
    a struct column, a time as the text orjson writes for it (ISO 8601, ``+00:00``)."""
    import pyarrow as pa

    columns: dict[str, Any] = {}
    for name, subfields in _dump_plan(model):
        if subfields is None:
            columns[name] = _json_ready(table.column(name))
        else:
            parts = [_json_ready(table.column(f"{name}_{sub}")).combine_chunks() for sub in subfields]
            columns[name] = pa.StructArray.from_arrays(parts, names=list(subfields))
    return pa.table(columns)


def _json_ready(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A time column as orjson's text for each value (one conversion when every row shares it)."""
    import pyarrow as pa

    if not pa.types.is_timestamp(column.type):
        return column
    part = _constant_or_list(column)
    if isinstance(part, _Constant):
        text = None if part.value is None else orjson.dumps(part.value)[1:-1].decode()
        return pa.chunked_array([pa.repeat(pa.scalar(text, pa.string()), len(column))])
    texts = [None if v is None else orjson.dumps(v)[1:-1].decode() for v in part.values]
    return pa.chunked_array([pa.array(texts, pa.string())])


@functools.cache
def _dump_plan(model: type[BaseRecord]) -> list[tuple[str, tuple[str, ...] | None]]:
    """The model's fields in ``model_dump`` order; for a nested model, its field names."""
    from pydantic import BaseModel

    from harvester.io.arrow import _unwrap_optional

    plan: list[tuple[str, tuple[str, ...] | None]] = []
    for name, info in model.model_fields.items():
        inner, _nullable = _unwrap_optional(info.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            plan.append((name, tuple(inner.model_fields)))
        else:
            plan.append((name, None))
    return plan


def batch_from_columns(
    model: type[BaseRecord], columns: dict[str, pa.Array | pa.ChunkedArray], rows: int
) -> Batch:
    """A batch of ``rows`` records of ``model`` from named Arrow columns of the flat schema;
    a column not given holds the field's default (null for a nullable field without one)."""
    import pyarrow as pa

    schema = arrow_schema(model)
    arrays = []
    for field in schema:
        column = columns.get(field.name)
        if column is None:
            default = _default(model, field.name)
            column = pa.nulls(rows, field.type) if default is None else constant(default, rows, field.type)
        arrays.append(column)
    return Batch(model, pa.Table.from_arrays(arrays, schema=schema))


def parquet_keys(model: type[BaseRecord], data: bytes) -> list[Key]:
    """The dedup keys of a harvester Parquet file of ``model``, in row order.

    ValueError when it is not one: unreadable, columns other than the model's, or a null key
    part. A file written before fields were appended to the model (its columns a prefix of
    today's, every key field among them) is one: outputs stay valid as the schema grows.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))  # its footer, read once
        names = parquet.schema_arrow.names
        expected = arrow_schema(model).names
        if names != expected[: len(names)] or any(f not in names for f in model.key_fields):
            raise ValueError("not this model's columns")
        table = parquet.read(columns=[c for c in key_columns(model) if c in names])
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(str(exc)) from None
    return Batch(model, table).keys


def _default(model: type[BaseRecord], name: str) -> Any:
    """A top-level field's default value, or None (no default, or a null one)."""
    info = model.model_fields.get(name)
    if info is None or info.is_required():
        return None
    return info.get_default(call_default_factory=True)


def constant(value: Any, rows: int, type_: pa.DataType) -> pa.Array:
    """One value repeated ``rows`` times, as an Arrow array of ``type_``."""
    import pyarrow as pa

    return pa.repeat(pa.scalar(value, type_), rows)
