"""Quicklook PNGs of harvested light curves (matplotlib, Agg: no display needed).

Owns the figure layouts:

- ZTF, one PNG per object id: magnitude against MJD (UTC) with error bars, one colour per filter,
  magnitude axis inverted (brighter is up); flagged epochs (catflags ≠ 0) drawn hollow; null mags
  are not drawn. ``<output>/ztf/<object_id>.png``.
- TESS, one PNG per light curve: flux against time (BTJD) above its Lomb–Scargle periodogram
  (power against period, the grid of :func:`harvester.features.tess.frequency_grid`), with the
  best period marked. ``<output>/tess/<obs_id>.png``.

Figures are built on :class:`matplotlib.figure.Figure` directly (never pyplot), so no global
backend state is touched, and are written atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harvester.features._io import (
    FeatureInputError,
    FeatureOptions,
    iter_records,
    open_source,
    write_bytes_atomic,
)
from harvester.features.tess import (
    DEFAULT_MAX_FREQUENCIES,
    DEFAULT_OVERSAMPLE,
    clean_lightcurve,
    periodogram,
)
from harvester.records import stable_id

__all__ = ["plot_tess", "plot_ztf"]

_FILTER_COLOURS = {"zg": "#2ca02c", "zr": "#d62728", "zi": "#8c564b"}
_DPI = 110


def _selected(object_ids: Sequence[str], first: int | None) -> tuple[set[str], int | None]:
    if not object_ids and not first:
        raise FeatureInputError("give --object-id ID (repeatable) or --first N")
    return set(object_ids), first


def _collect(
    input_root: Path, source: str, object_ids: Sequence[str], first: int | None, required: tuple[str, ...]
) -> tuple[dict[str, list[dict[str, Any]]], Path]:
    """Records of the wanted objects, grouped by object id in the order first seen."""
    wanted, first = _selected(object_ids, first)
    records = open_source(input_root, source)
    found: dict[str, list[dict[str, Any]]] = {}
    for rec in iter_records(records, required):
        object_id = str(rec["object_id"])
        if object_id in found:
            found[object_id].append(rec)
        elif object_id in wanted or (first is not None and len(found) < first and not wanted):
            found[object_id] = [rec]
    missing = [i for i in object_ids if i not in found]
    if missing:
        raise FeatureInputError(f"no {source} records of object {', '.join(missing)} under {records.folder}")
    return found, records.folder


def _figure(height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(9.0, height), layout="constrained")


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    write_bytes_atomic(path, buf.getvalue())
    return path


def _floats(values: list[Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    try:
        return np.asarray(values, dtype=np.float64)  # None becomes NaN
    except (TypeError, ValueError):
        raise FeatureInputError("a record has a non-numeric value") from None


def ztf_figure(object_id: str, records: list[dict[str, Any]]) -> Any:
    """The ZTF quicklook figure of one object's records."""
    fig = _figure(4.5)
    ax = fig.add_subplot()
    for band in sorted({str(r["filter"]) for r in records}):
        rows = sorted((r for r in records if r["filter"] == band), key=lambda r: float(r["mjd"]))
        mjd = _floats([r["mjd"] for r in rows])
        mag = _floats([r.get("mag") for r in rows])
        err = _floats([r.get("magerr") for r in rows])
        flagged = np.array([(r.get("catflags") or 0) != 0 for r in rows], dtype=bool)
        ok = np.isfinite(mag) & np.isfinite(mjd)
        err = np.where(np.isfinite(err) & (err > 0), err, 0.0)
        colour = _FILTER_COLOURS.get(band, "#1f77b4")
        for sel, hollow in ((ok & ~flagged, False), (ok & flagged, True)):
            if not sel.any():
                continue
            label = f"{band} (n={int(sel.sum())})" if not hollow else f"{band} flagged (n={int(sel.sum())})"
            ax.errorbar(
                mjd[sel],
                mag[sel],
                yerr=err[sel],
                fmt="o",
                ms=4,
                color=colour,
                mfc="none" if hollow else colour,
                elinewidth=0.8,
                capsize=0,
                label=label,
            )
    ax.invert_yaxis()
    ax.set_xlabel("MJD (UTC)")
    ax.set_ylabel("PSF magnitude (AB)")
    ax.set_title(f"ZTF {object_id}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no finite magnitudes", transform=ax.transAxes, ha="center")
    return fig


