"""The async API that the CLI, the daemon and notebooks all call.

::

    report = await harvester.harvest("ztf", limit=50)              # fetch, dedup, write
    async with contextlib.aclosing(harvester.stream("ztf")) as records:
        async for record in records: ...                            # validated records, nothing written

Nothing here calls ``anyio.run`` or keeps global state, so it works inside an already running
event loop (Jupyter) and can be called any number of times in one process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import orjson
import structlog
from anyio.abc import ObjectSendStream
from pydantic import BaseModel, ValidationError

from harvester import archives
from harvester.archives.base import Source
from harvester.display.logs import configure_logging, register_secrets
from harvester.errors import ConfigError, HarvesterError, OutputError
from harvester.io.batches import Batch
from harvester.io.http import Http
from harvester.io.ledger import Ledger
from harvester.io.limiter import LimiterRegistry
from harvester.io.state import StateStore
from harvester.io.writers import Item, WriteResult, write_text_atomic
from harvester.records import BaseRecord
from harvester.run.pipeline import OutputState, RunOptions, make_writer, output_failed, run_source
from harvester.run.report import RunReport, SourceReport, new_run_id
from harvester.settings import Settings, describe_validation_error, load_settings

if TYPE_CHECKING:
    from harvester.executors.driver import UnitEngine

__all__ = [
    "check_output",
    "check_targets",
    "harvest",
    "host_limiters",
    "resolve_sources",
    "stream",
    "uses_units",
]

log = structlog.get_logger("harvester")


def resolve_sources(sources: str | Sequence[str], settings: Settings | None = None) -> list[str]:
    """Expand ``"all"`` and check names against the archives' registry; ConfigError if unknown.

    With ``settings``, ``"all"`` means every archive whose settings name a target (an archive
    registered but not configured is left out, with a log line); an archive named explicitly must
    name its targets, and says so when it does not.
    """
    names = [sources] if isinstance(sources, str) else list(sources)
    known = archives.names()
    if "all" not in names:
        for name in names:
            if name not in known:
                raise ConfigError(f"unknown source {name!r}: choose from {', '.join((*known, 'all'))}")
        return list(dict.fromkeys(names))
    if settings is None:
        return list(known)
    idle = set(settings.data_sources.without_targets())
    for name in known:
        if name in idle:
            log.info("source_not_configured", source=name, detail=f"data_sources.{name} names no target")
    chosen = [name for name in known if name not in idle]
    if not chosen:
        raise ConfigError(f"no archive names a target: configure data_sources.<name> ({', '.join(known)})")
    return chosen


def _settings(settings: Settings | None, config: str | Path | None, overrides: dict[str, Any]) -> Settings:
    if settings is None:
        settings = load_settings(config, **overrides)
    elif overrides:  # validated like any other setting, nested mappings merged into the blocks
        try:
            settings = Settings.model_validate(_merged(settings.model_dump(round_trip=True), overrides))
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc)) from None
    register_secrets(settings.secrets())  # redacted from logs and report texts, whatever configured logging
    if not structlog.is_configured():
        # Library use (a notebook, a script): structlog's unconfigured default prints every level
        # to stdout. Apply the settings' level and format, with secrets redacted; an application
        # that configured structlog itself keeps its own configuration.
        configure_logging(settings.log_format, settings.log_level, secrets=settings.secrets())
    return settings


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        below = out.get(key)
        out[key] = _merged(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return out


def uses_units(settings: Settings) -> bool:
    """Whether a run with these settings runs as work units (``executor: dask``, or an
    object-store output) rather than the in-process pipeline into a folder."""
    return settings.executor == "dask" or settings.output_url is not None


def offline_transport() -> httpx.AsyncBaseTransport:
    """The in-process sample archive, answering IRSA and MAST requests without any network."""
    from harvester.testing import FakeArchive

    return httpx.ASGITransport(app=FakeArchive())


def check_targets(names: list[str], settings: Settings) -> None:
    """Resolve every source's targets now; raise ConfigError for bad or missing ones."""
    _build_sources(names, settings, sample=settings.offline)


