"""Work units: the driver plans them and alone keeps state; an engine runs them.

Driver (:class:`DistributedRun`, engine-independent)::

    plan units ─> resume the output's unfinished run, if any (same run id: committed units return
    their manifest at once) ─> one UnitTask per unit (targets, the watermarks of those targets)
    ─> run_unit on the engine, retried ─> as units complete: commit keys and watermarks from each
    manifest into the driver's SQLite state ─> one RunReport (a unit that failed every attempt is a
    failed target "unit <id>", also recorded as a failing outcome for ``harvester status``)

The worker's side (what one unit does, its history, its create-only writes) is
:mod:`harvester.executors.worker`; how units execute is an engine here (:class:`LocalUnits`,
:class:`DaskUnits`; ``PrefectUnits`` in :mod:`harvester.executors.prefect_flow`), all awaited by
the one loop :func:`drive`. :func:`harvester.harvest` is the entry point; :func:`harvest_units`
and :func:`harvest_distributed` are its blocking twins for scripts and tests.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

import anyio
import orjson
import structlog

from harvester import archives
from harvester.display.logs import redact, register_secrets
from harvester.errors import (
    ClusterError,
    ConfigError,
    DriverBusy,
    HarvesterError,
    RunInterrupted,
    UnitFailed,
)
from harvester.executors.units import Unit, plan_units, unit_settings, without_targets
from harvester.executors.worker import FOUND, UnitTask, lost_data, run_unit, run_unit_async
from harvester.io.limiter import LimiterRegistry
from harvester.io.objectstore import ObjectStore, is_url
from harvester.io.state import StateStore
from harvester.run.report import RunReport, SourceReport, TargetFailure, new_run_id
from harvester.settings import Settings

__all__ = [
    "DaskUnits",
    "DistributedRun",
    "LocalUnits",
    "UnitEngine",
    "check_dask_output",
    "dask_client",
    "drive",
    "harvest_distributed",
    "harvest_units",
]

log = structlog.get_logger("harvester.executors")

UNIT_RETRIES = 2
LEASE_TIMEOUT = "60s"  # a slow FITS decode must not make the scheduler reclaim a held lease

Key = tuple[str, ...]
_DIGEST_PREFIX = "dask:"


def _namespace(source: str, output: str, sample: bool) -> str:
    name = f"{source}@sample" if sample else source
    return f"{name}|units:{output}"


# --- driver ---------------------------------------------------------------------------------------


def _budgets(names: list[str], settings: Settings) -> dict[str, tuple[float, int]]:
    """Each host's strictest budget over the sources that use it, as a local run has them."""
    from harvester.api import host_limiters

    built = [archives.source_class(name)(settings, sample=settings.offline) for name in names]
    return host_limiters(built).budgets()


def _unit_watermark_keys(unit: Unit, settings: Settings) -> set[str]:
    """The watermark keys a worker will use for this unit's targets (computed as the worker does)."""
    narrowed = unit_settings(unit, settings, Path(tempfile.gettempdir()) / "harvester-unit-plan")
    source = archives.source_class(unit.source)(narrowed, sample=narrowed.offline)
    if source.watermark_field is None:
        return set()
    return {source.watermark_key(target) for target in source.resolved()}


