"""executor: dask — work units on a 2-worker LocalCluster, one shared host budget, create-only output."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson
import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster

import harvester
from harvester.errors import BudgetUnavailable
from harvester.executors.compact import compact
from harvester.executors.dask_limiter import rate_leases
from harvester.executors.driver import harvest_distributed
from harvester.executors.units import plan_units, sky_cell, tic_bucket
from harvester.executors.worker import UnitTask, run_unit
from harvester.io.limiter import HostLimiter, Limiter, LimiterRegistry
from harvester.io.objectstore import ObjectStore
from harvester.run.report import RunReport
from harvester.settings import Settings, load_settings
from harvester.testing import FakeArchive, running_server

RATE = 10.0
TARGETS = [
    {"ra": 10.0 + 3.0 * (i % 4) + 0.01 * i, "dec": 20.0 + 0.002 * i, "radius": 0.01} for i in range(60)
]


def ztf_settings(url: str, tmp: Path, *, rate: float = RATE, **extra: Any) -> Settings:
    """ZTF cones from the loopback archive; ``rate`` (req/s) high where the budget is not the point."""
    return load_settings(
        None,
        output=tmp / "out",
        state={"path": str(tmp / "state.db")},
        data_sources={
            "ztf": {
                "irsa": {"base_url": f"{url}/cgi-bin/ZTF/nph_light_curves", "targets": TARGETS},
                "rate_limit": {"requests_per_second": rate, "max_concurrency": 4},
            }
        },
        **extra,
    )


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as c,
    ):
        yield c


class DaskRun:
    def __init__(self, archive: FakeArchive, url: str, root: Path, report: RunReport, settings: Settings):
        self.archive, self.url, self.root, self.report, self.settings = archive, url, root, report, settings
        self.times = sorted(e.t for e in archive.requests)  # the dask run's arrivals, before other tests
        self.violations = dict(archive.violations)


@pytest.fixture(scope="module")
def dask_run(client: Client, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskRun]:
    root = tmp_path_factory.mktemp("dask")
    archive = FakeArchive(rate_limit_rps=RATE, latency_s=0.02)
    with pytest.MonkeyPatch.context() as mp, running_server(archive) as url:
        mp.chdir(root)  # module scope runs before conftest's isolation: no config/base.yaml here
        settings = ztf_settings(url, root)
        report = harvest_distributed(["ztf"], settings, client=client, run_id="run-1")
        yield DaskRun(archive, url, root, report, settings)


def comparable(records: list[dict[str, Any]]) -> list[str]:
    return sorted(
        json.dumps({k: v for k, v in r.items() if k != "fetched_at"}, sort_keys=True) for r in records
    )


def unit_records(root: Path) -> list[dict[str, Any]]:
    return [
        orjson.loads(line)
        for f in sorted(root.glob("ztf/units/*/*.jsonl"))
        for line in f.read_bytes().splitlines()
    ]


async def test_dask_run_writes_exactly_the_records_of_a_local_run(dask_run: DaskRun, tmp_path: Path) -> None:
    """Two workers, 100 cones in 4 sky cells: the same records (without fetched_at) as one local run."""
    local = ztf_settings(dask_run.url, tmp_path)
    report = await harvester.harvest("ztf", settings=local)
    assert report.ok and dask_run.report.ok
    local_records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "ztf").glob("record_*.json")]
    assert len(local_records) > 1000
    assert comparable(unit_records(dask_run.root / "out")) == comparable(local_records)


def test_shared_budget_is_held_across_workers_and_used(dask_run: DaskRun) -> None:
    """No 1-s window over the rate on the server, and ≥ 90 % of what the start leases allow used
    while busy (``leases`` starts per ``hold`` seconds: the rate less the transit margin)."""
    times = dask_run.times
    assert len(times) == len(TARGETS)
    assert dask_run.violations.get("127.0.0.1", 0) == 0
    leases, hold = rate_leases(RATE)
    utilisation = len(times) / (leases / hold * (times[-1] - times[0] + hold))
    assert utilisation >= 0.9, utilisation


def test_driver_commits_every_unit_key_to_its_state(dask_run: DaskRun) -> None:
    """The driver's report and SQLite state hold every record the units wrote, once."""
    import sqlite3

    src = dask_run.report.sources["ztf"]
    with sqlite3.connect(dask_run.root / "state.db") as conn:
        committed = conn.execute("SELECT COUNT(*) FROM seen").fetchone()[0]
    assert src.records == src.written == committed == len(unit_records(dask_run.root / "out"))
    assert src.targets == src.targets_ok == len(TARGETS)


