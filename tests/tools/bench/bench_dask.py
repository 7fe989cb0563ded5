"""Benchmark part 7: ``executor: dask`` with 1, 2 and 4 worker processes (issue 10).

Run with ``uv run --group bench python -m tests.tools.bench.bench_dask [--quick]`` (or as part of
``python -m tests.tools.bench``). A script, not a test.

For each worker count a ``LocalCluster(n_workers=n, threads_per_worker=1, processes=True)`` is
started once; the three clusters are up side by side and the runs go round-robin over them, so a
change of load on the machine falls on every worker count alike. Start-up, module imports on
every worker and one small warm-up run per workload stay outside the clock. Each run is one
:func:`harvester.executors.driver.harvest_distributed` call, against one of two fake
archives on loopback:

A. **Rate-limited**: ZTF cones in 8 sky cells (8 work units) against an archive with 150 ms
   latency that counts violations of 10 requests/s, the harvester's budget for that host being
   10 requests/s × 4 in flight, shared by every worker (scheduler-held semaphores). The budget
   binds, so requests/s should stay flat whatever the number of workers.
B. **Unlimited**: TESS SPOC light curves (19,000 cadences, ≈ 1.9 MB each, generated before the
   clock starts) of TIC ids spread over the 64 hash buckets, from an archive with no latency and a
   budget of 1000 requests/s × 16 (never binding). All the work is on the workers: downloads,
   FITS decoding, records, the unit objects; with ~1.6 TIC ids per unit, the fixed cost of a unit
   (HTTP session, scratch state, schema README, round trips to the scheduler for every request's
   leases) weighs more than the decoding itself (about 1 ms per file). Light curves/s should grow
   with the workers, up to the machine's cores (the driver, the scheduler and the fake archives
   share them).

The two archives listen on different loopback addresses (127.0.0.1 and 127.0.0.2): the cluster's
shared budgets are named per host, and one host cannot have two budgets in the same cluster.

The baseline is the 1-worker figure of the same run. Goals (issue 10): rate-limited requests/s of
2 and 4 workers within 0.9–1.1× of 1 worker with 0 server-side violations; unlimited light
curves/s of 2 workers ≥ 1.3× of 1 worker.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson

from harvester.executors.driver import harvest_distributed
from harvester.executors.units import plan_units
from harvester.settings import Settings
from harvester.testing import FakeArchive, running_server
from harvester.testing._archive import FILE_CACHE_BYTES
from harvester.testing._tess import TessProduct, tess_target
from tests.tools.bench.bench_tess_compare import pick_targets
from tests.tools.bench.bench_ztf_rate import Goal, Part, bench_settings, print_part

WORKERS = (1, 2, 4)
LATENCY_S = 0.15
RATE_RPS = 10.0
RATE_AT_ONCE = 4
UNLIMITED_RPS = 1000.0
UNLIMITED_AT_ONCE = 16
CADENCES = 19_000
IRSA_PATH = "/cgi-bin/ZTF/nph_light_curves"
RATE_HOST = "127.0.0.1"
UNLIMITED_HOST = "127.0.0.2"
RATE_BAND = (0.9, 1.1)
SCALE_GOAL = 1.3
#: Modules every worker imports before the clock starts (what a unit needs).
WORKER_IMPORTS = (
    "harvester.api",
    "harvester.executors.worker",
    "harvester.archives.ztf.source",
    "harvester.archives.tess.source",
    "harvester.archives.spoc_fits",
)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def ztf_cones(cells: int, per_cell: int) -> list[dict[str, float]]:
    """``per_cell`` disjoint 0.01° cones in each of ``cells`` distinct ~1° sky cells (one unit each)."""
    cones = []
    for c in range(cells):
        ra0, dec0 = 10.5 + 3.0 * c, 20.1
        for k in range(per_cell):
            cones.append({"ra": ra0 + 0.005 * k, "dec": dec0 + 0.75 * k / max(per_cell, 1), "radius": 0.01})
    return cones


def ztf_settings(folder: Path, url: str, cones: list[dict[str, float]]) -> Settings:
    return bench_settings(
        folder,
        data_sources={
            "ztf": {
                "irsa": {"base_url": url + IRSA_PATH, "targets": cones, "cone_search": None},
                "rate_limit": {"requests_per_second": RATE_RPS, "max_concurrency": RATE_AT_ONCE},
            }
        },
    )


def tess_settings(folder: Path, url: str, tics: list[int]) -> Settings:
    return bench_settings(
        folder,
        data_sources={
            "tess": {
                "base_url": url,
                "query": {"tic_ids": tics},
                "rate_limit": {"requests_per_second": UNLIMITED_RPS, "max_concurrency": UNLIMITED_AT_ONCE},
            }
        },
    )


def prewarm_2min(archive: FakeArchive, tics: list[int]) -> int:
    """Generate the 2-minute light curves the harvest will download; returns the bytes cached."""

    async def generate() -> int:
        total = 0
        for tic in tics:
            for sector in tess_target(tic).sectors_until(archive.now_mjd):
                total += len(await archive.lightcurve(TessProduct(tic, sector, 120)))
        return total

    nbytes = anyio.run(generate)
    if nbytes > FILE_CACHE_BYTES:
        raise ValueError(f"{nbytes / 1e6:.0f} MB of light curves do not fit the archive's file cache")
    return nbytes


@dataclass
class DaskRun:
    """One timed ``harvest_distributed`` run."""

    workload: str
    workers: int
    wall_s: float
    units: int
    requests: int
    records: int
    violations: int
    server_rps: float  # arrivals - 1 over first-to-last arrival, as the archive saw them
    busy_workers: int  # distinct worker processes that ran a unit (from the unit manifests)
    worker_cpu_s: float  # CPU time of every worker process during the run, summed
    driver_cpu_s: float  # CPU time of this process: driver, scheduler and both fake archives
    tightest_s: float | None  # shortest span of rate + 1 consecutive arrivals (rate-limited archive)

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s

    @property
    def records_per_s(self) -> float:
        return self.records / self.wall_s


def _busy_workers(output: Path) -> int:
    pids = {orjson.loads(p.read_bytes()).get("worker_pid") for p in output.glob("_units/*/*/*.json")}
    return len(pids)


def _worker_cpu(client: Any) -> float:
    return float(sum(client.run(time.process_time).values()))


def timed_run(
    workload: str, workers: int, client: Any, archive: FakeArchive, source: str, settings: Settings
) -> DaskRun:
    """``harvest_distributed([source])`` on ``client``; counts the archive's requests during it."""
    time.sleep(1.05)  # the previous run's arrivals leave the archive's one-second window
    seen, violations = len(archive.requests), sum(archive.violations.values())
    units = len(plan_units(source, settings))
    cpu_workers, cpu_driver = _worker_cpu(client), time.process_time()
    start = time.perf_counter()
    report = harvest_distributed([source], settings, client=client)
    wall = time.perf_counter() - start
    cpu_driver, cpu_workers = time.process_time() - cpu_driver, _worker_cpu(client) - cpu_workers
    src = report.sources[source]
    if src.status != "ok":
        raise RuntimeError(f"{source} on {workers} workers did not succeed: {src.status} {src.errors[:2]}")
    times = [entry.t for entry in archive.requests[seen:]]
    server_rps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    tightest = None
    if archive.rate_limit_rps is not None:
        r = int(archive.rate_limit_rps)
        tightest = min((times[i + r] - times[i] for i in range(len(times) - r)), default=None)
    return DaskRun(
        workload,
        workers,
        wall,
        units,
        src.requests,
        src.records,
        sum(archive.violations.values()) - violations,
        server_rps,
        _busy_workers(Path(settings.output)),
        cpu_workers,
        cpu_driver,
        tightest,
    )