class DistributedRun:
    """The driver of a distributed harvest, whatever engine runs its :attr:`tasks`.

    ::

        async with DistributedRun(["ztf"], settings, output="s3://bucket/raw") as run:
            for task in run.tasks:          # submit run_unit(task) to Dask, Prefect, ...
                ...
            await run.commit(task, manifest)  # as each unit completes
            await run.fail(task, "cause")     # a unit that failed every attempt
        report = run.report

    Without an explicit ``run_id`` the output's last unfinished run (a driver killed mid-run) is
    resumed under its own run id, so its committed units are not harvested again.
    """

    def __init__(
        self,
        names: list[str],
        settings: Settings,
        *,
        output: str | None = None,
        run_id: str | None = None,
        full: bool = False,
        report: RunReport | None = None,
    ) -> None:
        if settings.limit is not None:
            raise ConfigError("limit is not supported with executor: dask (it would apply per work unit)")
        self.names = names
        self.settings = settings
        register_secrets(settings.secrets())  # so that failure causes are redacted whoever drives
        target = output if output is not None else settings.output
        store = ObjectStore(target)  # a bad URL or a missing fsspec backend fails here, before any unit runs
        #: the output, local folders made absolute: it names the run's state namespace and digest
        self.output = str(Path(store.url).resolve()) if store.local else str(target)
        self.run_id = run_id
        self.full = full
        self.resumed = False
        self.budgets = _budgets(names, settings)
        self.units = {name: plan_units(name, settings) for name in names}
        #: what each task carries: the settings without the target lists the units already hold
        self.unit_base = without_targets(settings, self.units)
        self.tasks: list[UnitTask] = []
        #: filled as units complete (pass one in to watch it live)
        self.report = report if report is not None else RunReport(run_id="", started_at=datetime.now(UTC))
        self.report.run_id = run_id or ""
        self._state: StateStore | None = None
        self._lock = anyio.Lock()
        self._driver_lock: IO[str] | None = None

    @property
    def digest(self) -> str:
        """Names the output and the planned units: only the same plan resumes an unfinished run."""
        plan = hashlib.sha256(
            "\n".join(u.key for planned in self.units.values() for u in planned).encode()
        ).hexdigest()[:16]
        return f"{_DIGEST_PREFIX}{self.output}|{plan}"

    async def __aenter__(self) -> DistributedRun:
        settings = self.settings
        await anyio.to_thread.run_sync(ObjectStore(self.output).probe)
        if settings.state.enabled:
            self._state = await StateStore(settings.state.path).open()
        try:
            if self._state is not None:
                lock = _lock_driver
                self._driver_lock = await anyio.to_thread.run_sync(lock, settings.state.path, self.output)
            await self._plan()
        except BaseException:
            await self._close()
            raise
        return self

    async def _plan(self) -> None:
        state = self._state
        if self.run_id is None and state is not None:
            self.run_id = await state.unfinished_run(self.digest)
            self.resumed = self.run_id is not None
            if not self.resumed:
                # unfinished runs of this output with another plan (targets changed): closed as
                # interrupted; their committed units stay valid and feed every unit's history
                prefix = f"{_DIGEST_PREFIX}{self.output}|"
                for stale in await state.interrupt_unfinished(prefix, datetime.now(UTC).isoformat()):
                    log.warning("unfinished_run_not_resumed", run_id=stale, reason="planned units changed")
        if self.run_id is None:
            self.run_id = new_run_id()
        self.report.run_id = self.run_id
        if self.resumed:
            log.info("run_resumed", run_id=self.run_id, output=self.output)
        elif state is not None:
            await state.start_run(self.run_id, self.report.started_at.isoformat(), self.digest)
        for name, planned in self.units.items():
            self.report.sources[name] = SourceReport(source=name)
            namespace = _namespace(name, self.output, self.settings.offline)
            snapshot = await state.watermarks(namespace) if state is not None and not self.full else {}
            store = ObjectStore(self.output)
            for unit in planned:
                if snapshot and not await anyio.to_thread.run_sync(self._unit_intact, store, unit):
                    self.report.sources[name].warnings.append(
                        f"unit {unit.unit_id}: the output lacks data it committed (or the unit has "
                        "never committed here); its targets are harvested from scratch"
                    )
                    wanted: set[str] = set()
                else:
                    wanted = _unit_watermark_keys(unit, self.unit_base) if snapshot else set()
                marks = {k: (k, v) for k, v in snapshot.items() if k in wanted}
                task = UnitTask(unit, self.unit_base, self.output, self.run_id, self.budgets, marks)
                self.tasks.append(task)

    @staticmethod
    def _unit_intact(store: ObjectStore, unit: Unit) -> bool:
        """Whether the watermarks of this unit's targets can be trusted for this output: the
        output holds the unit's manifests and every data object they commit. The driver's state
        is an index; the output is the truth (a deleted or replaced output starts from scratch)."""
        manifests = store.list(f"_units/{unit.source}/{unit.unit_id}")
        lost = lost_data(store, unit)
        if not manifests or not lost:
            return bool(manifests)
        # Data was lost once; trusted again after a from-scratch harvest of the unit committed
        # since (its manifest is newer than every lost one: run ids start with their UTC time).
        newest_lost = max(m.rsplit("/", 1)[1] for m in lost)
        for mkey in sorted(set(manifests) - set(lost), key=lambda m: m.rsplit("/", 1)[1], reverse=True):
            if mkey.rsplit("/", 1)[1] < newest_lost:
                break
            body = store.get(mkey)
            if body and orjson.loads(body).get("from_scratch"):
                return True
        return False

    async def commit(self, task: UnitTask, manifest: dict[str, Any]) -> None:
        """Count a completed unit and commit its keys and watermarks to the driver's state."""
        async with self._lock:  # units completing together: one commit at a time
            await self._commit(task, manifest)

    async def _commit(self, task: UnitTask, manifest: dict[str, Any]) -> None:
        src = self.report.sources[task.unit.source]
        keys = [tuple(k) for k in manifest["keys"]]
        src.targets += int(manifest["targets"])
        src.targets_ok += int(manifest["targets_ok"])
        src.requests += int(manifest["requests"])
        src.retries += int(manifest["retries"])
        src.duplicates += int(manifest["duplicates"])
        src.files.append((manifest["data"], manifest["sha256"]))
        for err in manifest["errors"]:
            src.errors.append(
                TargetFailure(target=err["target"], cause=err["cause"], transient=err["transient"])
            )
        state = self._state
        namespace = _namespace(task.unit.source, self.output, self.settings.offline)
        # A manifest this attempt wrote holds keys new to the output by construction (the unit's
        # history filtered them), even when the driver's state remembers them from an output that
        # has since been deleted. One found already committed (a resumed run, the same run id again,
        # an attempt that died after its commit) counts as present what the driver committed before.
        found = bool(manifest.get(FOUND))
        known = await state.seen(namespace, keys) if state is not None and found else set()
        src.records += len(keys) + int(manifest.get("already_committed", 0))
        src.written += len(keys) - len(known)
        src.already_present += len(known) + int(manifest.get("already_committed", 0))
        if state is not None:
            await state.commit_keys(namespace, [k for k in keys if k not in known], task.run_id)
            marks = {k: (k, float(v)) for k, v in manifest["watermarks"].items()}
            if marks:
                await state.advance_watermarks(namespace, marks, task.run_id)

    async def fail(self, task: UnitTask, cause: str) -> str:
        """Report a unit that failed every attempt (never dropped silently); return the cause as
        recorded, with any token redacted (a cause can quote an archive's answer)."""
        cause = redact(cause)
        unit = task.unit
        src = self.report.sources[unit.source]
        src.targets += max(1, len(unit.targets))
        src.errors.append(TargetFailure(target=f"unit {unit.unit_id}", cause=cause, transient=True))
        log.error("unit_failed", source=unit.source, unit=unit.unit_id, cause=cause)
        if self._state is not None:
            outcome = (f"unit {unit.unit_id}", False, cause)
            await self._state.record_outcomes(task.run_id, unit.source, [outcome])
        return cause

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                for src in self.report.sources.values():
                    src.finish()
                self.report.finished_at = datetime.now(UTC)
                if self._state is not None and self.run_id is not None:
                    status = "ok" if self.report.ok else "failed"
                    finished = self.report.finished_at.isoformat()
                    await self._state.finish_run(self.run_id, finished, status, self.report.as_dict())
                report = self.report
                log.info(
                    "run_finished",
                    run_id=self.run_id,
                    units=len(self.tasks),
                    ok=report.ok,
                    failed_sources=report.failed_sources,
                    **report.totals(),
                )
        finally:
            await self._close()

    async def _close(self) -> None:
        if self._driver_lock is not None:
            self._driver_lock.close()  # closing the file releases the lock
            self._driver_lock = None
        if self._state is not None:
            await self._state.close()
            self._state = None