def test_re_executed_unit_cannot_duplicate(dask_run: DaskRun, client: Client) -> None:
    """Running a committed unit again returns its manifest and writes no new object."""
    out = dask_run.root / "out"
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    unit = plan_units("ztf", dask_run.settings)[0]
    task = UnitTask(unit, dask_run.settings, str(out), "run-1", {"127.0.0.1": (RATE, 4)}, {})
    manifest = client.submit(run_unit, task, pure=False).result(timeout=60)
    after = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert manifest["unit_key"] == unit.key and after == before


def test_resumed_run_skips_nothing_twice(dask_run: DaskRun, client: Client) -> None:
    """Re-running the whole run id: every unit is already committed, the state gains no key."""
    again = harvest_distributed(["ztf"], dask_run.settings, client=client, run_id="run-1")
    src = again.sources["ztf"]
    assert again.ok and src.written == 0 and src.already_present == dask_run.report.sources["ztf"].records


def test_compact_merges_units_into_parquet_without_duplicates(dask_run: DaskRun, tmp_path: Path) -> None:
    """compact reads committed units only and writes one row per dedup key."""
    rows, dropped = compact("ztf", str(dask_run.root / "out"), tmp_path / "ztf.parquet")
    table = pq.read_table(tmp_path / "ztf.parquet")
    keys = set(zip(table.column("object_id").to_pylist(), table.column("mjd").to_pylist(), strict=True))
    assert rows == table.num_rows == len(keys) == dask_run.report.sources["ztf"].records and dropped == 0


def test_units_are_stable_sky_cells_and_hash_buckets() -> None:
    """Nearby cones share a cell; a TIC id's bucket does not depend on anything else."""
    assert sky_cell(10.2, 20.1) == sky_cell(10.3, 20.2) != sky_cell(13.2, 20.1)
    assert tic_bucket(261136679) == tic_bucket("261136679") == tic_bucket(261136679, 64)


def test_s3_writes_are_create_only(s3_url: str) -> None:
    """On an S3 look-alike, a second write to the same key is refused and the object is unchanged."""
    import s3fs

    options = {"endpoint_url": s3_url, "key": "test", "secret": "test"}
    s3fs.S3FileSystem(**options).mkdir("bucket")
    store = ObjectStore("s3://bucket/harvest", options)
    assert store.put_new("ztf/units/u/run.jsonl", b"first\n")
    assert not store.put_new("ztf/units/u/run.jsonl", b"second\n")
    assert store.get("ztf/units/u/run.jsonl") == b"first\n"
    assert store.list("ztf") == ["ztf/units/u/run.jsonl"]


def test_cli_runs_on_dask_and_compacts_to_parquet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run --executor dask --offline` writes committed units; `compact` turns them into one Parquet table."""
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from harvester.cli import app

    monkeypatch.setenv("HARVESTER_DASK__WORKERS", "2")
    runner = CliRunner()
    cone = ["--irsa-ra", "210.8023", "--irsa-dec", "54.3489", "--irsa-radius", "0.05"]
    result = runner.invoke(
        app,
        [
            "run",
            "--source",
            "ztf",
            "--offline",
            "--executor",
            "dask",
            "--output",
            str(tmp_path / "out"),
            "--log-format",
            "json",
            *cone,
        ],
    )
    assert result.exit_code == 0, result.stderr[-2000:]
    assert list((tmp_path / "out" / "_units" / "ztf").rglob("*.json"))
    parquet = tmp_path / "ztf.parquet"
    compacted = runner.invoke(
        app, ["compact", "ztf", "--input", str(tmp_path / "out"), "--output", str(parquet)]
    )
    assert compacted.exit_code == 0, compacted.stderr
    table = pq.read_table(parquet)
    assert (
        table.num_rows > 0
        and len(set(zip(table["object_id"].to_pylist(), table["mjd"].to_pylist(), strict=True)))
        == table.num_rows
    )


def test_an_object_store_output_without_dask_runs_the_units_in_process(tmp_path: Path, s3_env: str) -> None:
    """`run --output s3://…` with the local executor: the same create-only units, no cluster."""
    import s3fs
    from typer.testing import CliRunner

    from harvester.cli import app

    s3fs.S3FileSystem(endpoint_url=s3_env, key="test", secret="test").mkdir("raw")
    cone = ["--irsa-ra", "210.8023", "--irsa-dec", "54.3489", "--irsa-radius", "0.05"]
    args = ["run", "--source", "ztf", "--offline", "--output", "s3://raw/h", "--log-format", "json", *cone]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr[-2000:]
    store = ObjectStore("s3://raw/h")
    manifests = [orjson.loads(store.get(k) or b"") for k in store.list("_units/ztf")]
    assert len(manifests) == 1 and manifests[0]["records"] > 0
    assert len((store.get(manifests[0]["data"]) or b"").splitlines()) == manifests[0]["records"]


