"""Fault scenarios against the fake archive on loopback, shared by the tests and the figures script.

Each :class:`Scenario` injects faults into a :class:`~harvester.testing.FakeArchive` served on
loopback, harvests one source, and compares the output with a fault-free run of the same source:

- ``recover``: every fault is retried away; the records must equal the fault-free run's records;
- ``report``: the fault cannot be recovered; the affected targets must be reported with a cause
  containing ``cause``, and whatever was written must be a subset of the fault-free records.

In every scenario no partial or hidden temporary file may remain in the output. Outcomes carry
the figures that ``docs/reliability.md`` records (``python -m tests.tools.faults_report``).
"""

from __future__ import annotations

import functools
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Literal

import anyio

import harvester
from harvester.testing import FakeArchive, Fault, running_server

Expect = Literal["recover", "report"]

# Tight but realistic client settings so a fault run finishes in seconds.
FAST_RETRIES = {"attempts": 5, "backoff_base": 0.05, "backoff_cap": 0.5, "retry_after_cap": 2.0}
TIMEOUTS = {"connect": 2.0, "read": 1.0, "total": 8.0}


def http_date(seconds_ahead: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_ahead), usegmt=True)


def overrides(url: str, output: Path, source: str) -> dict[str, Any]:
    """Every source pointed at the loopback archive: IRSA as 'localhost', MAST as 127.0.0.1."""
    port = url.rsplit(":", 1)[1]
    common = {"retries": FAST_RETRIES, "timeout": TIMEOUTS}
    mast_budget = {"requests_per_second": 20, "max_concurrency": 8}
    return {
        "output": output,
        "state": {"path": output / "state.db"},
        "log_level": "warning",
        "data_sources": {
            "ztf": {
                "irsa": {
                    "base_url": f"http://localhost:{port}/cgi-bin/ZTF/nph_light_curves",
                    "targets": [
                        {"name": f"c{i}", "ra": 210.80 + 0.04 * i, "dec": 54.35, "radius": 0.02}
                        for i in range(3)
                    ],
                },
                "rate_limit": {"requests_per_second": 20, "max_concurrency": 4},
                **common,
            },
            "tess": {
                "base_url": url,
                "query": {"tic_ids": [261136679, 21132157]},
                "rate_limit": mast_budget,
                "poll_budget_s": 2.0,
                **common,
            },
            "mast": {
                "base_url": url,
                "pagesize": 5,
                "rate_limit": mast_budget,
                "poll_budget_s": 2.0,
                "query": {"cone_search": {"ra": 210.8023, "dec": 54.3489, "radius": 0.1}},
                **common,
            },
        },
    }


@dataclass
class Scenario:
    name: str
    source: str
    expect: Expect
    faults: Callable[[str], list[Fault]]
    cause: str = ""
    during: Callable[[FakeArchive], Any] | None = None  # runs alongside the harvest (an outage)


@dataclass
class Outcome:
    scenario: Scenario
    injected: int
    retries: int
    reported: list[str]
    lost: int  # fault-free records missing from a 'recover' run
    extra: int  # records that a fault-free run does not have
    partial_files: int
    violations: int
    elapsed_s: float
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        ok = self.partial_files == 0 and self.extra == 0 and self.violations == 0
        if self.scenario.expect == "recover":
            return ok and self.lost == 0 and not self.reported
        return ok and bool(self.reported) and all(self.scenario.cause in r for r in self.reported)


async def _outage(archive: FakeArchive, refusals: int = 6) -> None:
    """The whole archive answers 503 until it has refused ``refusals`` requests (~2 per target)."""
    start = len(archive.requests)
    archive.set_down(True)
    with anyio.move_on_after(5):
        while sum(1 for e in archive.requests[start:] if e.status == 503) < refusals:  # noqa: ASYNC110  # polls a log
            await anyio.sleep(0.01)
    archive.set_down(False)


