"""``executor: dask``: fan the work units out to a Dask cluster; the driver alone keeps state.

Driver (:func:`harvest_distributed`)::

    plan units ─> skip units already committed (their manifest exists) ─> client.submit(run_unit,
    retries=2) per unit ─> as_completed: commit keys and watermarks from each unit's manifest
    into the driver's SQLite state ─> one RunReport (a unit that failed every attempt is a failed
    target "unit <id>")

Worker (:func:`run_unit`): ``anyio.run(api.harvest, ...)`` with the unit's targets, no real state
(a scratch SQLite file in a temporary folder carries only the driver's watermark snapshot, so the
incremental queries stay narrow), the cluster-wide :class:`DaskLimiterRegistry`, jsonl into the
temporary folder. Then, create-only and in this order:

- ``<output>/<source>/units/<unit key>/<run id>.jsonl``: every record, sorted by dedup key;
- ``<output>/_units/<source>/<unit key>/<run id>.json``: the unit manifest (keys, counts, sha256,
  new watermarks, target failures) — the commit marker, written last.

A re-executed unit (a retry, a worker killed mid-unit) finds the data object already there and
writes nothing new: keys are a function of (source, unit, run id), so it cannot duplicate.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import orjson
import structlog

from harvester.distributed.limiter import DaskLimiterRegistry, pause_variable_name
from harvester.distributed.objectstore import ObjectStore
from harvester.distributed.units import Unit, plan_units, unit_settings
from harvester.errors import ConfigError, HarvesterError
from harvester.pipeline.report import RunReport, SourceReport, TargetFailure
from harvester.pipeline.writers import iter_jsonl_records
from harvester.records import RECORD_MODELS
from harvester.settings import Settings
from harvester.state import StateStore

__all__ = ["UnitFailed", "UnitTask", "data_key", "harvest_distributed", "manifest_key", "run_unit"]

log = structlog.get_logger("harvester.distributed")

UNIT_RETRIES = 2
_LEASE_TIMEOUT = "60s"  # a slow FITS decode must not make the scheduler reclaim a held lease


class UnitFailed(HarvesterError):
    """Every target of a unit failed: raised on the worker so that Dask retries the unit."""


@dataclass(frozen=True)
class UnitTask:
    """Everything a worker needs for one unit (pickled to the worker)."""

    unit: Unit
    settings: Settings
    output: str
    run_id: str
    budgets: dict[str, tuple[float, int]]
    watermarks: dict[str, tuple[str, float]]


def data_key(source: str, unit_key: str, run_id: str) -> str:
    return f"{source}/units/{unit_key}/{run_id}.jsonl"


def manifest_key(source: str, unit_key: str, run_id: str) -> str:
    return f"_units/{source}/{unit_key}/{run_id}.json"


def _namespace(source: str, output: str, sample: bool) -> str:
    name = f"{source}@sample" if sample else source
    return f"{name}|units:{output}"


# --- worker ---------------------------------------------------------------------------------------


def run_unit(task: UnitTask) -> dict[str, Any]:
    """Harvest one unit on a Dask worker; return its manifest (also written to the output)."""
    store = ObjectStore(task.output)
    unit = task.unit
    mkey = manifest_key(unit.source, unit.key, task.run_id)
    done = store.get(mkey)
    if done is not None:  # an earlier attempt committed this unit
        manifest: dict[str, Any] = orjson.loads(done)
        return manifest
    staging = Path(tempfile.mkdtemp(prefix=f"harvester-unit-{unit.unit_id}-"))
    try:
        settings = unit_settings(unit, task.settings, staging)
        scope = f"{unit.source}@sample" if settings.offline else unit.source
        namespace = f"{scope}|{Path(settings.output).resolve()}"  # as api.harvest's SourceState names it
        report, marks = anyio.run(_harvest_unit, task, settings, namespace)
        source_report = report.sources[unit.source]
        lines = _sorted_lines(unit.source, Path(settings.output) / unit.source)
        if not lines and source_report.targets_ok == 0 and source_report.errors:
            causes = "; ".join(f"{e.target}: {e.cause}" for e in source_report.errors[:3])
            raise UnitFailed(f"unit {unit.unit_id}: every target failed ({causes})")
        dkey = data_key(unit.source, unit.key, task.run_id)
        body = b"".join(line for _, line in lines)
        if not store.put_new(dkey, body):
            # An attempt that died before its manifest wrote the data: that object is complete
            # (create-only, single write), so describe it instead of writing another one.
            existing = store.get(dkey) or b""
            lines = [(_key_of(unit.source, raw), raw + b"\n") for raw in existing.splitlines() if raw]
            body = existing
        manifest = {
            "source": unit.source,
            "unit": unit.unit_id,
            "unit_key": unit.key,
            "run_id": task.run_id,
            "data": dkey,
            "records": len(lines),
            "sha256": hashlib.sha256(body).hexdigest(),
            "keys": [list(k) for k, _ in lines],
            "watermarks": marks,
            "targets": source_report.targets,
            "targets_ok": source_report.targets_ok,
            "requests": source_report.requests,
            "retries": source_report.retries,
            "duplicates": source_report.duplicates,
            "errors": [
                {"target": e.target, "cause": e.cause, "transient": e.transient} for e in source_report.errors
            ],
            "worker_pid": os.getpid(),
        }
        if not store.put_new(mkey, orjson.dumps(manifest)):
            manifest = orjson.loads(store.get(mkey) or b"{}")
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _key_of(source: str, raw: bytes) -> tuple[str, ...]:
    return RECORD_MODELS[source].model_validate(orjson.loads(raw)).dedup_key()


def _sorted_lines(source: str, folder: Path) -> list[tuple[tuple[str, ...], bytes]]:
    """Every staged record as (dedup key, json line), sorted by key: one deterministic order."""
    model = RECORD_MODELS[source]
    lines = []
    if folder.is_dir():
        for data in iter_jsonl_records(folder):
            key = model.model_validate(data).dedup_key()
            lines.append((key, orjson.dumps(data) + b"\n"))
    lines.sort(key=lambda kv: kv[0])
    return lines


async def _harvest_unit(
    task: UnitTask, settings: Settings, namespace: str
) -> tuple[RunReport, dict[str, float]]:
    from harvester import api

    source = task.unit.source
    async with StateStore(settings.state.path) as scratch:
        if task.watermarks:
            await scratch.advance_watermarks(namespace, task.watermarks, "snapshot")
        registry = DaskLimiterRegistry(task.budgets)
        report = await api.harvest(source, settings=settings, limiters=registry)
        marks = await scratch.watermarks(namespace)
    return report, marks


# --- driver ---------------------------------------------------------------------------------------


def _budgets(names: list[str], settings: Settings) -> dict[str, tuple[float, int]]:
    """Each host's strictest budget over the sources that use it (as the local registry does)."""
    from harvester import api

    budgets: dict[str, tuple[float, int]] = {}
    for name in names:
        source = api.SOURCES[name](settings, sample=settings.offline)
        host, rate = source.host.lower(), source.rate_limit
        rps, conc = rate.requests_per_second, rate.max_concurrency
        if host in budgets:
            rps, conc = min(rps, budgets[host][0]), min(conc, budgets[host][1])
        budgets[host] = (rps, conc)
    return budgets


