"""Benchmark part 11: TESS light curves from MAST's S3 bucket against MAST over HTTPS.

Run with ``uv run python -m tests.tools.bench.bench_tess_s3 [--quick]`` (or as part of
``python -m tests.tools.bench``). A script, not a test.

The fake archive runs on loopback under part 1's conditions: 150 ms latency per request, 2 MB/s
per connection for bodies, SPOC-sized files (19,000 cadences, ≈ 1.9 MB), every file generated
before the clock starts. It answers MAST as ``127.0.0.1`` and its bucket, path-style, as
``localhost`` (another host name, so each has its own budget, as mast.stsci.edu and
stpubdata.s3.amazonaws.com do). The same light curves (about 50; 10 with ``--quick``) are harvested
twice with ``harvester.harvest("tess")`` and default settings:

1. **HTTPS**: ``cloud.enabled: false``: every file from ``Download/file`` at MAST's default
   budget (10 requests/s, 8 at once);
2. **S3**: ``cloud.endpoint_url`` at the bucket: the MAST searches as before, the files from the
   bucket at the S3 host's default budget (50 requests/s, 16 at once).

The bucket is given MAST's latency and bandwidth: only the budgets differ, so the ratio is what
the route itself buys. The server counts rate-limit violations of MAST's 10 requests/s on MAST's
host.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio

import harvester
from harvester.archives.tess.settings import s3_rate
from harvester.testing import FakeArchive, running_server
from tests.tools.bench.bench_tess_compare import (
    BANDWIDTH_BPS,
    CADENCES,
    LATENCY_S,
    MAST_AT_ONCE,
    MAST_RPS,
    make_archive,
    pick_targets,
    prewarm,
)
from tests.tools.bench.bench_ztf_rate import Goal, Part, bench_settings, print_part

MAST_HOST = "127.0.0.1"
S3_HOST = "localhost"


@dataclass
class RouteRun:
    """One harvest of the light curves by one route."""

    route: str
    wall_s: float
    lightcurves: int
    s3_gets: int
    mast_downloads: int
    mast_requests: int
    mast_violations: int


def run_route(archive: FakeArchive, url: str, tics: list[int], *, cloud: bool) -> RouteRun:
    """``harvester.harvest("tess")`` over ``tics``, with the S3 route on or off."""
    time.sleep(1.05)  # the previous run's arrivals leave the server's one-second window
    seen = len(archive.requests)
    violations = archive.violations.get(MAST_HOST, 0)
    port = url.rsplit(":", 1)[1]
    block = {"enabled": True, "endpoint_url": f"http://{S3_HOST}:{port}"} if cloud else {"enabled": False}
    with tempfile.TemporaryDirectory(prefix="bench-tess-s3-") as tmp:
        settings = bench_settings(
            Path(tmp), data_sources={"tess": {"base_url": url, "query": {"tic_ids": tics}, "cloud": block}}
        )
        start = time.perf_counter()
        report = anyio.run(lambda: harvester.harvest("tess", settings=settings))
        wall = time.perf_counter() - start
    src = report.sources["tess"]
    if src.status != "ok" or src.warnings:
        raise RuntimeError(
            f"tess harvest did not succeed cleanly: {src.status} {src.errors[:2]} {src.warnings}"
        )
    new = archive.requests[seen:]
    return RouteRun(
        "S3" if cloud else "HTTPS",
        wall,
        src.written,
        sum(1 for e in new if "/tess/public/tid/" in e.path),
        sum(1 for e in new if e.path.endswith("/Download/file")),
        sum(1 for e in new if e.host == MAST_HOST),
        archive.violations.get(MAST_HOST, 0) - violations,
    )


def measure(n_lightcurves: int, *, realistic: bool = True) -> tuple[list[RouteRun], int, int]:
    """Both routes over the same light curves; returns the runs, the targets and the bytes served."""
    archive = make_archive(realistic=realistic)
    tics, _ = pick_targets(n_lightcurves, archive.now_mjd)
    nbytes = prewarm(archive, tics)
    with running_server(archive) as url:
        runs = [run_route(archive, url, tics, cloud=False), run_route(archive, url, tics, cloud=True)]
    return runs, len(tics), nbytes


def render(runs: list[RouteRun], targets: int, nbytes: int) -> Part:
    https, s3 = runs
    n = https.lightcurves
    budget = s3_rate()
    lines = [
        f"{n} SPOC light curves of {targets} TIC targets ({nbytes / max(n, 1) / 1e6:.2f} MB each, "
        f"{CADENCES:,} cadences); {LATENCY_S * 1e3:.0f} ms latency per request and "
        f"{BANDWIDTH_BPS / 1e6:g} MB/s per connection on both hosts; MAST budget {MAST_RPS:g} req/s × "
        f"{MAST_AT_ONCE}, S3 budget {budget.requests_per_second:g} req/s × {budget.max_concurrency} "
        "(the defaults).",
        "",
        "| route | wall s | light curves | S3 GETs | MAST downloads | MAST requests | MAST violations |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        lines.append(
            f"| {r.route} | {r.wall_s:.2f} | {r.lightcurves} | {r.s3_gets} | {r.mast_downloads} | "
            f"{r.mast_requests} | {r.mast_violations} |"
        )
    ratio = https.wall_s / s3.wall_s
    goals: list[Goal] = [
        ("TESS S3: HTTPS / S3 wall time", f"{ratio:.2f}×", "≥ 1×", ratio >= 1.0),
        (
            "TESS S3: same light curves by both routes",
            f"{s3.lightcurves}/{n}",
            f"{n}/{n}",
            s3.lightcurves == n,
        ),
        ("TESS S3: MAST downloads on the S3 route", str(s3.mast_downloads), "0", s3.mast_downloads == 0),
        (
            "TESS S3: server-side violations on MAST's host",
            str(https.mast_violations + s3.mast_violations),
            "0",
            https.mast_violations + s3.mast_violations == 0,
        ),
    ]
    return ("TESS light curves: S3 bucket vs MAST over HTTPS (part 11)", "\n".join(lines), goals)


def run(quick: bool) -> Part:
    runs, targets, nbytes = measure(10 if quick else 50)
    return render(runs, targets, nbytes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="about 10 light curves instead of 50")
    args = parser.parse_args(argv)
    print_part(run(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
