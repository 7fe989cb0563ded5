"""Feature tables: each ZTF and TESS feature against an independent pure-Python computation."""

from __future__ import annotations

import csv
import math
import random
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from harvester.cli import app
from harvester.features._io import columns_markdown
from harvester.features.tess import (
    TESS_COLUMNS,
    build_tess_features,
    frequency_grid,
    lightcurve_features,
)
from harvester.features.ztf import ZTF_COLUMNS, build_ztf_features

REPO = Path(__file__).resolve().parents[2]

Row = dict[str, str]


# --- helpers -------------------------------------------------------------------------------------


def ztf_record(
    object_id: str,
    mjd: float,
    mag: float | None,
    magerr: float | None = 0.05,
    *,
    band: str = "zg",
    ra: float | None = 210.0,
    dec: float | None = 54.0,
    catflags: int | None = 0,
) -> dict[str, Any]:
    """A ZTF record dict with the fields the feature build reads (the rest are optional to it)."""
    return {
        "source": "ztf",
        "object_id": object_id,
        "mjd": mjd,
        "filter": band,
        "mag": mag,
        "magerr": magerr,
        "ra": ra,
        "dec": dec,
        "catflags": catflags,
    }


def write_records(folder: Path, records: list[dict[str, Any]], layout: str = "json") -> None:
    """Write records in the harvester's per-record JSON or jsonl-shard layout."""
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "jsonl":
        half = len(records) // 2
        for n, part in enumerate((records[:half], records[half:])):
            (folder / f"part-test-{n:05d}.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in part))
    else:
        for n, rec in enumerate(records):
            (folder / f"record_{n:06d}.json").write_bytes(orjson.dumps(rec))


def read_table(path: Path) -> list[Row]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def ztf_table(tmp_path: Path, records: list[dict[str, Any]], layout: str = "json", **kw: Any) -> list[Row]:
    write_records(tmp_path / "raw" / "ztf", records, layout)
    summary = build_ztf_features(tmp_path / "raw", tmp_path / "processed", **kw)
    return read_table(summary.table)


def num(cell: str) -> float:
    """A CSV cell as a float; the empty cell (undefined) is NaN."""
    return math.nan if cell == "" else float(cell)


def same(actual: str, expected: float) -> bool:
    value = num(actual)
    if math.isnan(expected):
        return math.isnan(value)
    return math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-12)


