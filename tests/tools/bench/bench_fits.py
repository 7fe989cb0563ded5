"""Benchmark: harvester's FITS decode + record + JSON against astropy and lightkurve reads.

Run with ``uv run python -m tests.tools.bench.bench_fits [--runs N]``. This is a script, not a test.
lightkurve comes from the ``bench`` dependency group (``uv sync --group bench --group dev``). Without
it, that column reads "n/a".

For each ``tests/data/tess/*.fits`` it times the median of N runs of:

1. **ours**: read the file's bytes, ``decode_lightcurve``, build a ``TessRecord`` (dummy provenance,
   fetched_at and obs ids) and ``orjson.dumps(record.model_dump())``. "decode" is the
   ``decode_lightcurve`` call alone.
2. **astropy**: ``fits.open(path)`` plus copying TIME, PDCSAP_FLUX, PDCSAP_FLUX_ERR and QUALITY out of
   ``.data``. There is no cleaning and no JSON, so this is a floor for any astropy-based reader.
3. **lightkurve**: ``lightkurve.read(path)`` (default quality mask). It produces objects, not JSON.

The goal (issue): ours ≥ 10× faster than lightkurve.read.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import statistics
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from astropy.io import fits

from harvester.archives.spoc_fits import decode_lightcurve
from harvester.archives.tess.records import TessRecord
from harvester.records import Provenance

DATA = Path(__file__).resolve().parents[2] / "data" / "tess"
GOAL = 10.0


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up: imports, caches
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def ours(path: Path) -> bytes:
    """Decode, validate a TessRecord and encode it as JSON, as the pipeline does."""
    decoded = decode_lightcurve(path.read_bytes(), product=path.name)
    record = TessRecord(
        **decoded.to_record_fields(),
        obs_id=path.name.removesuffix("_lc.fits"),
        obsid="0",
        fetched_at=datetime(2024, 1, 1, tzinfo=UTC),
        provenance=Provenance(archive="mast", url="https://example.invalid/bench"),
    )
    return orjson.dumps(record.model_dump())


def decode_only(path: Path) -> object:
    return decode_lightcurve(path.read_bytes(), product=path.name)


def astropy_read(path: Path) -> list[np.ndarray[Any, Any]]:
    with fits.open(path) as hdul:
        table = hdul["LIGHTCURVE"].data
        return [np.array(table[c]) for c in ("TIME", "PDCSAP_FLUX", "PDCSAP_FLUX_ERR", "QUALITY")]


def _lightkurve() -> Callable[[Path], object] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lightkurve warns about optional extras at import
            lightkurve = importlib.import_module("lightkurve")
    except ImportError:
        return None

    def read(path: Path) -> object:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return lightkurve.read(str(path))

    return read


FitsRow = tuple[
    str, int, int, float, float, float, float | None
]  # file, rows, kept, decode, ours, astropy, lk


def measure(runs: int) -> list[FitsRow]:
    """Median milliseconds per file: decode, ours, astropy and lightkurve (None when not installed)."""
    lk_read = _lightkurve()
    rows: list[FitsRow] = []
    for path in sorted(DATA.glob("*.fits")):
        decoded = decode_lightcurve(path.read_bytes(), product=path.name)
        t_decode = _median_ms(functools.partial(decode_only, path), runs)
        t_ours = _median_ms(functools.partial(ours, path), runs)
        t_astropy = _median_ms(functools.partial(astropy_read, path), runs)
        t_lk = _median_ms(functools.partial(lk_read, path), runs) if lk_read is not None else None
        rows.append((path.name, decoded.n_points_raw, decoded.n_points, t_decode, t_ours, t_astropy, t_lk))
    return rows


def run(quick: bool) -> tuple[str, str, list[tuple[str, str, str, bool | None]]]:
    """Part 5 of ``python -m tests.tools.bench``: the table as markdown, and the goal."""
    runs = 5 if quick else 21
    rows = measure(runs)
    lines = [
        f"`tests/data/tess/*.fits` (real SPOC files), median of {runs} runs, milliseconds.",
        "",
        "| file | cadences | kept | decode | ours (decode + record + JSON) | astropy read of 4 columns "
        "| lightkurve.read | lightkurve / ours | astropy / ours |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    worst: float | None = None
    for name, raw, kept, t_decode, t_ours, t_astropy, t_lk in rows:
        lk = "n/a" if t_lk is None else f"{t_lk:.1f}"
        ratio = "n/a" if t_lk is None else f"**{t_lk / t_ours:.1f}×**"
        if t_lk is not None:
            worst = t_lk / t_ours if worst is None else min(worst, t_lk / t_ours)
        lines.append(
            f"| {name} | {raw:,} | {kept:,} | {t_decode:.2f} | {t_ours:.2f} | {t_astropy:.2f} | {lk} | "
            f"{ratio} | {t_astropy / t_ours:.1f}× |"
        )
    measured = "n/a" if worst is None else f"{worst:.1f}× (slowest file)"
    goals = [
        ("FITS: lightkurve.read / ours", measured, f"≥ {GOAL:.0f}×", None if worst is None else worst >= GOAL)
    ]
    return ("FITS decode + encode per light curve (part 5)", "\n".join(lines), goals)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=21, help="timed runs per cell (median is reported)")
    args = parser.parse_args(argv)
    lk_read = _lightkurve()
    paths = sorted(DATA.glob("*.fits"))
    if not paths:
        print(f"no FITS files in {DATA}")
        return 1

    header = (
        f"{'file':<58} {'rows':>6} {'kept':>6} {'decode':>8} {'ours':>8} {'astropy':>8} "
        f"{'lightkurve':>10} {'lk/ours':>8} {'ap/ours':>8}"
    )
    print(f"median of {args.runs} runs, milliseconds")
    print(header)
    print("-" * len(header))
    met = True
    for path in paths:
        decoded = decode_lightcurve(path.read_bytes(), product=path.name)
        t_decode = _median_ms(functools.partial(decode_only, path), args.runs)
        t_ours = _median_ms(functools.partial(ours, path), args.runs)
        t_astropy = _median_ms(functools.partial(astropy_read, path), args.runs)
        if lk_read is not None:
            t_lk = _median_ms(functools.partial(lk_read, path), args.runs)
            lk_cell, lk_ratio = f"{t_lk:10.2f}", f"{t_lk / t_ours:7.1f}×"
            met &= t_lk / t_ours >= GOAL
        else:
            lk_cell, lk_ratio = f"{'n/a':>10}", f"{'n/a':>8}"
        counts = f"{decoded.n_points_raw:>6} {decoded.n_points:>6}"
        print(
            f"{path.name:<58} {counts} {t_decode:8.2f} {t_ours:8.2f} "
            f"{t_astropy:8.2f} {lk_cell} {lk_ratio} {t_astropy / t_ours:7.1f}×"
        )
    print()
    print("decode = decode_lightcurve alone;")
    print("ours = read bytes + decode + TessRecord(...) + orjson.dumps(record.model_dump());")
    print("astropy = fits.open + 4 columns copied; lightkurve = lightkurve.read(path).")
    if lk_read is None:
        print("lightkurve not installed: `uv sync --group bench --group dev` to compare against it.")
    else:
        print(f"goal ours ≥ {GOAL:.0f}× faster than lightkurve.read: {'met' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
