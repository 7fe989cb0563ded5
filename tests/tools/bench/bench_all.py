"""Benchmark: `--source all` against each source alone, over loopback with latency.

Run with ``uv run python -m tests.tools.bench.bench_all [--latency 0.15] [--quick]`` (or as part 3 of
``python -m tests.tools.bench``). A script, not a test.

The fake archive runs on loopback with a fixed latency per request, 2 MB/s per connection and a
server-side rate limit that only counts violations. IRSA is addressed as ``localhost`` and MAST as
``127.0.0.1``, so they are two hosts with two budgets, as in production. Each source is run alone,
then all three together; the goal (issue 4) is all ≤ 1.15 × the slowest single source, with zero
violations. Settings come from the built-in defaults plus the queries below (no config file, no
``.env``; output and state in a temporary folder).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

import harvester
from harvester.testing import FakeArchive, running_server
from tests.tools.bench.bench_ztf_rate import Goal, Part, bench_settings

GOAL = 1.15
BANDWIDTH_BPS = 2e6
TICS = [261136679, 21132157, 278892590, 55525572, 150428135, 38846515, 307210830, 140068425]

Row = tuple[str, float, int, int, bool]  # sources, wall s, requests, records, ok


def overrides(url: str, *, quick: bool = False) -> dict[str, Any]:
    port = url.rsplit(":", 1)[1]
    n_cones, n_tics, n_cones_mast = (8, 4, 8) if quick else (24, 8, 20)
    cones = [{"ra": 200.0 + 0.3 * i, "dec": 40.0 + 0.2 * (i % 7), "radius": 0.02} for i in range(n_cones)]
    return {
        "data_sources": {
            "ztf": {
                "irsa": {
                    "base_url": f"http://localhost:{port}/cgi-bin/ZTF/nph_light_curves",
                    "targets": cones,
                    "filters": ["zg", "zr"],
                    "mjd_range": [59800, 59850],
                }
            },
            "tess": {"base_url": url, "query": {"tic_ids": TICS[:n_tics]}},
            "mast": {
                "base_url": url,
                "pagesize": 20,
                "query": {
                    "targets": [
                        {"ra": 10.0 + 5 * i, "dec": 20.0, "radius": 0.15} for i in range(n_cones_mast)
                    ]
                },
            },
        },
    }


async def timed(sources: str | list[str], url: str, quick: bool = False) -> tuple[float, harvester.RunReport]:
    with tempfile.TemporaryDirectory() as out:
        settings = bench_settings(Path(out), **overrides(url, quick=quick))
        start = time.perf_counter()
        report = await harvester.harvest(sources, settings=settings)
        return time.perf_counter() - start, report


def measure(latency: float, *, quick: bool = False) -> tuple[list[Row], dict[str, int]]:
    """Each source alone, then all three; returns the rows and the server's violations per host."""
    archive = FakeArchive(
        latency_s=latency, bandwidth_bps=BANDWIDTH_BPS, rate_limit_rps=10.0
    )  # MAST: 10 req/s
    rows: list[Row] = []
    with running_server(archive) as url:
        for sources in ("ztf", "tess", "mast", "all"):
            elapsed, report = anyio.run(timed, sources, url, quick)
            totals = report.totals()
            rows.append((sources, elapsed, totals["requests"], totals["records"], report.ok))
    return rows, dict(archive.violations)


def render(rows: list[Row], violations: dict[str, int], latency: float) -> Part:
    slowest = max(r[1] for r in rows[:3])
    ratio = rows[3][1] / slowest
    serial = sum(r[1] for r in rows[:3]) / slowest
    lines = [
        f"{latency * 1e3:.0f} ms latency per request, {BANDWIDTH_BPS / 1e6:g} MB/s per connection, "
        "server-side rate limit counting violations, default politeness budgets (IRSA 2 req/s × 4, "
        "MAST 10 req/s × 8; TESS and MAST share MAST's budget).",
        "",
        "| sources | wall s | requests | records | ok |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {n} | {e:.2f} | {q} | {r} | {ok} |" for n, e, q, r, ok in rows]
    lines += [
        "",
        f"all / slowest single source = **{ratio:.3f}** (goal ≤ {GOAL}; running them one after another "
        f"would take {serial:.2f}×). Server-side rate-limit violations: {violations}.",
    ]
    total = sum(violations.values())
    goals: list[Goal] = [
        (
            "`--source all` / slowest single source",
            f"{ratio:.3f}",
            f"≤ {GOAL}",
            ratio <= GOAL and all(r[4] for r in rows),
        ),
        ("`--source all`: server-side violations", str(total), "0", total == 0),
    ]
    return ("`--source all` against the slowest single source (part 3)", "\n".join(lines), goals)


def run(quick: bool, latency: float = 0.15) -> Part:
    rows, violations = measure(latency, quick=quick)
    return render(rows, violations, latency)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--latency", type=float, default=0.15, help="seconds per request (default 0.15)")
    parser.add_argument("--quick", action="store_true", help="fewer targets per source")
    args = parser.parse_args(argv)
    title, body, _ = run(args.quick, args.latency)
    print(f"## {title}\n\n{body}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
