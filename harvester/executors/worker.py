"""A work unit on its worker: harvest the unit's targets into a staging folder, then write its
records and its manifest to the output, create-only.

(:func:`run_unit` on Dask, :class:`~harvester.executors.driver.LocalUnits` in process.)
``anyio.run(api.harvest, ...)`` with the unit's targets, no real state (the staging output's
ledger in a temporary folder carries the driver's watermark snapshot, so the incremental queries
stay narrow), the cluster-wide :class:`DaskLimiterRegistry`, jsonl into the temporary folder.
Records already committed by an earlier run of the same unit (its manifests are the unit's
history, summarised every :data:`HISTORY_EVERY` manifests under ``_history/``) are dropped.
Then, create-only and in this order:

- ``<output>/<source>/units/<unit id>/<run id>-<digest>.jsonl`` (``.parquet`` with ``format:
  parquet``): every new record, sorted by key;
- ``<output>/_units/<source>/<unit id>/<run id>-<digest>.json``: the unit manifest (keys, counts,
  sha256, new watermarks, target failures) — the commit marker, written last.

A re-executed unit (a retry, a worker killed mid-unit, a resumed run) finds its manifest, or its
data object, already there and writes nothing new: keys are a function of (source, unit, run id),
so it cannot duplicate; a later run of the unit cannot either, because of the history.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson
import structlog

from harvester import archives
from harvester.errors import UnitFailed, budget_lost
from harvester.executors.dask_limiter import DaskLimiterRegistry
from harvester.executors.units import Unit, unit_settings
from harvester.io.ledger import Ledger
from harvester.io.limiter import LimiterRegistry
from harvester.io.objectstore import ObjectStore
from harvester.io.readers import iter_shard_records
from harvester.records import key_of
from harvester.run.report import RunReport
from harvester.settings import Settings

__all__ = [
    "FOUND",
    "HISTORY_EVERY",
    "History",
    "UnitTask",
    "data_key",
    "history_key",
    "lost_data",
    "manifest_key",
    "run_unit",
    "run_unit_async",
    "unit_history",
    "unit_suffix",
]

log = structlog.get_logger("harvester.executors")

#: set on a manifest returned because it was already committed (never stored in the object)
FOUND = "_found_committed"

Key = tuple[str, ...]


@dataclass(frozen=True)
class UnitTask:
    """Everything a worker needs for one unit (pickled to the worker)."""

    unit: Unit
    settings: Settings
    output: str
    run_id: str
    budgets: dict[str, tuple[float, int]]
    watermarks: dict[str, tuple[str, float]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """A task key unique to (source, unit, run): the same unit of a resumed run gets the same."""
        return f"harvester-unit-{self.unit.source}-{self.unit.key}-{self.run_id}"


#: The layouts of a unit's data object: ``parquet`` with ``format: parquet``, else ``jsonl``.
UNIT_SUFFIXES = ("jsonl", "parquet")


def unit_suffix(settings: Settings) -> str:
    """The data object's layout for these settings (per-record JSON files become jsonl)."""
    return "parquet" if settings.format == "parquet" else "jsonl"


def data_key(unit: Unit, run_id: str, suffix: str = "jsonl") -> str:
    return f"{unit.source}/units/{unit.unit_id}/{run_id}-{unit.digest}.{suffix}"


def manifest_key(unit: Unit, run_id: str) -> str:
    return f"_units/{unit.source}/{unit.unit_id}/{run_id}-{unit.digest}.json"


def _data_of(mkey: str) -> list[str]:
    """The data object a manifest commits, in either layout (``_units/s/u/x.json`` ->
    ``s/units/u/x.jsonl`` or ``.parquet``)."""
    _, source, unit_id, name = mkey.split("/", 3)
    stem = f"{source}/units/{unit_id}/{name.removesuffix('.json')}"
    return [f"{stem}.{suffix}" for suffix in UNIT_SUFFIXES]


def lost_data(store: ObjectStore, unit: Unit) -> list[str]:
    """The manifests of ``unit`` whose data object is no longer in the output (deleted by hand, by
    a lifecycle rule, or with the whole data prefix): their records must be harvested again."""
    data = set(store.list(f"{unit.source}/units/{unit.unit_id}"))
    manifests = store.list(f"_units/{unit.source}/{unit.unit_id}")
    return [m for m in manifests if not any(d in data for d in _data_of(m))]


# --- worker ---------------------------------------------------------------------------------------


