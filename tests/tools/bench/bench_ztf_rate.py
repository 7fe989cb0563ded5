"""Benchmark part 2: ZTF cone searches from a targets file against a sequential httpx loop.

Run with ``uv run python -m tests.tools.bench.bench_ztf_rate [--quick]`` (or as part of
``python -m tests.tools.bench``). A script, not a test.

The fake archive runs on loopback with 150 ms latency per request and 2 MB/s per connection, and
counts server-side rate-limit violations at the *configured* rate. The same 200 single-star cones
(a ``name,ra,dec,radius`` targets file) are fetched:

1. by the harvester at IRSA's default politeness budget (2 requests/s, 4 at once);
2. by the harvester at a raised budget (10 requests/s, 4 at once), where concurrency matters;
3. by a sequential ``httpx`` loop, as a user script would do it: one GET after the other, no
   throttle (its violations are counted against the default budget).

Goals (issue 9): the harvester reaches ≥ 90 % of the configured rate with zero violations.

This module also holds the helpers the other benchmark parts share: :func:`bench_settings`
(settings that read no config file and no ``.env``, with output and state in a temporary folder),
:func:`write_targets_file` and :func:`print_part`.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

import harvester
from harvester.archives.common import ConeSearch
from harvester.archives.ztf.source import ZtfSource, irsa_params
from harvester.settings import Settings, load_settings
from harvester.testing import FakeArchive, running_server
from harvester.testing._irsa import handle_irsa

#: (what, measured, goal, met) — one line of the summary table; ``met`` None = no goal.
Goal = tuple[str, str, str, bool | None]
#: (title, markdown body, goals) — what every benchmark part returns to ``tests.tools.bench``.
Part = tuple[str, str, list[Goal]]


def print_part(part: Part) -> None:
    """A part as a standalone script prints it: the title, the table, then each goal."""
    title, body, goals = part
    print(f"## {title}\n\n{body}\n")
    for what, measured, goal, met in goals:
        print(f"{what}: {measured} (goal {goal}) {'' if met is None else 'met' if met else 'MISSED'}")


LATENCY_S = 0.15
BANDWIDTH_BPS = 2e6
IRSA_PATH = "/cgi-bin/ZTF/nph_light_curves"
RATE_GOAL = 0.90


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def bench_settings(folder: Path, **overrides: Any) -> Settings:
    """Settings for one benchmark run: built-in defaults plus ``overrides``, nothing else.

    No ``config/base.yaml`` and no ``.env`` are read (an empty config file in ``folder`` stands
    in), output goes to ``folder/raw`` and the state store to ``folder/state.db``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "bench.yaml"
    config.write_text("{}\n", encoding="utf-8")
    base: dict[str, Any] = {
        "output": str(folder / "raw"),
        "log_level": "error",
        "state": {"path": str(folder / "state.db")},
    }
    return load_settings(config, env_file=None, **_merge(base, overrides))


def write_targets_file(path: Path, cones: Sequence[tuple[float, float, float]]) -> Path:
    """A ``name,ra,dec,radius`` targets file (the format of ``irsa.targets_file``)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", "ra", "dec", "radius"])
        for k, (ra, dec, radius) in enumerate(cones):
            writer.writerow([f"star-{k:04d}", f"{ra:.6f}", f"{dec:.6f}", f"{radius:g}"])
    return path


def star_cones(archive: FakeArchive, n: int, radius: float = 0.004) -> list[tuple[float, float, float]]:
    """``n`` small cones, each centred on one star of the fake sky (deterministic)."""
    cones: list[tuple[float, float, float]] = []
    ra, dec = 180.0, 35.0
    while len(cones) < n:
        objects = archive.ztf_objects(ra, dec, 0.02)
        if objects:
            cones.append((objects[0].ra, objects[0].dec, radius))
        ra += 0.37
        if ra > 300.0:
            ra, dec = 180.0, dec + 1.3
    return cones


def warm(archive: FakeArchive, settings: Settings) -> None:
    """Generate every answer once, so no client pays for the fake sky being computed."""
    irsa = settings.data_sources.ztf.irsa
    for cone in ZtfSource(settings).cones():
        query = str(httpx.QueryParams(tuple(irsa_params(cone, irsa))))
        handle_irsa(query, seed=archive.seed, now_mjd=archive.now_mjd)


@dataclass
class RateRun:
    """One client's pass over the cones."""

    client: str
    budget: str
    wall_s: float
    requests: int
    records: int
    violations: int
    rate: float | None  # configured requests/s, None for the unthrottled loop
    server_rps: float  # the rate the archive saw: (arrivals - 1) / (last - first arrival)

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s

    @property
    def share(self) -> float | None:
        return None if self.rate is None else self.server_rps / self.rate


def arrival_rate(archive: FakeArchive) -> float:
    """Requests per second between the first and the last arrival the archive logged."""
    times = [entry.t for entry in archive.requests]
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


def _irsa_overrides(url: str, targets: Path, rps: float, at_once: int) -> dict[str, Any]:
    return {
        "format": "jsonl",  # per-record files make the 10 req/s run disk-bound (docs/performance.md)
        "data_sources": {
            "ztf": {
                "irsa": {"base_url": url + IRSA_PATH, "targets_file": str(targets), "cone_search": None},
                "rate_limit": {"requests_per_second": rps, "max_concurrency": at_once},
            }
        },
    }


