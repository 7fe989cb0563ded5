"""Benchmark part 6: peak memory of a ZTF harvest as it grows (1,000,000 vs 10,000,000 observations).

Run with ``uv run python -m tests.tools.bench.bench_memory [--quick] [--sizes N ...] [--trace N]`` (or as
part of ``python -m tests.tools.bench``). A script, not a test.

The fake archive runs in *this* process, on loopback with no latency and no rate limit, so its
caches do not count. Each size is harvested by a **child process** (``--child``) that runs
``harvester.harvest("ztf", format="jsonl", limit=N)`` over enough 0.06° cones (≈ 3,700 epochs
each: many more cones than the harvest has in flight, so only what grows with the harvest
differs between sizes) with the default settings otherwise (state store on, 10,000-record
shards) and reports its peak resident set size (``VmHWM``; ``ru_maxrss`` where there is no
``/proc``), next to its RSS after imports and settings. Memory that stays flat as the harvest
grows is the goal; the bytes per extra observation are reported. A warm-up child of the
smallest size runs first, so that every measured child starts on an archive that has served
its first cones before (see :func:`measure`).

``--trace N`` runs one child of size N under ``tracemalloc`` and prints the allocation sites that
hold the most memory once 90 % of the records are in (innermost frames first), to find out
*what* grows. It is slow (about 3 s per 1,000 observations).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

import harvester
from harvester.run.report import RunReport
from harvester.testing import FakeArchive, running_server
from tests.tools.bench.bench_ztf_rate import Goal, Part, bench_settings

IRSA_PATH = "/cgi-bin/ZTF/nph_light_curves"
ROOT = Path(__file__).resolve().parents[3]
CONE_RADIUS = 0.06
RECORDS_PER_CONE = 3_000  # a 0.06° cone holds 2,400–4,500 epochs in the fake sky
GROWTH_GOAL_MB = 50.0  # "flat": less than this much more peak RSS for 10× the observations


def cones_for(n: int) -> list[dict[str, float]]:
    """Enough non-overlapping 0.06° cones for ``n`` observations, in rows of 300 along RA.

    Every size uses cones of the same size, many more than the harvest has in flight at once
    (IRSA's default: 4 requests at once, 8 workers), so only what grows with the harvest differs.
    """
    count = math.ceil(n / RECORDS_PER_CONE) + 1
    return [
        {"ra": 120.0 + 0.15 * (i % 300), "dec": 25.0 + 0.5 * (i // 300), "radius": CONE_RADIUS}
        for i in range(count)
    ]


def _status_mb(field: str) -> float | None:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from ``/proc/self/status``, in MB."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def rss_now_mb() -> float:
    return _status_mb("VmRSS") or peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size. ``VmHWM`` where there is one: ``ru_maxrss`` survives ``exec`` on
    Linux, so a child would report its parent's size at fork time if that was larger."""
    return _status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(url: str, n: int, folder: Path, trace: bool) -> dict[str, Any]:
    """Harvest ``n`` observations into ``folder`` as jsonl; measure this process."""
    settings = bench_settings(
        folder,
        format="jsonl",
        limit=n,
        data_sources={
            "ztf": {
                "irsa": {"base_url": url + IRSA_PATH, "targets": cones_for(n)},
                "rate_limit": {"requests_per_second": 1000, "max_concurrency": 4},
            }
        },
    )
    baseline = rss_now_mb()
    if trace:
        tracemalloc.start(8)
    report = RunReport(run_id="", started_at=datetime.now(UTC))
    top: list[dict[str, Any]] = []

    async def watch() -> None:
        """Snapshot the live allocations once 90 % of the records are in (the harvest's peak)."""
        while True:
            await anyio.sleep(0.1)
            src = report.sources.get("ztf")
            if src is not None and src.records >= 0.9 * n:
                snapshot = tracemalloc.take_snapshot()
                for stat in snapshot.statistics("traceback")[:12]:
                    frames = list(stat.traceback)[::-1][:4]  # innermost first
                    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames)
                    top.append({"where": where, "mb": stat.size / 1e6, "count": stat.count})
                return

    async def main() -> float:
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            if trace:
                tg.start_soon(watch)
            await harvester.harvest("ztf", settings=settings, report=report)
            tg.cancel_scope.cancel()
        return time.perf_counter() - start

    seconds = anyio.run(main)
    src = report.sources["ztf"]
    out: dict[str, Any] = {
        "records": src.written,
        "status": src.status,
        "seconds": seconds,
        "baseline_mb": baseline,
        "peak_mb": peak_rss_mb(),
    }
    if trace:
        out["traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
        out["top"] = top
    return out


@dataclass
class MemoryRun:
    observations: int
    records: int
    seconds: float
    baseline_mb: float
    peak_mb: float


def spawn(url: str, n: int, *, trace: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        command = [sys.executable, "-m", "tests.tools.bench.bench_memory", "--child", url, str(n), tmp]
        if trace:
            command.append("--trace-child")
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"memory child for {n} failed:\n{done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result


def measure(sizes: list[int]) -> tuple[MemoryRun, list[MemoryRun]]:
    """A warm-up child of the smallest size, then one child per size, all against one archive.

    The archive keeps what it served, and every size starts with the same cones: without the
    warm-up the first size would meet a cold archive (slow, generating its sky) and the next a
    warm one for its first part (fast: every queue fills, and a warm start peaks higher; 2026-12-07,
    the same 1,000,000-record harvest peaked at 470 MB cold, 522 MB warm). With it every size
    starts alike, and only what grows with the harvest differs."""
    runs = []
    archive = FakeArchive()
    with running_server(archive) as url:
        warm_up = _run_child(url, min(sizes))
        for n in sizes:
            runs.append(_run_child(url, n))
    return warm_up, runs


def _run_child(url: str, n: int) -> MemoryRun:
    got = spawn(url, n)
    if got["status"] != "ok" or got["records"] != n:
        raise RuntimeError(f"memory child for {n}: {got['status']}, {got['records']} records")
    return MemoryRun(n, got["records"], got["seconds"], got["baseline_mb"], got["peak_mb"])


def render(warm_up: MemoryRun, runs: list[MemoryRun]) -> Part:
    lines = [
        "ZTF harvest to jsonl (default settings: state store on, 10,000-record shards) in a child "
        "process per size, 0.06° cones (≈ 3,700 epochs each, far more cones than are in flight), "
        "from the fake archive on loopback (no latency); peak RSS of the child (`VmHWM`), and its "
        "RSS before harvesting. Every size starts with the same cones, so a warm-up child of the "
        "smallest size runs first: each measured child then starts on a warm archive (fast: every "
        "queue full), not the first on a cold one and the next on a warm one.",
        "",
        "| observations | seconds | records/s | RSS before harvest MB | peak RSS MB | growth MB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r, label in [(warm_up, " (warm-up, cold archive)"), *((r, "") for r in runs)]:
        lines.append(
            f"| {r.observations:,}{label} | {r.seconds:.1f} | {r.records / r.seconds:,.0f} | "
            f"{r.baseline_mb:.0f} | {r.peak_mb:.0f} | {r.peak_mb - r.baseline_mb:.0f} |"
        )
    small, big = runs[0], runs[-1]
    per_obs = (big.peak_mb - small.peak_mb) * 1024**2 / max(big.observations - small.observations, 1)
    lines += [
        "",
        f"Peak RSS {small.observations:,} → {big.observations:,} observations: "
        f"{small.peak_mb:.0f} → {big.peak_mb:.0f} MB (**{per_obs:.0f} bytes per extra observation**).",
    ]
    growth = big.peak_mb - small.peak_mb
    goals: list[Goal] = [
        (
            f"Peak memory {small.observations:,} → {big.observations:,} observations",
            f"{small.peak_mb:.0f} → {big.peak_mb:.0f} MB",
            f"flat (< +{GROWTH_GOAL_MB:.0f} MB)",
            growth < GROWTH_GOAL_MB,
        )
    ]
    return ("Peak memory of a growing ZTF harvest (part 6)", "\n".join(lines), goals)


def run(quick: bool) -> Part:
    return render(*measure([100_000, 1_000_000] if quick else [1_000_000, 10_000_000]))


def trace(n: int) -> None:
    archive = FakeArchive()
    with running_server(archive) as url:
        got = spawn(url, n, trace=True)
    print(f"{n:,} observations: peak RSS {got['peak_mb']:.0f} MB, traced peak {got['traced_peak_mb']:.0f} MB")
    print("largest allocation sites alive at 90 % of the harvest (traceback, innermost first):")
    for top in got["top"]:
        print(f"{top['mb']:8.1f} MB {top['count']:>9,} blocks  {top['where']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100,000 and 1,000,000 observations")
    parser.add_argument("--sizes", type=int, nargs="+", help="observation counts to compare")
    parser.add_argument("--trace", type=int, metavar="N", help="tracemalloc one harvest of N observations")
    parser.add_argument("--child", nargs=3, metavar=("URL", "N", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--trace-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        url, n, folder = args.child
        print(json.dumps(child(url, int(n), Path(folder), args.trace_child)))
        return 0
    if args.trace:
        trace(args.trace)
        return 0
    part = render(*measure(args.sizes)) if args.sizes else run(args.quick)
    print(f"## {part[0]}\n\n{part[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