@contextlib.contextmanager
def cluster(workers: int) -> Iterator[Any]:
    """A LocalCluster of ``workers`` processes × 1 thread and its client, modules imported."""
    import dask
    from distributed import Client, LocalCluster

    # As harvest_distributed does for the LocalCluster it makes itself: a slow FITS decode must
    # not make the (in-process) scheduler reclaim a held lease.
    dask.config.set({"distributed.scheduler.locks.lease-timeout": "60s"})
    with warnings.catch_warnings():
        # Every scheduler's HTTP server asks for port 8787 first, and the three share the machine.
        warnings.filterwarnings("ignore", message="Port 8787 is already in use")
        local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    with local, Client(local) as client:
        client.wait_for_workers(workers)
        for module in WORKER_IMPORTS:
            client.run(importlib.import_module, module)
        yield client


@dataclass
class Workloads:
    cones: list[dict[str, float]]
    tics: list[int]
    lightcurves: int
    nbytes: int  # of the light curves, set when the archive generates them
    repeats: int


def measure(w: Workloads) -> list[DaskRun]:
    """Both workloads on 1, 2 and 4 workers (best of ``w.repeats`` for the unlimited one).

    The three clusters are up at the same time and the runs go round-robin over them (1, 2, 4
    workers, then again), so a change of load on the machine falls on every worker count alike.
    """
    limited = FakeArchive(latency_s=LATENCY_S, rate_limit_rps=RATE_RPS)
    unlimited = FakeArchive(executing_polls=0, tess_cadences=CADENCES)
    w.nbytes = prewarm_2min(unlimited, w.tics)
    with (
        tempfile.TemporaryDirectory(prefix="bench-dask-") as tmp,
        running_server(limited, host=RATE_HOST) as rate_url,
        running_server(unlimited, host=UNLIMITED_HOST) as free_url,
        contextlib.ExitStack() as stack,
    ):
        root = Path(tmp)
        clients = {n: stack.enter_context(cluster(n)) for n in WORKERS}
        for n, client in clients.items():
            # Warm-up (untimed): one unit of each workload, so every budget exists on the
            # scheduler and the first timed unit pays for nothing the others do not.
            for source, settings in (
                ("ztf", ztf_settings(root / f"warm-{n}" / "ztf", rate_url, w.cones[:2])),
                ("tess", tess_settings(root / f"warm-{n}" / "tess", free_url, w.tics[:1])),
            ):
                harvest_distributed([source], settings, client=client)
        print(f"  clusters of {', '.join(map(str, WORKERS))} workers up", flush=True)
        rate_runs = {}
        for n, client in clients.items():
            settings = ztf_settings(root / f"ztf-{n}", rate_url, w.cones)
            rate_runs[n] = timed_run("rate-limited ZTF", n, client, limited, "ztf", settings)
        print("  rate-limited runs done", flush=True)
        best: dict[int, DaskRun] = {}
        for k in range(w.repeats):
            for n, client in clients.items():
                settings = tess_settings(root / f"tess-{n}-{k}", free_url, w.tics)
                run = timed_run("unlimited TESS", n, client, unlimited, "tess", settings)
                if n not in best or run.wall_s < best[n].wall_s:
                    best[n] = run
        print("  unlimited runs done", flush=True)
        time.sleep(1.1)  # the workers give their last start leases back before the clusters close
    return [run for n in WORKERS for run in (rate_runs[n], best[n])]