def scenarios(base_url: str) -> list[Scenario]:
    port = base_url.rsplit(":", 1)[1]
    lc = "_lc.fits"
    return [
        Scenario(
            "503 storm", "ztf", "recover", lambda u: [Fault("nph_light_curves", "status", 503, times=4)]
        ),
        Scenario(
            "429 storm, Retry-After seconds",
            "ztf",
            "recover",
            lambda u: [Fault("nph_light_curves", "status", 429, retry_after="1", times=3)],
        ),
        Scenario(
            "503, Retry-After HTTP date",
            "ztf",
            "recover",
            lambda u: [Fault("nph_light_curves", "status", 503, retry_after=http_date(1.0), times=2)],
        ),
        Scenario(
            "reset mid-body", "ztf", "recover", lambda u: [Fault("nph_light_curves", "truncate", times=3)]
        ),
        Scenario(
            "connection reset, no answer",
            "ztf",
            "recover",
            lambda u: [Fault("nph_light_curves", "reset", times=2)],
        ),
        Scenario(
            "slow body past the read timeout",
            "ztf",
            "recover",
            lambda u: [Fault("nph_light_curves", "slow", delay_s=1.6, times=2)],
        ),
        Scenario(
            "redirect to another host",
            "ztf",
            "recover",
            lambda u: [
                Fault(
                    "CIRCLE+210.8+",
                    "redirect",
                    times=1,
                    location=f"http://127.0.0.1:{port}/cgi-bin/ZTF/nph_light_curves?"
                    "POS=CIRCLE+210.8+54.35+0.02&BAD_CATFLAGS_MASK=0&FORMAT=CSV",
                )
            ],
        ),
        Scenario("archive down for a while", "ztf", "recover", lambda u: [], during=_outage),
        Scenario(
            "HTML error page with 200",
            "ztf",
            "report",
            lambda u: [Fault("210.84", "html")],
            cause="HTML page instead of CSV",
        ),
        Scenario(
            "IRSA VOTable QUERY_STATUS=ERROR",
            "ztf",
            "report",
            lambda u: [Fault("210.84", "votable_error", message="Cone search failed")],
            cause="QUERY_STATUS=ERROR: Cone search failed",
        ),
        Scenario(
            "503 for ever", "ztf", "report", lambda u: [Fault("210.84", "status", 503)], cause="HTTP 503"
        ),
        Scenario(
            "429 storm, no Retry-After",
            "ztf",
            "recover",
            lambda u: [Fault("nph_light_curves", "status", 429, times=3)],
        ),
        Scenario("truncated FITS once", "tess", "recover", lambda u: [Fault(lc, "truncate", times=1)]),
        Scenario(
            "connection reset on invoke", "tess", "recover", lambda u: [Fault("/invoke", "reset", times=2)]
        ),
        Scenario(
            "slow invoke body past the read timeout",
            "tess",
            "recover",
            lambda u: [Fault("/invoke", "slow", delay_s=1.6, times=1)],
        ),
        Scenario(
            "429 on download, no Retry-After",
            "tess",
            "recover",
            lambda u: [Fault(lc, "status", 429, times=2)],
        ),
        Scenario(
            "503 on download, Retry-After HTTP date",
            "tess",
            "recover",
            lambda u: [Fault(lc, "status", 503, retry_after=http_date(1.0), times=1)],
        ),
        Scenario(
            "archive down for a while (TESS)",
            "tess",
            "recover",
            lambda u: [],
            during=functools.partial(_outage, refusals=3),
        ),
        Scenario(
            "connection reset (MAST)", "mast", "recover", lambda u: [Fault("/invoke", "reset", times=2)]
        ),
        Scenario(
            "reset mid-body (MAST)", "mast", "recover", lambda u: [Fault("/invoke", "truncate", times=2)]
        ),
        Scenario(
            "slow body past the read timeout (MAST)",
            "mast",
            "recover",
            lambda u: [Fault("/invoke", "slow", delay_s=1.6, times=1)],
        ),
        Scenario(
            "503 storm, no Retry-After (MAST)",
            "mast",
            "recover",
            lambda u: [Fault("/invoke", "status", 503, times=3)],
        ),
        Scenario(
            "archive down for a while (MAST)",
            "mast",
            "recover",
            lambda u: [],
            during=functools.partial(_outage, refusals=3),
        ),
        Scenario(
            "MAST status ERROR (MAST)",
            "mast",
            "report",
            lambda u: [Fault("Mast.Caom", "mast_error", message="Query failed")],
            cause="Query failed",
        ),
        Scenario(
            "truncated FITS for ever",
            "tess",
            "report",
            lambda u: [Fault("s0001", "truncate")],
            cause="RemoteProtocolError",
        ),
        Scenario(
            "503 storm on invoke", "tess", "recover", lambda u: [Fault("/invoke", "status", 503, times=4)]
        ),
        Scenario(
            "MAST status ERROR",
            "tess",
            "report",
            lambda u: [Fault("Mast.Caom.Filtered", "mast_error", message="Query failed")],
            cause="Query failed",
        ),
        Scenario(
            "EXECUTING never completes",
            "tess",
            "report",
            lambda u: [Fault("Mast.Caom.Filtered", "executing_forever")],
            cause="still EXECUTING",
        ),
        Scenario(
            "429 storm on MAST, Retry-After",
            "mast",
            "recover",
            lambda u: [Fault("/invoke", "status", 429, retry_after="1", times=3)],
        ),
        Scenario(
            "HTML page instead of MAST JSON",
            "mast",
            "report",
            lambda u: [Fault("/invoke", "html")],
            cause="not JSON",
        ),
        Scenario(
            "page lies about rowsTotal",
            "mast",
            "report",
            lambda u: [Fault("/invoke", "lie_rows_total")],
            cause="result incomplete",
        ),
    ]