def run_unit(task: UnitTask) -> dict[str, Any]:
    """Harvest one unit on a Dask worker, under the cluster-wide budgets; return its manifest."""
    return anyio.run(run_unit_async, task, DaskLimiterRegistry(task.budgets))


async def run_unit_async(task: UnitTask, limiters: LimiterRegistry) -> dict[str, Any]:
    """Harvest one unit under ``limiters``; return its manifest (also written to the output)."""
    store = ObjectStore(task.output)
    unit = task.unit
    done = await anyio.to_thread.run_sync(store.get, manifest_key(unit, task.run_id))
    if done is not None:  # an earlier attempt, or the interrupted run being resumed, committed it
        manifest: dict[str, Any] = orjson.loads(done)
        manifest[FOUND] = True
        return manifest
    staging = Path(await anyio.to_thread.run_sync(_staging_folder))
    try:
        settings = unit_settings(unit, task.settings, staging)
        # The staging output's own ledger carries the driver's watermark snapshot, so the
        # incremental queries stay narrow; what the worker reads back after the run is the new one.
        ledger = Ledger(
            Path(settings.output) / unit.source, archives.record_model(unit.source), sample=settings.offline
        )
        if task.watermarks:
            async with ledger:
                await ledger.advance(task.watermarks, "snapshot")
        from harvester import api

        try:
            # the unit's own log lines (run_started, fetched, run_finished of its scratch run)
            # name the unit and the run it belongs to
            with structlog.contextvars.bound_contextvars(unit=unit.unit_id, unit_of_run=task.run_id):
                report = await api.harvest(unit.source, settings=settings, limiters=limiters)
        except BaseExceptionGroup as group:  # the task groups wrap it: raise it as itself
            budget = budget_lost(group)
            if budget is None:
                raise
            raise budget from None
        async with ledger:
            marks = await ledger.watermarks()
        return await anyio.to_thread.run_sync(_write_unit, task, store, settings, report, marks)
    finally:
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(staging, ignore_errors=True))


def _staging_folder() -> str:
    return os.path.realpath(tempfile.mkdtemp(prefix="harvester-unit-"))