def check_output(settings: Settings, *, dry_run: bool = False) -> None:
    """Refuse an output folder that cannot be written, in one line, before anything is fetched.

    The folder is created if missing and a hidden temporary file is created in it and removed
    (permissions, a read-only file system, a full inode table all show here). A dry run writes
    nothing, so it only checks that the output is not a file, and creates nothing.
    """
    import os

    from harvester.io.files import make_folder, os_cause, temp_path

    if uses_units(settings):
        _check_units(settings, dry_run=dry_run)
        return
    output = Path(settings.output)
    for path in (output, *output.parents):  # a file where a folder should be: output or a parent
        if path.exists() and not path.is_dir():
            why = "exists and is not a folder" if path == output else f"cannot be created: {path} is a file"
            raise ConfigError(f"output folder {output} {why}")
    if dry_run:
        return
    probe = temp_path(output / "write-check")
    try:
        make_folder(output)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"output folder {output} is not writable: {os_cause(exc)}") from None


def _check_units(settings: Settings, *, dry_run: bool) -> None:
    """Work units need the dask extra (with executor: dask) and an fsspec backend for the output."""
    if dry_run:
        raise ConfigError("--dry-run runs locally into a folder: drop --executor dask and the URL output")
    why = "--executor dask" if settings.executor == "dask" else f"output {settings.output_url}"
    try:
        if settings.executor == "dask":
            import distributed  # noqa: F401
        from harvester.io.objectstore import ObjectStore
    except ImportError as exc:
        raise ConfigError(f"{why} needs the dask extra: pip install 'harvester[dask]' ({exc.name})") from None
    ObjectStore(settings.output_url or settings.output)  # a bad URL or a missing backend: ConfigError


def _build_sources(names: list[str], settings: Settings, *, sample: bool) -> list[Source[Any]]:
    built = [archives.source_class(name)(settings, sample=sample) for name in names]
    for source in built:
        source.resolved()  # every target now: bad input fails before anything is fetched or written
    return built


def host_limiters(sources: list[Source[Any]], registry: LimiterRegistry | None = None) -> LimiterRegistry:
    """Host budgets for these sources, the strictest winning for a shared host (every run, local
    or in work units, gets its budgets here); a registry passed in (the daemon's) keeps its pacing
    across runs."""
    registry = registry if registry is not None else LimiterRegistry()
    for source in sources:
        for host, budget in source.budgets():
            registry.register(host, budget.requests_per_second, budget.max_concurrency)
    return registry