def render(runs: list[DaskRun], w: Workloads) -> Part:
    limited = [r for r in runs if r.workload.startswith("rate")]
    free = [r for r in runs if r.workload.startswith("unlimited")]
    base_l, base_f = limited[0], free[0]
    lines = [
        f"`LocalCluster(n_workers=n, threads_per_worker=1, processes=True)` on a machine with "
        f"**{cores()} cores**; the three clusters side by side, runs round-robin over them; cluster "
        "start-up, worker imports and a one-unit warm-up per workload are outside the clock; wall "
        "time is the whole `harvest_distributed` call (planning, "
        "scheduling, every unit, the driver's commits). Baseline: 1 worker, same run.",
        "",
        f"- **Rate-limited**: {len(w.cones)} ZTF cones (0.01°) in {base_l.units} sky cells = "
        f"{base_l.units} units; archive with {LATENCY_S * 1e3:.0f} ms latency counting violations of "
        f"{RATE_RPS:g} req/s; shared budget {RATE_RPS:g} req/s × {RATE_AT_ONCE}.",
        f"- **Unlimited**: {w.lightcurves} SPOC light curves ({CADENCES:,} cadences, "
        f"{w.nbytes / max(w.lightcurves, 1) / 1e6:.2f} MB each) of {len(w.tics)} TIC ids in "
        f"{base_f.units} hash-bucket units; no latency, budget {UNLIMITED_RPS:g} req/s × "
        f"{UNLIMITED_AT_ONCE} (never binds); FITS decode, records and unit objects on the workers"
        + (f"; best of {w.repeats} rounds." if w.repeats > 1 else "."),
        "",
        "| workload | workers | busy workers | wall s | requests | req/s (wall) | req/s (server) "
        "| records | records/s | light curves/s | / 1 worker | violations | CPU s workers / driver |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        base = base_l if r in limited else base_f
        ratio = r.rps / base.rps if r in limited else r.records_per_s / base.records_per_s
        lc = "—" if r in limited else f"{r.records_per_s:.1f}"
        counted = str(r.violations) if r in limited else "—"
        lines.append(
            f"| {r.workload} | {r.workers} | {r.busy_workers} | {r.wall_s:.2f} | {r.requests} | "
            f"{r.rps:.2f} | {r.server_rps:.2f} | {r.records:,} | {r.records_per_s:,.0f} | {lc} | "
            f"**{ratio:.2f}×** | {counted} | {r.worker_cpu_s:.1f} / {r.driver_cpu_s:.1f} |"
        )
    spans = ", ".join(f"{r.workers}: {r.tightest_s:.3f} s" for r in limited if r.tightest_s is not None)
    lines += [
        "",
        f"Rate-limited, shortest span of {int(RATE_RPS) + 1} consecutive arrivals at the archive (workers: "
        f"span; a violation needs less than 0.98 s): {spans}.",
        "",
        "/ 1 worker: requests/s (wall) for the rate-limited workload, light curves/s for the unlimited "
        "one. busy workers: distinct worker processes named in the unit manifests. req/s (server): "
        "arrivals − 1 over the first-to-last arrival (a start-up burst within the budget can lift it "
        "a little above the rate; the violation count is the check). CPU s: process time of all "
        "workers, and of this process (driver, scheduler, fake archives), during the run.",
    ]
    goals: list[Goal] = []
    low, high = RATE_BAND
    for r in limited[1:]:
        ratio = r.rps / base_l.rps
        goals.append(
            (
                f"Dask rate-limited ZTF req/s: {r.workers} / 1 workers",
                f"{ratio:.2f}×",
                f"{low:g}–{high:g}×",
                low <= ratio <= high,
            )
        )
    violations = sum(r.violations for r in limited)
    goals.append(
        ("Dask rate-limited: server-side violations (1, 2, 4 workers)", str(violations), "0", violations == 0)
    )
    for r in free[1:]:
        ratio = r.records_per_s / base_f.records_per_s
        goal_met = ratio >= SCALE_GOAL if r.workers == 2 else None
        goals.append(
            (
                f"Dask unlimited TESS light curves/s: {r.workers} / 1 workers ({cores()} cores)",
                f"{ratio:.2f}×",
                f"≥ {SCALE_GOAL:g}×" if r.workers == 2 else "—",
                goal_met,
            )
        )
    return ("Dask executor: 1, 2 and 4 workers, rate-limited and unlimited (part 7)", "\n".join(lines), goals)


def workloads(quick: bool) -> Workloads:
    archive = FakeArchive()
    tics, files = pick_targets(24 if quick else 100, archive.now_mjd)
    cones = ztf_cones(8, 4 if quick else 20)
    return Workloads(cones, tics, len(files), 0, 2 if quick else 3)


def run(quick: bool) -> Part:
    w = workloads(quick)
    runs = measure(w)
    return render(runs, w)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer cones and light curves, fewer repeats")
    args = parser.parse_args(argv)
    print_part(run(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