async def test_parquet_units_on_an_object_store_compact_like_jsonl_units(tmp_path: Path, s3_env: str) -> None:
    """`format: parquet` with an s3:// output: each unit's data object is one Parquet table with
    the record schema; a rerun writes nothing, a deleted object is harvested again, and `compact`
    gives the same table from Parquet units as from jsonl units."""
    import pyarrow.parquet as pq
    import s3fs

    s3fs.S3FileSystem(endpoint_url=s3_env, key="test", secret="test").mkdir("units")
    cone = {"ztf": {"irsa": {"cone_search": {"ra": 210.8023, "dec": 54.3489, "radius": 0.05}}}}
    tables = {}
    for fmt in ("jsonl", "parquet"):
        out = f"s3://units/{fmt}"
        first = await harvester.harvest("ztf", offline=True, output=out, format=fmt, data_sources=cone)
        assert first.ok and first.sources["ztf"].written > 0
        store = ObjectStore(out)
        (data,) = store.list("ztf/units")
        assert data.endswith(f".{fmt}")
        again = await harvester.harvest("ztf", offline=True, output=out, format=fmt, data_sources=cone)
        assert again.sources["ztf"].written == 0  # its unit commits an object with no record
        compact("ztf", out, tmp_path / f"{fmt}.parquet")
        tables[fmt] = pq.read_table(tmp_path / f"{fmt}.parquet").drop_columns(["fetched_at"])
    assert tables["parquet"].num_rows == first.sources["ztf"].written
    assert tables["parquet"].equals(tables["jsonl"])
    store = ObjectStore("s3://units/parquet")
    first_object = max(store.list("ztf/units"), key=lambda k: len(store.get(k) or b""))
    store.remove(first_object)
    lost = await harvester.harvest(
        "ztf", offline=True, output="s3://units/parquet", format="parquet", data_sources=cone
    )
    assert lost.sources["ztf"].written == tables["parquet"].num_rows


@pytest.mark.parametrize("source", ["ztf", "tess", "mast"])
def test_planning_refuses_a_source_without_targets(source: str, tmp_path: Path) -> None:
    """Every archive plans its units from its resolved targets: none configured fails the plan
    (a usage error), never a unit that fails on every worker."""
    config = tmp_path / "c.yaml"
    config.write_text("output: memory://plan/raw\n")
    with pytest.raises(harvester.ConfigError, match=r"no targets|names no target|no cone"):
        plan_units(source, load_settings(config))


