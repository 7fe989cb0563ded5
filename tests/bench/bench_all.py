"""Benchmark: `--source all` against each source alone, over loopback with latency.

Run with ``uv run python -m tests.bench.bench_all [--latency 0.15]``. A script, not a test.

The fake archive runs on loopback with a fixed latency per request and a server-side rate limit
that only counts violations. IRSA is addressed as ``localhost`` and MAST as ``127.0.0.1``, so they
are two hosts with two budgets, as in production. Each source is run alone, then all three
together; the goal (issue 4) is all ≤ 1.15 × the slowest single source, with zero violations.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import anyio

import harvester
from harvester.testing import FakeArchive, running_server

GOAL = 1.15


def overrides(url: str, output: str) -> dict[str, Any]:
    port = url.rsplit(":", 1)[1]
    cones = [{"ra": 200.0 + 0.3 * i, "dec": 40.0 + 0.2 * (i % 7), "radius": 0.02} for i in range(24)]
    return {
        "output": output,
        "log_level": "warning",
        "data_sources": {
            "ztf": {"irsa": {"base_url": f"http://localhost:{port}/cgi-bin/ZTF/nph_light_curves",
                             "targets": cones}},
            "tess": {"base_url": url, "query": {"tic_ids": [261136679, 21132157, 278892590, 55525572, 150428135,
                                                            38846515, 307210830, 140068425]}},
            "mast": {"base_url": url, "pagesize": 20,
                     "query": {"targets": [{"ra": 10.0 + 5 * i, "dec": 20.0, "radius": 0.15} for i in range(20)]}},
        },
    }


async def timed(sources: str | list[str], url: str) -> tuple[float, harvester.RunReport]:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        report = await harvester.harvest(sources, **overrides(url, out))
        return time.perf_counter() - start, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.15, help="seconds per request (default 0.15)")
    args = parser.parse_args()
    archive = FakeArchive(latency_s=args.latency, rate_limit_rps=10.0)  # MAST budget is 10 req/s
    with running_server(archive) as url:
        rows = []
        for sources in ("ztf", "tess", "mast", "all"):
            elapsed, report = anyio.run(timed, sources, url)
            records = report.totals()["records"]
            requests = report.totals()["requests"]
            rows.append((sources, elapsed, requests, records, report.ok))
    slowest = max(r[1] for r in rows[:3])
    ratio = rows[3][1] / slowest
    print(f"latency {args.latency:.3f} s/request; IRSA 2 req/s × 4, MAST 10 req/s × 8 (defaults)")
    print(f"{'sources':8} {'wall s':>8} {'requests':>9} {'records':>8}  ok")
    for name, elapsed, requests, records, ok in rows:
        print(f"{name:8} {elapsed:8.2f} {requests:9d} {records:8d}  {ok}")
    print(f"all / slowest single source = {ratio:.3f} (goal <= {GOAL}); sum of singles would be "
          f"{sum(r[1] for r in rows[:3]) / slowest:.2f}x")
    print(f"server-side rate-limit violations: {dict(archive.violations)}")


if __name__ == "__main__":
    main()
