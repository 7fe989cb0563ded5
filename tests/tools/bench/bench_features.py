"""Benchmark: ZTF features for 1,000,000 synthetic observations (a script, not a test).

Run with ``uv run python -m tests.tools.bench.bench_features [--observations N] [--skip-end-to-end]``.

Two measurements:

1. **compute**: :func:`harvester.features.ztf.ztf_features` on observations already in numpy
   columns (10,000 objects × 2 filters × 50 epochs by default, 1 % null magnitudes). Peak memory
   is measured with tracemalloc (numpy reports its buffers to it), above the input columns.
2. **end to end**: :func:`harvester.features.ztf.build_ztf_features` (what ``harvester features
   ztf`` runs) in a fresh interpreter, on the same observations written as full-schema ZTF records
   in ``part-*.jsonl`` shards (in a temporary folder, ~0.6 GB per million): parse + group + write.
   Peak memory is that process's peak resident set size (``VmHWM``), shown next to the peak of an
   interpreter that only imports the module.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import orjson

from harvester.features.ztf import ZtfObservations, ztf_features

EPOCHS = 50
SHARD_RECORDS = 100_000


def synthetic(n: int, seed: int = 0) -> ZtfObservations:
    """``n`` observations: groups of EPOCHS epochs, objects in two filters, 1 % null mags."""
    rng = np.random.default_rng(seed)
    groups = max(n // EPOCHS, 1)
    group = np.repeat(np.arange(groups), EPOCHS)[:n]
    group = np.concatenate([group, np.full(n - group.size, groups - 1)])
    oid = (group // 2).astype(np.int32)
    filt = (group % 2).astype(np.int8)
    mag = rng.uniform(14, 20, groups)[group] + rng.normal(0, 0.05, n)
    mag[rng.random(n) < 0.01] = np.nan
    return ZtfObservations(
        object_ids=[f"{600000000000000 + i:015d}" for i in range(int(oid.max()) + 1)],
        filters=["zg", "zr"],
        oid=oid,
        filt=filt,
        mjd=58000 + rng.uniform(0, 2000, n),
        mag=mag,
        magerr=rng.uniform(0.01, 0.1, n),
        ra=rng.uniform(0, 360, groups // 2 + 1)[oid] + rng.normal(0, 1e-5, n),
        dec=rng.uniform(-30, 80, groups // 2 + 1)[oid] + rng.normal(0, 1e-5, n),
        flag=(rng.random(n) < 0.05).astype(np.int8),
    )


def bench_compute(n: int) -> None:
    obs = synthetic(n)
    columns_mb = sum(
        a.nbytes for a in (obs.oid, obs.filt, obs.mjd, obs.mag, obs.magerr, obs.ra, obs.dec, obs.flag)
    )
    tracemalloc.start()
    start = time.perf_counter()
    table = ztf_features(obs)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"compute:     {n:>9,} observations -> {table['n_obs'].size:,} rows in {elapsed:6.2f} s "
        f"= {n / elapsed:>11,.0f} records/s; input columns {columns_mb / 1e6:.0f} MB, "
        f"peak traced during compute {peak / 1e6:.0f} MB"
    )


def write_shards(obs: ZtfObservations, folder: Path) -> None:
    """The observations as full-schema ZTF records in jsonl shards, written chunk by chunk."""
    folder.mkdir(parents=True)
    n = len(obs)
    for shard, lo in enumerate(range(0, n, SHARD_RECORDS)):
        lines = []
        for i in range(lo, min(lo + SHARD_RECORDS, n)):
            mag = float(obs.mag[i])
            lines.append(
                orjson.dumps(
                    {
                        "source": "ztf",
                        "object_id": obs.object_ids[int(obs.oid[i])],
                        "fetched_at": "2024-01-01T00:00:00+00:00",
                        "provenance": {
                            "archive": "irsa",
                            "url": "https://example.invalid/",
                            "service": None,
                            "sample": True,
                        },
                        "mjd": float(obs.mjd[i]),
                        "filter": obs.filters[int(obs.filt[i])],
                        "mag": None if mag != mag else mag,
                        "magerr": float(obs.magerr[i]),
                        "ra": float(obs.ra[i]),
                        "dec": float(obs.dec[i]),
                        "expid": 204835741,
                        "hjd": float(obs.mjd[i]) + 2400000.5,
                        "catflags": 32768 if obs.flag[i] else 0,
                        "chi": 0.8,
                        "sharp": -0.02,
                        "filefracday": 20220811357416,
                        "field": 808,
                        "ccdid": 2,
                        "qid": 4,
                        "limitmag": 20.5,
                        "magzp": 26.3,
                        "magzprms": 0.03,
                        "clrcoeff": -0.06,
                        "clrcounc": 6.5e-6,
                        "exptime": 30.0,
                        "airmass": 1.3,
                        "programid": 1,
                    }
                )
            )
        (folder / f"part-bench-{shard:05d}.jsonl").write_bytes(b"\n".join(lines) + b"\n")


_PEAK = """
import resource
from pathlib import Path


def peak_mb():
    try:  # VmHWM starts afresh at exec; ru_maxrss would include the parent's pages at fork
        line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

_IDLE = (
    _PEAK
    + """
import harvester.features.ztf
print(peak_mb())
"""
)

_BUILD = (
    _PEAK
    + """
import sys
from harvester.features.ztf import build_ztf_features
build_ztf_features(Path(sys.argv[1]), Path(sys.argv[2]))
print(peak_mb())
"""
)


def _child(code: str, *args: str) -> tuple[float, float]:
    """Run ``code`` in a fresh interpreter; (seconds, its peak RSS in MB)."""
    start = time.perf_counter()
    out = subprocess.run(  # our own interpreter and code
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    ).stdout
    return time.perf_counter() - start, float(out.split()[-1])


def bench_end_to_end(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        write_shards(synthetic(n), root / "raw" / "ztf")
        size = sum(p.stat().st_size for p in (root / "raw" / "ztf").iterdir())
        print(f"(wrote {n:,} records, {size / 1e6:.0f} MB of jsonl, in {time.perf_counter() - start:.1f} s)")
        idle_s, idle_mb = _child(_IDLE)
        elapsed, peak_mb = _child(_BUILD, str(root / "raw"), str(root / "processed"))
        print(
            f"end to end:  {n:>9,} observations in {elapsed - idle_s:6.2f} s = "
            f"{n / (elapsed - idle_s):>11,.0f} records/s (parse + group + write CSV, interpreter start "
            f"excluded); peak RSS {peak_mb:.0f} MB, of which {idle_mb:.0f} MB is the interpreter "
            f"with numpy before any record"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--observations", type=int, default=1_000_000)
    parser.add_argument("--skip-end-to-end", action="store_true", help="Only time the numpy computation.")
    args = parser.parse_args()
    bench_compute(args.observations)
    if not args.skip_end_to_end:
        bench_end_to_end(args.observations)


if __name__ == "__main__":
    main()