def _lock_driver(state_path: Path, output: str) -> IO[str]:
    """Hold an exclusive lock for (state, output) while a driver runs: a second driver (a manual
    run while the daemon sweeps) would take the first one's open run for an interrupted one."""
    import fcntl

    name = hashlib.sha256(output.encode()).hexdigest()[:12]
    path = state_path.with_name(f".{state_path.name}.{name}.lock")
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise DriverBusy(f"output {output} is being harvested by {holder}; wait for it or stop it") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


#: How harvester starts a LocalCluster: worker processes of one thread (the unit runs its own event
#: loop), no dashboard, and the scheduler's /health and /metrics server on a free loopback port
#: (by default it takes 8787, clashing with the user's other clusters, even without a dashboard;
#: ":0" alone would listen on every interface).
LOCAL_CLUSTER: dict[str, Any] = {
    "threads_per_worker": 1,
    "processes": True,
    "dashboard_address": None,
    "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
}


def dask_client(settings: Settings) -> tuple[Any, Any]:
    """(client, cluster or None): the configured scheduler, or a LocalCluster sized to the machine."""
    import dask
    from distributed import Client, LocalCluster

    dask.config.set({"distributed.scheduler.locks.lease-timeout": LEASE_TIMEOUT})
    if settings.dask.address:
        try:
            return Client(settings.dask.address, timeout="10s"), None
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {settings.dask.address}: {exc}") from None
    workers = settings.dask.workers or os.cpu_count() or 1
    cluster = LocalCluster(n_workers=workers, **LOCAL_CLUSTER)
    return Client(cluster), cluster


