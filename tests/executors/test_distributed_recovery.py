"""executor: dask under failure: a worker or the driver killed with SIGKILL, an S3 output, new epochs.

Each test checks the output the way a consumer would read it: every committed unit's data object
matches its manifest, every visible object is complete, and no record appears twice.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import dask
import orjson
import pytest
import yaml
from distributed import Client, LocalCluster

import harvester
from harvester import archives
from harvester.executors.driver import harvest_distributed
from harvester.executors.units import plan_units
from harvester.io.objectstore import ObjectStore
from harvester.run.report import RunReport
from harvester.testing import FakeArchive, Fault, running_server
from tests.executors.test_distributed import RATE, TARGETS, comparable, ztf_settings
from tests.tools.fault_scenarios import harvester_cmd

FAST = 200.0  # req/s where the shared budget is not what a test is about


def trouble(stderr: str) -> str:
    """What a failed CLI run said besides progress: its warnings, errors and the driver's totals."""

    def telling(line: str) -> bool:
        if not line.startswith("{"):
            return True  # a traceback or a library's own log line
        event = json.loads(line)
        return bool(event.get("level") != "info" or "units" in event)

    lines = [line for line in stderr.splitlines() if telling(line)]
    return "\n".join(lines)[-3000:]


def committed_output(root: str, source: str = "ztf") -> list[dict[str, Any]]:
    """Every record of the committed units, after checking the output is exactly-once and whole.

    - each manifest's data object exists and has the manifest's sha256 (nothing partial);
    - every visible data object belongs to a manifest (no orphan from a killed attempt);
    - every line is a valid record, and no dedup key appears twice across all units and runs.
    """
    import hashlib

    store = ObjectStore(root)
    manifests = [orjson.loads(store.get(k) or b"") for k in store.list(f"_units/{source}")]
    data_keys = {m["data"] for m in manifests}
    assert set(store.list(f"{source}/units")) == data_keys, "a data object without its manifest"
    model = archives.record_model(source)
    records: list[dict[str, Any]] = []
    keys: set[tuple[str, ...]] = set()
    for manifest in manifests:
        body = store.get(manifest["data"])
        assert body is not None and hashlib.sha256(body).hexdigest() == manifest["sha256"]
        for line in body.splitlines():
            record = orjson.loads(line)
            key = model.model_validate(record).dedup_key()
            assert key not in keys, f"duplicate record {key}"
            keys.add(key)
            records.append(record)
    return records


def without_provenance(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "provenance"} for r in records]


def local_records(url: str, tmp: Path) -> list[dict[str, Any]]:
    """The records of one plain local run against the same archive: the reference."""
    settings = ztf_settings(url, tmp / "local", rate=FAST)
    report = harvester.harvest_sync("ztf", settings=settings)
    assert report.ok
    return [json.loads(p.read_text()) for p in (tmp / "local" / "out" / "ztf").glob("record_*.json")]


@pytest.fixture
def quick_leases() -> Iterator[None]:
    """Leases of a dead worker come back after 4 s, not the production 60 s (the scheduler runs here)."""
    with dask.config.set(
        {
            "distributed.scheduler.locks.lease-timeout": "4s",
            "distributed.scheduler.locks.lease-validation-interval": "1s",
        }
    ):
        yield


def _executing(dask_worker: Any) -> list[str]:
    return [str(ts.key) for ts in dask_worker.state.executing]


def _worker_running(client: Client, key: str, for_s: float, timeout: float = 60.0) -> str:
    """The worker that has been executing the task ``key`` for ``for_s`` seconds."""
    since: float | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker, keys in client.run(_executing).items():
            if key in keys:
                since = since if since is not None else time.monotonic()
                if time.monotonic() - since >= for_s:
                    return str(worker)
        time.sleep(0.05)
    raise AssertionError(f"{key} did not run")