async def harvest(
    sources: str | Sequence[str] = "all",
    *,
    settings: Settings | None = None,
    config: str | Path | None = None,
    dry_run: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    report: RunReport | None = None,
    full: bool = False,
    stop: anyio.Event | None = None,
    limiters: LimiterRegistry | None = None,
    progress: bool = False,
    executor: UnitEngine | None = None,
    run_id: str | None = None,
    **overrides: Any,
) -> RunReport:
    """Harvest the given sources concurrently and return the run report.

    The one lifecycle of every run (the CLI, the daemon, notebooks and the Prefect flow call it):
    settings and targets are checked, then the run goes into the output folder through the
    in-process pipeline, or, with ``executor: dask`` or an object-store output (``s3://…``), as
    work units on an engine (:mod:`harvester.executors.driver`).

    :param sources: ``"ztf"``, ``"tess"``, ``"mast"``, ``"all"`` or a list of names.
    :param settings: a :class:`Settings`; when omitted, settings are loaded from ``config``
        (default ``config/base.yaml``), ``.env`` and the environment, with ``overrides`` on top.
    :param dry_run: fetch and validate, write nothing; the report carries a sample record.
    :param transport: an httpx transport to use instead of the network (tests, fake archives);
        the in-process pipeline only (work units make their own clients).
    :param report: a report object to fill in place (for live progress displays).
    :param full: ignore watermarks and ask the archives for everything (records the output
        already holds are still not written twice).
    :param stop: when set, no new target is started (graceful shutdown); in-flight ones finish.
        With work units, the units in flight are cancelled and :class:`RunInterrupted` is raised:
        the run stays open and the next run on the output resumes it.
    :param limiters: host limiters to reuse, so that back-to-back runs (the daemon's sweeps) stay
        within each host's budget across runs; by default each run has its own. The in-process
        pipeline only: work units take their budgets from their engine (the daemon keeps one).
    :param progress: show a live table (in the cell in Jupyter, on stderr in a terminal; nothing
        when stderr is redirected).
    :param executor: work units only: the engine that runs them (default: this process, or a Dask
        cluster made from ``settings.dask`` and closed after the run); the daemon passes one it
        keeps across sweeps, the Prefect flow its own.
    :param run_id: work units only: resume this run (default: the output's unfinished run, if its
        plan is the same, else a new one).
    :raises ConfigError: for bad settings or targets, before anything is fetched or written.
    """
    if progress:
        from harvester.display.notebook import progress as live_progress

        with live_progress(report) as live:
            return await harvest(
                sources,
                settings=settings,
                config=config,
                dry_run=dry_run,
                transport=transport,
                report=live,
                full=full,
                stop=stop,
                limiters=limiters,
                executor=executor,
                run_id=run_id,
                **overrides,
            )
    settings = _settings(settings, config, overrides)
    check_output(settings, dry_run=dry_run)
    names = resolve_sources(sources, settings)
    if uses_units(settings):
        return await _harvest_units(
            names, settings, report, full=full, stop=stop, engine=executor, run_id=run_id
        )
    sample = settings.offline and transport is None
    built = _build_sources(names, settings, sample=sample)
    if transport is None and settings.offline:
        transport = offline_transport()
    run_id = new_run_id()
    report = report or RunReport(run_id=run_id, started_at=datetime.now(UTC))
    report.run_id, report.dry_run = run_id, dry_run
    for source in built:
        report.sources[source.name] = SourceReport(source=source.name)
    _log_tokens(settings, names)
    log.info(
        "run_started",
        run_id=run_id,
        sources=names,
        dry_run=dry_run,
        offline=settings.offline,
        output=str(settings.output),
    )

    store = await _open_state(settings, dry_run)
    if store is not None:
        await store.start_run(run_id, report.started_at.isoformat(), settings_digest(settings))

    def options(source: Source[Any], ledger: Ledger | None) -> RunOptions:
        state = None
        if not dry_run:  # a dry run reads and writes no state: it always asks for everything
            state = OutputState(ledger, store, source.name, incremental=settings.state.enabled)
        return RunOptions(
            limit=settings.limit,
            buffer=settings.stream_buffer,
            keep_sample=dry_run,
            run_id=run_id,
            state=state,
            full=full,
            stop=stop,
        )

    async def one(source: Source[Any], http: Http) -> None:
        source_report = report.sources[source.name]
        writer = make_writer(settings, source.name, run_id=run_id, dry_run=dry_run)
        try:
            async with _ledger(settings, source.name, sample=source.sample, dry_run=dry_run) as ledger:
                await run_source(source, http, writer, source_report, options(source, ledger))
        except OutputError as exc:  # the ledger cannot be opened: nothing was fetched
            output_failed(source_report, exc)
        if source_report.status == "failed" and settings.fallback_to_sample and not source.sample:
            report.sources[source.name] = await _fallback(source, settings, options, dry_run, report)

    try:
        async with (
            Http(host_limiters(built, limiters), transport=transport) as http,
            anyio.create_task_group() as tg,
        ):
            for source in built:
                tg.start_soon(one, source, http)
    finally:
        with anyio.CancelScope(shield=True):
            report.finished_at = datetime.now(UTC)
            if not dry_run:
                await _write_manifest(settings, report)
            if store is not None:
                await store.finish_run(
                    run_id, report.finished_at.isoformat(), report.status, report.as_dict()
                )
                await store.close()
    log.info(
        "run_finished", run_id=run_id, ok=report.ok, failed_sources=report.failed_sources, **report.totals()
    )
    return report