def check_dask_output(settings: Settings, output: str) -> None:
    """A remote scheduler's workers have their own disks: refuse a local folder unless shared."""
    if settings.dask.address and not is_url(output) and not settings.dask.shared_filesystem:
        raise ConfigError(
            f"output {output}: a folder on this machine, but the workers at {settings.dask.address} "
            "have their own disks; use an s3://… output, or set dask.shared_filesystem for a shared mount"
        )


# --- engines: where a unit runs -------------------------------------------------------------------

#: Units harvested at once by the in-process engine (the host budgets bound the requests anyway).
LOCAL_UNITS_AT_ONCE = 4


class UnitEngine(Protocol):
    """Runs work units to their manifests somewhere: this process, Dask workers, Prefect tasks.

    :func:`drive` is the one loop over a run's units; an engine only says how one unit runs.
    """

    #: units awaited at once by :func:`drive` (Dask and Prefect queue the rest on the cluster)
    at_once: int

    async def start(self, tasks: list[UnitTask]) -> None:
        """Called once before the units are awaited (Dask and Prefect submit them all here)."""

    async def execute(self, task: UnitTask) -> dict[str, Any]:
        """The unit's manifest; :class:`UnitFailed` once every attempt has failed."""

    async def cancel(self) -> None:
        """Cancel what is still pending (a stop was requested)."""


class LocalUnits:
    """Units in this event loop under one budget per host, each retried ``UNIT_RETRIES`` times.

    One instance keeps its host budgets across runs (the daemon's sweeps)."""

    at_once = LOCAL_UNITS_AT_ONCE

    def __init__(self) -> None:
        self.limiters = LimiterRegistry()

    async def start(self, tasks: list[UnitTask]) -> None:
        return None

    async def execute(self, task: UnitTask) -> dict[str, Any]:
        cause = ""
        for _attempt in range(1 + UNIT_RETRIES):
            try:
                return await run_unit_async(task, self.limiters)
            except (HarvesterError, OSError) as exc:
                cause = f"{type(exc).__name__}: {exc}"
        raise UnitFailed(cause)

    async def cancel(self) -> None:
        return None


class DaskUnits:
    """Units as Dask tasks (:func:`run_unit`, retried ``UNIT_RETRIES`` times by the scheduler)
    under the cluster-wide host budgets; ``client`` is a ``distributed.Client``."""

    at_once = 64

    def __init__(self, client: Any) -> None:
        self.client = client
        self._futures: dict[str, Any] = {}

    async def start(self, tasks: list[UnitTask]) -> None:
        def submit() -> dict[str, Any]:
            return {
                t.name: self.client.submit(run_unit, t, key=t.name, retries=UNIT_RETRIES, pure=False)
                for t in tasks
            }

        self._futures = await anyio.to_thread.run_sync(submit)

    async def execute(self, task: UnitTask) -> dict[str, Any]:
        future = self._futures[task.name]
        try:
            manifest: dict[str, Any] = await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)
        except Exception as exc:  # the task's last attempt: reported as the unit's failure
            raise UnitFailed(f"{type(exc).__name__}: {exc}") from exc
        return manifest

    async def cancel(self) -> None:
        pending = [f for f in self._futures.values() if not f.done()]
        await anyio.to_thread.run_sync(self.client.cancel, pending)