def tess_figure(record: dict[str, Any], oversample: float, max_frequencies: int) -> Any:
    """The TESS quicklook figure of one light curve: flux and periodogram."""
    try:
        time, flux = clean_lightcurve(record["time"], record["flux"])
    except FeatureInputError as exc:
        raise FeatureInputError(f"{record.get('obs_id')}: {exc}") from None
    fig = _figure(6.5)
    top, bottom = fig.subplots(2, 1)
    top.plot(time, flux, ".", ms=1.5, color="#1f77b4")
    top.set_xlabel("Time (BTJD = BJD_TDB − 2457000)")
    top.set_ylabel(f"{record.get('flux_column') or 'flux'} (e-/s)")
    sector = record.get("sector")
    title = f"TIC {record['object_id']}" + (f", sector {sector}" if sector is not None else "")
    top.set_title(f"{title} ({record.get('obs_id')})")
    top.grid(alpha=0.3)
    pg = periodogram(time, flux, oversample, max_frequencies)
    if pg is None:
        bottom.text(0.5, 0.5, "too few points for a periodogram", transform=bottom.transAxes, ha="center")
    else:
        bottom.plot(1.0 / pg.frequency, pg.power, lw=0.7, color="#333333")
        bottom.set_xscale("log")
        if math.isfinite(pg.best_period):
            bottom.axvline(pg.best_period, color="#d62728", lw=1, ls="--")
            bottom.set_title(
                f"best period {pg.best_period:.5g} d, power {pg.best_power:.3f}", fontsize="medium"
            )
    bottom.set_xlabel("Period (d)")
    bottom.set_ylabel("Lomb–Scargle power")
    bottom.grid(alpha=0.3)
    return fig


def plot_ztf(
    input_root: Path, output_root: Path, object_ids: Sequence[str] = (), first: int | None = None
) -> list[Path]:
    """Write one ZTF quicklook PNG per object; returns the paths written."""
    found, _ = _collect(input_root, "ztf", object_ids, first, ("object_id", "filter", "mjd"))
    written = []
    for object_id, records in found.items():
        fig = ztf_figure(object_id, records)
        written.append(_save(fig, output_root / "ztf" / f"{stable_id((object_id,))}.png"))
    return written


def plot_tess(
    input_root: Path,
    output_root: Path,
    object_ids: Sequence[str] = (),
    first: int | None = None,
    oversample: float = DEFAULT_OVERSAMPLE,
    max_frequencies: int = DEFAULT_MAX_FREQUENCIES,
) -> list[Path]:
    """Write one TESS quicklook PNG per light curve of the objects; returns the paths written."""
    found, _ = _collect(input_root, "tess", object_ids, first, ("object_id", "obs_id", "time", "flux"))
    written = []
    for records in found.values():
        seen: set[str] = set()
        for record in sorted(records, key=lambda r: str(r["obs_id"])):
            obs_id = str(record["obs_id"])
            if obs_id in seen:
                continue
            seen.add(obs_id)
            fig = tess_figure(record, oversample, max_frequencies)
            written.append(_save(fig, output_root / "tess" / f"{stable_id((obs_id,))}.png"))
    return written


def plot_ztf_objects(
    input_root: Path, output_root: Path, object_ids: Sequence[str], first: int | None, options: FeatureOptions
) -> list[Path]:
    """The ZTF entry of ``harvester plot`` (the archive registry names it)."""
    return plot_ztf(input_root, output_root, object_ids, first)


def plot_tess_objects(
    input_root: Path, output_root: Path, object_ids: Sequence[str], first: int | None, options: FeatureOptions
) -> list[Path]:
    """The TESS entry of ``harvester plot`` (the archive registry names it)."""
    return plot_tess(
        input_root, output_root, object_ids, first, options.ls_oversample, options.ls_max_frequencies
    )