def _write_unit(
    task: UnitTask, store: ObjectStore, settings: Settings, report: RunReport, marks: dict[str, float]
) -> dict[str, Any]:
    """Write the unit's new records, then its manifest, create-only (blocking: a worker thread)."""
    unit = task.unit
    source_report = report.sources[unit.source]
    lines = _sorted_lines(unit.source, Path(settings.output) / unit.source)
    if not lines and source_report.targets_ok == 0 and source_report.errors:
        causes = "; ".join(f"{e.target}: {e.cause}" for e in source_report.errors[:3])
        raise UnitFailed(f"unit {unit.unit_id}: every target failed ({causes})")
    history = unit_history(store, unit, task.run_id)
    fetched = len(lines)
    lines = [kv for kv in lines if kv[0] not in history.keys]
    suffix = unit_suffix(task.settings)
    dkey = data_key(unit, task.run_id, suffix)
    body = _encode(unit.source, lines, suffix)
    if not store.put_new(dkey, body):
        # An attempt that died before its manifest wrote the data: that object is complete
        # (create-only, single write), so describe it instead of writing another one. What this
        # attempt fetched beyond it is not written, so the watermarks stay at the snapshot: the
        # next run asks again, and the history drops what the object already holds.
        body = store.get(dkey) or b""
        lines = [(key, b"") for key in _keys_in(unit.source, body, suffix)]
        marks = {wkey: value for wkey, (_, value) in task.watermarks.items()}
        fetched = len(lines)
    manifest = {
        "source": unit.source,
        "unit": unit.unit_id,
        "unit_key": unit.key,
        "run_id": task.run_id,
        "data": dkey,
        "records": len(lines),
        "already_committed": fetched - len(lines),
        "sha256": hashlib.sha256(body).hexdigest(),
        "keys": [list(k) for k, _ in lines],
        "watermarks": marks,
        #: asked the archive for everything (no watermark given) and every target succeeded: the
        #: unit's whole data again, so watermarks of this unit can be trusted from here on
        "from_scratch": not task.watermarks
        and source_report.targets_ok == source_report.targets
        and not source_report.errors,
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
    mkey = manifest_key(unit, task.run_id)
    if not store.put_new(mkey, orjson.dumps(manifest)):
        committed: dict[str, Any] = orjson.loads(store.get(mkey) or b"{}")
        committed[FOUND] = True
        return committed
    _summarise_history(store, unit, task.run_id, history, manifest)
    return manifest


#: A unit's history is summarised into one object once this many of its manifests are not yet in
#: one, so a unit reads one summary plus fewer than this many manifests, however many runs it had.
HISTORY_EVERY = 16


@dataclass
class History:
    """What earlier runs of a unit committed: ``keys``, from the manifests ``covers`` names."""

    keys: set[Key]
    covers: set[str]
    #: manifests read one by one (those no summary covered yet)
    loose: int = 0


def history_key(unit: Unit, covered: int, run_id: str) -> str:
    """A history summary's key; the zero-padded count first, so the fullest one sorts last."""
    return f"_history/{unit.source}/{unit.unit_id}/{covered:08d}-{run_id}-{unit.digest}.json"


def unit_history(store: ObjectStore, unit: Unit, run_id: str) -> History:
    """The keys committed by every other manifest of this unit id (any run, any digest — the same
    cell with other targets included): never written again.

    Read from the fullest history summary, if any, plus the manifests it does not cover. A summary
    naming a manifest that is no longer there (removed by hand) is not trusted: every manifest is
    read instead. A manifest whose data object is gone commits nothing any more: its records are
    harvested again (the output owns its truth, as a folder's ledger does).
    """
    own = manifest_key(unit, run_id)
    lost = set(lost_data(store, unit))
    listed = [m for m in store.list(f"_units/{unit.source}/{unit.unit_id}") if m not in lost]
    history = History(keys=set(), covers=set())
    summaries = store.list(f"_history/{unit.source}/{unit.unit_id}")
    if summaries:
        body = store.get(summaries[-1])
        summary = orjson.loads(body) if body else None
        if summary is not None and set(summary["covers"]) <= set(listed):
            history.keys.update(tuple(k) for k in summary["keys"])
            history.covers.update(summary["covers"])
    for mkey in listed:
        if mkey == own or mkey in history.covers:
            continue
        body = store.get(mkey)
        if body:
            history.keys.update(tuple(k) for k in orjson.loads(body)["keys"])
            history.covers.add(mkey)
            history.loose += 1
    return history


def _summarise_history(
    store: ObjectStore, unit: Unit, run_id: str, history: History, manifest: dict[str, Any]
) -> None:
    """After this unit's manifest is committed: once enough manifests are read one by one, write
    one summary covering them all (this one included) and remove the summaries it supersedes."""
    if history.loose + 1 < HISTORY_EVERY:
        return
    covers = sorted(history.covers | {manifest_key(unit, run_id)})
    keys = sorted(history.keys | {tuple(k) for k in manifest["keys"]})
    new = history_key(unit, len(covers), run_id)
    older = store.list(f"_history/{unit.source}/{unit.unit_id}")
    if store.put_new(new, orjson.dumps({"unit_key": unit.key, "covers": covers, "keys": keys})):
        for key in older:
            store.remove(key)  # superseded: every manifest it covered is in the new one


def _encode(source: str, lines: list[tuple[Key, bytes]], suffix: str) -> bytes:
    """A unit's records as its data object: the json lines as they are, or one Parquet table
    (the records' schema, as ``format: parquet`` writes a folder's shards)."""
    if suffix == "jsonl":
        return b"".join(line for _, line in lines)
    from harvester.io.arrow import arrow_schema, parquet_bytes, records_table

    model = archives.record_model(source)
    schema = arrow_schema(model)
    records = [model.model_validate_json(line) for _, line in lines]
    return parquet_bytes(records_table(records, schema) if records else schema.empty_table())


def _keys_in(source: str, body: bytes, suffix: str) -> list[Key]:
    """The dedup keys of a unit's data object, in its order."""
    model = archives.record_model(source)
    if suffix == "jsonl":
        return [key_of(model, orjson.loads(raw)) for raw in body.splitlines() if raw]
    from harvester.io.batches import parquet_keys

    return parquet_keys(model, body)


def _sorted_lines(source: str, folder: Path) -> list[tuple[Key, bytes]]:
    """Every staged record as (dedup key, json line), sorted by key: one deterministic order.
    The records were validated before the unit's pipeline wrote them: only their keys are read."""
    model = archives.record_model(source)
    lines = []
    if folder.is_dir():
        for data in iter_shard_records(folder):
            lines.append((key_of(model, data), orjson.dumps(data) + b"\n"))
    lines.sort(key=lambda kv: kv[0])
    return lines