def reference_ztf(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, float]]:
    """The ZTF features computed the slow, obvious way (statistics module and plain loops)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        groups[(rec["object_id"], rec["filter"])].append(rec)
    nan = math.nan
    out: dict[tuple[str, str], dict[str, float]] = {}
    for key, recs in groups.items():
        mags = [r["mag"] for r in recs if r["mag"] is not None]
        n = len(mags)
        mean = statistics.fmean(mags) if n else nan
        median = statistics.median(mags) if n else nan
        m2 = sum((x - mean) ** 2 for x in mags) / n if n else nan
        m3 = sum((x - mean) ** 3 for x in mags) / n if n else nan
        m4 = sum((x - mean) ** 4 for x in mags) / n if n else nan
        spread = n > 0 and m2 > 0
        pairs = [
            (r["mag"], 1.0 / r["magerr"] ** 2)
            for r in recs
            if r["mag"] is not None and (r["magerr"] or 0) > 0
        ]
        wsum = sum(w for _, w in pairs)
        wmean = sum(m * w for m, w in pairs) / wsum if pairs else nan
        chi2 = sum(w * (m - wmean) ** 2 for m, w in pairs) / (len(pairs) - 1) if len(pairs) >= 2 else nan
        flags = [r["catflags"] for r in recs if r["catflags"] is not None]
        ras = [r["ra"] for r in recs if r["ra"] is not None]
        decs = [r["dec"] for r in recs if r["dec"] is not None]
        mjds = [r["mjd"] for r in recs]
        out[key] = {
            "n_obs": len(recs),
            "n_mag": n,
            "n_null_mag": len(recs) - n,
            "n_weighted": len(pairs),
            "mjd_first": min(mjds),
            "mjd_last": max(mjds),
            "baseline": max(mjds) - min(mjds),
            "ra": statistics.fmean(ras) if ras else nan,
            "dec": statistics.fmean(decs) if decs else nan,
            "mag_mean": mean,
            "mag_median": median,
            "mag_std": statistics.stdev(mags) if n >= 2 else nan,
            "mag_min": min(mags) if n else nan,
            "mag_max": max(mags) if n else nan,
            "amplitude": (max(mags) - min(mags)) / 2 if n else nan,
            "mag_wmean": wmean,
            "mag_wmean_err": 1 / math.sqrt(wsum) if pairs else nan,
            "chi2_red": chi2,
            "mag_mad": statistics.median([abs(x - median) for x in mags]) if n else nan,
            "mag_skew": m3 / m2**1.5 if spread else nan,
            "mag_kurtosis": m4 / m2**2 - 3 if spread else nan,
            "frac_flagged": sum(f != 0 for f in flags) / len(flags) if flags else nan,
        }
    return out


def random_ztf(seed: int = 7) -> list[dict[str, Any]]:
    """Five objects in two filters, 1..40 epochs each, with null mags, magerrs, positions, flags."""
    rng = random.Random(seed)
    records = []
    for obj in range(5):
        object_id = f"6751033000{obj:05d}"
        for band in ("zr", "zg"):
            base = rng.uniform(14, 20)
            for _ in range(rng.randint(1, 40)):
                mag = None if rng.random() < 0.1 else base + rng.gauss(0, 0.2) + rng.expovariate(20)
                magerr = rng.choice([None, 0.0, -0.01]) if rng.random() < 0.15 else rng.uniform(0.01, 0.1)
                records.append(
                    ztf_record(
                        object_id,
                        round(rng.uniform(58000, 60000), 6),
                        mag,
                        magerr,
                        band=band,
                        ra=None if rng.random() < 0.05 else 150.0 + obj + rng.gauss(0, 1e-4),
                        dec=None if rng.random() < 0.05 else 20.0 + rng.gauss(0, 1e-4),
                        catflags=rng.choice([None, 0, 0, 0, 32768, 4]),
                    )
                )
    rng.shuffle(records)
    return records


def tess_record(
    time: list[Any], flux: list[Any], *, obs_id: str = "tess-s0001-1", **extra: Any
) -> dict[str, Any]:
    return {
        "source": "tess",
        "object_id": "261136679",
        "obs_id": obs_id,
        "sector": 1,
        "camera": 4,
        "ccd": 3,
        "time": time,
        "flux": flux,
        **extra,
    }


def percentile(values: list[float], p: float) -> float:
    """Linear-interpolation percentile (numpy's default), written out."""
    xs = sorted(values)
    pos = p / 100 * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


# --- ZTF -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["json", "jsonl"])
def test_ztf_features_match_reference(tmp_path: Path, layout: str) -> None:
    """Every ZTF column equals the independent computation, in either record layout."""
    records = random_ztf()
    expected = reference_ztf(records)
    table = ztf_table(tmp_path, records, layout)
    assert len(table) == len(expected) == 10
    for row in table:
        ref = expected[(row["object_id"], row["filter"])]
        for name, value in ref.items():
            assert same(row[name], value), (row["object_id"], row["filter"], name, row[name], value)


def test_ztf_rows_sorted_by_object_then_filter(tmp_path: Path) -> None:
    """Rows come sorted by object_id, then filter, whatever the file order."""
    table = ztf_table(tmp_path, random_ztf(seed=3))
    keys = [(r["object_id"], r["filter"]) for r in table]
    assert keys == sorted(keys)


def test_ztf_header_is_the_documented_columns(tmp_path: Path) -> None:
    """features.csv has exactly the ZTF_COLUMNS, in order."""
    ztf_table(tmp_path, [ztf_record("1", 59000.0, 15.0)])
    header = (tmp_path / "processed" / "ztf" / "features.csv").read_text().splitlines()[0]
    assert header.split(",") == [c.name for c in ZTF_COLUMNS]


def test_ztf_single_point_group(tmp_path: Path) -> None:
    """One epoch: zero baseline, MAD and amplitude; std, skew, kurtosis and χ² undefined."""
    (row,) = ztf_table(tmp_path, [ztf_record("1", 59000.5, 15.25, 0.05, catflags=32768)])
    assert (row["n_obs"], row["n_mag"], row["n_weighted"]) == ("1", "1", "1")
    assert num(row["baseline"]) == 0 and num(row["mag_mad"]) == 0 and num(row["amplitude"]) == 0
    assert num(row["mag_median"]) == num(row["mag_wmean"]) == 15.25
    assert math.isclose(num(row["mag_wmean_err"]), 0.05)
    assert all(row[c] == "" for c in ("mag_std", "mag_skew", "mag_kurtosis", "chi2_red"))
    assert num(row["frac_flagged"]) == 1.0


def test_ztf_group_without_magnitudes(tmp_path: Path) -> None:
    """A group whose mags are all null keeps its counts and times; every mag statistic is empty."""
    (row,) = ztf_table(tmp_path, [ztf_record("1", 59000.0, None), ztf_record("1", 59002.0, None, None)])
    assert (row["n_obs"], row["n_mag"], row["n_null_mag"], row["n_weighted"]) == ("2", "0", "2", "0")
    assert num(row["baseline"]) == 2.0
    mag_columns = [c.name for c in ZTF_COLUMNS if c.name.startswith("mag_")] + ["amplitude", "chi2_red"]
    assert all(row[c] == "" for c in mag_columns)


def test_ztf_weights_need_positive_magerr(tmp_path: Path) -> None:
    """Epochs with a null, zero or negative magerr are left out of the weighted mean and χ²."""
    records = [
        ztf_record("1", 59000.0, 15.0, 0.1),
        ztf_record("1", 59001.0, 16.0, 0.2),
        ztf_record("1", 59002.0, 30.0, 0.0),
        ztf_record("1", 59003.0, 30.0, -0.1),
        ztf_record("1", 59004.0, 30.0, None),
    ]
    (row,) = ztf_table(tmp_path, records)
    w1, w2 = 1 / 0.1**2, 1 / 0.2**2
    wmean = (15 * w1 + 16 * w2) / (w1 + w2)
    assert row["n_weighted"] == "2"
    assert same(row["mag_wmean"], wmean)
    assert same(row["chi2_red"], w1 * (15 - wmean) ** 2 + w2 * (16 - wmean) ** 2)


def test_ztf_non_finite_values_from_nulls_are_ignored(tmp_path: Path) -> None:
    """Null positions and catflags drop out of their own columns only."""
    records = [
        ztf_record("1", 59000.0, 15.0, ra=None, dec=None, catflags=None),
        ztf_record("1", 59001.0, 15.5, ra=10.0, dec=-5.0, catflags=None),
    ]
    (row,) = ztf_table(tmp_path, records)
    assert num(row["ra"]) == pytest.approx(10.0, abs=1e-12) and num(row["dec"]) == -5.0
    assert row["frac_flagged"] == ""
    assert num(row["mag_mean"]) == 15.25


def test_ztf_constant_magnitudes_have_no_shape(tmp_path: Path) -> None:
    """Equal mags give std 0 and undefined skewness and kurtosis (no division by ~0)."""
    records = [ztf_record("1", 59000.0 + i, 17.1) for i in range(5)]
    (row,) = ztf_table(tmp_path, records)
    assert num(row["mag_std"]) == pytest.approx(0.0, abs=1e-12)
    assert row["mag_skew"] == "" and row["mag_kurtosis"] == ""


def test_ztf_ra_mean_wraps_at_zero(tmp_path: Path) -> None:
    """The RA of an object on the 0/360° line is near 0°, not 180°."""
    records = [ztf_record("1", 59000.0, 15.0, ra=359.9999), ztf_record("1", 59001.0, 15.0, ra=0.0001)]
    (row,) = ztf_table(tmp_path, records)
    assert min(num(row["ra"]), 360.0 - num(row["ra"])) < 1e-9


def test_ztf_same_record_in_both_layouts_counts_once(tmp_path: Path) -> None:
    """A record present as record_*.json and in a jsonl shard is one epoch."""
    records = [ztf_record("1", 59000.0, 15.0), ztf_record("1", 59001.0, 16.0)]
    write_records(tmp_path / "raw" / "ztf", records, "jsonl")
    (row,) = ztf_table(tmp_path, records, "json")
    assert row["n_obs"] == "2"


def test_ztf_chunk_size_does_not_change_the_table(tmp_path: Path) -> None:
    """Parsing in chunks of 3 records gives the same table as one chunk."""
    records = random_ztf(seed=11)
    small = ztf_table(tmp_path / "a", records, chunk_records=3)
    large = ztf_table(tmp_path / "b", records)
    assert small == large


def test_ztf_bucket_count_does_not_change_the_table(tmp_path: Path) -> None:
    """Reducing in 1 bucket (everything in memory) or 7 buckets (spilled by object) gives the same table."""
    records = random_ztf(seed=5)
    one = ztf_table(tmp_path / "a", records, buckets=1)
    seven = ztf_table(tmp_path / "b", records, buckets=7, chunk_records=4)
    assert one == seven and len(one) > 3


def test_ztf_writes_atomically_and_a_readme(tmp_path: Path) -> None:
    """The build leaves features.csv and README.md and no temporary file; the README lists every column."""
    ztf_table(tmp_path, [ztf_record("1", 59000.0, 15.0)])
    out = tmp_path / "processed" / "ztf"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "features.csv"]
    assert columns_markdown(ZTF_COLUMNS) in (out / "README.md").read_text()