def _client(settings: Settings) -> tuple[Any, Any]:
    """(client, cluster or None): the configured scheduler, or a LocalCluster sized to the machine."""
    import dask
    from distributed import Client, LocalCluster

    dask.config.set({"distributed.scheduler.locks.lease-timeout": _LEASE_TIMEOUT})
    if settings.dask.address:
        return Client(settings.dask.address, timeout="30s"), None
    workers = settings.dask.workers or os.cpu_count() or 1
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    return Client(cluster), cluster


def harvest_distributed(
    names: list[str],
    settings: Settings,
    *,
    output: str | None = None,
    client: Any = None,
    run_id: str | None = None,
    full: bool = False,
) -> RunReport:
    """Run ``names`` as work units on Dask and return one report (blocking; call from a thread).

    :param output: a local path or fsspec URL (default ``settings.output``).
    :param client: a ``distributed.Client`` to use; by default one is made from ``settings.dask``.
    :param run_id: reuse a run id to resume it: units already committed are not run again.
    """
    if settings.limit is not None:
        raise ConfigError("limit is not supported with executor: dask (it would apply per work unit)")
    target = str(output if output is not None else settings.output)
    ObjectStore(target)  # a bad URL or a missing fsspec backend fails here, before any unit runs
    run_id = run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    report = RunReport(run_id=run_id, started_at=datetime.now(UTC))
    units = {name: plan_units(name, settings) for name in names}
    budgets = _budgets(names, settings)
    own, cluster = (client, None) if client is not None else _client(settings)
    try:
        from distributed import Variable

        for host in budgets:
            Variable(pause_variable_name(host), client=own).set(0.0)
        report = anyio.run(_drive, own, units, settings, target, run_id, budgets, report, full)
    finally:
        if client is None:
            own.close()
            if cluster is not None:
                cluster.close()
    return report


