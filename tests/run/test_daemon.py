"""The daemon and crash safety: breakers, metrics, status, SIGTERM and kill -9 in real subprocesses."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from typer.testing import CliRunner

from harvester.cli import app
from harvester.run.daemon import CircuitBreaker, Daemon
from harvester.settings import load_settings
from harvester.testing import FakeArchive, Fault, running_server
from tests.tools.fault_scenarios import harvester_cmd, kill9_rounds, ledger_keys, write_config


def test_breaker_opens_after_threshold_with_growing_pause_and_closes_on_success() -> None:
    """Two failures open the breaker for base, then 2×base, 4×base (capped); a success closes it."""
    b = CircuitBreaker(threshold=2, base_pause_s=10.0, max_pause_s=35.0)
    b.record(False, 0.0)
    assert b.allows(0.0)
    b.record(False, 0.0)
    assert not b.allows(9.9) and b.allows(10.0)
    b.record(False, 10.0)
    assert b.open_until == 30.0
    b.record(False, 30.0)
    assert b.open_until == 65.0  # 40 s capped at 35
    b.record(True, 65.0)
    assert b.allows(65.0) and b.failures == 0


def sweep_settings(tmp_path: Path, **daemon: Any) -> Any:
    return load_settings(
        output=tmp_path / "out",
        state={"path": tmp_path / "state.db"},
        daemon={"interval": 0.2, "jitter": 0, "grace": 1, **daemon},
        data_sources={
            "ztf": {
                "irsa": {"cone_search": {"ra": 210.8, "dec": 54.35, "radius": 0.02}},
                "retries": {"attempts": 0},
                "rate_limit": {"requests_per_second": 100, "max_concurrency": 4},
            },
            "tess": {"query": {"tic_ids": [21132157]}, "retries": {"attempts": 0}},
            "mast": {
                "query": {"cone_search": {"ra": 10.0, "dec": 20.0, "radius": 0.1}},
                "retries": {"attempts": 0},
            },
        },
    )


async def test_failing_source_backs_off_while_others_keep_schedule_then_recovers(tmp_path: Path) -> None:
    """IRSA down: ZTF fails twice then is skipped while TESS and MAST sweep on; IRSA back: ZTF recovers."""
    archive = FakeArchive(executing_polls=0)
    fault = archive.add_fault(Fault(match="nph_light_curves", kind="status", status=503))
    daemon = Daemon(
        sweep_settings(tmp_path), ["ztf", "tess", "mast"], transport=httpx.ASGITransport(app=archive)
    )
    reports = [await daemon.sweep() for _ in range(3)]
    assert [sorted(r.sources) for r in reports if r] == [["mast", "tess", "ztf"]] * 2 + [["mast", "tess"]]
    assert all(r.sources["tess"].status == "ok" for r in reports if r)
    assert reports[0] and reports[0].sources["ztf"].status == "failed"
    archive.clear_faults()
    assert fault.hits >= 2
    await anyio.sleep(0.25)  # the breaker's first pause is one interval
    recovered = await daemon.sweep()
    assert recovered is not None and recovered.ok and "ztf" in recovered.sources
    assert daemon.breakers["ztf"].failures == 0


async def test_metrics_and_health_reflect_sweeps(tmp_path: Path) -> None:
    """/metrics counts records written per source; /healthz turns 200 after a successful sweep."""
    archive = FakeArchive(executing_polls=0)
    daemon = Daemon(
        sweep_settings(tmp_path, health_max_age=3600),
        ["ztf"],
        metrics_port=0,
        transport=httpx.ASGITransport(app=archive),
    )
    server = daemon._start_metrics()
    try:
        report = await daemon.sweep()
        assert report is not None and report.ok
        base = f"http://127.0.0.1:{daemon.metrics_bound}"
        async with httpx.AsyncClient(timeout=5) as client:
            metrics = (await client.get(f"{base}/metrics")).text
            health = await client.get(f"{base}/healthz")
        written = report.sources["ztf"].written
        assert f'harvester_records_written_total{{source="ztf"}} {float(written)}' in metrics
        assert 'harvester_sweeps_total{outcome="ok"} 1.0' in metrics
        assert health.status_code == 200 and health.json()["ok"] is True
        daemon.metrics.last_success = time.time() - 7200
        async with httpx.AsyncClient(timeout=5) as client:
            assert (await client.get(f"{base}/healthz")).status_code == 503
    finally:
        server.shutdown()


async def test_crash_inside_a_sweep_is_logged_and_the_daemon_goes_on(tmp_path: Path) -> None:
    """An unexpected exception in one sweep is contained; the next sweep runs normally."""

    class Boom(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise RuntimeError("boom")

    daemon = Daemon(sweep_settings(tmp_path), ["ztf"], transport=Boom())
    first = await daemon.sweep()
    assert first is not None and first.sources["ztf"].status == "failed"
    daemon.transport = httpx.ASGITransport(app=FakeArchive())
    daemon.breakers["ztf"].open_until = 0.0
    second = await daemon.sweep()
    assert second is not None and second.ok


# --- real processes ------------------------------------------------------------------------------


@pytest.fixture
def loopback_archive() -> Iterator[tuple[FakeArchive, str]]:
    archive = FakeArchive(latency_s=0.05, executing_polls=0)
    with running_server(archive) as url:
        yield archive, url


def hidden_temp_files(out: Path) -> list[str]:
    folder = out / "ztf"
    return [p.name for p in folder.glob(".*") if p.name != ".harvester"] if folder.exists() else []


def committed_keys(folder: Path) -> int:
    """Records the output folder's ledger lists."""
    return ledger_keys(folder)