def records(output: Path, source: str) -> dict[str, dict[str, Any]]:
    """Record files of a source, without fetched_at (the one field that differs between runs)."""
    found: dict[str, dict[str, Any]] = {}
    folder = output / source
    for path in folder.glob("record_*.json") if folder.exists() else []:
        data = json.loads(path.read_bytes())
        data.pop("fetched_at")
        data["provenance"].pop("url")  # a redirect changes only the URL that served the data
        found[path.name] = data
    return found


def partial_files(output: Path, source: str) -> int:
    folder = output / source
    if not folder.exists():
        return 0
    bad = 0
    for path in folder.iterdir():
        if path.name.startswith(".") and path.name != ".harvester":  # a temporary file, not the ledger
            bad += 1
        elif path.name.startswith("record_"):
            try:
                json.loads(path.read_bytes())
            except ValueError:
                bad += 1
    return bad


async def clean_run(url: str, source: str) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        report = await harvester.harvest(source, **overrides(url, Path(tmp), source))
        assert report.ok, report.as_dict()
        return records(Path(tmp), source)


async def run_scenario(
    archive: FakeArchive, url: str, scenario: Scenario, baseline: dict[str, dict[str, Any]]
) -> Outcome:
    archive.clear_faults()
    injected = [archive.add_fault(f) for f in scenario.faults(url)]
    # each scenario is a separate run with its own budget: the previous run's last requests must
    # not share a 1-s window with this run's first ones (seen once in CI: 3 "violations" that way)
    archive.forget_arrivals()
    before = sum(archive.violations.values())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            if scenario.during is not None:
                tg.start_soon(scenario.during, archive)
            with anyio.fail_after(60):  # never hang
                report = await harvester.harvest(scenario.source, **overrides(url, out, scenario.source))
        elapsed = time.monotonic() - started
        src = report.sources[scenario.source]
        got = records(out, scenario.source)
        reported = [f"{e.target}: {e.cause}" for e in src.errors] + list(src.warnings)
        outcome = Outcome(
            scenario=scenario,
            injected=sum(f.hits for f in injected) + (1 if scenario.during else 0),
            retries=src.retries,
            reported=reported,
            lost=len(set(baseline) - set(got)) if scenario.expect == "recover" else 0,
            extra=sum(1 for k, v in got.items() if baseline.get(k) != v),
            partial_files=partial_files(out, scenario.source),
            violations=sum(archive.violations.values()) - before,
            elapsed_s=round(elapsed, 2),
            warnings=list(src.warnings),
        )
    archive.clear_faults()
    archive.set_down(False)
    return outcome