def test_bad_targets_with_work_units_are_one_usage_line_and_nothing_runs(tmp_path: Path) -> None:
    """Work units plan from the targets, so a missing targets file fails the plan: one line, exit 2."""
    from typer.testing import CliRunner

    from harvester.cli import app

    missing = tmp_path / "nope.csv"
    env = {"HARVESTER_DATA_SOURCES__ZTF__IRSA__TARGETS_FILE": str(missing)}
    result = CliRunner().invoke(app, ["run", "-s", "ztf", "--offline", "-o", "memory://bad/raw"], env=env)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"harvester: error: targets file not found: {missing}"
    assert not ObjectStore("memory://bad/raw").list("_units")


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("nope://bucket/raw", "output nope://bucket/raw: Protocol not known: nope"),
        ("gcs://bucket/raw", "output gcs://bucket/raw: Please install gcsfs"),
        ("1bad://x", "is neither a folder nor a URL"),
    ],
)
def test_a_bad_output_url_is_a_one_line_usage_error(output: str, message: str) -> None:
    """An unknown scheme or a missing fsspec backend: one line naming the output, exit 2."""
    from typer.testing import CliRunner

    from harvester.cli import app

    cone = ["--irsa-ra", "1", "--irsa-dec", "2", "--irsa-radius", "0.01"]
    result = CliRunner().invoke(app, ["run", "--source", "ztf", "--offline", "--output", output, *cone])
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_the_notebook_api_writes_work_units_to_an_object_store_output(s3_env: str) -> None:
    """harvest() with an s3:// output runs the same create-only work units as the CLI (one lifecycle)."""
    import s3fs

    s3fs.S3FileSystem(endpoint_url=s3_env, key="test", secret="test").mkdir("notebook")
    cone = {"ra": 210.8023, "dec": 54.3489, "radius": 0.05}
    report = await harvester.harvest(
        "ztf", offline=True, output="s3://notebook/h", data_sources={"ztf": {"irsa": {"cone_search": cone}}}
    )
    store = ObjectStore("s3://notebook/h")
    manifests = [orjson.loads(store.get(k) or b"") for k in store.list("_units/ztf")]
    assert report.ok and report.run_id and len(manifests) == 1
    assert report.sources["ztf"].written == manifests[0]["records"] > 0
    with pytest.raises(harvester.ConfigError, match="--dry-run runs locally into a folder"):
        await harvester.harvest("ztf", offline=True, output="s3://notebook/h", dry_run=True)


async def test_the_daemon_sweeps_in_work_units_on_one_cluster(tmp_path: Path) -> None:
    """executor: dask under the daemon: each sweep runs units on the daemon's one LocalCluster."""
    from harvester.run.daemon import Daemon

    settings = load_settings(
        None,
        executor="dask",
        dask={"workers": 2},
        offline=True,
        output=tmp_path / "out",
        state={"path": str(tmp_path / "state.db")},
        daemon={"interval": "1s", "jitter": "0s"},
        data_sources={"ztf": {"irsa": {"cone_search": {"ra": 210.8023, "dec": 54.3489, "radius": 0.05}}}},
    )
    daemon = Daemon(settings, ["ztf"], once=True)
    assert daemon.units
    assert await daemon.run() == 0
    first = ObjectStore(str(tmp_path / "out")).list("_units/ztf")
    assert len(first) == 1 and daemon._dask is None  # the cluster is closed when the daemon stops
    again = Daemon(settings, ["ztf"], once=True)
    assert await again.run() == 0
    manifests = [
        orjson.loads((tmp_path / "out" / k).read_bytes())
        for k in ObjectStore(str(tmp_path / "out")).list("_units/ztf")
    ]
    assert len(manifests) == 2 and sum(m["records"] for m in manifests) == manifests[0]["records"] > 0


def test_a_store_that_overwrites_is_refused_before_any_unit_runs() -> None:
    """Some S3 look-alikes ignore If-None-Match: the start-of-run probe finds out, in one line."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    from harvester.errors import OutputError

    class Overwriting(MemoryFileSystem):  # type: ignore[misc]
        protocol = "overwriting"

        def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
            super().pipe_file(path, value, mode="overwrite", **kwargs)

    fsspec.register_implementation("overwriting", Overwriting, clobber=True)
    with pytest.raises(OutputError, match="does not refuse a second write to the same key"):
        ObjectStore("overwriting://bucket/raw").probe()
    ObjectStore("memory://bucket/raw").probe()  # a create-only store passes and keeps no probe object
    assert ObjectStore("memory://bucket/raw").list("") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["compact", "ztf", "--input", "/nonexistent/units"],
            "no committed ztf units under /nonexistent/units: nothing to compact",
        ),
        (
            [
                "run",
                "--source",
                "ztf",
                "--offline",
                "--executor",
                "dask",
                "--dask-address",
                "tcp://sched:8786",
            ],
            "have their own disks; use an s3://… output, or set dask.shared_filesystem",
        ),
    ],
)
def test_distributed_usage_errors_are_one_line(args: list[str], message: str) -> None:
    """compact of a folder without units (which would overwrite a good Parquet file with an empty
    one), and a remote cluster writing to this machine's folder: one line each, exit 2."""
    from typer.testing import CliRunner

    from harvester.cli import app

    cone = ["--irsa-ra", "1", "--irsa-dec", "2", "--irsa-radius", "0.01"] if args[0] == "run" else []
    result = CliRunner().invoke(app, [*args, *cone])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_retry_after_on_one_worker_pauses_the_host_for_every_worker(client: Client, tmp_path: Path) -> None:
    """One 429 with Retry-After: 2 while two workers harvest: no worker starts a request to that
    host until the pause is over (only requests already on the wire arrive), then all resume."""
    from harvester.testing import Fault

    archive = FakeArchive(rate_limit_rps=RATE, latency_s=0.02)
    archive.add_fault(Fault(kind="status", status=429, retry_after="2", after=15, times=1))
    with running_server(archive) as url:
        report = harvest_distributed(["ztf"], ztf_settings(url, tmp_path), client=client)
    assert report.ok and report.sources["ztf"].targets_ok == len(TARGETS)
    (refused,) = [e for e in archive.requests if e.status == 429]
    later = sorted(e.t - refused.t for e in archive.requests if e.t > refused.t)
    assert later, "the harvest went on after the pause"
    in_pause = [dt for dt in later if 0.25 < dt < 1.9]
    assert in_pause == [], f"requests during the 2 s pause: {in_pause}"
    assert later[-1] > 2.0  # the harvest resumed after the pause


