"""The per-source pipeline: producers → dedup → writer, joined by bounded memory streams.

::

    targets ──> N producer tasks ──(stream)──> dedup + limit ──(stream)──> writer (batches, threads)
                (source.fetch, limited
                 and retried by the HTTP
                 session)

- Producers: a pool of worker tasks takes targets one by one; a failed target is recorded with
  its cause and the others go on.
- Dedup: an in-memory set of dedup keys drops duplicates within the run (overlapping cones return
  the same epochs); ``limit`` caps the unique records passed on and then cancels the producers,
  so fetching stops once enough records are in hand.
- Writer: takes what is buffered as one batch and writes it on a worker thread.

Each stream is bounded, so a slow disk slows the fetchers instead of filling memory.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from harvester._http import Http, HttpStats
from harvester._schema import source_readme
from harvester.errors import HarvesterError, OutputError
from harvester.pipeline.report import SourceReport, TargetFailure
from harvester.pipeline.writers import JsonFilesWriter, JsonlWriter, NullWriter, Writer, write_text_atomic
from harvester.records import RECORD_MODELS, BaseRecord
from harvester.settings import Settings
from harvester.sources.base import FetchContext, Source, utcnow

__all__ = ["make_writer", "run_source"]

log = structlog.get_logger("harvester.pipeline")

WRITE_BATCH = 256


def make_writer(settings: Settings, source: str, *, run_id: str, dry_run: bool) -> Writer:
    if dry_run:
        return NullWriter()
    folder = Path(settings.output) / source
    if settings.format == "jsonl":
        return JsonlWriter(
            folder, RECORD_MODELS[source], run_id=run_id, shard_records=settings.jsonl_shard_records
        )
    return JsonFilesWriter(folder)


async def run_source(
    source: Source[Any],
    http: Http,
    writer: Writer,
    report: SourceReport,
    *,
    limit: int | None,
    buffer: int,
    keep_sample: bool = False,
) -> None:
    """Harvest one source into ``writer``, filling ``report``. Never raises for a target's failure."""
    started = time.monotonic()
    targets = source.targets()
    report.targets = len(targets)
    report.sample = source.sample

    def on_response(stats: HttpStats) -> None:
        report.requests, report.retries, report.bytes_received = (
            stats.requests,
            stats.retries,
            stats.bytes_received,
        )

    session = http.session(source.name, on_response=on_response, **source.session_options())
    bound = log.bind(source=source.name)
    try:
        await writer.open()
        raw_send, raw_recv = anyio.create_memory_object_stream[BaseRecord](buffer)
        uniq_send, uniq_recv = anyio.create_memory_object_stream[BaseRecord](buffer)
        async with anyio.create_task_group() as tg:
            producers = anyio.CancelScope()
            tg.start_soon(_produce, source, session, iter(targets), raw_send, report, producers, writer)
            tg.start_soon(_dedup, raw_recv, uniq_send, report, limit, producers, keep_sample)
            tg.start_soon(_write, uniq_recv, writer, report)
    except OutputError as exc:
        report.errors.append(TargetFailure(target="(output)", cause=exc.message, transient=False))
        report.status = "failed"
        bound.error("output_failed", cause=exc.message)
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await writer.close()
            except OutputError as exc:
                report.errors.append(TargetFailure(target="(output)", cause=exc.message, transient=False))
                report.status = "failed"
        on_response(session.stats)
        report.elapsed_s = round(time.monotonic() - started, 3)
        report.output = str(writer.folder) if writer.folder is not None else None
    if report.status != "failed":
        report.finish()
    for warning in source.notes.warnings:
        if warning not in report.warnings:
            report.warnings.append(warning)
    if writer.folder is not None and report.status != "cancelled":
        await _write_readme(source, writer.folder, report)
    bound.info(
        "source_done",
        status=report.status,
        records=report.records,
        written=report.written,
        already_present=report.already_present,
        duplicates=report.duplicates,
        errors=len(report.errors),
        requests=report.requests,
        retries=report.retries,
        elapsed_s=report.elapsed_s,
    )


async def _produce(
    source: Source[Any],
    session: Any,
    targets: Iterator[Any],
    send: MemoryObjectSendStream[BaseRecord],
    report: SourceReport,
    scope: anyio.CancelScope,
    writer: Writer,
) -> None:
    workers = max(1, min(source.rate_limit.max_concurrency * 2, report.targets))

    async def worker() -> None:
        for target in targets:  # a shared iterator: each target goes to exactly one worker
            await _fetch_target(source, session, target, send, report, writer)

    with scope:
        async with send, anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)


async def _fetch_target(
    source: Source[Any],
    session: Any,
    target: Any,
    send: MemoryObjectSendStream[BaseRecord],
    report: SourceReport,
    writer: Writer,
) -> None:
    label = source.label(target)
    part_failed = False

    def fail(part: str, cause: str, transient: bool) -> None:
        nonlocal part_failed
        part_failed = True
        report.errors.append(TargetFailure(target=f"{label}/{part}", cause=cause, transient=transient))
        log.warning(
            "target_part_failed",
            source=source.name,
            target=label,
            part=part,
            cause=cause,
            transient=transient,
        )

    ctx = FetchContext(session=session, emit=send.send, is_present=writer.contains, fail=fail)
    try:
        await source.fetch(target, ctx)
    except HarvesterError as exc:
        report.errors.append(TargetFailure(target=label, cause=exc.message, transient=exc.transient))
        log.warning(
            "target_failed", source=source.name, target=label, cause=exc.message, transient=exc.transient
        )
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        return  # the dedup stage stopped (limit reached): not a failure
    except Exception as exc:  # a bug or an unexpected body must not take the other targets down
        cause = f"internal error: {type(exc).__name__}: {exc}"
        report.errors.append(TargetFailure(target=label, cause=cause, transient=False))
        log.error("target_crashed", source=source.name, target=label, cause=cause)
        log.debug("target_crashed_traceback", source=source.name, target=label, exc_info=True)
    else:
        if not part_failed:
            report.targets_ok += 1


async def _dedup(
    recv: MemoryObjectReceiveStream[BaseRecord],
    send: MemoryObjectSendStream[BaseRecord],
    report: SourceReport,
    limit: int | None,
    producers: anyio.CancelScope,
    keep_sample: bool,
) -> None:
    seen: set[tuple[str, ...]] = set()
    async with recv, send:
        async for record in recv:
            key = record.dedup_key()
            if key in seen:
                report.duplicates += 1
                continue
            if limit is not None and report.records >= limit:
                continue  # draining what was in flight when the limit was reached
            seen.add(key)
            report.records += 1
            if keep_sample and report.sample_record is None:
                report.sample_record = record.model_dump(mode="json")
            await send.send(record)
            if limit is not None and report.records >= limit:
                report.limit_reached = True
                producers.cancel()


async def _write(recv: MemoryObjectReceiveStream[BaseRecord], writer: Writer, report: SourceReport) -> None:
    async with recv:
        async for first in recv:
            batch = [first]
            while len(batch) < WRITE_BATCH:
                try:
                    batch.append(recv.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            written, present = await writer.write(batch)
            report.written += written
            report.already_present += present


async def _write_readme(source: Source[Any], folder: Path, report: SourceReport) -> None:
    counts = report.as_dict()
    for key in ("sample_record", "output"):
        counts.pop(key, None)
    try:
        text = source_readme(source.name, source.describe_query(), counts, utcnow())
        await anyio.to_thread.run_sync(write_text_atomic, folder / "README.md", text)
    except (OSError, HarvesterError) as exc:
        report.warnings.append(f"could not write README: {exc}")