async def _drive(
    client: Any,
    units: dict[str, list[Unit]],
    settings: Settings,
    target: str,
    run_id: str,
    budgets: dict[str, tuple[float, int]],
    report: RunReport,
    full: bool,
) -> RunReport:
    from distributed import as_completed

    state = await StateStore(settings.state.path).open() if settings.state.enabled else None
    try:
        if state is not None:
            await state.start_run(run_id, report.started_at.isoformat(), "dask")
        futures: dict[Any, Unit] = {}
        for name, planned in units.items():
            src = SourceReport(source=name)
            report.sources[name] = src
            namespace = _namespace(name, target, settings.offline)
            snapshot = await state.watermarks(namespace) if state is not None and not full else {}
            for unit in planned:
                marks = _unit_marks(unit, snapshot)
                task = UnitTask(unit, settings, target, run_id, budgets, marks)
                key = f"harvester-unit-{name}-{unit.key}-{run_id}"
                future = client.submit(run_unit, task, key=key, retries=UNIT_RETRIES, pure=False)
                futures[future] = unit
        pending = as_completed(list(futures), with_results=False)
        while True:
            future = await anyio.to_thread.run_sync(_next, pending)
            if future is None:
                break
            unit = futures[future]
            src = report.sources[unit.source]
            try:
                manifest = await anyio.to_thread.run_sync(future.result)
            except Exception as exc:
                cause = f"{type(exc).__name__}: {exc}"
                src.targets += max(1, len(unit.targets))
                src.errors.append(TargetFailure(target=f"unit {unit.unit_id}", cause=cause, transient=True))
                log.error("unit_failed", source=unit.source, unit=unit.unit_id, cause=cause)
                continue
            await _commit(manifest, src, state, _namespace(unit.source, target, settings.offline), run_id)
        for src in report.sources.values():
            src.finish()
        report.finished_at = datetime.now(UTC)
        if state is not None:
            status = "ok" if report.ok else "failed"
            await state.finish_run(run_id, report.finished_at.isoformat(), status, report.as_dict())
    finally:
        if state is not None:
            await state.close()
    return report


def _next(pending: Any) -> Any:
    try:
        return next(pending)
    except StopIteration:
        return None


def _unit_marks(unit: Unit, snapshot: dict[str, float]) -> dict[str, tuple[str, float]]:
    """The driver's watermarks that concern this unit's targets (all of them for small snapshots)."""
    return {k: (k, v) for k, v in snapshot.items()}


async def _commit(
    manifest: dict[str, Any], src: SourceReport, state: StateStore | None, namespace: str, run_id: str
) -> None:
    keys = [tuple(k) for k in manifest["keys"]]
    src.targets += int(manifest["targets"])
    src.targets_ok += int(manifest["targets_ok"])
    src.requests += int(manifest["requests"])
    src.retries += int(manifest["retries"])
    src.duplicates += int(manifest["duplicates"])
    src.files.append((manifest["data"], manifest["sha256"]))
    for err in manifest["errors"]:
        src.errors.append(TargetFailure(target=err["target"], cause=err["cause"], transient=err["transient"]))
    known = await state.seen(namespace, keys) if state is not None else set()
    src.records += len(keys)
    src.written += len(keys) - len(known)
    src.already_present += len(known)
    if state is not None:
        await state.commit_keys(namespace, [k for k in keys if k not in known], run_id)
        marks = {k: (k, float(v)) for k, v in manifest["watermarks"].items()}
        if marks:
            await state.advance_watermarks(namespace, marks, run_id)