# --- TESS ----------------------------------------------------------------------------------------


def sinusoid(period: float, *, days: float = 27.0, cadence_min: float = 2.0, seed: int = 1) -> dict[str, Any]:
    """A TESS-like sector: 2-min cadence with a mid-sector gap, a 1 % sinusoid plus 0.2 % noise."""
    rng = np.random.default_rng(seed)
    t = 1325.0 + np.arange(0.0, days, cadence_min / 1440.0)
    t = t[(t - t[0] < 13.0) | (t - t[0] > 14.0)]
    flux = 1.0e4 * (1 + 0.01 * np.sin(2 * np.pi * t / period) + 0.002 * rng.standard_normal(t.size))
    return tess_record(t.tolist(), flux.tolist())


def test_tess_recovers_sinusoid_period(tmp_path: Path) -> None:
    """Lomb–Scargle finds a 3.7 d sinusoid's period within half a peak width (1 / 2T)."""
    rec = sinusoid(3.7)
    feats = lightcurve_features(rec["time"], rec["flux"])
    baseline = float(feats["baseline"])
    assert abs(1 / float(feats["ls_period"]) - 1 / 3.7) < 0.5 / baseline
    assert float(feats["ls_power"]) > 0.5


def test_tess_recovers_short_period(tmp_path: Path) -> None:
    """A 0.31 d period (many cycles per sector) is found within one frequency-grid step."""
    rec = sinusoid(0.31, seed=2)
    feats = lightcurve_features(rec["time"], rec["flux"])
    step = 1 / (5 * float(feats["baseline"]))  # default oversample 5
    assert abs(1 / float(feats["ls_period"]) - 1 / 0.31) <= step


