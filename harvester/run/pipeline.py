"""The per-source pipeline: producers → dedup → writer, joined by bounded memory streams.

::

    targets ──> N producers ──> dedup + limit ──> writer ──> persist lanes ──> ledger commit
                (fetch, limited,                  (cuts      (PERSIST_LANES     (keys of
                 retried; a batch's                shards)    shards written     durable files)
                 JSON encoded here)                           side by side)

- Producers: a pool of worker tasks takes targets one by one; a failed target is recorded with
  its cause and the others go on.
- Dedup: an in-memory set of dedup keys drops duplicates within the run (overlapping cones return
  the same epochs); ``limit`` caps the unique records passed on and then cancels the producers,
  so fetching stops once enough records are in hand.
- Writer: takes what is buffered as one batch and writes it on a worker thread. The work a
  writer can do on a batch ahead of time (:meth:`Writer.prepare`: the JSON text) is done by the
  producer that emitted it, on a worker thread, so producers encode in parallel.
- Ledger commit: a task of its own enters the keys of each durable shard while the writer goes
  on with the next one (at most ``COMMITS_IN_FLIGHT`` waiting), shielded so that what was
  written is committed even when the run is cancelled. Per-record files' keys are entered in
  the writer's turn, after each write (:class:`_CommitNow`).

Each stream is bounded, so a slow disk slows the fetchers instead of filling memory.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from harvester import archives
from harvester.archives.base import FetchContext, Source, utcnow
from harvester.display.logs import redact
from harvester.display.schema import source_readme
from harvester.errors import BudgetUnavailable, HarvesterError, OutputError, budget_lost
from harvester.io.batches import Batch
from harvester.io.http import Http, HttpSession, HttpStats
from harvester.io.ledger import Ledger
from harvester.io.limiter import AmountBudget, on_cpu
from harvester.io.state import StateStore
from harvester.io.writers import (
    Item,
    JsonFilesWriter,
    JsonlWriter,
    NullWriter,
    ParquetWriter,
    Shard,
    Writer,
    WriteResult,
    write_text_atomic,
)
from harvester.records import BaseRecord, key_text
from harvester.run.report import SourceReport, TargetFailure
from harvester.run.seen import SeenKeys
from harvester.settings import Settings

__all__ = ["OutputState", "RunOptions", "make_writer", "output_failed", "run_source"]

log = structlog.get_logger("harvester.run")

WRITE_BATCH = 256
#: a batch of at least this many rows is deduplicated on a worker thread
_THREAD_ROWS = 256

T = TypeVar("T")

#: What travels between the stages: one record or a batch, with the watermark key of the target
#: that emitted it (or None).
Flow = tuple[BaseRecord | Batch, str | None]
#: rows of batches between the producers and the disk at most (the streams count a batch as one
#: item, so this keeps memory bounded when the disk is slower than the archive). Two of ZTF's
#: 8,192-row slices: with the stages overlapping, a larger window (65,536 until #17's second
#: round) only held more memory (part 6: ≈ 100 MB more at peak) and was no faster (part 4).
#: A producer encodes its slice before it waits for room (the encoding would otherwise wait for
#: the writer, one slice at a time), ``AHEAD`` slices at most across a source run's producers.
ROWS_IN_FLIGHT = 16_384
#: batches prepared for the writer (their JSON text) while they wait for room in the budget
AHEAD = 2


class RowBudget(AmountBudget):
    """How many batch rows are on their way to the writer. A producer waits before sending a
    batch that would exceed ``limit`` (unless nothing is in flight: a batch larger than the
    whole budget still goes, alone); the dedup stage and the writer give rows back as they drop
    or write them. ``ahead``: held while a batch is prepared and waits for room, so that at
    most ``AHEAD`` batches are prepared beyond the budget (memory stays bounded whatever the
    number of producers)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.ahead = anyio.Semaphore(AHEAD)


def make_writer(settings: Settings, source: str, *, run_id: str, dry_run: bool) -> Writer:
    if dry_run:
        return NullWriter()
    folder = Path(settings.output) / source
    if settings.format == "json":
        return JsonFilesWriter(folder)
    shards = JsonlWriter if settings.format == "jsonl" else ParquetWriter
    return shards(
        folder, archives.record_model(source), run_id=run_id, shard_records=settings.jsonl_shard_records
    )


