"""harvester[prefect]: the flow on a 2-worker DaskTaskRunner, tokens kept out of Prefect, serving.

One Prefect test server (``prefect_test_harness``, ~15 s to start) for the module, with PREFECT_HOME
in a temporary folder; everything on loopback.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest
import yaml
from typer.testing import CliRunner

import harvester
import harvester.executors
from harvester.cli import app
from harvester.executors.units import plan_units
from harvester.io.readers import iter_shard_records
from harvester.settings import load_settings
from harvester.testing import FakeArchive, Fault, running_server
from tests.executors.test_distributed import RATE, TARGETS, comparable, unit_records, ztf_settings

TOKEN = "ztf-token-7c1e9a0b5d"  # a fake IRSA token: must reach the archive and nothing of Prefect's
CONE = {"ra": 210.8023, "dec": 54.3489, "radius": 0.05}  # a cone of the built-in sample archive


class HeaderLog(FakeArchive):
    """The fake archive, also keeping each request's Authorization header."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.authorizations: list[str] = []

    async def _read_request(self, scope: Any, receive: Any) -> Any:
        request = await super()._read_request(scope, receive)
        self.authorizations.append(request.headers.get("authorization", ""))
        return request


@dataclass
class PrefectServer:
    api_url: str
    home: Path
    database: Path  #: the test server's SQLite file


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """PREFECT_HOME (profiles, result storage) in a temporary folder, also for the Dask workers and
    the served process, set before this module first imports prefect."""
    home = tmp_path_factory.mktemp("prefect-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(home))
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        mp.delenv("PREFECT_API_URL", raising=False)
        from prefect.settings import PREFECT_HOME, temporary_settings

        with temporary_settings(updates={PREFECT_HOME: home}):
            yield home


@pytest.fixture(scope="module")
def prefect_server(prefect_home: Path) -> Iterator[PrefectServer]:
    """Prefect's test server (a subprocess with a temporary SQLite database) for this module."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_DATABASE_CONNECTION_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        database = Path(str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value()).split("///", 1)[1])
        yield PrefectServer(str(PREFECT_API_URL.value()), prefect_home, database)


def ztf_config(url: str, root: Path, rate: float = RATE) -> Path:
    """tests/executors/test_distributed.ztf_settings as a YAML file: the flow reads its settings itself."""
    config = {
        "output": str(root / "out"),
        "state": {"path": str(root / "state.db")},
        "data_sources": {
            "ztf": {
                "irsa": {"base_url": f"{url}/cgi-bin/ZTF/nph_light_curves", "targets": TARGETS},
                "rate_limit": {"requests_per_second": rate, "max_concurrency": 4},
            }
        },
    }
    path = root / "harvester.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@dataclass
class FlowRun:
    archive: HeaderLog
    url: str
    root: Path
    flow_run_id: UUID
    report: dict[str, Any]
    times: list[float]  #: the flow run's arrivals at the archive, before other tests used it
    violations: dict[str, int]
    authorizations: list[str]
    seconds: float


@pytest.fixture(scope="module")
def flow_run(prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowRun]:
    """One flow run: 60 ZTF cones (6 sky-cell units) on 2 Dask workers, fake archive at 10 req/s."""
    from harvester.executors.prefect_flow import harvest_flow

    root = tmp_path_factory.mktemp("prefect-flow")
    archive = HeaderLog(rate_limit_rps=RATE, latency_s=0.02)
    with pytest.MonkeyPatch.context() as mp, running_server(archive) as url:
        mp.chdir(root)  # module scope runs before conftest's isolation: no config/base.yaml, no .env
        mp.setenv("ZTF_API_TOKEN", TOKEN)
        config = ztf_config(url, root)
        started = time.monotonic()
        state = harvest_flow(
            sources=["ztf"], config=str(config), output=str(root / "out"), dask_workers=2, return_state=True
        )
        seconds = time.monotonic() - started
        assert state.is_completed(), state.message
        report = state.result()
        assert isinstance(report, dict)
        times = sorted(e.t for e in archive.requests)
        flow_run_id = state.state_details.flow_run_id
        assert flow_run_id is not None
        violations, authorizations = dict(archive.violations), list(archive.authorizations)
        yield FlowRun(archive, url, root, flow_run_id, report, times, violations, authorizations, seconds)


async def test_flow_on_dask_writes_exactly_the_records_of_a_local_run(
    flow_run: FlowRun, tmp_path: Path
) -> None:
    """Units as Prefect tasks on 2 Dask workers: the same records (without fetched_at) as one local run
    of the same settings (its client-side rate raised, as the archive's count was taken before; jsonl)."""
    local = load_settings(ztf_config(flow_run.url, tmp_path, rate=100.0), format="jsonl")
    report = await harvester.harvest("ztf", settings=local)
    assert report.ok and flow_run.report["ok"]
    local_records = list(iter_shard_records(tmp_path / "out" / "ztf"))
    assert len(local_records) > 1000
    assert comparable(unit_records(flow_run.root / "out")) == comparable(local_records)


def test_dask_semaphores_hold_the_budget_inside_prefect_tasks(flow_run: FlowRun) -> None:
    """The Dask limiter works inside Prefect-on-Dask tasks: no 1-s window over the rate on the server."""
    times = flow_run.times
    assert len(times) == len(TARGETS)
    assert flow_run.violations.get("127.0.0.1", 0) == 0
    utilisation = len(times) / (RATE * (times[-1] - times[0] + 1.0))
    assert utilisation >= 0.8, utilisation


def test_one_prefect_task_per_unit_ran_on_the_workers(flow_run: FlowRun) -> None:
    """Each unit is one completed task run named after it; units ran in the worker processes; the driver
    committed every key to its SQLite state."""
    import sqlite3

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    settings = ztf_settings(flow_run.url, flow_run.root)
    units = plan_units("ztf", settings)
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.flow_run_id]))
        )
    assert sorted(r.name for r in runs) == sorted(f"ztf-{u.unit_id}" for u in units)
    assert all(r.state is not None and r.state.is_completed() for r in runs)
    manifests = [orjson.loads(p.read_bytes()) for p in (flow_run.root / "out" / "_units").rglob("*.json")]
    assert len(manifests) == len(units) and os.getpid() not in {m["worker_pid"] for m in manifests}
    with sqlite3.connect(flow_run.root / "state.db") as conn:
        committed = conn.execute("SELECT COUNT(*) FROM seen").fetchone()[0]
    src = flow_run.report["sources"]["ztf"]
    assert src["written"] == committed == len(unit_records(flow_run.root / "out"))