def test_a_worker_killed_mid_unit_loses_and_duplicates_nothing(tmp_path: Path, quick_leases: None) -> None:
    """SIGKILL a worker in the middle of a unit: Dask reruns the unit; the output is the local run's, once.

    One cone of the victim unit answers after 4 s of silence (once); the worker dies while that
    request is in flight, so the unit is surely mid-way.
    """
    slow_cone = TARGETS[4]
    archive = FakeArchive(rate_limit_rps=RATE, latency_s=0.02)
    slow = archive.add_fault(Fault(match=str(slow_cone["ra"]), kind="slow", delay_s=4.0, times=1))
    result: dict[str, RunReport] = {}
    with (
        running_server(archive) as url,
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        settings = ztf_settings(url, tmp_path)
        run_id = "killed-worker"
        victim_unit = next(
            u for u in plan_units("ztf", settings) if any(t["ra"] == slow_cone["ra"] for t in u.targets)
        )

        def drive() -> None:
            result["report"] = harvest_distributed(["ztf"], settings, client=client, run_id=run_id)

        driver = threading.Thread(target=drive)
        driver.start()
        deadline = time.monotonic() + 60
        while slow.hits < 1 and time.monotonic() < deadline:  # the victim unit's slow cone is in flight
            time.sleep(0.02)
        victim = _worker_running(client, f"harvester-unit-ztf-{victim_unit.key}-{run_id}", for_s=0.0)
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        driver.join(timeout=180)
        assert not driver.is_alive()
        slow_requests = [e for e in archive.requests if str(slow_cone["ra"]) in str(e.params)]
        violations = dict(archive.violations)
        reference = local_records(url, tmp_path)
    report = result["report"]
    assert report.ok and report.sources["ztf"].targets_ok == len(TARGETS)
    assert slow.hits == 1 and len(slow_requests) == 2  # the victim unit ran again after its worker died
    assert violations.get("127.0.0.1", 0) == 0  # the dead worker's leases were not handed out twice
    assert comparable(committed_output(str(tmp_path / "out"))) == comparable(reference)


def write_dask_config(folder: Path, url: str) -> Path:
    config = {
        "output": str(folder / "out"),
        "state": {"path": str(folder / "state.db")},
        "executor": "dask",
        "dask": {"workers": 2},
        "daemon": {"grace": 2},
        "data_sources": {
            "ztf": {
                "irsa": {"base_url": f"{url}/cgi-bin/ZTF/nph_light_curves", "targets": TARGETS},
                "rate_limit": {"requests_per_second": RATE, "max_concurrency": 4},
            }
        },
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_driver_killed_mid_run_resumes_its_run_and_writes_each_record_once(tmp_path: Path) -> None:
    """SIGKILL the driver (and its local cluster) after some units committed; the next run resumes it."""
    archive = FakeArchive(rate_limit_rps=RATE, latency_s=0.02)
    manifests = tmp_path / "out" / "_units" / "ztf"
    with running_server(archive) as url:
        cfg = write_dask_config(tmp_path, url)
        cmd = harvester_cmd("run", "--source", "ztf", "--config", str(cfg))
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not list(manifests.rglob("*.json")):
                time.sleep(0.02)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and every worker process it started
            proc.wait(timeout=30)
        committed_before = len(list(manifests.rglob("*.json")))
        with sqlite3.connect(tmp_path / "state.db") as conn:
            (killed_run, killed_status), *_ = conn.execute("SELECT run_id, status FROM runs").fetchall()
        units = len(plan_units("ztf", ztf_settings(url, tmp_path)))
        assert 1 <= committed_before < units and killed_status == "running"

        resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)
        assert resumed.returncode == 0, trouble(resumed.stderr)
        reference = local_records(url, tmp_path)
    with sqlite3.connect(tmp_path / "state.db") as conn:
        runs = conn.execute("SELECT run_id, status FROM runs").fetchall()
        committed_keys = conn.execute("SELECT COUNT(*) FROM seen").fetchone()[0]
    assert runs == [(killed_run, "ok")]  # the same run, resumed and finished
    events = [json.loads(line) for line in resumed.stderr.splitlines() if line.startswith("{")]
    assert any(e["event"] == "run_resumed" and e["run_id"] == killed_run for e in events)
    records = committed_output(str(tmp_path / "out"))
    assert comparable(records) == comparable(reference)
    assert committed_keys == len(records)


def test_a_dask_harvest_into_s3_is_complete_and_create_only(tmp_path: Path, s3_env: str) -> None:
    """A whole run into a bucket of the S3 look-alike: the local run's records; a rerun adds no object."""
    import s3fs

    s3fs.S3FileSystem(endpoint_url=s3_env, key="test", secret="test").mkdir("harvest")
    archive = FakeArchive(rate_limit_rps=RATE, latency_s=0.02)
    with (
        running_server(archive) as url,
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        settings = ztf_settings(url, tmp_path, rate=FAST)
        first = harvest_distributed(["ztf"], settings, client=client, output="s3://harvest/raw")
        objects = ObjectStore("s3://harvest/raw").list("")
        again = harvest_distributed(["ztf"], settings, client=client, output="s3://harvest/raw")
        objects_after = ObjectStore("s3://harvest/raw").list("")
        reference = local_records(url, tmp_path)
    assert first.ok and again.ok and first.run_id != again.run_id
    assert comparable(committed_output("s3://harvest/raw")) == comparable(reference)
    assert len(objects) == 2 * len(plan_units("ztf", settings))  # a data object and a manifest per unit
    # the second run asked only past the watermarks; the overlap epochs it got back were committed
    # by the first run (the units' history), so it wrote empty objects and no record
    rerun = again.sources["ztf"]
    assert len(objects_after) == 2 * len(objects)
    assert rerun.written == 0 and 0 < rerun.already_present == rerun.records < first.sources["ztf"].written


def test_a_later_run_writes_only_the_new_epochs(tmp_path: Path) -> None:
    """New epochs at the archive: the next run (a new run id) commits them and nothing it had before."""
    archive = FakeArchive(latency_s=0.0, now_mjd=60400.0)
    with (
        running_server(archive) as url,
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        settings = ztf_settings(url, tmp_path, rate=FAST)
        first = harvest_distributed(["ztf"], settings, client=client)
        archive.now_mjd = 60600.0
        second = harvest_distributed(["ztf"], settings, client=client)
        # what a single local run at the new "today" sees
        reference = local_records(url, tmp_path)
    new = second.sources["ztf"]
    assert first.ok and second.ok and new.written > 0
    ztf_times = [e for e in archive.requests if "TIME" in str(e.params)]
    assert ztf_times  # the second run asked only for epochs after each target's watermark (minus overlap)
    records = committed_output(str(tmp_path / "out"))
    # the provenance URLs differ (the second run's queries carry TIME), the records do not
    assert comparable(without_provenance(records)) == comparable(without_provenance(reference))
    assert len(records) == first.sources["ztf"].written + new.written


async def test_many_sweeps_read_one_history_summary_and_still_write_each_record_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seven sweeps of the same units, each asking for everything again (--full) while the archive
    gains epochs: every sweep writes only what is new, and a unit reads one history summary plus
    fewer than HISTORY_EVERY manifests, not one manifest per earlier sweep."""
    from harvester.executors import driver, worker

    monkeypatch.setattr(worker, "HISTORY_EVERY", 3)
    archive = FakeArchive(latency_s=0.0, now_mjd=60000.0)
    out = tmp_path / "out"
    read: list[str] = []
    get = ObjectStore.get

    def counted_get(store: ObjectStore, key: str) -> bytes | None:
        read.append(key)
        return get(store, key)

    with running_server(archive) as url:
        settings = ztf_settings(url, tmp_path, rate=FAST)
        units = len(plan_units("ztf", settings))
        written = 0
        for sweep in range(7):
            archive.now_mjd = 60000.0 + 100 * sweep
            read.clear()
            with monkeypatch.context() as m:
                m.setattr(ObjectStore, "get", counted_get)
                sweep_all = functools.partial(driver.harvest_units, ["ztf"], settings, full=True)
                report = await anyio.to_thread.run_sync(sweep_all)
            assert report.ok
            written += report.sources["ztf"].written
        reference = await anyio.to_thread.run_sync(local_records, url, tmp_path)
    records = committed_output(str(out))
    assert comparable(without_provenance(records)) == comparable(without_provenance(reference))
    assert len(records) == written
    summaries = [k for k in read if k.startswith("_history/")]
    manifests = [k for k in read if k.startswith("_units/")]
    assert len(summaries) == units  # the last sweep: one summary per unit...
    assert len(manifests) <= units * (1 + 2)  # ...its own manifest probe, and < 3 loose manifests
    assert len(ObjectStore(str(out)).list("_history/ztf")) == units  # superseded summaries removed


async def test_a_unit_failing_every_attempt_is_reported_and_recorded(tmp_path: Path) -> None:
    """IRSA answers 503 for one cell's cones: that unit is retried, then reported and recorded as
    failing (for `harvester status`); the other units commit; the run's status is failed."""
    from harvester.executors.driver import UNIT_RETRIES, harvest_units
    from harvester.io.state import StateStore

    archive = FakeArchive(latency_s=0.0)
    with running_server(archive) as url:
        settings = ztf_settings(url, tmp_path, rate=FAST)
        settings.data_sources.ztf.retries.attempts = 0
        units = plan_units("ztf", settings)
        doomed = units[0]
        for cone in doomed.targets:
            archive.add_fault(Fault(match=str(cone["ra"]), kind="status", status=503))
        report = await anyio.to_thread.run_sync(harvest_units, ["ztf"], settings)
    src = report.sources["ztf"]
    assert not report.ok and [e.target for e in src.errors] == [f"unit {doomed.unit_id}"]
    assert "every target failed" in src.errors[0].cause and "503" in src.errors[0].cause
    doomed_requests = [e for e in archive.requests if e.status == 503]
    assert len(doomed_requests) == (1 + UNIT_RETRIES) * len(doomed.targets)
    assert len(ObjectStore(str(tmp_path / "out")).list("_units/ztf")) == len(units) - 1
    async with StateStore(tmp_path / "state.db") as state:
        failing = await state.failing_targets()
        (run,) = await state.last_runs(1)
    assert [(f["source"], f["target"]) for f in failing] == [("ztf", f"unit {doomed.unit_id}")]
    assert run["status"] == "failed" and run["run_id"] == report.run_id


def _cell_mates(settings: Any) -> list[dict[str, Any]]:
    """A new cone in the first unit's sky cell, near (not on) one it already has."""
    first = plan_units("ztf", settings)[0].targets[0]
    return [{"ra": first["ra"] + 0.003, "dec": first["dec"] + 0.001, "radius": 0.02}]


async def test_a_changed_unit_in_the_same_run_does_not_write_its_cell_again(tmp_path: Path) -> None:
    """The same run id with changed targets in a cell (a new digest): the cell's committed
    manifest is still its history, so the overlapping records are not written twice."""
    from harvester.executors.driver import harvest_units

    archive = FakeArchive(latency_s=0.0)
    with running_server(archive) as url:
        settings = ztf_settings(url, tmp_path, rate=FAST)
        first = await anyio.to_thread.run_sync(lambda: harvest_units(["ztf"], settings, run_id="r1"))
        changed = ztf_settings(url, tmp_path, rate=FAST)
        changed.data_sources.ztf.irsa.targets.extend(
            type(changed.data_sources.ztf.irsa.targets[0]).model_validate(c) for c in _cell_mates(settings)
        )
        second = await anyio.to_thread.run_sync(lambda: harvest_units(["ztf"], changed, run_id="r1"))
    assert first.ok and second.ok and second.sources["ztf"].already_present > 0
    committed_output(str(tmp_path / "out"))  # raises on any duplicate


async def test_an_unfinished_run_with_other_units_is_closed_not_resumed(tmp_path: Path) -> None:
    """A driver died mid-run; the targets changed since: the next run starts afresh and the old
    run is closed as interrupted (its committed units stay valid)."""
    from harvester.executors.driver import DistributedRun
    from harvester.io.state import StateStore

    archive = FakeArchive(latency_s=0.0)
    with running_server(archive) as url:
        settings = ztf_settings(url, tmp_path, rate=FAST)
        with pytest.raises(RuntimeError):
            async with DistributedRun(["ztf"], settings) as dead:
                raise RuntimeError("the driver dies")
        changed = ztf_settings(url, tmp_path, rate=FAST)
        changed.data_sources.ztf.irsa.targets.pop()
        async with DistributedRun(["ztf"], changed) as fresh:
            pass
        async with DistributedRun(["ztf"], changed) as again:
            pass
    async with StateStore(tmp_path / "state.db") as state:
        runs = {r["run_id"]: r["status"] for r in await state.last_runs(5)}
    assert not fresh.resumed and fresh.run_id != dead.run_id and not again.resumed
    assert runs[dead.run_id] == "interrupted" and runs[fresh.run_id] == "ok"


async def test_an_adopted_data_object_does_not_advance_the_watermarks(tmp_path: Path) -> None:
    """Attempts died after writing their data objects, before their manifests; the driver's state
    is lost; new epochs arrive; the run is retried. The retry adopts the old objects and keeps the
    watermarks where they were, so the next run still collects every epoch: nothing is lost."""
    from harvester.executors.driver import harvest_units

    archive = FakeArchive(latency_s=0.0, now_mjd=60400.0)
    out = tmp_path / "out"
    with running_server(archive) as url:
        settings = ztf_settings(url, tmp_path, rate=FAST)
        await anyio.to_thread.run_sync(lambda: harvest_units(["ztf"], settings, run_id="r1"))
        for manifest in (out / "_units").rglob("*.json"):
            manifest.unlink()  # the attempts died before their commit markers
        archive.now_mjd = 60600.0
        lost_state = ztf_settings(url, tmp_path, rate=FAST)
        lost_state.state.path = tmp_path / "fresh.db"
        retried = await anyio.to_thread.run_sync(lambda: harvest_units(["ztf"], lost_state, run_id="r1"))
        later = await anyio.to_thread.run_sync(lambda: harvest_units(["ztf"], lost_state))
        reference = await anyio.to_thread.run_sync(local_records, url, tmp_path)
    assert retried.ok and later.ok and later.sources["ztf"].written > 0
    records = committed_output(str(out))
    assert comparable(without_provenance(records)) == comparable(without_provenance(reference))


def test_sigterm_stops_a_daemon_sweep_in_units_and_the_next_run_resumes_it(tmp_path: Path) -> None:
    """SIGTERM mid-sweep (executor: dask): the daemon exits 0 within its grace period, the run stays
    open, and the next `harvester run` resumes it: the local run's records, once each."""
    archive = FakeArchive(rate_limit_rps=RATE, latency_s=0.02)
    manifests = tmp_path / "out" / "_units" / "ztf"
    with running_server(archive) as url:
        cfg = write_dask_config(tmp_path, url)
        daemon = subprocess.Popen(
            harvester_cmd("daemon", "--source", "ztf", "--config", str(cfg), "--interval", "1h"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not list(manifests.rglob("*.json")):
                time.sleep(0.02)
            daemon.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            _, stderr = daemon.communicate(timeout=60)
            took = time.monotonic() - stopped
        finally:
            if daemon.poll() is None:
                os.killpg(daemon.pid, signal.SIGKILL)
        assert daemon.returncode == 0, trouble(stderr)
        units = len(plan_units("ztf", ztf_settings(url, tmp_path)))
        assert took < 2 + 15  # grace 2 s (write_dask_config) plus closing the cluster
        assert len(list(manifests.rglob("*.json"))) < units
        with sqlite3.connect(tmp_path / "state.db") as conn:
            ((stopped_run, status),) = conn.execute("SELECT run_id, status FROM runs").fetchall()
        assert status == "running"  # left open on purpose: it is resumed, not reported as failed
        resumed = subprocess.run(
            harvester_cmd("run", "--source", "ztf", "--config", str(cfg)),
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert resumed.returncode == 0, trouble(resumed.stderr)
        reference = local_records(url, tmp_path)
    events = [json.loads(line) for line in resumed.stderr.splitlines() if line.startswith("{")]
    assert any(e["event"] == "run_resumed" and e["run_id"] == stopped_run for e in events)
    assert comparable(committed_output(str(tmp_path / "out"))) == comparable(reference)


async def test_a_second_driver_on_the_same_output_is_refused(tmp_path: Path) -> None:
    """While one driver runs (a daemon sweep), another on the same output and state (a manual run)
    is refused in one line instead of taking the first one's open run for an interrupted one."""
    from harvester.errors import DriverBusy
    from harvester.executors.driver import DistributedRun

    settings = ztf_settings("http://127.0.0.1:9", tmp_path, rate=FAST)
    async with DistributedRun(["ztf"], settings) as first:
        busy = re.escape(f"output {tmp_path}/out is being harvested by pid {os.getpid()}")
        with pytest.raises(DriverBusy, match=busy):
            async with DistributedRun(["ztf"], settings):
                pass
    async with DistributedRun(["ztf"], settings) as after:  # free again once the first one ended
        assert after.run_id != first.run_id


async def test_a_unit_failure_quoting_a_token_is_recorded_redacted(tmp_path: Path) -> None:
    """Whatever engine reports a failed unit, its cause reaches the report and the state with the
    token redacted (a cause can quote an archive that echoed the Authorization header)."""
    from harvester.executors.driver import DistributedRun
    from harvester.io.state import StateStore

    token = "ztf-secret-token-4242"
    settings = ztf_settings("http://127.0.0.1:9", tmp_path, rate=FAST, ztf_api_token=token)
    async with DistributedRun(["ztf"], settings) as run:
        recorded = await run.fail(run.tasks[0], f"UnitFailed: 500 answer 'Authorization: Bearer {token}'")
    async with StateStore(tmp_path / "state.db") as state:
        failing = await state.failing_targets()
    causes = [recorded, run.report.sources["ztf"].errors[0].cause, failing[0]["reason"]]
    assert all("[redacted]" in c and token not in c for c in causes)


async def test_units_whose_output_was_deleted_are_harvested_again(tmp_path: Path) -> None:
    """The output owns its truth in work units too: with the output deleted (or only a unit's data
    objects), the driver's remembered watermarks are not applied to those units, their manifests
    commit nothing any more, and the rerun writes every record again, counted as written."""
    import shutil

    from harvester.executors.driver import harvest_units

    archive = FakeArchive(latency_s=0.0, now_mjd=60400.0)
    with running_server(archive) as url:
        settings = ztf_settings(url, tmp_path, rate=FAST)
        first = await anyio.to_thread.run_sync(lambda: harvest_units(["ztf"], settings))
        total = len(committed_output(str(tmp_path / "out")))
        assert first.ok and first.sources["ztf"].written == total > 0
        shutil.rmtree(tmp_path / "out")
        archive.requests.clear()
        again = await anyio.to_thread.run_sync(lambda: harvest_units(["ztf"], settings))
        times = [
            e.params.get("TIME", [""])[0] for e in archive.requests if e.path.endswith("nph_light_curves")
        ]
        assert again.ok and again.sources["ztf"].written == total
        assert times and all(t == "" for t in times)  # from scratch: no watermark trusted
        assert len(committed_output(str(tmp_path / "out"))) == total
        # only the data objects of one unit gone: that unit's records come back, once
        lost = sorted((tmp_path / "out" / "ztf" / "units").iterdir())[0]
        gone = sum(len(p.read_bytes().splitlines()) for p in lost.glob("*.jsonl"))
        shutil.rmtree(lost)
        archive.requests.clear()
        third = await anyio.to_thread.run_sync(lambda: harvest_units(["ztf"], settings))
        from_scratch_3 = sum(e.params.get("TIME", [""])[0] == "" for e in archive.requests)
        archive.requests.clear()
        fourth = await anyio.to_thread.run_sync(lambda: harvest_units(["ztf"], settings))
        from_scratch_4 = sum(e.params.get("TIME", [""])[0] == "" for e in archive.requests)
    assert third.ok and third.sources["ztf"].written == gone > 0
    assert fourth.ok and fourth.sources["ztf"].written == 0
    # the unit that lost data asks from scratch once, then is whole again and incremental
    # (targets with no epoch at all never get a watermark: they are asked from scratch every time)
    assert from_scratch_4 < from_scratch_3
    manifests = ObjectStore(str(tmp_path / "out")).list("_units/ztf")
    data = ObjectStore(str(tmp_path / "out")).list("ztf/units")
    assert len(data) < len(manifests)  # the orphaned manifests stay, committing nothing
    store = ObjectStore(str(tmp_path / "out"))
    records = [orjson.loads(line) for key in data for line in (store.get(key) or b"").splitlines()]
    assert len(records) == total and len({(r["object_id"], r["mjd"]) for r in records}) == total