@dataclass
class RunOptions:
    """How one source run behaves, beyond what its settings say."""

    limit: int | None = None
    buffer: int = 1000
    keep_sample: bool = False
    run_id: str = ""
    state: OutputState | None = None
    full: bool = False
    stop: anyio.Event | None = None


@dataclass
class _TargetRun:
    label: str
    wkey: str | None
    ok: bool = True
    reason: str | None = None
    high: float | None = None
    #: what was asked of the archive (the time window after the watermark), for the README
    requested: dict[str, Any] | None = None
    #: asked without a watermark (everything the archive has for the target)
    from_scratch: bool = True


class OutputState:
    """What a run knows beyond itself: the output's :class:`Ledger` (presence, watermarks) and the
    machine's state store (per-target outcomes), either of which may be absent.

    ``incremental=False`` (``state.enabled: false``) ignores and keeps no watermarks; presence in
    the output is still the ledger's, so nothing is written twice.
    """

    def __init__(
        self,
        ledger: Ledger | None,
        store: StateStore | None,
        source: str,
        *,
        incremental: bool = True,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.source = source
        self.incremental = incremental
        self._empty_at_start: bool | None = None

    async def seen(self, keys: list[tuple[str, ...]]) -> set[tuple[str, ...]]:
        """The keys the output holds now (this run's records included)."""
        return await self.ledger.present(keys) if self.ledger is not None else set()

    async def held_before(self, keys: list[str]) -> set[str]:
        """The keys (their texts) the output held before this run. For keys the run's dedup stage passed on,
        that is the same as :meth:`seen` (a key it passed on is new to this run), and an output
        that held nothing when the run began needs no lookup at all."""
        if self.ledger is None:
            return set()
        if self._empty_at_start is None:
            self._empty_at_start = await self.ledger.count() == 0
        return set() if self._empty_at_start else await self.ledger.present_texts(keys)

    async def commit(self, result: WriteResult, run_id: str) -> int:
        """Enter what ``result`` made durable; how many of its keys the folder had lost."""
        if self.ledger is None:
            return 0
        back = 0
        if result.files or result.runs:
            back += await self.ledger.commit([], result.files, run_id, result.runs)
        if result.record_files is not None:
            back += await self.ledger.commit_files(result.record_files, run_id)
        return back

    async def watermarks(self) -> dict[str, float]:
        if self.ledger is None or not self.incremental:
            return {}
        return await self.ledger.watermarks()

    async def finish(self, targets: list[_TargetRun], run_id: str, *, advance: bool) -> None:
        if self.store is not None:
            outcomes = [(t.label, t.ok, t.reason) for t in targets]
            await self.store.record_outcomes(run_id, self.source, outcomes)
        if advance and self.ledger is not None and self.incremental:
            marks = {t.wkey: (t.label, t.high) for t in targets if t.ok and t.wkey and t.high is not None}
            await self.ledger.advance(marks, run_id)


async def run_source(
    source: Source[Any],
    http: Http,
    writer: Writer,
    report: SourceReport,
    options: RunOptions | None = None,
) -> None:
    """Harvest one source into ``writer``, filling ``report``. Never raises for a target's failure."""
    opts = options or RunOptions()
    started = time.monotonic()
    targets = source.resolved()
    report.targets = len(targets)
    report.sample = source.sample
    state = opts.state

    def on_response(stats: HttpStats) -> None:
        report.requests, report.retries, report.bytes_received = (
            stats.requests,
            stats.retries,
            stats.bytes_received,
        )

    session = http.session(source.name, on_response=on_response, **source.session_options())
    bound = log.bind(source=source.name)
    runs: list[_TargetRun] = []
    completed = False  # the pipeline drained normally: every emitted record reached the writer
    try:
        if state is not None and state.ledger is not None:
            await _reconcile(state.ledger, report, verify=opts.full)
        marks = await state.watermarks() if state is not None and not opts.full else {}
        held = await state.ledger.some_keys(10) if state is not None and state.ledger is not None else []
        targets = await source.plan(targets, held=held)
        report.targets = len(targets)
        await writer.open()
        raw_send, raw_recv = anyio.create_memory_object_stream[Flow](opts.buffer)
        uniq_send, uniq_recv = anyio.create_memory_object_stream[Flow](opts.buffer)
        async with anyio.create_task_group() as tg:
            producers = anyio.CancelScope()
            budget = RowBudget(ROWS_IN_FLIGHT)
            jobs = _Jobs(source, session, raw_send, report, writer, state, marks, opts.stop, runs, budget)
            tg.start_soon(jobs.produce, iter(targets), producers)
            tg.start_soon(
                _dedup, raw_recv, uniq_send, report, opts.limit, producers, opts.keep_sample, budget
            )
            tg.start_soon(_write, uniq_recv, writer, report, state, opts.run_id, tg.cancel_scope, budget)
        completed = True
    except OutputError as exc:
        output_failed(report, exc)
    finally:
        with anyio.CancelScope(shield=True):
            await _close(writer, report, state, opts.run_id)
            on_response(session.stats)
            report.elapsed_s = round(time.monotonic() - started, 3)
            report.output = str(writer.folder) if writer.folder is not None else None
            if not completed and report.status != "failed":
                report.status = "cancelled"  # interrupted: the counts are what was done before
            if report.status != "failed":
                report.finish()
            if state is not None:
                if state.ledger is not None:
                    await _settle_ledger(state.ledger, report, runs, completed=completed)
                # Watermarks move only when every record of the run is durable: not after a
                # cancellation or an output failure, and not when --limit dropped records the
                # archive had already served.
                advance = completed and report.status != "failed" and not report.limit_reached
                try:
                    await state.finish(runs, opts.run_id, advance=advance)
                except OutputError as exc:
                    report.warnings.append(str(exc))
    for warning in map(redact, source.notes.warnings):
        if warning not in report.warnings:
            report.warnings.append(warning)
    if writer.folder is not None and report.status != "cancelled":
        await _write_readme(source, writer.folder, report, runs)
    bound.info(
        "source_done",
        status=report.status,
        records=report.records,
        written=report.written,
        already_present=report.already_present,
        duplicates=report.duplicates,
        missing_on_disk=report.missing_on_disk + report.damaged_on_disk,
        refetched=report.refetched,
        adopted=report.adopted,
        errors=len(report.errors),
        requests=report.requests,
        retries=report.retries,
        elapsed_s=report.elapsed_s,
    )


def output_failed(report: SourceReport, exc: OutputError) -> None:
    """The output cannot be written: the source fails with one line naming the folder and cause."""
    if report.status == "failed" and any(e.target == "(output)" for e in report.errors):
        return  # already recorded (the writer's close meets the same folder)
    report.errors.append(TargetFailure(target="(output)", cause=exc.message, transient=False))
    report.status = "failed"
    log.error("output_failed", source=report.source, cause=exc.message)


async def _reconcile(ledger: Ledger, report: SourceReport, *, verify: bool) -> None:
    """Check the output's ledger against the disk before anything is asked of the archive."""
    found = await ledger.reconcile(verify=verify)
    report.missing_on_disk = found.missing_on_disk
    report.damaged_on_disk = found.damaged
    report.adopted = found.adopted
    if found.rebuilt:
        report.warnings.append(f"{ledger.path}: {found.rebuilt}")
    report.watermarks_dropped = found.watermarks_dropped
    if found.unreadable_names:
        report.warnings.append(
            f"{ledger.folder}: {found.unreadable_names} files whose names are not UTF-8 were left alone"
        )
    if found.repeated_on_disk:
        report.warnings.append(
            f"{ledger.folder}: {found.repeated_on_disk} records appear in more than one file on disk"
        )
    log.info("ledger_checked", source=report.source, folder=str(ledger.folder), **found.as_dict())


async def _settle_ledger(
    ledger: Ledger, report: SourceReport, runs: list[_TargetRun], *, completed: bool
) -> None:
    """After the run: what the folder still lacks, said in the report. A complete, successful run
    that asked every target from scratch and still did not get some lost records back shows the
    archive no longer serves them: they are forgotten, said once, instead of reported for ever."""
    try:
        report.refetch_pending = await ledger.pending_refetch()
        from_scratch = all(r.ok and r.from_scratch for r in runs)
        if (
            report.refetch_pending
            and completed
            and report.status == "ok"
            and from_scratch
            and not report.limit_reached
        ):
            gone = await ledger.clear_lost()
            report.refetch_pending = 0
            report.warnings.append(
                f"{ledger.folder}: {gone} records this folder had lost were not served again by a "
                "complete run that asked every target from scratch: the archive no longer has them"
            )
    except OutputError as exc:
        report.warnings.append(str(exc))
    _repair_warning(ledger, report)


def _repair_warning(ledger: Ledger, report: SourceReport) -> None:
    """One line saying what the output had lost and what this run brought back."""
    if report.adopted:
        report.warnings.append(
            f"{ledger.folder}: adopted {report.adopted} records found on disk that its ledger did not "
            "list (a ledger lost or replaced, a run killed before recording them, or an output "
            "written by an older harvester); they are not fetched again"
        )
    lost = report.missing_on_disk + report.damaged_on_disk
    if not lost:
        if report.refetch_pending:
            report.warnings.append(
                f"{ledger.folder}: {report.refetch_pending} records lost from this folder in earlier "
                "runs are not back yet"
            )
        return
    parts = [f"missing_on_disk: {report.missing_on_disk}"]
    if report.damaged_on_disk:
        parts.append(f"damaged (set aside in .harvester/damaged): {report.damaged_on_disk}")
    parts.append(f"re-fetched: {report.refetched}")
    if report.refetch_pending:
        parts.append(
            f"not back yet: {report.refetch_pending} (the archive no longer served them, or the run stopped)"
        )
    if report.watermarks_dropped:
        parts.append(f"watermarks dropped for {report.watermarks_dropped} targets")
    report.warnings.append(f"{ledger.folder}: " + ", ".join(parts))


async def _close(writer: Writer, report: SourceReport, state: OutputState | None, run_id: str) -> None:
    try:
        result = await writer.close()
        report.written += result.written
        report.files.extend(result.listing())
        if state is not None:
            report.refetched += await state.commit(result, run_id)
    except OutputError as exc:
        output_failed(report, exc)


class _Jobs:
    """The producer side: a pool of workers taking targets one by one."""

    def __init__(
        self,
        source: Source[Any],
        session: HttpSession,
        send: MemoryObjectSendStream[Flow],
        report: SourceReport,
        writer: Writer,
        state: OutputState | None,
        marks: dict[str, float],
        stop: anyio.Event | None,
        runs: list[_TargetRun],
        budget: RowBudget,
    ) -> None:
        self.source, self.session, self.send, self.report = source, session, send, report
        self.writer, self.state, self.marks, self.stop, self.runs = writer, state, marks, stop, runs
        self.budget = budget

    async def produce(self, targets: Iterator[Any], scope: anyio.CancelScope) -> None:
        workers = max(1, min(self.source.rate_limit.max_concurrency * 2, self.report.targets))

        async def worker() -> None:
            for target in targets:  # a shared iterator: each target goes to exactly one worker
                if self.stop is not None and self.stop.is_set():
                    return  # shutting down: start no new target
                await self.fetch_target(target)

        with scope:
            async with self.send, anyio.create_task_group() as tg:
                for _ in range(workers):
                    tg.start_soon(worker)

    async def present(self, keys: list[tuple[str, ...]]) -> set[tuple[str, ...]]:
        return await self.state.seen(keys) if self.state is not None else set()

    async def fetch_target(self, target: Any) -> None:
        source, report = self.source, self.report
        label = source.label(target)
        wkey = source.watermark_key(target) if source.watermark_field else None
        run = _TargetRun(label=label, wkey=wkey)
        self.runs.append(run)
        field_name = source.watermark_field

        async def emit(record: BaseRecord) -> None:
            if field_name is not None:
                value = getattr(record, field_name, None)
                if isinstance(value, float) and (run.high is None or value > run.high):
                    run.high = value
            await self.send.send((record, wkey))

        async def emit_batch(batch: Batch) -> None:
            if not len(batch):
                return
            if field_name is not None:
                value = batch.column_max(field_name)
                if value is not None and (run.high is None or value > run.high):
                    run.high = value
            # the writer's own work on the batch (its JSON text), on a worker thread, before the
            # batch waits for room: RowBudget.ahead bounds how many batches wait prepared
            async with self.budget.ahead:
                if len(batch) >= _THREAD_ROWS:
                    await on_cpu(self.writer.prepare, batch)
                else:
                    self.writer.prepare(batch)
                await self.budget.acquire(len(batch))
            await self.send.send((batch, wkey))

        def fail(part: str, cause: str, transient: bool) -> None:
            run.ok, run.reason = False, redact(f"{part}: {cause}")
            report.errors.append(
                TargetFailure(target=f"{label}/{part}", cause=redact(cause), transient=transient)
            )
            log.warning(
                "target_part_failed",
                source=source.name,
                target=label,
                part=part,
                cause=cause,
                transient=transient,
            )

        ctx = FetchContext(
            session=self.session,
            emit=emit,
            emit_batch=emit_batch,
            present=self.present,
            fail=fail,
            watermark=self.marks.get(wkey) if wkey else None,
        )
        run.requested = source.requested(target, ctx.watermark)
        run.from_scratch = ctx.watermark is None
        try:
            await source.fetch(target, ctx)
        except BudgetUnavailable:
            raise  # not this target's failure: the unit stops and is retried as a whole
        except HarvesterError as exc:
            cause = redact(exc.message)  # causes may quote an archive's body
            run.ok, run.reason = False, cause
            report.errors.append(TargetFailure(target=label, cause=cause, transient=exc.transient))
            log.warning(
                "target_failed", source=source.name, target=label, cause=exc.message, transient=exc.transient
            )
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return  # the dedup stage stopped (limit reached): not a failure
        except Exception as exc:  # a bug or an unexpected body must not take the other targets down
            if budget_lost(exc) is not None:
                raise  # from a source's own task group (TESS downloads): the unit stops, as above
            cause = redact(f"internal error: {type(exc).__name__}: {exc}")
            run.ok, run.reason = False, cause
            report.errors.append(TargetFailure(target=label, cause=cause, transient=False))
            log.error("target_crashed", source=source.name, target=label, cause=cause)
            log.debug("target_crashed_traceback", source=source.name, target=label, exc_info=True)
        else:
            if run.ok:
                report.targets_ok += 1


async def _dedup(
    recv: MemoryObjectReceiveStream[Flow],
    send: MemoryObjectSendStream[Flow],
    report: SourceReport,
    limit: int | None,
    producers: anyio.CancelScope,
    keep_sample: bool,
    budget: RowBudget,
) -> None:
    seen = SeenKeys()
    try:
        async with recv, send:
            async for item in recv:
                kept = await _admit(seen, item, report, limit, keep_sample)
                if isinstance(item[0], Batch):  # rows dropped here are no longer in flight
                    passed = kept[0] if kept is not None else None
                    await budget.release(len(item[0]) - (len(passed) if isinstance(passed, Batch) else 0))
                if kept is None:
                    continue
                try:
                    await send.send(kept)
                except anyio.BrokenResourceError:
                    producers.cancel()  # the writer stopped (output failure): fetch no more
                    return
                if limit is not None and report.records >= limit:
                    report.limit_reached = True
                    producers.cancel()
    finally:
        # a run's worth of keys freed on a worker thread: the writer's last flush goes on meanwhile
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(seen.close)


async def _admit(
    seen: SeenKeys, item: Flow, report: SourceReport, limit: int | None, keep_sample: bool
) -> Flow | None:
    """What of ``item`` this run has not passed on yet (None: nothing), counted in ``report``."""
    payload, wkey = item
    room = None if limit is None else max(0, limit - report.records)
    if isinstance(payload, Batch):
        keys = payload.key_texts
        if len(keys) >= _THREAD_ROWS:
            # not behind the producers' CPU work (cpu slots): a slice's keys take a millisecond,
            # and the writer waits for them
            rows, duplicates = await anyio.to_thread.run_sync(seen.admit, keys, room)
        else:
            rows, duplicates = seen.admit(keys, room)
    else:
        rows, duplicates = seen.admit([key_text(payload.dedup_key())], room)
    report.duplicates += duplicates
    if not rows:
        return None  # all seen before, or the limit was reached (draining what was in flight)
    report.records += len(rows)
    if isinstance(payload, Batch) and len(rows) < len(payload):  # all kept: the positions are 0..n-1
        payload = payload.take(rows)
    if keep_sample and report.sample_record is None:
        first = payload.slice(0, 1).records()[0] if isinstance(payload, Batch) else payload
        report.sample_record = first.model_dump(mode="json")
    return payload, wkey


#: write results waiting for their ledger commit (the next shard is written meanwhile)
COMMITS_IN_FLIGHT = 2
#: shards encoded and written at once (one encodes while another waits on the disk)
PERSIST_LANES = 2


async def _write(
    recv: MemoryObjectReceiveStream[Flow],
    writer: Writer,
    report: SourceReport,
    state: OutputState | None,
    run_id: str,
    pipeline: anyio.CancelScope,
    budget: RowBudget,
) -> None:
    """Write batches; with a ledger, skip keys the output already holds and commit new ones.

    Keys are committed to the ledger only after the writer says their records are durable (file
    given its name, create-only), never before. Shards' keys go in by a task of their own: the
    next shard is encoded and written while the last one's keys go in. Record files' keys go in
    right after each write, before the next (:class:`_CommitNow`). An output failure (full disk,
    read-only folder) stops the whole source: it is recorded and the pipeline is cancelled,
    keeping everything already written.
    """
    send, results = anyio.create_memory_object_stream[WriteResult](COMMITS_IN_FLIGHT)
    # a full shard waits for a free lane (no buffer): at most PERSIST_LANES shards in the air
    shards, to_persist = anyio.create_memory_object_stream[Shard](0)
    async with anyio.create_task_group() as tg:
        commits: _Commits = send
        if writer.defer_shards():
            tg.start_soon(_commit_results, results, report, state, run_id, pipeline)
            for _ in range(PERSIST_LANES):
                tg.start_soon(_persist_shards, to_persist.clone(), send.clone(), report, pipeline)
        else:
            results.close()  # no shards: nothing for a commit task to wait for
            commits = _CommitNow(report, state, run_id)
        to_persist.close()
        try:
            async with send, shards:
                await _write_batches(recv, writer, report, state, commits, shards, budget)
        except OutputError as exc:
            output_failed(report, exc)
            pipeline.cancel()


async def _persist_shards(
    shards: MemoryObjectReceiveStream[Shard],
    commits: MemoryObjectSendStream[WriteResult],
    report: SourceReport,
    pipeline: anyio.CancelScope,
) -> None:
    """One lane writing full shards (encode, create-only file, fsync) on a worker thread, then
    handing what they made durable to the commit stage. Lanes run side by side: one shard is
    encoded while another waits on the disk. Shielded like the commit stage (:func:`_drain`):
    a shard handed over is written even when the run is cancelled (a cancelled run's buffered
    records are written too, by the writer's close)."""

    async def persist(shard: Shard) -> None:
        result = await anyio.to_thread.run_sync(shard.persist)
        report.files.extend(result.listing())
        await commits.send(result)

    try:
        await _drain(shards, persist, report, pipeline)
    finally:
        commits.close()


async def _commit_results(
    results: MemoryObjectReceiveStream[WriteResult],
    report: SourceReport,
    state: OutputState | None,
    run_id: str,
    pipeline: anyio.CancelScope,
) -> None:
    """Enter each write's durable records in the ledger, in the order they were written.
    Shielded (:func:`_drain`): a cancellation (shutdown grace over) still commits the few
    results already handed over (at most ``COMMITS_IN_FLIGHT``), then ends when the writer's
    side closes, so files and their keys land together."""

    await _drain(results, _CommitNow(report, state, run_id).send, report, pipeline)


class _Commits(Protocol):
    """Where a write's durable records go to be entered in the ledger."""

    async def send(self, item: WriteResult, /) -> None: ...


@dataclass
class _CommitNow:
    """The commit, in the caller's turn: for writers that create their files as they write
    (one per record), the next write waits for the last one's keys to be entered. Writing and
    committing side by side made both slower: measured, 100,000 record files take ≈ 20 % less
    time one after the other (docs/design.md)."""

    report: SourceReport
    state: OutputState | None
    run_id: str

    async def send(self, result: WriteResult, /) -> None:
        if self.state is not None:
            self.report.refetched += await self.state.commit(result, self.run_id)


async def _drain(
    items: MemoryObjectReceiveStream[T],
    step: Callable[[T], Awaitable[None]],
    report: SourceReport,
    pipeline: anyio.CancelScope,
) -> None:
    """``step`` for each item until the sending side closes, shielded from cancellation: what
    was handed over is finished. The first output failure is recorded and cancels the
    pipeline; the items after it are drained, not stepped."""
    failed = False
    with anyio.CancelScope(shield=True):
        async with items:
            async for item in items:
                if failed:
                    continue
                try:
                    await step(item)
                except OutputError as exc:
                    failed = True
                    output_failed(report, exc)
                    pipeline.cancel()


async def _write_batches(
    recv: MemoryObjectReceiveStream[Flow],
    writer: Writer,
    report: SourceReport,
    state: OutputState | None,
    commits: _Commits,
    shards: MemoryObjectSendStream[Shard],
    budget: RowBudget,
) -> None:
    async with recv:
        async for first in recv:
            pending: list[Flow] = [first]
            while len(pending) < WRITE_BATCH and not isinstance(pending[-1][0], Batch):
                try:
                    pending.append(recv.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            records: list[Item] = [(r, w) for r, w in pending if isinstance(r, BaseRecord)]
            batches = [(b, w) for b, w in pending if isinstance(b, Batch)]
            if records:
                await _write_records(records, writer, report, state, commits, shards)
            for batch, wkey in batches:
                try:
                    await _write_batch(batch, wkey, writer, report, state, commits, shards)
                finally:
                    await budget.release(len(batch))


async def _write_records(
    batch: list[Item],
    writer: Writer,
    report: SourceReport,
    state: OutputState | None,
    commits: _Commits,
    shards: MemoryObjectSendStream[Shard],
) -> None:
    if state is not None:
        texts = [key_text(r.dedup_key()) for r, _ in batch]
        known = await state.held_before(texts)
        if known:
            report.already_present += sum(1 for t in texts if t in known)
            batch = [item for item, t in zip(batch, texts, strict=True) if t not in known]
    # A batch's files and their keys land together: a cancellation (shutdown grace over)
    # waits for this bounded step instead of leaving files whose keys are not committed.
    with anyio.CancelScope(shield=True):
        result = await writer.write(batch)
        await _settle(result, report, commits, shards)


async def _write_batch(
    batch: Batch,
    wkey: str | None,
    writer: Writer,
    report: SourceReport,
    state: OutputState | None,
    commits: _Commits,
    shards: MemoryObjectSendStream[Shard],
) -> None:
    if state is not None:
        known = await state.held_before(batch.key_texts)
        if known:
            rows = [i for i, key in enumerate(batch.key_texts) if key not in known]
            report.already_present += len(batch) - len(rows)
            if not rows:
                return
            batch = batch.take(rows)
    with anyio.CancelScope(shield=True):  # as above: files and keys land together
        result = await writer.write_batch(batch, wkey)
        await _settle(result, report, commits, shards)


async def _settle(
    result: WriteResult,
    report: SourceReport,
    commits: _Commits,
    shards: MemoryObjectSendStream[Shard],
) -> None:
    """Count what a write did, hand its durable records to the commit stage (the part before
    an output failure included) and its full shards to the persist lanes, then raise that
    failure."""
    report.written += result.written
    report.already_present += result.present
    report.files.extend(result.listing())
    if result.committable:
        try:
            await commits.send(result)
        except OutputError:
            if result.error is None:
                raise  # else the write's own failure (below) is the cause to report
    for shard in result.shards:
        await shards.send(shard)
    if result.error is not None:
        raise result.error


#: targets listed one by one in a folder's README; beyond this, a count
README_TARGETS = 25


def readme_query(source: Source[Any], runs: list[_TargetRun]) -> dict[str, Any]:
    """The last run's query as the README states it: the settings, and per target what was
    actually asked (the incremental window after a watermark, not only the configured range)."""
    query = source.describe_query()
    described = query.get("targets")
    targets: dict[str, Any] = dict(described) if isinstance(described, dict) else {}
    targets["count"] = len(runs)
    targets["asked"] = [
        {"target": r.label, **(r.requested or {})}
        for r in sorted(runs, key=lambda r: r.label)[:README_TARGETS]
    ]
    if len(runs) > README_TARGETS:
        targets["not_listed"] = len(runs) - README_TARGETS
    query["targets"] = targets
    return query


async def _write_readme(
    source: Source[Any], folder: Path, report: SourceReport, runs: list[_TargetRun]
) -> None:
    counts = report.as_dict()
    for key in ("sample_record", "output"):
        counts.pop(key, None)
    try:
        query, when = readme_query(source, runs), utcnow()

        def write() -> None:
            write_text_atomic(folder / "README.md", source_readme(source.name, query, counts, when))

        await anyio.to_thread.run_sync(write)
    except (OSError, HarvesterError) as exc:
        report.warnings.append(f"could not write README: {exc}")
