"""ZTF feature table: one row per (object_id, filter), computed with numpy group operations.

Owns the definitions of every ZTF feature (``ZTF_COLUMNS``, documented in docs/features.md), the
columnar reader of ZTF records and the vectorised computation.

How it runs, and what it costs:

1. **Read and spill** (bounded by a chunk): records are parsed one at a time with orjson; the eight
   fields used (object_id, filter, mjd, mag, magerr, ra, dec, catflags) are buffered for at most
   ``chunk_records`` records, then appended as numpy arrays to one of ``buckets`` temporary files
   chosen by a stable hash (CRC-32) of object_id. No pydantic model is built.
2. **Reduce per bucket**: each bucket (every observation of its objects) is loaded alone, sorted
   by (object_id, filter, mjd) with ``np.lexsort`` and reduced per group with ``np.add.reduceat``;
   medians and MADs come from sorts by (group, value). The peak is about 3× the bucket's columns
   (≈ 135 MB per million observations in the bucket), so with the default 32 buckets a harvest
   of N observations needs about 135 MB × N / 32 million, plus one chunk of Python objects.
3. **Merge**: the per-bucket rows (one per group, small) are concatenated and sorted by
   (object_id, filter).

Records with the same (object_id, filter, mjd) are counted once, so a folder that holds a record in
both layouts (``record_*.json`` and ``part-*.jsonl``) is not double counted.
"""

from __future__ import annotations

import tempfile
import zlib
from collections.abc import Iterator
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
    RecordSource,
    columns_markdown,
    iter_records,
    open_source,
    write_csv_atomic,
    write_text_atomic,
)