def test_tess_flux_statistics_match_reference(tmp_path: Path) -> None:
    """Median, robust std (1.4826·MAD/median), (p99 − p1)/median, times and spacing match by hand."""
    rng = random.Random(5)
    time = [1400.0 + i / 720 for i in range(3000)]
    flux = [5000 + rng.gauss(0, 20) + (300 if i % 97 == 0 else 0) for i in range(3000)]
    feats = lightcurve_features(time, flux)
    median = statistics.median(flux)
    mad = statistics.median(abs(f - median) for f in flux)
    assert feats["n_points"] == 3000
    assert math.isclose(float(feats["flux_median"]), median, rel_tol=1e-12)
    assert math.isclose(float(feats["flux_robust_std"]), 1.4826 * mad / median, rel_tol=1e-9)
    ptp = (percentile(flux, 99) - percentile(flux, 1)) / median
    assert math.isclose(float(feats["flux_ptp"]), ptp, rel_tol=1e-9)
    assert (feats["time_first"], feats["time_last"]) == (time[0], time[-1])
    assert math.isclose(float(feats["baseline"]), time[-1] - time[0])
    assert math.isclose(float(feats["dt_median"]), 120.0, rel_tol=1e-6)


def test_tess_nulls_and_nans_are_dropped(tmp_path: Path) -> None:
    """Cadences whose time or flux is null or NaN are not points."""
    feats = lightcurve_features([1.0, 2.0, None, 4.0, 5.0, math.nan], [10.0, None, 30.0, 40.0, 50.0, 60.0])
    assert feats["n_points"] == 3
    assert feats["flux_median"] == 40.0


def test_tess_too_short_for_a_periodogram(tmp_path: Path) -> None:
    """Two points give statistics but no periodogram; no points give nothing."""
    two = lightcurve_features([1.0, 1.1], [10.0, 12.0])
    assert two["flux_median"] == 11.0 and math.isnan(float(two["ls_period"])) and two["ls_n_frequencies"] == 0
    empty = lightcurve_features([None], [None])
    assert empty["n_points"] == 0 and math.isnan(float(empty["flux_median"]))


def test_tess_relative_columns_need_a_positive_median(tmp_path: Path) -> None:
    """A median flux ≤ 0 leaves the normalised scatter and amplitude undefined."""
    feats = lightcurve_features([1.0, 2.0, 3.0], [-1.0, 0.0, 1.0])
    assert math.isnan(float(feats["flux_robust_std"])) and math.isnan(float(feats["flux_ptp"]))