def run_harvester(cones: list[tuple[float, float, float]], rps: float, at_once: int) -> RateRun:
    """The harvester over ``cones`` with the given budget, against a fresh loopback archive."""
    archive = FakeArchive(latency_s=LATENCY_S, bandwidth_bps=BANDWIDTH_BPS, rate_limit_rps=rps)
    with tempfile.TemporaryDirectory(prefix="bench-ztf-") as tmp, running_server(archive) as url:
        folder = Path(tmp)
        targets = write_targets_file(folder / "targets.csv", cones)
        settings = bench_settings(folder, **_irsa_overrides(url, targets, rps, at_once))
        warm(archive, settings)
        start = time.perf_counter()
        report = anyio.run(lambda: harvester.harvest("ztf", settings=settings))
        wall = time.perf_counter() - start
        src = report.sources["ztf"]
        if src.status != "ok":
            raise RuntimeError(f"ztf harvest did not succeed: {src.status} {src.errors[:2]}")
        violations = sum(archive.violations.values())
        budget = f"{rps:g} req/s × {at_once}"
        return RateRun(
            "harvester", budget, wall, src.requests, src.records, violations, rps, arrival_rate(archive)
        )


def run_sequential(cones: list[tuple[float, float, float]], counted_rps: float) -> RateRun:
    """A plain sequential httpx loop (no throttle); violations counted at ``counted_rps``."""
    archive = FakeArchive(latency_s=LATENCY_S, bandwidth_bps=BANDWIDTH_BPS, rate_limit_rps=counted_rps)
    with tempfile.TemporaryDirectory(prefix="bench-ztf-") as tmp, running_server(archive) as url:
        settings = bench_settings(Path(tmp), **_irsa_overrides(url, Path(tmp) / "unused.csv", 1, 1))
        irsa = settings.data_sources.ztf.irsa
        queries = [irsa_params(ConeSearch(ra=ra, dec=dec, radius=r), irsa) for ra, dec, r in cones]
        for query in queries:
            handle_irsa(str(httpx.QueryParams(tuple(query))), seed=archive.seed, now_mjd=archive.now_mjd)
        rows = 0
        start = time.perf_counter()
        with httpx.Client(timeout=60) as client:
            for query in queries:
                response = client.get(url + IRSA_PATH, params=tuple(query))
                response.raise_for_status()
                rows += response.content.count(b"\n") - 1
        wall = time.perf_counter() - start
        violations = sum(archive.violations.values())
        return RateRun(
            "sequential httpx loop", "none", wall, len(queries), rows, violations, None, arrival_rate(archive)
        )


def measure(n_cones: int) -> list[RateRun]:
    cones = star_cones(FakeArchive(), n_cones)
    return [
        run_harvester(cones, 2.0, 4),
        run_harvester(cones, 10.0, 4),
        run_sequential(cones, 2.0),
    ]


def render(runs: list[RateRun], n_cones: int) -> Part:
    lines = [
        f"{n_cones} single-star cones (radius 0.004°) from a `name,ra,dec,radius` targets file; "
        f"{LATENCY_S * 1e3:.0f} ms latency, {BANDWIDTH_BPS / 1e6:g} MB/s per connection; the server "
        "counts rate-limit violations at the configured rate (the sequential loop's against IRSA's "
        "default 2 req/s). req/s (server) is the rate the archive saw from the first to the last "
        "arrival; wall time also holds start-up, parsing and writing the last records.",
        "",
        "| client | budget | wall s | requests | req/s (wall) | req/s (server) | of configured rate "
        "| violations | records |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        share = "—" if r.share is None else f"{r.share:.1%}"
        lines.append(
            f"| {r.client} | {r.budget} | {r.wall_s:.2f} | {r.requests} | {r.rps:.2f} | {r.server_rps:.2f} | "
            f"{share} | {r.violations} | {r.records:,} |"
        )
    seq = runs[-1]
    goals: list[Goal] = []
    for r in runs[:-1]:
        lines.append("")
        lines.append(
            f"- harvester at {r.budget}: sequential loop / harvester = **{seq.wall_s / r.wall_s:.2f}×**"
        )
        assert r.share is not None
        goals.append(
            (
                f"ZTF rate, {r.budget}",
                f"{r.share:.1%} of the rate, {r.violations} violations",
                f"≥ {RATE_GOAL:.0%}, 0 violations",
                r.share >= RATE_GOAL and r.violations == 0,
            )
        )
    goals.append(
        (
            "ZTF sequential loop / harvester (10 req/s × 4)",
            f"{seq.wall_s / runs[1].wall_s:.2f}×",
            "—",
            None,
        )
    )
    return ("ZTF cone searches against a sequential loop (part 2)", "\n".join(lines), goals)


def run(quick: bool) -> Part:
    n = 20 if quick else 200
    return render(measure(n), n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="20 cones instead of 200")
    args = parser.parse_args(argv)
    title, body, _ = run(args.quick)
    print(f"## {title}\n\n{body}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