async def _harvest_units(
    names: list[str],
    settings: Settings,
    report: RunReport | None,
    *,
    full: bool,
    stop: anyio.Event | None,
    engine: UnitEngine | None,
    run_id: str | None,
) -> RunReport:
    """The run as work units: planned by a :class:`DistributedRun`, executed by ``engine``."""
    from harvester.executors.driver import (
        DaskUnits,
        DistributedRun,
        LocalUnits,
        check_dask_output,
        dask_client,
        drive,
    )

    # planning resolves every source's targets: bad ones fail here, before any unit runs
    run = await anyio.to_thread.run_sync(
        lambda: DistributedRun(names, settings, run_id=run_id, full=full, report=report)
    )
    if settings.executor == "dask":
        check_dask_output(settings, run.output)
    _log_tokens(settings, names)  # after every check: a usage error stays one line
    if engine is not None:
        return await drive(run, engine, stop)
    if settings.executor != "dask":
        return await drive(run, LocalUnits(), stop)
    client, cluster = await anyio.to_thread.run_sync(dask_client, settings)
    try:
        return await drive(run, DaskUnits(client), stop)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(client.close)
            if cluster is not None:
                await anyio.to_thread.run_sync(cluster.close)


async def _open_state(settings: Settings, dry_run: bool) -> StateStore | None:
    """The machine's state store (run history, outcomes); a dry run neither reads nor writes it."""
    if not settings.state.enabled or dry_run:
        return None
    return await StateStore(settings.state.path).open()


@contextlib.asynccontextmanager
async def _ledger(
    settings: Settings, source: str, *, sample: bool, dry_run: bool
) -> AsyncIterator[Ledger | None]:
    """The ledger of ``<output>/<source>`` (none for a dry run), closed however the run ends."""
    if dry_run:
        yield None
        return
    ledger = await Ledger(Path(settings.output) / source, archives.record_model(source), sample=sample).open()
    try:
        yield ledger
    finally:
        await ledger.close()


