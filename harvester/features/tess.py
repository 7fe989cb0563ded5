"""TESS feature table: one row per light curve (record), with a Lomb–Scargle period search.

Owns the definitions of every TESS feature (``TESS_COLUMNS``, documented in docs/features.md), the
periodogram's frequency grid (shared with ``harvester plot tess``) and the table build.

Memory is bounded by the largest single light curve: records are read, reduced to one row and
dropped one at a time.

The frequency grid (:func:`frequency_grid`) is uniform in frequency:

- ``dt`` = median spacing of consecutive kept times (the real sampling, also after a reduction to
  ``lightcurve.max_points``), ``T`` = baseline (last − first time);
- from ``f_min = 2 / T`` (period ``T / 2``) to ``f_max = 1 / (2 dt)`` (period ``2 dt``, Nyquist),
- step ``df = 1 / (oversample · T)`` (``oversample`` = samples per periodogram peak, default 5);
- if that is more than ``max_frequencies`` points, the step widens to fit exactly that many.

A 27-day sector at 2-min cadence gives ≈ 49,000 frequencies; ``LombScargle(method="fast")``
(Press & Rybicki) evaluates them in tens of milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from harvester.features._io import (
    Column,
    FeatureInputError,
    FeatureOptions,
    FeatureSummary,
    columns_markdown,
    iter_records,
    open_source,
    write_csv_atomic,
    write_text_atomic,
)

__all__ = [
    "DEFAULT_MAX_FREQUENCIES",
    "DEFAULT_OVERSAMPLE",
    "TESS_COLUMNS",
    "Periodogram",
    "build_tess_features",
    "clean_lightcurve",
    "frequency_grid",
    "lightcurve_features",
    "periodogram",
]

FloatArray = npt.NDArray[np.float64]

DEFAULT_OVERSAMPLE = 5.0
DEFAULT_MAX_FREQUENCIES = 200_000
MAD_TO_SIGMA = 1.4826  # σ of a normal distribution = 1.4826 × MAD

TESS_COLUMNS: tuple[Column, ...] = (
    Column("object_id", "", "TIC id."),
    Column("sector", "", "TESS sector (empty if unknown)."),
    Column("camera", "", "Camera 1..4 (empty if unknown)."),
    Column("ccd", "", "CCD 1..4 (empty if unknown)."),
    Column("obs_id", "", "MAST obs_id of the light curve (the row's key)."),
    Column("n_points", "", "Cadences with a finite time and flux: the sample of every other column."),
    Column("time_first", "d", "First kept time, BTJD (BJD_TDB − 2457000)."),
    Column("time_last", "d", "Last kept time, BTJD."),
    Column("baseline", "d", "time_last − time_first."),
    Column("dt_median", "s", "Median spacing of consecutive kept times (the periodogram's Nyquist step)."),
    Column("flux_median", "e-/s", "Median flux."),
    Column(
        "flux_robust_std",
        "",
        "Robust relative scatter: 1.4826 × median(|flux − flux_median|) / flux_median "
        "(empty when flux_median ≤ 0).",
    ),
    Column(
        "flux_ptp",
        "",
        "Relative peak-to-peak amplitude: (p99 − p1) / flux_median, percentiles with linear "
        "interpolation (numpy default); empty when flux_median ≤ 0.",
    ),
    Column(
        "ls_period",
        "d",
        "Period of the highest Lomb–Scargle peak (astropy, standard normalisation, floating mean, "
        "method fast) over the grid of docs/features.md; empty with fewer than 3 points or a baseline "
        "shorter than 4 × dt_median.",
    ),
    Column("ls_power", "", "Normalised power of that peak, 0..1."),
    Column("ls_n_frequencies", "", "Frequencies searched."),
)


@dataclass(frozen=True)
class Periodogram:
    """A Lomb–Scargle periodogram over :func:`frequency_grid` and its highest peak."""

    frequency: FloatArray  # 1/d
    power: FloatArray
    best_period: float  # d
    best_power: float


def clean_lightcurve(time: object, flux: object) -> tuple[FloatArray, FloatArray]:
    """(time, flux) as float arrays, non-finite pairs (nulls included) dropped, sorted by time."""
    try:
        t = np.asarray(time, dtype=np.float64)
        f = np.asarray(flux, dtype=np.float64)
    except (TypeError, ValueError):
        raise FeatureInputError("a tess record has a non-numeric time or flux") from None
    if t.ndim != 1 or t.shape != f.shape:
        raise FeatureInputError("a tess record's time and flux are not lists of the same length")
    ok = np.isfinite(t) & np.isfinite(f)
    t, f = t[ok], f[ok]
    order = np.argsort(t, kind="stable")
    return t[order], f[order]


def median_spacing(time: FloatArray) -> float:
    """Median of the positive spacings of sorted times (NaN with fewer than 2 distinct times)."""
    steps = np.diff(time)
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else math.nan


def frequency_grid(
    time: FloatArray,
    oversample: float = DEFAULT_OVERSAMPLE,
    max_frequencies: int = DEFAULT_MAX_FREQUENCIES,
) -> FloatArray:
    """The documented uniform frequency grid (1/d) for sorted ``time``; empty if there is none."""
    if time.size < 3:
        return np.empty(0)
    baseline = float(time[-1] - time[0])
    dt = median_spacing(time)
    if not (baseline > 0 and dt > 0):
        return np.empty(0)
    f_min, f_max = 2.0 / baseline, 0.5 / dt
    if f_min >= f_max:
        return np.empty(0)
    step = 1.0 / (oversample * baseline)
    count = math.floor((f_max - f_min) / step) + 1
    if count > max_frequencies:
        count = max_frequencies
        step = (f_max - f_min) / (count - 1)
    return f_min + step * np.arange(count, dtype=np.float64)


def periodogram(
    time: FloatArray,
    flux: FloatArray,
    oversample: float = DEFAULT_OVERSAMPLE,
    max_frequencies: int = DEFAULT_MAX_FREQUENCIES,
) -> Periodogram | None:
    """Lomb–Scargle of a cleaned light curve over :func:`frequency_grid`; None if there is no grid."""
    frequency = frequency_grid(time, oversample, max_frequencies)
    if frequency.size < 2:
        return None
    from astropy.timeseries import LombScargle

    scale = float(np.median(flux))
    y = flux / scale if scale != 0 and math.isfinite(scale) else flux
    ls: Any = LombScargle(time - time[0], y, fit_mean=True, center_data=True, normalization="standard")
    power = np.asarray(ls.power(frequency, method="fast", assume_regular_frequency=True), dtype=np.float64)
    if not np.isfinite(power).any():
        return Periodogram(frequency, power, math.nan, math.nan)
    best = int(np.nanargmax(power))
    return Periodogram(frequency, power, 1.0 / float(frequency[best]), float(power[best]))


def lightcurve_features(
    time: object,
    flux: object,
    oversample: float = DEFAULT_OVERSAMPLE,
    max_frequencies: int = DEFAULT_MAX_FREQUENCIES,
) -> dict[str, float | int]:
    """The numeric TESS feature columns of one light curve (see TESS_COLUMNS)."""
    t, f = clean_lightcurve(time, flux)
    nan = math.nan
    out: dict[str, float | int] = {
        "n_points": int(t.size),
        "time_first": nan,
        "time_last": nan,
        "baseline": nan,
        "dt_median": nan,
        "flux_median": nan,
        "flux_robust_std": nan,
        "flux_ptp": nan,
        "ls_period": nan,
        "ls_power": nan,
        "ls_n_frequencies": 0,
    }
    if t.size == 0:
        return out
    median = float(np.median(f))
    p1, p99 = (float(v) for v in np.percentile(f, [1.0, 99.0]))
    mad = float(np.median(np.abs(f - median)))
    out.update(
        time_first=float(t[0]),
        time_last=float(t[-1]),
        baseline=float(t[-1] - t[0]),
        dt_median=median_spacing(t) * 86400.0,
        flux_median=median,
    )
    if median > 0:
        out.update(flux_robust_std=MAD_TO_SIGMA * mad / median, flux_ptp=(p99 - p1) / median)
    pg = periodogram(t, f, oversample, max_frequencies)
    if pg is not None:
        out.update(
            ls_period=pg.best_period,
            ls_power=pg.best_power,
            ls_n_frequencies=int(pg.frequency.size),
        )
    return out


def _sort_key(row: dict[str, Any]) -> tuple[int, str, int, str]:
    object_id = str(row["object_id"])
    numeric = int(object_id) if object_id.isdigit() else -1
    sector = row["sector"] if isinstance(row["sector"], int) else -1
    return (numeric, object_id, sector, str(row["obs_id"]))


def _meta(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def tess_readme(summary_line: str, oversample: float, max_frequencies: int) -> str:
    """The README written next to tess/features.csv."""
    return (
        "# tess features\n\n"
        "Generated by `harvester features tess`; do not edit. Definitions: docs/features.md.\n\n"
        f"{summary_line}\n\n"
        "One row per light curve (TESS record), sorted by TIC id, sector and obs_id. Cadences whose "
        "time or flux is null or not finite are dropped first. Lomb–Scargle frequency grid: uniform "
        "in frequency from 2 / baseline to 1 / (2 × dt_median), step 1 / (oversample × baseline) with "
        f"oversample = {oversample:g}, at most {max_frequencies} frequencies (the step widens to fit). "
        "An empty cell means undefined. Floats are written with full precision.\n\n"
        "## Columns\n\n" + columns_markdown(TESS_COLUMNS)
    )


def build_tess_features(
    input_root: Path,
    output_root: Path,
    oversample: float = DEFAULT_OVERSAMPLE,
    max_frequencies: int = DEFAULT_MAX_FREQUENCIES,
) -> FeatureSummary:
    """Read ``<input_root>/tess`` and write ``<output_root>/tess/features.csv`` and its README."""
    records = open_source(input_root, "tess")
    table: list[dict[str, Any]] = []
    seen: set[str] = set()
    n_records = 0
    for rec in iter_records(records, ("object_id", "obs_id", "time", "flux")):
        n_records += 1
        obs_id = str(rec["obs_id"])
        if obs_id in seen:  # the same light curve in both layouts: once
            continue
        seen.add(obs_id)
        row: dict[str, Any] = {
            "object_id": str(rec["object_id"]),
            "sector": _meta(rec.get("sector")),
            "camera": _meta(rec.get("camera")),
            "ccd": _meta(rec.get("ccd")),
            "obs_id": obs_id,
        }
        try:
            row.update(lightcurve_features(rec["time"], rec["flux"], oversample, max_frequencies))
        except FeatureInputError as exc:
            raise FeatureInputError(f"{obs_id} under {records.folder}: {exc}") from None
        table.append(row)
    table.sort(key=_sort_key)
    out = output_root / "tess"
    path = out / "features.csv"
    names = [c.name for c in TESS_COLUMNS]
    n_rows = write_csv_atomic(path, names, ([row[n] for n in names] for row in table))
    line = (
        f"Input: `{records.folder}` ({n_records} records in {len(records.files)} files). "
        f"Output: {n_rows} rows."
    )
    readme = out / "README.md"
    write_text_atomic(readme, tess_readme(line, oversample, max_frequencies))
    return FeatureSummary("tess", n_records, len(records.files), n_rows, path, readme)


def build(input_root: Path, output_root: Path, options: FeatureOptions) -> FeatureSummary:
    """The TESS entry of ``harvester features`` (the archive registry names it)."""
    return build_tess_features(input_root, output_root, options.ls_oversample, options.ls_max_frequencies)