def test_kill_9_mid_run_then_rerun_gives_exactly_the_uninterrupted_records(
    tmp_path: Path, loopback_archive: tuple[FakeArchive, str]
) -> None:
    """Three kill -9s at random moments, then a rerun: same records as one clean run, nothing partial."""
    _, url = loopback_archive
    outcome = kill9_rounds(url, tmp_path, 3)
    assert outcome.killed_with_files >= 1  # at least one kill landed mid-write
    assert outcome.identical and outcome.records > 100
    assert outcome.partial_files == 0
    assert outcome.committed_keys == outcome.records


def test_sigterm_stops_the_daemon_cleanly_with_state_committed(
    tmp_path: Path, loopback_archive: tuple[FakeArchive, str]
) -> None:
    """SIGTERM during a sweep: exit 0 within the grace period, the run finished in state, keys == files."""
    _, url = loopback_archive
    cfg = write_config(tmp_path, url, targets=80)
    proc = subprocess.Popen(
        harvester_cmd("daemon", "--source", "ztf", "--config", str(cfg), "--interval", "1h"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    out = tmp_path / "out" / "ztf"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (out.exists() and any(out.glob("record_*.json"))):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-2000:]
    assert time.monotonic() - started < 2 + 10  # grace 2 s plus process teardown
    events = [json.loads(line)["event"] for line in stderr.splitlines() if line.startswith("{")]
    assert "signal_received" in events and events[-1] == "daemon_stopped"
    with sqlite3.connect(tmp_path / "state.db") as conn:
        (status,) = conn.execute("SELECT status FROM runs").fetchone()
    assert status in ("ok", "failed", "cancelled")  # recorded as finished or cancelled, never left "running"
    assert committed_keys(out) == len(list(out.glob("record_*.json")))
    assert hidden_temp_files(tmp_path / "out") == []


def test_status_reports_runs_watermarks_and_failing_targets(
    tmp_path: Path, loopback_archive: tuple[FakeArchive, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`harvester status --json` shows the last run, a watermark per target and no failing target."""
    _, url = loopback_archive
    cfg = write_config(tmp_path, url, targets=3)
    runner = CliRunner()
    assert (
        runner.invoke(app, ["run", "--source", "ztf", "--config", str(cfg), "--log-format", "json"]).exit_code
        == 0
    )
    result = runner.invoke(app, ["status", "--json", "--config", str(cfg)])
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["runs"][0]["status"] == "ok" and info["failing_targets"] == []
    assert len(info["watermarks"]) == 3
    (ztf,) = [o for o in info["outputs"] if o["source"] == "ztf"]  # read from the output's own ledger
    assert ztf["records"] == len(list((tmp_path / "out" / "ztf").glob("record_*.json")))
    assert ztf["ledger"] == str(tmp_path / "out" / "ztf" / ".harvester" / "ledger.sqlite")
    assert {w["output"] for w in info["watermarks"]} == {str(tmp_path / "out" / "ztf")}