def settings_digest(settings: Settings) -> str:
    """sha256 of the settings without secrets: identifies the configuration in manifests and runs."""
    text = json.dumps(settings.digest_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


async def _write_manifest(settings: Settings, report: RunReport) -> None:
    """``<output>/_manifests/run-<run id>.json``: counts and content hashes of what this run wrote."""
    files: dict[str, dict[str, Any]] = {}
    for name, src in report.sources.items():
        entries = sorted(src.files)
        content = hashlib.sha256("".join(f"{n}\t{h}\n" for n, h in entries).encode()).hexdigest()
        files[name] = {
            "files_written": len(entries),
            "content_sha256": content,
            "files": [{"name": n, "sha256": h} for n, h in entries],
        }
    manifest = {
        "run_id": report.run_id,
        "started_at": report.started_at.isoformat(),
        "finished_at": report.finished_at.isoformat() if report.finished_at else None,
        "settings_sha256": settings_digest(settings),
        "settings": settings.digest_dict(),
        "ok": report.ok,
        "status": report.status,
        "sources": {n: s.as_dict() for n, s in report.sources.items()},
        "files": files,
    }
    folder = Path(settings.output) / "_manifests"
    try:
        # encoded on the worker thread too: a per-record-file run lists one file per record
        await anyio.to_thread.run_sync(_write_manifest_sync, folder, f"run-{report.run_id}.json", manifest)
    except OutputError as exc:
        log.error("manifest_failed", run_id=report.run_id, cause=exc.message)


def _write_manifest_sync(folder: Path, name: str, manifest: dict[str, Any]) -> None:
    text = orjson.dumps(manifest, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write to {folder}: {exc.strerror or exc}") from None
    write_text_atomic(folder / name, text)


async def _fallback(
    source: Source[Any],
    settings: Settings,
    options: Callable[[Source[Any], Ledger | None], RunOptions],
    dry_run: bool,
    report: RunReport,
) -> SourceReport:
    """The guide's 'falling back to sample payload' path, only when fallback_to_sample is on."""
    failed = report.sources[source.name]
    log.warning(
        "falling back to sample payload",
        source=source.name,
        cause="; ".join(e.cause for e in failed.errors[:3]),
    )
    sample_source = archives.source_class(source.name)(_archive_urls(settings, source.name), sample=True)
    retry = SourceReport(source=source.name)
    # sample data never advances the real archive's watermarks (the ledger keeps them apart)
    async with (
        _ledger(settings, source.name, sample=True, dry_run=dry_run) as ledger,
        Http(host_limiters([sample_source]), transport=offline_transport()) as http,
    ):
        opts = options(sample_source, ledger)
        # its own shard names: the failed attempt's shards stay as they are
        writer = make_writer(settings, source.name, run_id=f"{opts.run_id}-sample", dry_run=dry_run)
        await run_source(sample_source, http, writer, retry, opts)
    retry.warnings.insert(
        0,
        f"the archive failed ({len(failed.errors)} target errors); records come from "
        "the built-in sample archive (fallback_to_sample)",
    )
    retry.errors = failed.errors + retry.errors
    retry.requests += failed.requests
    retry.retries += failed.retries
    retry.status = "partial" if retry.status == "ok" else retry.status
    return retry


def _archive_urls(settings: Settings, name: str) -> Settings:
    """Settings whose ``base_url`` fields in ``name``'s block are back at their defaults (the
    real archive's address): the sample archive answers those paths."""
    sources = settings.data_sources.model_copy(deep=True)
    setattr(sources, name, _default_urls(sources.block(name)))
    return settings.model_copy(update={"data_sources": sources})


def _default_urls(block: BaseModel) -> BaseModel:
    update: dict[str, Any] = {}
    for field_name, info in type(block).model_fields.items():
        value = getattr(block, field_name)
        if field_name == "base_url":
            update[field_name] = info.get_default(call_default_factory=True)
        elif isinstance(value, BaseModel):
            update[field_name] = _default_urls(value)
    return block.model_copy(update=update)


def _log_tokens(settings: Settings, names: list[str]) -> None:
    """Say (at info) which archives are queried without a token: a missing token is a choice, not
    an error, but a user expecting proprietary data should see it."""
    for name in names:
        tokens = archives.spec(name).tokens
        if tokens and settings.token(name) is None:
            env = " or ".join(t.env for t in tokens)
            log.info("token_free", source=name, detail=f"{env} is not set: querying {name} anonymously")


class _ForwardWriter:
    """A writer that hands records to a stream instead of the disk (for :func:`stream`)."""

    folder: Path | None = None

    def __init__(self, send: ObjectSendStream[BaseRecord]) -> None:
        self._send = send

    async def open(self) -> None:
        return None

    def prepare(self, batch: Batch) -> None:
        return None

    def defer_shards(self) -> bool:
        return False

    async def write(self, items: list[Item]) -> WriteResult:
        for record, _ in items:
            await self._send.send(record)
        return WriteResult()

    async def write_batch(self, batch: Batch, wkey: str | None) -> WriteResult:
        for record in await anyio.to_thread.run_sync(batch.records):
            await self._send.send(record)
        return WriteResult()

    async def close(self) -> WriteResult:
        return WriteResult()


async def stream(
    source: str,
    *,
    settings: Settings | None = None,
    config: str | Path | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    **overrides: Any,
) -> AsyncIterator[BaseRecord]:
    """Yield validated, deduplicated records of one source without writing anything.

    Use ``contextlib.aclosing`` when you may stop early, so the fetchers are cancelled at once.
    Raises :class:`HarvesterError` at the end if every target of the source failed.
    """
    settings = _settings(settings, config, overrides)
    (name,) = resolve_sources(source) if source != "all" else (None,)
    if name is None:
        raise ConfigError("stream() takes one source, not 'all'")
    sample = settings.offline and transport is None
    (built,) = _build_sources([name], settings, sample=sample)
    if transport is None and settings.offline:
        transport = offline_transport()
    report = SourceReport(source=name)
    send, recv = anyio.create_memory_object_stream[BaseRecord](settings.stream_buffer)

    async def runner(http: Http) -> None:
        async with send:
            await run_source(
                built,
                http,
                _ForwardWriter(send),
                report,
                RunOptions(limit=settings.limit, buffer=settings.stream_buffer),
            )

    async with Http(host_limiters([built]), transport=transport) as http, anyio.create_task_group() as tg:
        tg.start_soon(runner, http)
        try:
            async with recv:
                async for record in recv:
                    yield record
        finally:
            tg.cancel_scope.cancel()
    if report.status == "failed":
        causes = "; ".join(f"{e.target}: {e.cause}" for e in report.errors[:3])
        raise HarvesterError(f"{name}: every target failed ({causes})")