__all__ = [
    "ZTF_COLUMNS",
    "ZtfObservations",
    "build_ztf_features",
    "read_ztf",
    "ztf_features",
    "ztf_features_bucketed",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DEFAULT_CHUNK_RECORDS = 100_000
_EPS = float(np.finfo(np.float64).resolution) * 10  # scipy's "all values equal" threshold: 1e-14

ZTF_COLUMNS: tuple[Column, ...] = (
    Column("object_id", "", "ZTF object id (IRSA `oid`)."),
    Column("filter", "", "ZTF filter code (zg, zr, zi)."),
    Column("n_obs", "", "Epochs (records) in the group, whatever their mag."),
    Column("n_mag", "", "Epochs with a finite `mag`: the sample of every `mag_*` statistic."),
    Column("n_null_mag", "", "Epochs whose `mag` is null (excluded from the mag statistics): n_obs − n_mag."),
    Column("n_weighted", "", "Epochs with a finite `mag` and a finite `magerr` > 0: the weighted sample."),
    Column("mjd_first", "d", "First epoch, MJD (UTC)."),
    Column("mjd_last", "d", "Last epoch, MJD (UTC)."),
    Column("baseline", "d", "mjd_last − mjd_first (0 for a single epoch)."),
    Column("ra", "deg", "Mean RA of the epochs with a finite ra: circular mean, in [0, 360)."),
    Column("dec", "deg", "Arithmetic mean Dec of the epochs with a finite dec."),
    Column("mag_mean", "mag", "Arithmetic mean of mag."),
    Column("mag_median", "mag", "Median of mag (mean of the two middle values for an even count)."),
    Column("mag_std", "mag", "Sample standard deviation of mag, ddof = 1 (empty when n_mag < 2)."),
    Column("mag_min", "mag", "Smallest mag (the brightest epoch)."),
    Column("mag_max", "mag", "Largest mag (the faintest epoch)."),
    Column("amplitude", "mag", "Half the peak-to-peak range: (mag_max − mag_min) / 2."),
    Column(
        "mag_wmean",
        "mag",
        "Inverse-variance weighted mean Σ w·mag / Σ w, w = 1/magerr², over the weighted sample.",
    ),
    Column("mag_wmean_err", "mag", "Uncertainty of mag_wmean: 1 / √(Σ w)."),
    Column(
        "chi2_red",
        "",
        "Reduced χ² of a constant at mag_wmean: Σ w·(mag − mag_wmean)² / (n_weighted − 1) "
        "(empty when n_weighted < 2).",
    ),
    Column("mag_mad", "mag", "Median absolute deviation median(|mag − mag_median|), not scaled by 1.4826."),
    Column(
        "mag_skew",
        "",
        "Skewness g1 = m3 / m2^(3/2) with population central moments m_k = mean((mag − mag_mean)^k) "
        "(biased; scipy.stats.skew default). Empty when all mags are equal.",
    ),
    Column(
        "mag_kurtosis",
        "",
        "Excess (Fisher) kurtosis g2 = m4 / m2² − 3 (biased; scipy.stats.kurtosis default; 0 for a "
        "normal distribution). Empty when all mags are equal.",
    ),
    Column(
        "frac_flagged",
        "",
        "Fraction of the epochs with a non-null catflags whose catflags ≠ 0 "
        "(empty when every catflags is null).",
    ),
)


@dataclass
class ZtfObservations:
    """ZTF observations as columns; ``oid``/``filt`` are codes into ``object_ids``/``filters``."""

    object_ids: list[str]
    filters: list[str]
    oid: npt.NDArray[np.int32]
    filt: npt.NDArray[np.int8]
    mjd: FloatArray
    mag: FloatArray
    magerr: FloatArray
    ra: FloatArray
    dec: FloatArray
    flag: npt.NDArray[np.int8]  # 1 catflags != 0, 0 catflags == 0, -1 catflags null

    def __len__(self) -> int:
        return int(self.mjd.shape[0])

    @classmethod
    def from_columns(
        cls,
        object_ids: list[str],
        filters: list[str],
        oid: npt.NDArray[Any],
        filt: npt.NDArray[Any],
        columns: dict[str, npt.NDArray[Any]],
    ) -> ZtfObservations:
        """Observations from code columns plus the float and flag columns, by name."""
        return cls(
            object_ids=object_ids,
            filters=filters,
            oid=oid.astype(np.int32),
            filt=filt.astype(np.int8),
            mjd=columns["mjd"],
            mag=columns["mag"],
            magerr=columns["magerr"],
            ra=columns["ra"],
            dec=columns["dec"],
            flag=columns["flag"],
        )


_FLOAT_FIELDS = ("mjd", "mag", "magerr", "ra", "dec")


def read_ztf(records: RecordSource, chunk_records: int = DEFAULT_CHUNK_RECORDS) -> ZtfObservations:
    """Every ZTF observation under ``records`` as columns (Python objects bounded by a chunk)."""
    oid_codes: dict[str, int] = {}
    filt_codes: dict[str, int] = {}
    parts: dict[str, list[npt.NDArray[Any]]] = {name: [] for name in ("oid", "filt", "flag", *_FLOAT_FIELDS)}
    oid: list[int] = []
    filt: list[int] = []
    flag: list[int] = []
    floats: dict[str, list[Any]] = {name: [] for name in _FLOAT_FIELDS}
    mjd, mag, magerr, ra, dec = (floats[name] for name in _FLOAT_FIELDS)

    def flush() -> None:
        parts["oid"].append(np.asarray(oid, dtype=np.int32))
        parts["filt"].append(np.asarray(filt, dtype=np.int8))
        parts["flag"].append(np.asarray(flag, dtype=np.int8))
        for name in _FLOAT_FIELDS:
            try:
                parts[name].append(np.asarray(floats[name], dtype=np.float64))  # None becomes NaN
            except (TypeError, ValueError):
                raise FeatureInputError(
                    f"a ztf record under {records.folder} has a non-numeric {name}"
                ) from None
            floats[name].clear()
        oid.clear()
        filt.clear()
        flag.clear()

    for rec in iter_records(records, ("object_id", "filter", "mjd")):
        object_id = rec["object_id"]
        code = oid_codes.get(object_id)
        if code is None:
            code = oid_codes[object_id] = len(oid_codes)
        oid.append(code)
        band = rec["filter"]
        fcode = filt_codes.get(band)
        if fcode is None:
            if len(filt_codes) >= np.iinfo(np.int8).max:
                raise FeatureInputError(f"ztf records under {records.folder} name more than 127 filters")
            fcode = filt_codes[band] = len(filt_codes)
        filt.append(fcode)
        mjd.append(rec["mjd"])
        mag.append(rec.get("mag"))
        magerr.append(rec.get("magerr"))
        ra.append(rec.get("ra"))
        dec.append(rec.get("dec"))
        catflags = rec.get("catflags")
        flag.append(-1 if catflags is None else int(catflags != 0))
        if len(oid) >= chunk_records:
            flush()
    if oid:
        flush()
    if not parts["mjd"]:
        raise FeatureInputError(f"no ztf records under {records.folder}")
    columns: dict[str, npt.NDArray[Any]] = {}
    for name in list(parts):
        columns[name] = np.concatenate(parts.pop(name))  # one column at a time: peak = data + 1 column
    return ZtfObservations.from_columns(
        list(oid_codes), list(filt_codes), columns["oid"], columns["filt"], columns
    )


def _ranks(labels: list[str]) -> IntArray:
    """rank[code] = position of labels[code] in sorted order (so codes sort like their text)."""
    ranks = np.empty(len(labels), dtype=np.int64)
    ranks[sorted(range(len(labels)), key=labels.__getitem__)] = np.arange(len(labels))
    return ranks


def _segment_median(sorted_values: FloatArray, starts: IntArray, n: IntArray) -> FloatArray:
    """Median of the first ``n`` values of each segment (values sorted within segments)."""
    has = n > 0
    lo = np.where(has, starts + (n - 1) // 2, starts)
    hi = np.where(has, starts + n // 2, starts)
    return np.where(has, 0.5 * (sorted_values[lo] + sorted_values[hi]), np.nan)


def ztf_features(obs: ZtfObservations) -> dict[str, npt.NDArray[Any]]:
    """The ZTF feature columns (ZTF_COLUMNS, in order), one entry per (object_id, filter).

    Consumes ``obs``: its arrays are replaced by sorted copies to keep the peak memory low.
    """
    if len(obs) == 0:
        raise FeatureInputError("no ztf observations")
    oid_rank = _ranks(obs.object_ids)
    filt_rank = _ranks(obs.filters)
    n_filters = max(len(obs.filters), 1)
    group_key = oid_rank[obs.oid] * n_filters + filt_rank[obs.filt]
    order = np.lexsort((obs.mjd, group_key))
    group_key = group_key[order]
    mjd = obs.mjd[order]
    keep = np.ones(mjd.shape[0], dtype=bool)
    keep[1:] = (group_key[1:] != group_key[:-1]) | (mjd[1:] != mjd[:-1])  # same key and mjd: once
    order = order[keep]
    group_key, mjd = group_key[keep], mjd[keep]
    mag = obs.mag[order]
    magerr = obs.magerr[order]
    ra = obs.ra[order]
    dec = obs.dec[order]
    flag = obs.flag[order]
    del order, keep
    obs.mag = obs.magerr = obs.ra = obs.dec = obs.mjd = np.empty(0)

    n_total = mjd.shape[0]
    change = np.ones(n_total, dtype=bool)
    change[1:] = group_key[1:] != group_key[:-1]
    starts = np.flatnonzero(change).astype(np.int64)
    del change
    n_groups = starts.shape[0]
    n_obs = np.diff(np.append(starts, n_total))
    group = np.repeat(np.arange(n_groups, dtype=np.int64), n_obs)
    key_first = group_key[starts]
    del group_key

    def total(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return np.add.reduceat(values, starts)

    with np.errstate(divide="ignore", invalid="ignore"):
        # magnitudes: a null (NaN) or infinite mag is not a measurement
        valid = np.isfinite(mag)
        n_mag = total(valid.astype(np.int64))
        mag0 = np.where(valid, mag, 0.0)
        mean = np.where(n_mag > 0, total(mag0) / n_mag, np.nan)
        dev = np.where(valid, mag - mean[group], 0.0)
        dev2 = dev * dev
        s2 = total(dev2)
        s3 = total(dev2 * dev)
        s4 = total(dev2 * dev2)
        del dev, dev2
        std = np.where(n_mag >= 2, np.sqrt(s2 / (n_mag - 1)), np.nan)
        m2, m3, m4 = s2 / n_mag, s3 / n_mag, s4 / n_mag
        spread = (n_mag > 0) & (m2 > (_EPS * mean) ** 2)
        skew = np.where(spread, m3 / m2**1.5, np.nan)
        kurtosis = np.where(spread, m4 / m2**2 - 3.0, np.nan)

        # order statistics: sort each group's values, invalid ones (as +inf) last
        ranked = np.where(valid, mag, np.inf)
        sorted_mag = ranked[np.lexsort((ranked, group))]
        del ranked
        has = n_mag > 0
        last = np.where(has, starts + n_mag - 1, starts)
        mag_min = np.where(has, sorted_mag[starts], np.nan)
        mag_max = np.where(has, sorted_mag[last], np.nan)
        median = _segment_median(sorted_mag, starts, n_mag)
        del sorted_mag
        absdev = np.where(valid, np.abs(mag - median[group]), np.inf)
        mad = _segment_median(absdev[np.lexsort((absdev, group))], starts, n_mag)
        del absdev

        # inverse-variance weights from magerr > 0 only
        weighted = valid & np.isfinite(magerr) & (magerr > 0)
        weight = np.where(weighted, 1.0 / np.where(weighted, magerr, 1.0) ** 2, 0.0)
        n_weighted = total(weighted.astype(np.int64))
        weight_sum = total(weight)
        wmean = np.where(n_weighted > 0, total(weight * mag0) / weight_sum, np.nan)
        wmean_err = np.where(n_weighted > 0, 1.0 / np.sqrt(weight_sum), np.nan)
        resid = np.where(weighted, mag0 - wmean[group], 0.0)
        chi2 = total(weight * resid * resid)
        chi2_red = np.where(n_weighted >= 2, chi2 / (n_weighted - 1), np.nan)
        del weight, resid, mag0, weighted, valid

        # positions: circular mean for RA (0/360 wrap), arithmetic for Dec
        ra_ok = np.isfinite(ra)
        ra_rad = np.deg2rad(np.where(ra_ok, ra, 0.0))
        sin_sum = total(np.where(ra_ok, np.sin(ra_rad), 0.0))
        cos_sum = total(np.where(ra_ok, np.cos(ra_rad), 0.0))
        ra_mean = np.where(
            total(ra_ok.astype(np.int64)) > 0, np.rad2deg(np.arctan2(sin_sum, cos_sum)) % 360.0, np.nan
        )
        dec_ok = np.isfinite(dec)
        n_dec = total(dec_ok.astype(np.int64))
        dec_mean = np.where(n_dec > 0, total(np.where(dec_ok, dec, 0.0)) / n_dec, np.nan)

        known = total((flag >= 0).astype(np.int64))
        flagged = total((flag == 1).astype(np.int64))
        frac_flagged = np.where(known > 0, flagged / known, np.nan)

    mjd_first = mjd[starts]
    mjd_last = mjd[starts + n_obs - 1]
    ids = np.array(obs.object_ids, dtype=object)[np.argsort(oid_rank)]
    bands = np.array(obs.filters, dtype=object)[np.argsort(filt_rank)]
    return {
        "object_id": ids[key_first // n_filters],
        "filter": bands[key_first % n_filters],
        "n_obs": n_obs,
        "n_mag": n_mag,
        "n_null_mag": n_obs - n_mag,
        "n_weighted": n_weighted,
        "mjd_first": mjd_first,
        "mjd_last": mjd_last,
        "baseline": mjd_last - mjd_first,
        "ra": ra_mean,
        "dec": dec_mean,
        "mag_mean": mean,
        "mag_median": median,
        "mag_std": std,
        "mag_min": mag_min,
        "mag_max": mag_max,
        "amplitude": (mag_max - mag_min) / 2.0,
        "mag_wmean": wmean,
        "mag_wmean_err": wmean_err,
        "chi2_red": chi2_red,
        "mag_mad": mad,
        "mag_skew": skew,
        "mag_kurtosis": kurtosis,
        "frac_flagged": frac_flagged,
    }


def rows(table: dict[str, npt.NDArray[Any]], columns: tuple[Column, ...]) -> Iterator[list[object]]:
    """The table's rows as Python values, in column order."""
    lists = [table[c.name].tolist() for c in columns]
    yield from (list(row) for row in zip(*lists, strict=True))


def ztf_readme(summary_line: str) -> str:
    """The README written next to ztf/features.csv."""
    return (
        "# ztf features\n\n"
        "Generated by `harvester features ztf`; do not edit. Definitions: docs/features.md.\n\n"
        f"{summary_line}\n\n"
        "One row per (object_id, filter), sorted by object_id then filter. Null `mag` epochs count in "
        "`n_obs` and `n_null_mag` only; `magerr` must be finite and > 0 for the weighted columns. "
        "Flagged epochs (catflags ≠ 0) are included in every statistic. An empty cell means "
        "undefined (too few values, or all values equal). Floats are written with full precision.\n\n"
        "## Columns\n\n" + columns_markdown(ZTF_COLUMNS)
    )


DEFAULT_BUCKETS = 32


def _bucket_files(
    records: RecordSource, chunk_records: int, buckets: int, folder: Path
) -> tuple[int, list[Path]]:
    """Spill observations into ``buckets`` files by a stable hash of object_id.

    Every observation of one object lands in one bucket, so each bucket can be reduced alone: the
    memory of the reduction is that of the largest bucket, not of the whole harvest.
    """
    paths = [folder / f"bucket-{i:03d}.npy" for i in range(buckets)]
    pending: list[dict[str, list[Any]]] = [{name: [] for name in _SPILL_FIELDS} for _ in range(buckets)]
    handles = [open(path, "wb") for path in paths]  # noqa: SIM115  # closed in the finally below
    count = waiting = 0

    def flush() -> None:
        for bucket, handle in zip(pending, handles, strict=True):
            if not bucket["mjd"]:
                continue
            np.save(handle, np.asarray(bucket["object_id"], dtype=str))
            np.save(handle, np.asarray(bucket["filter"], dtype=str))
            np.save(handle, np.asarray(bucket["flag"], dtype=np.int8))
            for name in _FLOAT_FIELDS:
                try:
                    np.save(handle, np.asarray(bucket[name], dtype=np.float64))  # None becomes NaN
                except (TypeError, ValueError):
                    raise FeatureInputError(
                        f"a ztf record under {records.folder} has a non-numeric {name}"
                    ) from None
            for values in bucket.values():
                values.clear()

    try:
        for rec in iter_records(records, ("object_id", "filter", "mjd")):
            object_id = str(rec["object_id"])
            bucket = pending[zlib.crc32(object_id.encode()) % buckets]
            bucket["object_id"].append(object_id)
            bucket["filter"].append(str(rec["filter"]))
            catflags = rec.get("catflags")
            bucket["flag"].append(-1 if catflags is None else int(catflags != 0))
            for name in _FLOAT_FIELDS:
                bucket[name].append(rec.get(name))
            count += 1
            waiting += 1
            if waiting >= chunk_records:
                flush()
                waiting = 0
        flush()
    finally:
        for handle in handles:
            handle.close()
    return count, paths


_SPILL_FIELDS = ("object_id", "filter", "flag", *_FLOAT_FIELDS)


def _load_bucket(path: Path) -> ZtfObservations | None:
    columns: dict[str, list[npt.NDArray[Any]]] = {name: [] for name in _SPILL_FIELDS}
    with open(path, "rb") as fh:
        while fh.peek(1) if hasattr(fh, "peek") else False:
            for name in _SPILL_FIELDS:
                columns[name].append(np.load(fh, allow_pickle=False))
    if not columns["mjd"]:
        return None
    merged = {name: np.concatenate(parts) for name, parts in columns.items()}
    object_ids, oid = np.unique(merged["object_id"], return_inverse=True)
    filters, filt = np.unique(merged["filter"], return_inverse=True)
    return ZtfObservations.from_columns(object_ids.tolist(), filters.tolist(), oid, filt, merged)


def ztf_features_bucketed(
    records: RecordSource, chunk_records: int = DEFAULT_CHUNK_RECORDS, buckets: int = DEFAULT_BUCKETS
) -> tuple[int, dict[str, npt.NDArray[Any]]]:
    """(records read, the feature table) computed bucket by bucket, in bounded memory.

    Observations are spilled to ``buckets`` temporary files by object_id, then each bucket is
    reduced with :func:`ztf_features` on its own; the rows are merged and sorted by
    (object_id, filter). Peak memory is one chunk of records plus the largest bucket's columns.
    """
    with tempfile.TemporaryDirectory(prefix="harvester-ztf-features-") as tmp:
        count, paths = _bucket_files(records, chunk_records, buckets, Path(tmp))
        if count == 0:
            raise FeatureInputError(f"no ztf records under {records.folder}")
        parts: list[dict[str, npt.NDArray[Any]]] = []
        for path in paths:
            obs = _load_bucket(path)
            path.unlink()
            if obs is not None:
                parts.append(ztf_features(obs))
    table = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    order = np.lexsort((table["filter"].astype(str), table["object_id"].astype(str)))
    return count, {name: column[order] for name, column in table.items()}


def build_ztf_features(
    input_root: Path,
    output_root: Path,
    chunk_records: int = DEFAULT_CHUNK_RECORDS,
    buckets: int = DEFAULT_BUCKETS,
) -> FeatureSummary:
    """Read ``<input_root>/ztf`` and write ``<output_root>/ztf/features.csv`` and its README."""
    records = open_source(input_root, "ztf")
    n_records, table = ztf_features_bucketed(records, chunk_records, buckets)
    out = output_root / "ztf"
    path = out / "features.csv"
    n_rows = write_csv_atomic(path, [c.name for c in ZTF_COLUMNS], rows(table, ZTF_COLUMNS))
    line = (
        f"Input: `{records.folder}` ({n_records} records in {len(records.files)} files). "
        f"Output: {n_rows} rows."
    )
    readme = out / "README.md"
    write_text_atomic(readme, ztf_readme(line))
    return FeatureSummary("ztf", n_records, len(records.files), n_rows, path, readme)


def build(input_root: Path, output_root: Path, options: FeatureOptions) -> FeatureSummary:
    """The ZTF entry of ``harvester features`` (the archive registry names it)."""
    return build_ztf_features(input_root, output_root, options.chunk_records)
