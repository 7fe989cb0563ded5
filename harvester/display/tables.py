"""Records as tables and arrays: astropy ``Table``, pandas ``DataFrame``, ``Quantity``/``Time``, lightkurve.

::

    records = [r async for r in harvester.stream("ztf", offline=True, limit=100)]
    table = harvester.to_table(records)                # one row per record, units from the schema
    df = harvester.to_dataframe(records)               # the same columns (pandas, installed separately)

    tess = [r async for r in harvester.stream("tess", offline=True, limit=2)]
    time, flux, flux_err = harvester.tess_arrays(tess[0])   # Time (TDB, JD), Quantity (electron / s)
    lc = harvester.to_lightcurve(tess[0])              # a lightkurve.LightCurve, when lightkurve is installed
    cadences = harvester.to_table(tess, cadences=True) # one row per cadence of every light curve

Columns follow the record models (``docs/schema.md``) in declaration order, with each field's unit
and description; ``provenance`` is flattened into ``provenance_archive``, ``provenance_url``,
``provenance_service`` and ``provenance_sample``. A null becomes a masked value (pandas: ``NaN``,
``<NA>`` for integers). ``fetched_at`` is an astropy ``Time`` (UTC).

**TESS time.** Records hold BTJD = BJD_TDB − 2457000. astropy has no ``btjd`` time format, so
:func:`tess_arrays` returns ``Time(time + 2457000, format="jd", scale="tdb")``: a barycentric
Julian date in TDB. ``t.jd - 2457000`` gives BTJD back. (:func:`to_lightcurve` switches the format
to lightkurve's own ``"btjd"``, which lightkurve registers with astropy when imported.)

pandas and lightkurve are optional: they are imported only when called, and a missing one raises
:class:`ImportError` saying how to install it. astropy is imported on first use, too, so
``import harvester`` stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from harvester import archives
from harvester.archives.tess.records import TessRecord
from harvester.records import BaseRecord, Provenance

if TYPE_CHECKING:
    import lightkurve  # type: ignore[import-untyped, import-not-found, unused-ignore]
    import pandas  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from astropy.table import Table
    from astropy.time import Time
    from astropy.units import Quantity, UnitBase

__all__ = [
    "BTJD_OFFSET",
    "TessArrays",
    "read_records",
    "tess_arrays",
    "to_dataframe",
    "to_lightcurve",
    "to_table",
]

#: BTJD = BJD_TDB − BTJD_OFFSET (the TESS mission's offset, TESS Science Data Products document).
BTJD_OFFSET = 2457000.0

#: Unit strings of the record schema that astropy does not parse as written.
_UNIT_ALIASES = {"e-/s": "electron / s"}
_CADENCE_FIELDS = ("time", "flux", "flux_err")


class TessArrays(NamedTuple):
    """One TESS light curve as astropy objects; unpacks as ``time, flux, flux_err``."""

    time: Time
    """Mid-cadence times: ``Time(btjd + 2457000, format="jd", scale="tdb")`` (BJD, TDB)."""
    flux: Quantity
    """Flux of the record's ``flux_column``, electron / s."""
    flux_err: Quantity
    """Flux uncertainty, electron / s; NaN where the file had NaN (null in the record)."""


