"""Benchmark part 8: ``harvester compact`` peak memory and speed, streamed vs all in memory.

Run with ``uv run --group bench python -m tests.tools.bench.bench_compact [--quick]`` (or as part of
``python -m tests.tools.bench``). A script, not a test.

Committed ZTF units of 200,000 and 1,000,000 epochs (``--quick``: 100,000 and 400,000; both
past the first row group, so only what grows with the input differs) are written
to a temporary folder as workers write them (a data object per unit, then its manifest). Each
size is compacted by a **child process**, once with :func:`harvester.executors.compact.compact`
and once with the baseline, the in-memory merge compact was before: every record read into one
list, deduplicated, then ``pa.Table.from_pylist`` and ``pq.write_table``. The child reports its
peak resident set size (``VmHWM``) next to its size after imports. Flat memory as the input grows
is the goal; the baseline's growth and the throughput ratio are printed next to it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from harvester import archives
from harvester.archives.ztf.records import ZtfRecord
from harvester.executors.compact import committed_records, compact
from harvester.io.arrow import arrow_schema, flat_row
from harvester.io.objectstore import ObjectStore
from tests.tools.bench.bench_memory import peak_rss_mb, rss_now_mb
from tests.tools.bench.bench_ztf_rate import Goal, Part, print_part

PER_UNIT = 5_000
#: "flat": peak RSS grows only by the dedup digests (~100 bytes per distinct record), not by the
#: records themselves (~2.6 KB each as Python objects)
GROWTH_GOAL_BYTES = 200


def write_units(root: Path, n: int) -> None:
    """``n`` ZTF epochs in units of :data:`PER_UNIT`; each unit repeats its predecessor's last
    epoch (an overlap at a cell edge), so compact also has duplicates to drop."""
    store = ObjectStore(root)
    fetched = datetime(2026, 11, 26, tzinfo=UTC).isoformat()
    provenance = {"archive": "irsa", "url": "https://irsa.example/q", "service": None, "sample": True}
    numbers = {pa.float64(): 1.25, pa.int64(): 7}  # every optional number of the model, set
    cells = {f.name: numbers[f.type] for f in arrow_schema(ZtfRecord) if f.nullable and f.type in numbers}
    for unit, start in enumerate(range(0, n, PER_UNIT)):
        lines = []
        for k in range(max(0, start - 1), min(n, start + PER_UNIT)):
            record = {
                "source": "ztf",
                "object_id": str(675103300000000 + k // 500),
                "fetched_at": fetched,
                "provenance": provenance,
                **cells,
                "mjd": 58000.0 + k * 0.001,
                "filter": "zg",
                "mag": 18.0 + (k % 97) / 100,
            }
            lines.append(orjson.dumps(record) + b"\n")
        body = b"".join(lines)
        data = f"ztf/units/c{unit:05d}/bench-d.jsonl"
        store.put_new(data, body)
        manifest = {"data": data, "sha256": hashlib.sha256(body).hexdigest()}
        store.put_new(f"_units/ztf/c{unit:05d}/bench-d.json", orjson.dumps(manifest))


def in_memory_compact(source: str, root: str, output: Path) -> tuple[int, int]:
    """The baseline: the whole merge held in memory, then written in one call."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [flat_row(record) for record, _ in committed_records(source, root)]
    pq.write_table(pa.Table.from_pylist(records), output)
    return len(records), 0


def child(kind: str, root: str, output: Path) -> dict[str, Any]:
    archives.record_model("ztf").model_json_schema()  # imports and model set-up before the baseline
    import pyarrow.parquet  # noqa: F401

    baseline = rss_now_mb()
    start = time.perf_counter()
    rows, _ = (compact if kind == "streamed" else in_memory_compact)("ztf", root, output)
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": seconds, "baseline_mb": baseline, "peak_mb": peak_rss_mb()}


def measure(kind: str, root: Path, output: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "tests.tools.bench.bench_compact", "--child", kind, str(root), str(output)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(quick: bool) -> Part:
    sizes = (100_000, 400_000) if quick else (200_000, 1_000_000)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-compact-") as tmp:
        for n in sizes:
            root = Path(tmp) / f"units-{n}"
            write_units(root, n)
            for kind in ("streamed", "in memory"):
                results[kind, n] = measure(kind.replace(" ", "-"), root, Path(tmp) / f"{n}-{kind}.parquet")
    small, large = sizes
    lines = [
        "| compact | records | peak RSS (MB) | over imports (MB) | records/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for (kind, n), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0] != "streamed")):
        over, rate = r["peak_mb"] - r["baseline_mb"], r["rows"] / r["seconds"]
        lines.append(f"| {kind} | {n:,} | {r['peak_mb']:.0f} | {over:.0f} | {rate:,.0f} |")
    kinds = ("streamed", "in memory")
    growth = {kind: results[kind, large]["peak_mb"] - results[kind, small]["peak_mb"] for kind in kinds}
    rates = {kind: results[kind, large]["rows"] / results[kind, large]["seconds"] for kind in kinds}
    speed = rates["streamed"] / rates["in memory"]
    lines += [
        "",
        f"Peak RSS growth from {small:,} to {large:,} records: streamed {growth['streamed']:+.0f} MB, "
        f"in memory {growth['in memory']:+.0f} MB. Streamed speed: {speed:.2f}x the in-memory merge.",
    ]
    per_record = {kind: growth[kind] * 1e6 / (large - small) for kind in kinds}
    goals: list[Goal] = [
        (
            "compact memory per extra record",
            f"{per_record['streamed']:.0f} B (in memory: {per_record['in memory']:.0f} B)",
            f"< {GROWTH_GOAL_BYTES} B",
            per_record["streamed"] < GROWTH_GOAL_BYTES,
        ),
        ("compact speed vs in memory", f"{speed:.2f}x", "≥ 0.8x", speed >= 0.8),
    ]
    return ("harvester compact: streamed vs in memory (part 8)", "\n".join(lines), goals)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100,000 and 400,000 records")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "ROOT", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, root, output = args.child
        print(json.dumps(child(kind, root, Path(output))))
        return 0
    print_part(run(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