def serve() -> Any:
    """A loopback fake archive that counts rate-limit violations at the MAST budget."""
    archive = FakeArchive(executing_polls=0, rate_limit_rps=20.0)
    return archive, running_server(archive)


# --- kill -9 rounds (real processes) -----------------------------------------------------------


def write_config(folder: Path, url: str, *, targets: int = 40) -> Path:
    """A config pointing ZTF at the loopback archive with many cones, output and state in ``folder``."""
    import yaml

    port = url.rsplit(":", 1)[1]
    cones = [{"ra": 150.0 + 0.4 * i, "dec": 30.0 + 0.1 * (i % 5), "radius": 0.03} for i in range(targets)]
    config = {
        "output": str(folder / "out"),
        "state": {"path": str(folder / "state.db")},
        "daemon": {"grace": 2},
        "data_sources": {
            "ztf": {
                "irsa": {
                    "base_url": f"http://127.0.0.1:{port}/cgi-bin/ZTF/nph_light_curves",
                    "targets": cones,
                },
                "rate_limit": {"requests_per_second": 20, "max_concurrency": 4},
            }
        },
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def harvester_cmd(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "harvester", *args, "--log-format", "json"]


@dataclass
class KillOutcome:
    rounds: int
    killed_with_files: int  # rounds where the kill landed after some records were written
    identical: bool
    partial_files: int
    records: int
    committed_keys: int


def ledger_keys(folder: Path) -> int:
    """How many records the output folder's ledger lists."""
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(folder / ".harvester" / "ledger.sqlite")) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])


def kill9_rounds(url: str, workdir: Path, rounds: int, *, seed: int = 7) -> KillOutcome:
    """A clean run, then ``rounds`` runs killed with SIGKILL at random moments, then a final run."""
    import random
    import signal
    import subprocess

    clean_dir, killed_dir = workdir / "clean", workdir / "killed"
    clean_dir.mkdir()
    killed_dir.mkdir()
    subprocess.run(
        harvester_cmd("run", "--source", "ztf", "--config", str(write_config(clean_dir, url))),
        check=True,
        capture_output=True,
        timeout=300,
    )
    expected = records(clean_dir / "out", "ztf")
    cfg = write_config(killed_dir, url)
    rng = random.Random(seed)
    with_files = 0
    folder = killed_dir / "out" / "ztf"

    def written() -> int:
        return sum(1 for _ in folder.glob("record_*.json")) if folder.exists() else 0

    for _ in range(rounds):
        before = written()
        proc = subprocess.Popen(
            harvester_cmd("run", "--source", "ztf", "--config", str(cfg)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30  # however loaded the machine, kill while it is writing
        while written() == before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.8))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if written() > before:
            with_files += 1
    subprocess.run(
        harvester_cmd("run", "--source", "ztf", "--config", str(cfg)),
        check=True,
        capture_output=True,
        timeout=300,
    )
    got = records(killed_dir / "out", "ztf")
    keys = ledger_keys(folder)
    return KillOutcome(
        rounds, with_files, got == expected, partial_files(killed_dir / "out", "ztf"), len(got), int(keys)
    )


# --- the output's ledger: damage done to an output between runs ---------------------------------


@dataclass
class LedgerScenario:
    name: str
    fmt: str  # json or jsonl
    #: damages the harvested output folder ``<out>/ztf``; ``other`` is a second output to copy from
    damage: Callable[[Path, Path], None]


@dataclass
class LedgerOutcome:
    scenario: LedgerScenario
    records: int  # in the clean run
    missing_on_disk: int
    damaged: int
    adopted: int
    refetched: int
    written: int
    warnings: int
    identical: bool  # the output equals a clean run's, each record once
    elapsed_s: float

    @property
    def silent(self) -> bool:
        """Damage that neither the counters nor a warning mention (the adoption of files the
        ledger never saw is reported by its counter only)."""
        found = self.missing_on_disk + self.damaged + self.adopted + self.written
        return found == 0


def _ledger_sql(folder: Path, *statements: str) -> None:
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(folder / ".harvester" / "ledger.sqlite")) as conn:
        for sql in statements:
            conn.execute(sql)
        conn.commit()