def _require(module: str, caller: str, how: str) -> ModuleType:
    """Import an optional dependency, or raise ImportError naming the caller and the fix."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"harvester.{caller}() needs {module}, which is not installed: {how}") from exc


def _unit(name: str) -> UnitBase | None:
    import astropy.units as u

    return u.Unit(_UNIT_ALIASES.get(name, name)) if name else None


def _one_source(records: list[BaseRecord]) -> type[BaseRecord]:
    sources = sorted({r.source for r in records})
    if len(sources) > 1:
        raise ValueError(f"records from several sources ({', '.join(sources)}): make one table per source")
    return archives.record_model(sources[0])


_FILL = {"string": "", "integer": 0, "number": 0.0, "boolean": False}


def _json_type(prop: dict[str, Any]) -> str:
    """The non-null JSON-schema type of a field ("number" when it cannot tell)."""
    kinds = [p.get("type") for p in prop.get("anyOf", [prop])]
    return next((str(k) for k in kinds if k in _FILL), "number")


def _column(name: str, values: list[Any], prop: dict[str, Any], description: str) -> Any:
    """A Column, or a MaskedColumn when some values are null (typed from the schema, not the data)."""
    import numpy as np
    from astropy.table import Column, MaskedColumn

    unit = _unit(str(prop.get("unit", "")))
    mask = [v is None for v in values]
    if not any(mask):
        return Column(values, name=name, unit=unit, description=description)
    kind = _json_type(prop.get("items", prop) if prop.get("type") == "array" else prop)
    fill = _FILL[kind]  # hidden by the mask; gives an all-null column its schema's dtype
    data = np.array([fill if v is None else v for v in values])
    return MaskedColumn(data, mask=mask, name=name, unit=unit, description=description)


def to_table(records: Iterable[BaseRecord], *, cadences: bool = False) -> Table:
    """An astropy :class:`~astropy.table.Table` of records of one source.

    :param records: records of one source (a list, or any iterable: it is read once).
    :param cadences: TESS only. ``False`` (default): one row per light curve, metadata columns
        only (``time``, ``flux`` and ``flux_err`` are left out, their lengths differ between
        records). ``True``: one row per cadence, with the light curve's metadata repeated and
        ``time`` (BTJD, d), ``flux`` and ``flux_err`` (electron / s) as columns.
    :returns: one column per model field, with the schema's unit and description; an empty
        ``Table`` (no columns) when there are no records.
    :raises ValueError: records of several sources, or ``cadences=True`` for a source other than TESS.
    """
    from astropy.table import Table
    from astropy.time import Time

    rows = list(records)
    if not rows:
        return Table()
    model = _one_source(rows)
    if cadences and model is not TessRecord:
        raise ValueError(f"cadences=True is for TESS light curves, not {rows[0].source!r} records")
    schema = model.model_json_schema()
    props, provenance = schema["properties"], schema["$defs"]["Provenance"]["properties"]
    table = Table()
    for name, field in model.model_fields.items():
        description = " ".join((field.description or "").split())
        if name == "fetched_at":
            table[name] = Time([r.fetched_at for r in rows], scale="utc")
            table[name].info.description = description
        elif name == "provenance":
            for key, about in Provenance.model_fields.items():
                values = [getattr(r.provenance, key) for r in rows]
                column = f"provenance_{key}"
                table[column] = _column(column, values, provenance[key], about.description or "")
        elif name not in _CADENCE_FIELDS or model is not TessRecord:
            table[name] = _column(name, [getattr(r, name) for r in rows], props[name], description)
    if cadences:
        import numpy as np

        lengths = [len(r.time) for r in rows if isinstance(r, TessRecord)]
        table = table[np.repeat(np.arange(len(rows)), lengths)]  # each light curve's row, once per cadence
        for name in _CADENCE_FIELDS:
            field = TessRecord.model_fields[name]
            values = [v for r in rows for v in getattr(r, name)]
            description = " ".join((field.description or "").split())
            table[name] = _column(name, values, props[name], description)
    table.meta["source"] = rows[0].source
    return table


def to_dataframe(records: Iterable[BaseRecord], *, cadences: bool = False) -> pandas.DataFrame:
    """A pandas ``DataFrame`` with the columns of :func:`to_table` (units are not kept: see the schema).

    Nulls become ``NaN`` (``<NA>`` in integer columns, which use pandas' nullable ``Int64``);
    ``fetched_at`` becomes ``datetime64[ns]`` in UTC.

    :raises ImportError: pandas is not installed (it is optional: ``pip install pandas``).
    """
    _require("pandas", "to_dataframe", "`pip install pandas` (or `uv add pandas` in a uv project)")
    frame = to_table(records, cadences=cadences).to_pandas()
    if "fetched_at" in frame.columns and frame["fetched_at"].dt.tz is None:
        frame["fetched_at"] = frame["fetched_at"].dt.tz_localize("UTC")  # astropy drops the zone
    return frame


def tess_arrays(record: TessRecord) -> TessArrays:
    """A TESS light curve's cadences as astropy ``Time`` and ``Quantity`` arrays.

    ``time`` is ``Time(record.time + 2457000, format="jd", scale="tdb")``: astropy has no BTJD format,
    so the BTJD values are shifted to a full barycentric JD in TDB. Nulls in ``flux_err`` become NaN.
    """
    import astropy.units as u
    import numpy as np
    from astropy.time import Time

    if not isinstance(record, TessRecord):
        raise TypeError(f"tess_arrays() takes a TessRecord, not {type(record).__name__}")
    per_second = u.electron / u.s
    time = Time(np.asarray(record.time, dtype=np.float64) + BTJD_OFFSET, format="jd", scale="tdb")
    flux = np.asarray(record.flux, dtype=np.float64) * per_second
    flux_err = np.array([np.nan if v is None else v for v in record.flux_err], dtype=np.float64) * per_second
    return TessArrays(time, flux, flux_err)


def to_lightcurve(record: TessRecord) -> lightkurve.LightCurve:
    """A ``lightkurve.LightCurve`` of one TESS record, with its header facts in ``meta``.

    ``time`` is in TDB, shown in lightkurve's ``"btjd"`` format; ``meta`` holds ``OBJECT``, ``TICID``,
    ``SECTOR``, ``CAMERA``, ``CCD``, ``RA_OBJ``, ``DEC_OBJ``, ``TESSMAG``, ``MISSION``, ``FLUX_ORIGIN``,
    ``QUALITY_BITMASK`` and ``OBS_ID`` (so ``lc.sector`` works as for a lightkurve download).

    :raises ImportError: lightkurve is not installed (``pip install lightkurve``; in this repository
        ``uv sync --group bench``).
    """
    lk = _require(
        "lightkurve",
        "to_lightcurve",
        "`pip install lightkurve` (in the harvester repository: `uv sync --group bench`)",
    )
    time, flux, flux_err = tess_arrays(record)
    if "btjd" in time.FORMATS:  # lightkurve registers it with astropy on import: its plots then read BTJD
        time.format = "btjd"
    meta = {
        "OBJECT": f"TIC {record.tic_id}",
        "LABEL": f"TIC {record.tic_id}",
        "TARGETID": record.tic_id,
        "TICID": record.tic_id,
        "MISSION": "TESS",
        "SECTOR": record.sector,
        "CAMERA": record.camera,
        "CCD": record.ccd,
        "RA_OBJ": record.ra,
        "DEC_OBJ": record.dec,
        "TESSMAG": record.tess_mag,
        "FLUX_ORIGIN": record.flux_column.lower(),
        "QUALITY_BITMASK": record.quality_bitmask,
        "OBS_ID": record.obs_id,
    }
    return lk.LightCurve(time=time, flux=flux, flux_err=flux_err, meta=meta)


def read_records(folder: str | Path) -> list[BaseRecord]:
    """The records a harvest wrote to one source's folder (``<output>/<source>``), validated.

    Reads ``record_*.json`` files and ``part-*.jsonl`` shards (hidden temporary files are never
    read), in file-name order. Pass ``report.sources["ztf"].output`` after a harvest.
    """
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"no such output folder: {path}")
    from harvester.io.readers import iter_raw, record_files

    return [_validate(orjson.loads(raw.data)) for raw in iter_raw(record_files(path))]


def _validate(data: dict[str, Any]) -> BaseRecord:
    return archives.record_model(data["source"]).model_validate(data)
