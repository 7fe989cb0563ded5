"""``harvester run`` and ``harvester daemon``: a harvest now, or sweeps on a schedule."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import orjson
import typer

from harvester.errors import ConfigError, HarvesterError
from harvester.run.report import RunReport

if TYPE_CHECKING:
    from harvester.settings import Settings

from harvester.cli.app import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    ExecutorChoice,
    FormatChoice,
    LogFormat,
    RouteChoice,
    _fail,
    _now,
    app,
    cli_overrides,
    configure_logging,
    source_option,
)


@app.command(short_help="Harvest one archive or all of them into the output.")
def run(
    source: Annotated[str, source_option()] = "all",
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML settings (default config/base.yaml).")
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="Output folder (default data/raw) or an fsspec URL (s3://bucket/prefix)."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Maximum records per source.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Fetch and validate; write nothing; print a JSON summary.")
    ] = False,
    fmt: Annotated[
        FormatChoice | None, typer.Option("--format", help="json: a file per record; jsonl, parquet: shards.")
    ] = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Use the built-in sample archive (no network).")
    ] = False,
    full: Annotated[
        bool, typer.Option("--full", help="Ignore watermarks: ask the archives for everything again.")
    ] = False,
    log_format: Annotated[
        LogFormat | None, typer.Option("--log-format", help="auto, console or json.")
    ] = None,
    irsa_ra: Annotated[float | None, typer.Option("--irsa-ra", help="ZTF cone centre RA (deg).")] = None,
    irsa_dec: Annotated[float | None, typer.Option("--irsa-dec", help="ZTF cone centre Dec (deg).")] = None,
    irsa_radius: Annotated[float | None, typer.Option("--irsa-radius", help="ZTF cone radius (deg).")] = None,
    irsa_filter: Annotated[
        list[str] | None, typer.Option("--irsa-filter", help="ZTF filter (zg, zr, zi); repeatable.")
    ] = None,
    irsa_id: Annotated[
        list[int] | None,
        typer.Option("--irsa-id", help="ZTF object id (oid); repeatable. Replaces the configured targets."),
    ] = None,
    irsa_mjd_range: Annotated[
        tuple[float, float] | None, typer.Option("--irsa-mjd-range", help="ZTF MJD range: START END.")
    ] = None,
    route: Annotated[
        RouteChoice | None,
        typer.Option("--route", help="ZTF: api, hats (the data release on S3) or auto."),
    ] = None,
    executor: Annotated[
        ExecutorChoice | None,
        typer.Option("--executor", help="local (default) or dask (needs the dask extra)."),
    ] = None,
    dask_address: Annotated[
        str | None, typer.Option("--dask-address", help="Dask scheduler address; unset = a local cluster.")
    ] = None,
) -> None:
    """Harvest one source or all of them, deduplicate, and write records under the output folder."""
    from harvester import api
    from harvester.settings import load_settings

    irsa_flags = _irsa_flags_given(irsa_ra, irsa_dec, irsa_radius, irsa_filter, irsa_mjd_range, irsa_id)
    irsa_ignored = bool(irsa_flags) and source not in ("ztf", "all")
    if irsa_ignored:  # --irsa-* configure ZTF only: another source runs without them
        irsa_ra = irsa_dec = irsa_radius = irsa_filter = irsa_mjd_range = irsa_id = None
    overrides = cli_overrides(
        output=output,
        limit=limit,
        fmt=fmt.value if fmt else None,
        offline=offline,
        log_format=log_format.value if log_format else None,
        irsa_ra=irsa_ra,
        irsa_dec=irsa_dec,
        irsa_radius=irsa_radius,
        irsa_filter=irsa_filter,
        irsa_mjd_range=irsa_mjd_range,
        route=route.value if route is not None else None,
        irsa_id=irsa_id,
    )
    if executor is not None:
        overrides["executor"] = executor.value
    if dask_address is not None:
        overrides["dask"] = {"address": dask_address}
    try:
        settings = load_settings(config, **overrides)
        names = api.resolve_sources(source, settings)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if irsa_ignored:
        flags = ", ".join(irsa_flags) + (" apply" if len(irsa_flags) > 1 else " applies")
        typer.echo(
            f"harvester: warning: {flags} to ztf only (--source ztf or all): ignored for --source {source}",
            err=True,
        )
    configure_logging(settings.log_format, settings.log_level, secrets=settings.secrets())
    from harvester.display.terminal import LiveProgress, print_summary

    report = RunReport(run_id="", started_at=_now())
    with _sigterm_like_ctrl_c() as terminated:
        try:
            with LiveProgress(report, enabled=not dry_run and sys.stderr.isatty()):
                report = anyio.run(_run, names, settings, dry_run, report, full)
        except ConfigError as exc:
            raise _fail(str(exc)) from None
        except HarvesterError as exc:
            raise _fail(str(exc), 1) from None
        except KeyboardInterrupt:
            raise _interrupted(report, settings, terminated=bool(terminated)) from None
    if dry_run:
        sys.stdout.write(
            orjson.dumps(report.as_dict(with_sample=True), option=orjson.OPT_INDENT_2).decode() + "\n"
        )
    elif sys.stdout.isatty():
        print_summary(report)
    raise typer.Exit(report.exit_code)


def _irsa_flags_given(
    ra: float | None,
    dec: float | None,
    radius: float | None,
    filters: list[str] | None,
    mjd_range: tuple[float, float] | None,
    ids: list[int] | None = None,
) -> list[str]:
    """The ``--irsa-*`` flags given on the command line, by name."""
    given = (
        ("--irsa-ra", ra is not None),
        ("--irsa-dec", dec is not None),
        ("--irsa-radius", radius is not None),
        ("--irsa-filter", bool(filters)),
        ("--irsa-mjd-range", mjd_range is not None),
        ("--irsa-id", bool(ids)),
    )
    return [flag for flag, present in given if present]


@contextmanager
def _sigterm_like_ctrl_c() -> Iterator[list[int]]:
    """While the block runs, SIGTERM (``systemctl stop``, ``kill``) does what Ctrl-C does.

    The handler records the signal and calls the current SIGINT handler: inside ``anyio.run``
    that is asyncio's, which cancels the run (writers close, a ``cancelled`` manifest is written,
    shielded) and then raises KeyboardInterrupt; elsewhere it raises KeyboardInterrupt at once.
    Yields the list of received signals, so the caller can tell SIGTERM from Ctrl-C.
    """
    received: list[int] = []

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:  # SIGINT ignored (a background job of a script): stop all the same
            raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (an embedding application): leave SIGTERM alone
        yield received
        return
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def _uses_units(settings: Settings) -> bool:
    from harvester import api

    return api.uses_units(settings)


def _interrupted(report: RunReport, settings: Settings, *, terminated: bool) -> typer.Exit:
    """One line on stderr for a run stopped by Ctrl-C or SIGTERM, and its exit code (130, 143)."""
    name, code = ("SIGTERM", EXIT_TERMINATED) if terminated else ("SIGINT", EXIT_INTERRUPTED)
    if not report.run_id:
        detail = "stopped before the run started; nothing was written"
    elif report.dry_run:
        detail = f"run {report.run_id} cancelled (dry run: nothing was written)"
    elif _uses_units(settings):
        detail = f"run {report.run_id} stopped; the next run on this output resumes it"
    else:
        manifest = Path(settings.output) / "_manifests" / f"run-{report.run_id}.json"
        detail = (
            f"run {report.run_id} cancelled; what it wrote is kept ({manifest}); "
            "run it again to complete the output"
        )
    typer.echo(f"harvester: interrupted ({name}): {detail}", err=True)
    return typer.Exit(code)


async def _run(
    names: list[str], settings: Settings, dry_run: bool, report: RunReport, full: bool
) -> RunReport:
    from harvester import api

    return await api.harvest(names, settings=settings, dry_run=dry_run, report=report, full=full)


def _settings_or_exit(
    config: Path | None, overrides: dict[str, Any], source: str
) -> tuple[Settings, list[str]]:
    from harvester import api
    from harvester.settings import load_settings

    try:
        settings = load_settings(config, **overrides)
        names = api.resolve_sources(source, settings)
        api.check_targets(names, settings)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    return settings, names


@app.command(short_help="Sweep on a schedule until stopped.")
def daemon(
    source: Annotated[str, source_option()] = "all",
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings.")] = None,
    interval: Annotated[str | None, typer.Option("--interval", help="Time between sweeps, e.g. 6h.")] = None,
    jitter: Annotated[str | None, typer.Option("--jitter", help="Random extra delay, e.g. 5m.")] = None,
    once: Annotated[bool, typer.Option("--once", help="Run one sweep and exit.")] = False,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", min=0, max=65535, help="Serve /metrics and /healthz.")
    ] = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Output folder or an fsspec URL (s3://bucket/prefix)."),
    ] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Sweep the built-in sample archive.")] = False,
    log_format: Annotated[
        LogFormat | None, typer.Option("--log-format", help="auto, console or json.")
    ] = None,
) -> None:
    """Sweep on a schedule (incremental: each sweep fetches only what is new) until SIGINT/SIGTERM."""
    from harvester import api
    from harvester.run.daemon import Daemon

    overrides = cli_overrides(
        output=output, offline=offline, log_format=log_format.value if log_format else None
    )
    schedule = {k: v for k, v in (("interval", interval), ("jitter", jitter)) if v is not None}
    if schedule:
        overrides["daemon"] = schedule
    settings, names = _settings_or_exit(config, overrides, source)
    try:
        api.check_output(settings)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    configure_logging(settings.log_format, settings.log_level, secrets=settings.secrets())
    runner = Daemon(settings, names, once=once, metrics_port=metrics_port)
    raise typer.Exit(anyio.run(runner.run))