async def drive(run: DistributedRun, engine: UnitEngine, stop: anyio.Event | None = None) -> RunReport:
    """Plan (``async with run``), execute every unit on ``engine``, commit each manifest as its
    unit completes, report a unit that failed every attempt; return the run's report.

    When ``stop`` is set, the units in flight are cancelled (a write already started completes),
    :class:`RunInterrupted` is raised and the run stays open: the next run on the output resumes it.
    """
    async with run:
        await engine.start(run.tasks)
        at_once = anyio.CapacityLimiter(engine.at_once)

        async def one(task: UnitTask) -> None:
            async with at_once:
                try:
                    manifest = await engine.execute(task)
                except UnitFailed as exc:
                    await run.fail(task, exc.message)
                    return
                await run.commit(task, manifest)

        async def watch(scope: anyio.CancelScope) -> None:
            assert stop is not None
            await stop.wait()
            scope.cancel()

        async with anyio.create_task_group() as tg:
            if stop is not None:
                tg.start_soon(watch, tg.cancel_scope)
            async with anyio.create_task_group() as units:
                for task in run.tasks:
                    units.start_soon(one, task)
            tg.cancel_scope.cancel()  # every unit done: stop watching
        if stop is not None and stop.is_set():
            with anyio.CancelScope(shield=True):
                await engine.cancel()
            raise RunInterrupted(f"run {run.run_id} stopped; the next run on this output resumes it")
    return run.report


async def _drive_until(run: DistributedRun, engine: UnitEngine, stop: threading.Event | None) -> RunReport:
    """:func:`drive` with a ``threading.Event`` as the stop (the blocking entry points)."""
    if stop is None:
        return await drive(run, engine)
    event = anyio.Event()

    async def relay() -> None:
        while not stop.is_set():  # noqa: ASYNC110  # a threading.Event set from another thread
            await anyio.sleep(0.1)
        event.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(relay)
        try:
            report = await drive(run, engine, event)
        finally:
            tg.cancel_scope.cancel()
    return report


def harvest_distributed(
    names: list[str],
    settings: Settings,
    *,
    output: str | None = None,
    client: Any = None,
    run_id: str | None = None,
    full: bool = False,
    stop: threading.Event | None = None,
) -> RunReport:
    """Run ``names`` as work units on Dask and return one report (blocking; call from a thread).
    :func:`harvester.harvest` does the same from async code when ``executor: dask``.

    :param output: a local path or fsspec URL (default ``settings.output``).
    :param client: a ``distributed.Client`` to use; by default one is made from ``settings.dask``.
    :param run_id: the run id; by default the output's unfinished run is resumed, or a new one made.
    :param full: ignore the watermarks (records already committed are still not written again).
    :param stop: when set, pending units are cancelled and :class:`RunInterrupted` is raised; the
        run stays unfinished in the state, so the next run on the output resumes it.
    """
    run = DistributedRun(names, settings, output=output, run_id=run_id, full=full)
    check_dask_output(settings, run.output)
    own, cluster = (client, None) if client is not None else dask_client(settings)
    try:
        return anyio.run(_drive_until, run, DaskUnits(own), stop)
    finally:
        if client is None:
            own.close()
            if cluster is not None:
                cluster.close()


def harvest_units(
    names: list[str],
    settings: Settings,
    *,
    output: str | None = None,
    run_id: str | None = None,
    full: bool = False,
    stop: threading.Event | None = None,
) -> RunReport:
    """Run ``names`` as work units in this process (``executor: local`` with an object-store output).

    The same units, manifests, create-only objects, history and resume as on Dask, without a
    cluster: units run concurrently in one event loop under one local budget per host, each
    retried like a Dask task (``UNIT_RETRIES``). Blocking; call from a thread in async code, or
    use :func:`harvester.harvest`. ``stop`` works as in :func:`harvest_distributed`.
    """
    run = DistributedRun(names, settings, output=output, run_id=run_id, full=full)
    return anyio.run(_drive_until, run, LocalUnits(), stop)