def test_token_never_reaches_prefect(flow_run: FlowRun, prefect_server: PrefectServer) -> None:
    """The token reached the archive (so it travelled to the workers), but not Prefect: not in the flow
    run's parameters, task runs, states or logs read back from the server, nor anywhere in the server's
    database or PREFECT_HOME."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from harvester.executors.worker import UnitTask

    assert len(flow_run.authorizations) == len(TARGETS)
    assert set(flow_run.authorizations) == {f"Bearer {TOKEN}"}
    APILogHandler().flush()  # the flow's log lines are sent in batches
    run_filter = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.flow_run_id]))
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run.flow_run_id)
        states = client.read_flow_run_states(flow_run.flow_run_id)
        tasks = client.read_task_runs(flow_run_filter=run_filter)
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.flow_run_id])))
    assert run.parameters == {  # plain values only: the settings are loaded inside the flow
        "sources": ["ztf"],
        "config": str(flow_run.root / "harvester.yaml"),
        "output": str(flow_run.root / "out"),
        "full": False,
        "offline": False,
        "dask_address": None,
        "dask_workers": 2,
        "run_id": None,
    }
    assert any("unit ztf/" in log.message for log in logs)  # what a leak would look like was shipped
    texts = [run.model_dump_json(), *(x.model_dump_json() for x in (*states, *tasks, *logs))]
    assert not [text for text in texts if TOKEN in text]
    # The same bytes search finds a token that was stored, e.g. a pickled unit (what the workers get):
    settings = ztf_settings(flow_run.url, flow_run.root).model_copy(update={"ztf_api_token": TOKEN})
    unit = plan_units("ztf", settings)[0]
    assert TOKEN.encode() in pickle.dumps(UnitTask(unit, settings, "out", "run", {}, {}))
    stored = [
        p for folder in (prefect_server.database.parent, prefect_server.home) for p in folder.rglob("*")
    ]
    assert prefect_server.database in stored
    assert not [p for p in stored if p.is_file() and TOKEN.encode() in p.read_bytes()]


async def test_build_deployment_has_the_schedule_and_parameters(prefect_server: PrefectServer) -> None:
    """The deployment serve() serves: module entrypoint, the cron or interval, the given parameters."""
    from harvester.executors.prefect_flow import build_deployment, flow_parameters

    params = flow_parameters(sources=["ztf"], config="cfg.yaml", output="s3://bucket/raw", dask_workers=2)
    assert params == {
        "sources": ["ztf"],
        "config": str(Path("cfg.yaml").resolve()),
        "output": "s3://bucket/raw",
        "dask_workers": 2,
    }
    cron = await build_deployment("nightly", cron="0 */6 * * *", parameters=params)
    assert cron.entrypoint == "harvester.executors.prefect_flow.harvest_flow"
    assert cron.parameters == params and [s.schedule.cron for s in cron.schedules] == ["0 */6 * * *"]  # type: ignore[union-attr]
    every = await build_deployment("every-6h", interval=6 * 3600.0)
    assert [s.schedule.interval.total_seconds() for s in every.schedules] == [21600.0]  # type: ignore[union-attr]


def _wait(what: str, check: Any, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"serve exited ({proc.returncode}) before {what}: {log.read_text()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"no {what} after {timeout} s: {log.read_text()[-3000:]}")


def test_serve_registers_the_schedule_and_runs_the_deployment(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    """`harvester prefect serve` (a real process against the test server): the deployment has the
    interval and parameters; a run of it harvests; on SIGINT the deployment is paused and serve exits."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    config = tmp_path / "harvester.yaml"
    config.write_text(yaml.safe_dump({"data_sources": {"ztf": {"irsa": {"cone_search": CONE}}}}))
    args = ["prefect", "serve", "--source", "ztf", "--offline", "--config", str(config), "--output", "out"]
    args += ["--interval", "6h", "--name", "served", "--dask-workers", "1"]
    env = {**os.environ, "PREFECT_API_URL": prefect_server.api_url, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harvester", *args], cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    try:
        with get_client(sync_client=True) as client:

            def deployment() -> Any:
                try:
                    return client.read_deployment_by_name("harvester/served")
                except ObjectNotFound:
                    return None

            found = _wait("deployment", deployment, 60, proc, log)
            assert found.entrypoint == "harvester.executors.prefect_flow.harvest_flow"
            assert found.parameters == {
                "sources": ["ztf"],
                "config": str(config.resolve()),
                "output": str((tmp_path / "out").resolve()),
                "offline": True,
                "dask_workers": 1,
            }
            schedules = client.read_deployment_schedules(found.id)
            assert [(s.schedule.interval.total_seconds(), s.active) for s in schedules] == [(21600.0, True)]  # type: ignore[union-attr]
            run = client.create_flow_run_from_deployment(found.id)

            def finished() -> Any:
                state = client.read_flow_run(run.id).state
                return state if state is not None and state.is_final() else None

            state = _wait("finished flow run", finished, 90, proc, log)
            assert state.is_completed(), (state.message, log.read_text()[-3000:])
            assert list((tmp_path / "out" / "_units" / "ztf").rglob("*.json"))
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
            assert client.read_deployment(found.id).paused  # pause_on_shutdown: no runs pile up unserved
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_failed_unit_fails_the_flow_run_and_the_echoed_token_stays_out(
    prefect_server: PrefectServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`harvester prefect run` against an archive that rejects every cone and echoes the token in
    its answer: the unit is reported (not dropped), the flow run ends Failed, the CLI prints the
    report and exits 1, and the echoed token is redacted before Prefect sees any of it."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.logging.handlers import APILogHandler

    from harvester.executors import prefect_flow

    # the unit task retries twice, 10 s apart: once is enough to see a unit fail every attempt
    monkeypatch.setattr(prefect_flow, "harvest_unit", prefect_flow.harvest_unit.with_options(retries=0))
    monkeypatch.setenv("ZTF_API_TOKEN", TOKEN)
    archive = FakeArchive()
    archive.add_fault(Fault(kind="status", status=401, message=f"token {TOKEN} is not valid here"))
    with running_server(archive) as url:
        irsa = {"base_url": f"{url}/cgi-bin/ZTF/nph_light_curves", "targets": TARGETS[0:5:4]}  # one sky cell
        config = tmp_path / "harvester.yaml"
        config.write_text(yaml.safe_dump({"data_sources": {"ztf": {"irsa": irsa, "retries": 0}}}))
        args = ["prefect", "run", "--source", "ztf", "--config", str(config), "--output", "out"]
        result = CliRunner().invoke(app, [*args, "--dask-workers", "1"])
    assert result.exit_code == 1, result.output[-3000:]
    assert len(archive.requests) == 2 and TOKEN not in result.stdout
    report = json.loads(result.stdout)
    (unit,) = plan_units("ztf", load_settings(config))
    errors = report["sources"]["ztf"]["errors"]
    assert not report["ok"] and [e["target"] for e in errors] == [f"unit {unit.unit_id}"]
    assert "[redacted]" in errors[0]["cause"]
    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
        states = client.read_flow_run_states(run.id)
    assert run.state is not None and run.state.is_failed()
    assert any(f"unit ztf/{unit.unit_id} failed" in log.message for log in logs)
    texts = [run.model_dump_json(), *(x.model_dump_json() for x in (*states, *logs))]
    assert not [text for text in texts if TOKEN in text]
    folders = (prefect_server.database.parent, prefect_server.home)
    stored = [p for folder in folders for p in folder.rglob("*") if p.is_file()]
    assert not [p for p in stored if TOKEN.encode() in p.read_bytes()]


@pytest.mark.usefixtures("prefect_home")
def test_prefect_commands_need_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without prefect installed: one line naming the extra, exit 2."""
    monkeypatch.setitem(sys.modules, "prefect", None)  # makes `import prefect` fail
    monkeypatch.delitem(sys.modules, "harvester.executors.prefect_flow", raising=False)
    monkeypatch.delattr(harvester.executors, "prefect_flow", raising=False)
    result = CliRunner().invoke(app, ["prefect", "run", "--source", "ztf", "--offline"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "harvester: error: prefect commands need the prefect extra: "
        "pip install 'harvester[prefect]' (prefect)"
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--interval", "6h", "--cron", "0 * * * *"], "--interval and --cron: give one schedule, not both"),
        (["--cron", "every day"], "invalid cron schedule 'every day'"),
        (["--interval", "soon"], "invalid setting daemon.interval"),
        (["--interval", "0s"], "the schedule needs an interval > 0 or a cron string"),
    ],
)
@pytest.mark.usefixtures("prefect_home")
def test_serve_rejects_bad_schedules(flags: list[str], message: str, tmp_path: Path) -> None:
    """A bad schedule is a one-line usage error, exit 2, before anything is served."""
    config = tmp_path / "harvester.yaml"
    config.write_text(yaml.safe_dump({"data_sources": {"ztf": {"irsa": {"cone_search": CONE}}}}))
    result = CliRunner().invoke(
        app, ["prefect", "serve", "--source", "ztf", "--offline", "--config", str(config), *flags]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("harvester: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
