"""Run the fault-injection suite and write its figures to docs/reliability.md.

``uv run python -m tests.tools.faults_report [--kill-rounds 20] [--soak-sweeps 200]``: every fault scenario
of tests/tools/fault_scenarios.py, ``--kill-rounds`` kill -9 rounds of a real harvester process, and a soak
of ``--soak-sweeps`` daemon sweeps against a misbehaving archive. A script, not a test (the test
suite runs the same scenarios, fewer kill rounds and a shorter soak).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import anyio

from harvester.testing import FakeArchive, running_server
from tests.tools.fault_scenarios import (
    LedgerOutcome,
    Outcome,
    clean_run,
    kill9_rounds,
    ledger_scenarios,
    run_ledger_scenario,
    run_scenario,
    scenarios,
)
from tests.tools.soak import run_soak

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


async def all_scenarios(archive: FakeArchive, url: str) -> list[Outcome]:
    baselines = {}
    outcomes = []
    for scenario in scenarios(url):
        if scenario.source not in baselines:
            baselines[scenario.source] = await clean_run(url, scenario.source)
        outcomes.append(await run_scenario(archive, url, scenario, baselines[scenario.source]))
        print(
            f"{scenario.source:4} {scenario.name:40} {'ok' if outcomes[-1].passed else 'FAILED'}", flush=True
        )
    return outcomes


async def all_ledger_scenarios(url: str) -> list[LedgerOutcome]:
    outcomes = []
    for scenario in ledger_scenarios():
        with tempfile.TemporaryDirectory() as tmp:
            outcomes.append(await run_ledger_scenario(url, Path(tmp), scenario))
        print(f"ledger {scenario.name:48} {'ok' if outcomes[-1].identical else 'FAILED'}", flush=True)
    return outcomes


def ledger_lines(outcomes: list[LedgerOutcome]) -> list[str]:
    lines = [
        "## The output's ledger",
        "",
        "Damage done to an output between two runs (`<output>/ztf`, 3 overlapping cones, the record "
        "count below), then one rerun, compared with a clean run: the ledger is checked against the "
        "disk first (docs/design.md, *The output owns its truth*). *missing*: records the ledger "
        "listed whose file was gone; *damaged*: records in truncated or changed files (set aside "
        "in `.harvester/damaged/`); "
        "*adopted*: records found on disk that the ledger did not list.",
        "",
        "| fault | layout | records | missing | damaged | adopted | re-fetched | written | warnings | "
        "identical to a clean run | rerun s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.scenario.name} | {o.scenario.fmt} | {o.records} | {o.missing_on_disk} | {o.damaged} | "
            f"{o.adopted} | {o.refetched} | {o.written} | {o.warnings} | "
            f"{'yes' if o.identical else '**NO**'} | {o.elapsed_s} |"
        )
    silent = sum(o.silent for o in outcomes)
    lines += [
        "",
        f"{sum(o.identical for o in outcomes)} of {len(outcomes)} ended identical to a clean run; "
        f"{silent} went unreported.",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill-rounds", type=int, default=20)
    parser.add_argument("--soak-sweeps", type=int, default=200)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/reliability.md alone")
    args = parser.parse_args()
    os.chdir(tempfile.mkdtemp())  # no config/base.yaml: the scenarios set everything they need
    archive = FakeArchive(executing_polls=0, rate_limit_rps=20.0)
    with running_server(archive) as url:
        outcomes = anyio.run(all_scenarios, archive, url)
        ledger = anyio.run(all_ledger_scenarios, url)
        with tempfile.TemporaryDirectory() as tmp:
            kills = kill9_rounds(url, Path(tmp), args.kill_rounds)
    soak = anyio.run(run_soak, args.soak_sweeps)

    recovered = [o for o in outcomes if o.scenario.expect == "recover" and o.passed]
    reported = [o for o in outcomes if o.scenario.expect == "report" and o.passed]
    lines = [
        "# Reliability figures",
        "",
        f"Measured {datetime.now(UTC).date()} on {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"with `uv run python -m tests.tools.faults_report --kill-rounds {args.kill_rounds} "
        f"--soak-sweeps {args.soak_sweeps}`. The test suite runs the same scenarios "
        "(tests/tools/test_faults.py), 3 kill rounds (tests/run/test_daemon.py) and a 25-sweep soak "
        "(tests/e2e/test_robustness.py).",
        "",
        "Every scenario runs against the fake archive on loopback "
        "(IRSA as `localhost`, MAST as `127.0.0.1`), "
        "which counts rate-limit violations at 20 req/s per host, and is compared with a fault-free run of "
        "the same source. *recover*: the output must equal the fault-free output; *report*: the failure must "
        "be reported per target with its cause.",
        "",
        "## Faults",
        "",
        "| source | fault | expected | injected | retries | outcome | records lost | partial files | "
        "rate violations | s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        result = (
            "recovered"
            if o.scenario.expect == "recover"
            else "reported: " + (o.reported[0][:70] if o.reported else "—")
        )
        if not o.passed:
            result = "**FAILED** " + result
        lines.append(
            f"| {o.scenario.source} | {o.scenario.name} | {o.scenario.expect} | {o.injected} | "
            f"{o.retries} | {result.replace('|', '/')} | {o.lost} | {o.partial_files} | {o.violations} | "
            f"{o.elapsed_s} |"
        )
    lines += [
        "",
        f"Totals: {sum(o.injected for o in outcomes)} faults injected in {len(outcomes)} scenarios; "
        f"{len(recovered)} recovered with output identical to a fault-free run, {len(reported)} reported "
        f"with their cause; records lost {sum(o.lost for o in outcomes)}; partial files "
        f"{sum(o.partial_files for o in outcomes)}; "
        f"rate-limit violations {sum(o.violations for o in outcomes)}.",
        "",
        "## kill -9",
        "",
        f"{kills.rounds} rounds of `harvester run`, each killed with SIGKILL a random 0–0.8 s after it "
        f"wrote its first new record ({kills.killed_with_files} of them had written records), then one run "
        "to completion: "
        f"output identical to an uninterrupted run: **{'yes' if kills.identical else 'NO'}**; records "
        f"{kills.records}; partial or temporary files {kills.partial_files}; records in the ledger "
        f"{kills.committed_keys} (= records: {'yes' if kills.committed_keys == kills.records else 'NO'}).",
        "",
        *ledger_lines(ledger),
        "## Soak",
        "",
        f"{soak.sweeps} daemon sweeps against an archive that misbehaves on every sweep (503, truncated "
        f"bodies, resets, HTML pages, slow bodies: {soak.faults_injected} faults) and gains data between "
        f"sweeps: RSS {soak.rss_start_mib} MiB after warm-up, {soak.rss_end_mib} MiB at the end, peak "
        f"{soak.rss_peak_mib} MiB; open descriptors {soak.fds_start} → {soak.fds_end}; rate-limit violations "
        f"{soak.violations}; sweeps with a failed target {soak.failed_sweeps}.",
        "",
        "## Also covered by the tests",
        "",
        "- Full disk (a 160 KiB tmpfs): the source fails with `no space left on device`; every file written "
        "is complete and the ledger lists none that is not; after space is freed the rerun completes "
        "without rewriting.",
        "- Read-only output: `read-only file system`, nothing written.",
        "- Hostile identifiers (`/`, `..`, NUL, 5,000 characters): file names stay inside their folder.",
        "- Property-based tests (hypothesis) for the IRSA CSV parser, the MAST envelope decoder and the FITS "
        "decoder: any input gives records or a clean error.",
        "- Tokens: with all three set and debug logs on, none appears in logs, records, READMEs, manifests "
        "or state; each is sent only to its own host, and never after a redirect to another host.",
        "- A Content-Length or FITS header announcing gigabytes hits the size cap before the body is read.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        DOC.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