class _FlakySemaphore:
    """A scheduler-held semaphore whose calls fail ``drops`` times (``error``) before it answers."""

    def __init__(self, drops: int, error: Exception | None = None) -> None:
        from distributed.comm.core import CommClosedError

        self.drops, self.calls = drops, 0
        self.error = error or CommClosedError("in <ConnectionPool.semaphore_acquire>: Stream is closed")

    def acquire(self, timeout: float) -> bool:
        self.calls += 1
        if self.calls <= self.drops:
            raise self.error
        return True

    def release(self) -> None:
        pass


async def test_a_dropped_connection_to_the_scheduler_is_tried_again(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease request whose connection drops is sent again; the request then goes out."""
    from harvester.executors import dask_limiter

    monkeypatch.setattr(dask_limiter, "_COMM_RETRY_DELAYS_S", (0.0, 0.0, 0.0, 0.0))
    budget = dask_limiter.DaskHostLimiter("flaky.example", 100.0, 2)
    budget._inflight = flaky = _FlakySemaphore(drops=2)
    budget._starts = _FlakySemaphore(drops=0)
    async with budget.slot():
        pass
    assert flaky.calls == 3 and budget.stats.acquired == 1


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (None, "out of reach after 5 attempts (CommClosedError: "),
        (RuntimeError("ConnectionPool is closed"), "out of reach (RuntimeError: ConnectionPool is closed)"),
    ],
    ids=["connection-keeps-dropping", "worker-shutting-down"],
)
async def test_a_scheduler_out_of_reach_stops_the_request_with_budget_unavailable(
    client: Client, monkeypatch: pytest.MonkeyPatch, error: Exception | None, message: str
) -> None:
    """The limiter gives up (after the last retry, or at once when the worker's own connection pool
    is closed) with one line naming the host and the cause; no request goes out."""
    from harvester.executors import dask_limiter

    monkeypatch.setattr(dask_limiter, "_COMM_RETRY_DELAYS_S", (0.0, 0.0, 0.0, 0.0))
    budget = dask_limiter.DaskHostLimiter("gone.example", 100.0, 2)
    budget._inflight = flaky = _FlakySemaphore(drops=99, error=error)
    expected = re.escape(f"the Dask scheduler holding the budget of gone.example is {message}")
    with pytest.raises(BudgetUnavailable, match=expected):
        async with budget.slot():
            pytest.fail("no request may go out without its lease")
    assert flaky.calls == (5 if error is None else 1)


class _PauseBoard:
    """The scheduler's metadata as a worker sees it: drops the connection ``drops`` times, or
    hangs until ``released`` when ``hang`` is set."""

    def __init__(self, drops: int = 0, hang: bool = False) -> None:
        self.drops, self.hang, self.calls = drops, hang, 0
        self.released = threading.Event()

    def get_metadata(self, keys: list[str], default: float) -> float:
        from distributed.comm.core import CommClosedError

        self.calls += 1
        if self.hang:
            self.released.wait(30)
        if self.calls <= self.drops:
            raise CommClosedError("in <ConnectionPool.get_metadata>: Stream is closed")
        return default


async def test_the_pause_read_is_retried_and_bounded(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading the host's Retry-After pause: a dropped connection is tried again; a scheduler that
    does not answer within the call timeout stops the request (no thread left holding it up)."""
    from harvester.executors import dask_limiter

    monkeypatch.setattr(dask_limiter, "_COMM_RETRY_DELAYS_S", (0.0, 0.0, 0.0, 0.0))
    monkeypatch.setattr(dask_limiter, "_CALL_TIMEOUT_S", 0.2)
    budget = dask_limiter.DaskHostLimiter("paused.example", 100.0, 2)
    budget._inflight, budget._starts = _FlakySemaphore(drops=0), _FlakySemaphore(drops=0)
    budget._client = board = _PauseBoard(drops=1)
    async with budget.slot():
        pass
    assert board.calls == 2
    budget._client = board = _PauseBoard(hang=True)
    try:
        with anyio.fail_after(10), pytest.raises(BudgetUnavailable, match=r"after 5 attempts \(TimeoutError"):
            async with budget.slot():
                pytest.fail("no request may go out while the pause cannot be read")
    finally:
        board.released.set()


class _BudgetGoneAfter(LimiterRegistry):
    """Local budgets whose "scheduler" goes away after ``grants`` requests (a cluster closing)."""

    def __init__(self, grants: int) -> None:
        super().__init__()
        self.grants = grants

    def create(self, host: str, requests_per_second: float, max_concurrency: int) -> Limiter:
        registry, inner = self, super().create(host, requests_per_second, max_concurrency)

        class Closing(HostLimiter):
            @asynccontextmanager
            async def slot(self) -> AsyncIterator[None]:
                if registry.grants <= 0:
                    raise BudgetUnavailable(f"the Dask scheduler holding the budget of {host} is gone")
                registry.grants -= 1
                async with inner.slot():
                    yield

        return Closing(host, requests_per_second, max_concurrency)


def _unit_settings(source: str, url: str, tmp: Path) -> Settings:
    """ZTF cones, or TESS TIC ids with several 2-minute light curves each, from the loopback archive."""
    if source == "ztf":
        return ztf_settings(url, tmp, rate=1000.0)
    from tests.tools.bench.bench_tess_compare import pick_targets

    tics, _ = pick_targets(12, FakeArchive().now_mjd)
    return load_settings(
        None,
        output=tmp / "out",
        state={"path": str(tmp / "state.db")},
        data_sources={"tess": {"base_url": url, "query": {"tic_ids": tics}}},
    )


@pytest.mark.parametrize(("source", "grants"), [("ztf", 3), ("tess", 3)])
async def test_a_unit_whose_budget_is_lost_writes_nothing_and_is_retried_whole(
    tmp_path: Path, source: str, grants: int
) -> None:
    """The budget's scheduler goes away mid-unit (for TESS: between a target's downloads): the unit
    fails as a whole (no object, no manifest, no target or light curve recorded as failed); its
    next attempt harvests every target of the unit."""
    from harvester.executors.worker import run_unit_async

    with running_server(FakeArchive(latency_s=0.0, executing_polls=0)) as url:
        settings = _unit_settings(source, url, tmp_path)
        unit = max(plan_units(source, settings), key=lambda u: len(u.targets))
        out = tmp_path / "out"
        task = UnitTask(unit, settings, str(out), "run-1", {}, {})
        with pytest.raises(BudgetUnavailable, match=r"budget of 127\.0\.0\.1 is gone"):
            await run_unit_async(task, _BudgetGoneAfter(grants=grants))
        assert not out.exists() or [p for p in out.rglob("*") if p.is_file()] == []
        manifest = await run_unit_async(task, LimiterRegistry())
    assert manifest["targets"] == manifest["targets_ok"] == max(1, len(unit.targets))
    assert manifest["errors"] == [] and manifest["requests"] > grants  # it was lost mid-unit


def test_harvester_s_local_cluster_listens_on_loopback_only_and_not_on_8787() -> None:
    """The LocalCluster we start serves no dashboard, and the scheduler's HTTP server takes a free
    loopback port: not 8787 (the user's own cluster may hold it) and not every interface."""
    from harvester.executors.driver import dask_client

    own, cluster = dask_client(load_settings(None, dask={"workers": 1}))
    try:
        bound = [sock.getsockname() for sock in cluster.scheduler.http_server._sockets.values()]
    finally:
        own.close()
        cluster.close()
    assert bound and all(host == "127.0.0.1" and port != 8787 for host, port, *_ in bound)