def _files(folder: Path) -> list[Path]:
    return sorted([*folder.glob("record_*.json"), *folder.glob("part-*.jsonl")])


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) + 3])


def ledger_scenarios() -> list[LedgerScenario]:
    import shutil

    def unlink_some(folder: Path, _: Path) -> None:
        for path in _files(folder)[::10]:
            path.unlink()

    def truncate_records(folder: Path, _: Path) -> None:
        for path in _files(folder)[:5]:
            _truncate(path, 0.5)

    def corrupt_ledger(folder: Path, _: Path) -> None:
        (folder / ".harvester" / "ledger.sqlite").write_bytes(b"\x00garbage" * 512)

    def copy_ledger(folder: Path, other: Path) -> None:
        shutil.copyfile(
            other / "ztf" / ".harvester" / "ledger.sqlite", folder / ".harvester" / "ledger.sqlite"
        )

    return [
        LedgerScenario("output folder deleted", "json", lambda f, _: shutil.rmtree(f)),
        LedgerScenario("every 10th record file deleted", "json", unlink_some),
        LedgerScenario("record files truncated", "json", truncate_records),
        LedgerScenario("every 10th jsonl shard deleted", "jsonl", unlink_some),
        LedgerScenario("jsonl shard truncated mid-line", "jsonl", lambda f, _: _truncate(_files(f)[0], 0.5)),
        LedgerScenario("ledger deleted", "json", lambda f, _: shutil.rmtree(f / ".harvester")),
        LedgerScenario("ledger corrupt", "jsonl", corrupt_ledger),
        LedgerScenario("ledger copied from another output", "json", copy_ledger),
        LedgerScenario(
            "kill -9 between writing a file and recording it",
            "jsonl",
            # the exact state such a kill leaves: the last shard in place, the ledger without it
            lambda f, _: _ledger_sql(
                f,
                "DELETE FROM records WHERE file = (SELECT max(id) FROM files)",
                "DELETE FROM files WHERE id = (SELECT max(id) FROM files)",
            ),
        ),
    ]


def output_content(folder: Path) -> dict[str, dict[str, Any]]:
    """Every record of a ZTF folder by dedup key, whatever the layout, without fetched_at;
    a record present twice is kept under a second key, so that it makes the outputs differ."""
    found: dict[str, dict[str, Any]] = {}
    for path in _files(folder) if folder.exists() else []:
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            data = json.loads(line)
            data.pop("fetched_at")
            data["provenance"].pop("url")  # overlapping cones: whichever served it first names it
            key = f"{data['object_id']}|{data['mjd']!r}"
            found[key if key not in found else key + "|again"] = data
    return found


async def run_ledger_scenario(url: str, workdir: Path, scenario: LedgerScenario) -> LedgerOutcome:
    """A clean output, a damaged copy of the same harvest, a rerun; compare with the clean one."""
    import shutil

    def settings(out: Path, targets: int = 3) -> dict[str, Any]:
        given = overrides(url, out, "ztf")
        irsa = given["data_sources"]["ztf"]["irsa"]
        irsa["targets"] = irsa["targets"][:targets]
        return {**given, "format": scenario.fmt, "jsonl_shard_records": 100}

    clean, damaged, other = workdir / "clean", workdir / "damaged", workdir / "other"
    for out, targets in ((clean, 3), (damaged, 3), (other, 1)):
        report = await harvester.harvest("ztf", **settings(out, targets))
        assert report.ok, report.as_dict()
    expected = output_content(clean / "ztf")
    scenario.damage(damaged / "ztf", other)
    started = time.monotonic()
    report = await harvester.harvest("ztf", **settings(damaged))
    elapsed = round(time.monotonic() - started, 2)
    src = report.sources["ztf"]
    outcome = LedgerOutcome(
        scenario,
        len(expected),
        src.missing_on_disk,
        src.damaged_on_disk,
        src.adopted,
        src.refetched,
        src.written,
        len(src.warnings),
        report.ok and output_content(damaged / "ztf") == expected,
        elapsed,
    )
    for out in (clean, damaged, other):
        shutil.rmtree(out, ignore_errors=True)
    return outcome