def test_frequency_grid_is_the_documented_one(tmp_path: Path) -> None:
    """Uniform from 2/T to ≤ 1/(2 dt) in steps of 1/(oversample·T), capped at max_frequencies."""
    t = np.arange(0.0, 10.0, 0.01)
    baseline, dt = t[-1] - t[0], 0.01
    grid = frequency_grid(t, oversample=4)
    assert grid[0] == pytest.approx(2 / baseline)
    assert np.allclose(np.diff(grid), 1 / (4 * baseline))
    assert grid[-1] <= 1 / (2 * dt) + 1e-9 and grid[-1] + 1 / (4 * baseline) > 1 / (2 * dt)
    capped = frequency_grid(t, oversample=4, max_frequencies=100)
    assert capped.size == 100 and capped[-1] == pytest.approx(1 / (2 * dt))


def test_tess_table_one_row_per_light_curve(tmp_path: Path) -> None:
    """Each light curve is a row (sorted by sector), a duplicate obs_id counts once, columns as documented."""
    rec = sinusoid(2.0)
    records = [
        {**rec, "obs_id": "b", "sector": 9},
        {**rec, "obs_id": "a", "sector": 2},
        {**rec, "obs_id": "b", "sector": 9},
    ]
    write_records(tmp_path / "raw" / "tess", records)
    summary = build_tess_features(tmp_path / "raw", tmp_path / "processed")
    table = read_table(summary.table)
    assert [r["obs_id"] for r in table] == ["a", "b"]
    assert list(table[0]) == [c.name for c in TESS_COLUMNS]
    assert columns_markdown(TESS_COLUMNS) in summary.readme.read_text()


# --- CLI and docs --------------------------------------------------------------------------------


def test_cli_missing_input_folder_exits_2(tmp_path: Path) -> None:
    """A missing input folder is one line on stderr and exit code 2."""
    result = CliRunner().invoke(app, ["features", "ztf", "--input", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"harvester: error: no ztf records under {tmp_path / 'nowhere' / 'ztf'} (no such folder)"
    ]


def test_cli_folder_without_records_exits_2(tmp_path: Path) -> None:
    """A folder with no record files is 'no ztf records under ...' and exit code 2."""
    (tmp_path / "data" / "raw" / "ztf").mkdir(parents=True)
    result = CliRunner().invoke(app, ["features", "ztf"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "harvester: error: no ztf records under data/raw/ztf"


def test_cli_corrupt_record_exits_2(tmp_path: Path) -> None:
    """A shard line that is not JSON names the file and line, exit code 2, and writes nothing."""
    folder = tmp_path / "data" / "raw" / "tess"
    folder.mkdir(parents=True)
    (folder / "part-x-00001.jsonl").write_bytes(b'{"source": "tess"\n')
    result = CliRunner().invoke(app, ["features", "tess"])
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "harvester: error: data/raw/tess/part-x-00001.jsonl line 1: not valid JSON"
    )
    assert not (tmp_path / "data" / "processed").exists()


def test_cli_features_of_harvested_jsonl(tmp_path: Path) -> None:
    """`harvester run --offline --format jsonl` then `harvester features ztf` gives one row per group."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "base.yaml").write_text((REPO / "config" / "base.yaml").read_text())
    runner = CliRunner()
    ran = runner.invoke(app, ["run", "--source", "ztf", "--offline", "--format", "jsonl", "--limit", "60"])
    assert ran.exit_code == 0, ran.output
    result = runner.invoke(app, ["features", "ztf"])
    assert result.exit_code == 0, result.output
    shard_records = [
        orjson.loads(line)
        for shard in (tmp_path / "data" / "raw" / "ztf").glob("part-*.jsonl")
        for line in shard.read_bytes().splitlines()
    ]
    table = read_table(tmp_path / "data" / "processed" / "ztf" / "features.csv")
    assert len(shard_records) == 60
    assert {(r["object_id"], r["filter"]) for r in table} == {
        (r["object_id"], r["filter"]) for r in shard_records
    }
    assert sum(int(r["n_obs"]) for r in table) == 60


def test_docs_features_md_lists_every_column() -> None:
    """docs/features.md holds the generated column tables of both sources, verbatim."""
    text = (REPO / "docs" / "features.md").read_text()
    assert columns_markdown(ZTF_COLUMNS) in text
    assert columns_markdown(TESS_COLUMNS) in text
