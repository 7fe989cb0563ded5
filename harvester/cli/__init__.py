"""The ``harvester`` command: a thin typer shell over the async API.

Exit codes: 0 everything succeeded; 1 a source or a target failed (the summary says which);
2 bad usage, settings or input files (one line on stderr, nothing fetched or written);
130 interrupted (Ctrl-C, SIGINT); 143 terminated (SIGTERM). An interrupted run is cancelled
like a notebook cell: what was written is kept and a ``cancelled`` manifest is written.
"""

from __future__ import annotations

import importlib
import signal
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import orjson
import typer
from typer.core import TyperGroup

from harvester import archives
from harvester.display.terminal import (
    KEPT_IN_LEDGER,
    KEPT_IN_STATE,
    LiveProgress,
    print_status,
    print_summary,
    watermark_rows,
)
from harvester.errors import ConfigError, HarvesterError
from harvester.run.report import EXIT_USAGE, RunReport

if TYPE_CHECKING:
    from harvester.io.state import Watermark
    from harvester.settings import Settings

__all__ = ["app", "main"]

EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C): 128 + 2
EXIT_TERMINATED = 143  # SIGTERM (systemctl stop, kill): 128 + 15

#: click's exceptions module: typer >= 0.2x vendors click, older typers use the click package.
_click_errors: Any = importlib.import_module(typer.BadParameter.__module__)
_NO_ARGS_IS_HELP: Any = getattr(_click_errors, "NoArgsIsHelpError", ())


def usage_error_line(exc: Any, command: str = "harvester") -> str:
    """A click usage error (bad value, unknown option or command) as one ``harvester: error:`` line.

    typer prints these as a boxed panel of five or six lines; a scheduler's log wants one line
    that names the option and the cause, plus where the full help is (``command --help``).
    """
    message = " ".join(exc.format_message().split())  # one line, however click wrapped it
    message = message.replace("Value error, ", "").rstrip(".")
    if message[:1].isupper() and not message[1:2].isupper():
        message = message[0].lower() + message[1:]
    if isinstance(exc, _click_errors.UsageError):
        message += f" (see: {command} --help)"
    return f"harvester: error: {message}"


def _command_path(group: Any, args: Sequence[str]) -> str:
    """``harvester run`` for ``["run", "--limit"]``: the (sub)command the arguments name."""
    path, command = ["harvester"], group
    for token in args:
        sub = getattr(command, "commands", {}).get(token)
        if sub is None:
            break
        path.append(token)
        command = sub
    return " ".join(path)


class _OneLineErrors(TyperGroup):
    """The root command group: every usage error is one line on stderr and exit code 2.

    Runs typer in non-standalone mode and formats what it would have boxed. ``--help``, the
    help shown for a bare group (``no_args_is_help``) and every ``typer.Exit`` are unchanged.
    """

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except _NO_ARGS_IS_HELP as exc:
            if exc.format_message():  # the plain help; the rich help was already printed
                exc.show()
            sys.exit(exc.exit_code)
        except _click_errors.ClickException as exc:
            command = _command_path(self, sys.argv[1:] if args is None else args)
            typer.echo(usage_error_line(exc, command), err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("harvester: error: aborted", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    name="harvester",
    help="Harvest ZTF light curves (IRSA), TESS light curves and MAST observation metadata.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from harvester._version import __version__

        typer.echo(f"harvester {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Harvest ZTF light curves (IRSA), TESS light curves and MAST observation metadata."""


archive_app = typer.Typer(
    help="The built-in sample archive (a fake IRSA + MAST) for offline use and tests.", no_args_is_help=True
)
app.add_typer(archive_app, name="archive")


class SourceChoice(str, Enum):
    ztf = "ztf"
    tess = "tess"
    mast = "mast"
    all = "all"


class FormatChoice(str, Enum):
    json = "json"
    jsonl = "jsonl"


class ExecutorChoice(str, Enum):
    local = "local"
    dask = "dask"


class LogFormat(str, Enum):
    auto = "auto"
    console = "console"
    json = "json"


def configure_logging(*args: Any, **kwargs: Any) -> None:
    """structlog's configuration, imported only by the commands that log (not by ``--help``)."""
    from harvester.display import logs

    logs.configure_logging(*args, **kwargs)


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    typer.echo(f"harvester: error: {message}", err=True)
    return typer.Exit(code)


def cli_overrides(
    *,
    output: Path | str | None = None,
    limit: int | None = None,
    fmt: str | None = None,
    offline: bool = False,
    log_format: str | None = None,
    irsa_ra: float | None = None,
    irsa_dec: float | None = None,
    irsa_radius: float | None = None,
    irsa_filter: list[str] | None = None,
    irsa_mjd_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """CLI flags as the top settings layer; ``--irsa-*`` reach ``data_sources.ztf.irsa`` only."""
    overrides: dict[str, Any] = {}
    if output is not None:
        overrides["output"] = output
    if limit is not None:
        overrides["limit"] = limit
    if fmt is not None:
        overrides["format"] = fmt
    if offline:
        overrides["offline"] = True
    if log_format is not None:
        overrides["log_format"] = log_format
    irsa: dict[str, Any] = {}
    cone = {k: v for k, v in (("ra", irsa_ra), ("dec", irsa_dec), ("radius", irsa_radius)) if v is not None}
    if cone:  # the CLI cone replaces the configured ZTF targets (the original guide's --irsa-* override)
        irsa.update(cone_search=cone, targets=[], targets_file=None)
    if irsa_filter:
        irsa["filters"] = irsa_filter
    if irsa_mjd_range is not None:
        irsa["mjd_range"] = list(irsa_mjd_range)
    if irsa:
        overrides["data_sources"] = {"ztf": {"irsa": irsa}}
    return overrides


@app.command()
def run(
    source: Annotated[
        SourceChoice, typer.Option("--source", "-s", help="Which archive to harvest.")
    ] = SourceChoice.all,
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
        FormatChoice | None, typer.Option("--format", help="json: a file per record; jsonl: shards.")
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
    irsa_mjd_range: Annotated[
        tuple[float, float] | None, typer.Option("--irsa-mjd-range", help="ZTF MJD range: START END.")
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

    irsa_flags = _irsa_flags_given(irsa_ra, irsa_dec, irsa_radius, irsa_filter, irsa_mjd_range)
    irsa_ignored = bool(irsa_flags) and source not in (SourceChoice.ztf, SourceChoice.all)
    if irsa_ignored:  # --irsa-* configure ZTF only: another source runs without them
        irsa_ra = irsa_dec = irsa_radius = irsa_filter = irsa_mjd_range = None
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
    )
    if executor is not None:
        overrides["executor"] = executor.value
    if dask_address is not None:
        overrides["dask"] = {"address": dask_address}
    try:
        settings = load_settings(config, **overrides)
        names = api.resolve_sources(source.value)
        units = settings.executor == "dask" or settings.output_url is not None
        if units and dry_run:
            raise ConfigError("--dry-run runs locally into a folder: drop --executor dask and the URL output")
        api.check_targets(names, settings)
        if settings.output_url is None:
            api._check_output(settings, dry_run=dry_run)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if irsa_ignored:
        flags = ", ".join(irsa_flags) + (" apply" if len(irsa_flags) > 1 else " applies")
        typer.echo(
            f"harvester: warning: {flags} to ztf only (--source ztf or all): ignored for "
            f"--source {source.value}",
            err=True,
        )
    configure_logging(settings.log_format, settings.log_level, secrets=settings.secrets())
    report = RunReport(run_id="", started_at=_now())
    with _sigterm_like_ctrl_c() as terminated:
        try:
            if units:
                report = _run_units(names, settings, full)
            else:
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
) -> list[str]:
    """The ``--irsa-*`` flags given on the command line, by name."""
    given = (
        ("--irsa-ra", ra is not None),
        ("--irsa-dec", dec is not None),
        ("--irsa-radius", radius is not None),
        ("--irsa-filter", bool(filters)),
        ("--irsa-mjd-range", mjd_range is not None),
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


def _interrupted(report: RunReport, settings: Settings, *, terminated: bool) -> typer.Exit:
    """One line on stderr for a run stopped by Ctrl-C or SIGTERM, and its exit code (130, 143)."""
    name, code = ("SIGTERM", EXIT_TERMINATED) if terminated else ("SIGINT", EXIT_INTERRUPTED)
    if not report.run_id:
        detail = "stopped before the run started; nothing was written"
    elif report.dry_run:
        detail = f"run {report.run_id} cancelled (dry run: nothing was written)"
    else:
        manifest = Path(settings.output) / "_manifests" / f"run-{report.run_id}.json"
        detail = (
            f"run {report.run_id} cancelled; what it wrote is kept ({manifest}); "
            "run it again to complete the output"
        )
    typer.echo(f"harvester: interrupted ({name}): {detail}", err=True)
    return typer.Exit(code)


def _require_units(settings: Settings) -> None:
    """Work units need the dask extra (and an fsspec backend for the output's scheme)."""
    why = "--executor dask" if settings.executor == "dask" else f"output {settings.output_url}"
    try:
        from harvester.io.objectstore import ObjectStore

        if settings.executor == "dask":
            import distributed  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"{why} needs the dask extra: pip install 'harvester[dask]' ({exc.name})") from None
    ObjectStore(settings.output_url or settings.output)


def _run_units(names: list[str], settings: Settings, full: bool) -> RunReport:
    """Work units: on Dask (``executor: dask``), or in this process for an object-store output."""
    _require_units(settings)
    from harvester.executors.driver import harvest_distributed, harvest_units

    if settings.executor == "dask":
        return harvest_distributed(names, settings, full=full)
    return harvest_units(names, settings, full=full)


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
        names = api.resolve_sources(source)
        api.check_targets(names, settings)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    return settings, names


@app.command()
def daemon(
    source: Annotated[
        SourceChoice, typer.Option("--source", "-s", help="Which archive to harvest.")
    ] = SourceChoice.all,
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
    settings, names = _settings_or_exit(config, overrides, source.value)
    try:
        if settings.executor == "dask" or settings.output_url is not None:
            _require_units(settings)
        if settings.output_url is None:
            api._check_output(settings)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    configure_logging(settings.log_format, settings.log_level, secrets=settings.secrets())
    runner = Daemon(settings, names, once=once, metrics_port=metrics_port)
    raise typer.Exit(anyio.run(runner.run))


@app.command()
def status(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    runs: Annotated[int, typer.Option("--runs", min=1, help="How many recent runs to show.")] = 5,
) -> None:
    """Where everything lives, and what it says: recent runs and failing targets (the machine's
    state database), records and watermarks of each output folder (its own ledger), watermarks
    of work-unit outputs (an object store, or ``--executor dask``: the machine's state database)."""
    from harvester.io.ledger import read_summary
    from harvester.io.state import StateStore
    from harvester.settings import load_settings

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    path = settings.state.path

    async def history() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Watermark]]:
        async with StateStore(path) as store:
            return await store.last_runs(runs), await store.failing_targets(), await store.all_watermarks()

    recent: list[dict[str, Any]] = []
    failing: list[dict[str, Any]] = []
    state_marks: list[Watermark] = []
    if path.is_file():
        try:
            recent, failing, state_marks = anyio.run(history)
        except (HarvesterError, sqlite3.Error) as exc:
            raise _fail(f"cannot read the state database {path}: {exc}") from None
    outputs: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    for source, folder in _status_folders(settings, recent):
        summary = read_summary(folder)
        if summary is None:
            continue
        found = summary.get("watermarks", [])
        outputs.append(
            {
                "source": source,
                "output": str(folder),
                **{k: v for k, v in summary.items() if k != "watermarks"},
                "kept_in": KEPT_IN_LEDGER,
                "watermarks": len(found),
            }
        )
        marks += [{"source": source, "output": str(folder), "kept_in": KEPT_IN_LEDGER, **m} for m in found]
    unit_marks, unit_outputs = _unit_watermarks(state_marks)
    outputs += unit_outputs
    marks += unit_marks
    if not recent and not outputs:
        raise _fail(
            f"nothing harvested yet: no state database at {path} and no ledger in "
            f"{settings.output}/<source>/.harvester (state.path or output point elsewhere?)"
        )
    info = {
        "state": str(path) if path.is_file() else None,
        "runs": recent,
        "outputs": outputs,
        "watermarks": [asdict(row) for row in watermark_rows(marks)],
        "failing_targets": failing,
    }
    if as_json:
        sys.stdout.write(orjson.dumps(info, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")
    else:
        print_status(info)


def _unit_watermarks(state_marks: Sequence[Watermark]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The work-unit outputs' watermarks in the state database (namespaces
    ``<source>[@sample]|units:<output>``), and one entry per (source, output) for ``outputs``.

    Older ``<source>|<folder>`` namespaces are left out: they date from before output folders kept
    their own ledger, and no run reads them any more (a folder's ledger has its watermarks)."""
    marks: list[dict[str, Any]] = []
    counts: dict[tuple[str, str], int] = {}
    for mark in state_marks:
        name, units, output = mark.source.partition("|units:")
        if not units:
            continue
        source = name.partition("@")[0]
        marks.append({**asdict(mark), "output": output, "kept_in": KEPT_IN_STATE})
        counts[source, output] = counts.get((source, output), 0) + 1
    outputs = [
        {"source": source, "output": output, "kept_in": KEPT_IN_STATE, "watermarks": n}
        for (source, output), n in sorted(counts.items())
    ]
    return marks, outputs


def _status_folders(settings: Settings, recent: list[dict[str, Any]]) -> list[tuple[str, Path]]:
    """The source folders ``status`` reads: the configured output's, and those of recent runs."""
    found: dict[Path, tuple[str, Path]] = {}
    for name in archives.names():
        folder = Path(settings.output) / name
        found.setdefault(folder.resolve(), (name, folder))
    for run in recent:
        for name, src in ((run.get("report") or {}).get("sources") or {}).items():
            if isinstance(src, dict) and src.get("output"):
                folder = Path(str(src["output"]))
                found.setdefault(folder.resolve(), (str(name), folder))
    return list(found.values())


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


@archive_app.command("serve")
def archive_serve(
    port: Annotated[
        int, typer.Option("--port", "-p", min=0, max=65535, help="TCP port (0 = any free port).")
    ] = 8765,
    host: Annotated[str, typer.Option("--host", help="Loopback address to bind.")] = "127.0.0.1",
    latency: Annotated[
        float, typer.Option("--latency", min=0.0, help="Seconds added to every answer.")
    ] = 0.0,
    bandwidth: Annotated[
        float | None, typer.Option("--bandwidth", min=1.0, help="Bytes/s per connection for bodies.")
    ] = None,
    rate_limit: Annotated[
        float | None, typer.Option("--rate-limit", min=0.1, help="Server-side req/s per host (429 past it).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the deterministic sample sky.")] = 0,
) -> None:
    """Serve the sample archive over HTTP on loopback (IRSA and MAST endpoints on one port)."""
    from harvester.testing import FakeArchive, serve

    if host not in ("127.0.0.1", "localhost", "::1"):
        raise _fail(f"--host {host!r}: the sample archive only binds to loopback addresses")
    archive = FakeArchive(
        seed=seed,
        latency_s=latency,
        bandwidth_bps=bandwidth,
        rate_limit_rps=rate_limit,
        rate_limit_mode="enforce" if rate_limit else "count",
    )

    def ready(bound: int) -> None:
        typer.echo(
            f"sample archive on http://{host}:{bound} (IRSA: /cgi-bin/ZTF/nph_light_curves, "
            f"MAST: /api/v0/invoke); Ctrl-C stops it",
            err=True,
        )

    try:
        anyio.run(lambda: serve(archive, host, port, ready=ready))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise _fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None


@app.command("docs")
def docs(
    folder: Annotated[Path, typer.Option("--folder", help="Where the generated references go.")] = Path(
        "docs"
    ),
) -> None:
    """Regenerate docs/configuration.md and docs/schema.md from the settings and record models."""
    from harvester.display.schema import configuration_document, schema_document

    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("configuration.md", configuration_document()), ("schema.md", schema_document())):
        (folder / name).write_text(text, encoding="utf-8")
        typer.echo(f"wrote {folder / name}", err=True)


from harvester.cli.features import register as _register_features  # noqa: E402

_register_features(app)


@app.command()
def compact(
    source: Annotated[SourceChoice, typer.Argument(help="ztf, tess or mast.")],
    input_root: Annotated[
        str, typer.Option("--input", "-i", help="The dask run's output: a folder or an fsspec URL.")
    ] = "data/raw",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Parquet file (default data/processed/<source>.parquet)."),
    ] = None,
) -> None:
    """Merge the committed work units of a dask run into one Parquet file, deduplicated across units."""
    if source == SourceChoice.all:
        raise _fail("compact takes one source: ztf, tess or mast")
    target = output or Path("data/processed") / f"{source.value}.parquet"
    try:
        from harvester.executors.compact import compact as run_compact

        records, dropped = run_compact(source.value, input_root, target)
    except ImportError as exc:
        raise _fail(f"compact needs the dask extra: pip install 'harvester[dask]' ({exc.name})") from None
    except HarvesterError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot compact {input_root} into {target}: {exc.strerror or exc}", 1) from None
    typer.echo(f"wrote {target}: {records} records ({dropped} duplicates across units dropped)", err=True)


prefect_app = typer.Typer(
    help="The harvest as a Prefect flow on Dask (needs the prefect extra); the daemon stays the default.",
    no_args_is_help=True,
)
app.add_typer(prefect_app, name="prefect")

PrefectSources = Annotated[
    list[SourceChoice] | None,
    typer.Option("--source", "-s", help="Which archive to harvest; repeatable (default all)."),
]
PrefectConfig = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML settings, read where the flow runs.")
]
PrefectOutput = Annotated[
    str | None, typer.Option("--output", "-o", help="Output folder or fsspec URL (s3://…).")
]
PrefectFull = Annotated[bool, typer.Option("--full", help="Ignore watermarks: ask for everything again.")]
PrefectOffline = Annotated[bool, typer.Option("--offline", help="Harvest the built-in sample archive.")]
PrefectAddress = Annotated[
    str | None, typer.Option("--dask-address", help="Dask scheduler address; unset = a local cluster.")
]
PrefectWorkers = Annotated[
    int | None, typer.Option("--dask-workers", min=1, help="Local cluster worker processes (default cores).")
]


def _prefect_module() -> Any:
    try:
        from harvester.executors import prefect_flow
    except ImportError as exc:
        raise _fail(
            f"prefect commands need the prefect extra: pip install 'harvester[prefect]' ({exc.name})"
        ) from None
    return prefect_flow


def _prefect_parameters(
    module: Any,
    source: list[SourceChoice] | None,
    config: Path | None,
    output: str | None,
    full: bool,
    offline: bool,
    dask_address: str | None,
    dask_workers: int | None,
    overrides: dict[str, Any] | None = None,
) -> tuple[Settings, dict[str, Any]]:
    """Check the settings here, where the error is readable, then build the flow's parameters."""
    from harvester import api

    try:
        settings: Settings = module.flow_settings(
            config, offline=offline, dask_address=dask_address, dask_workers=dask_workers, **(overrides or {})
        )
        names = api.resolve_sources([s.value for s in source or [SourceChoice.all]])
        api.check_targets(names, settings)
        params: dict[str, Any] = module.flow_parameters(
            sources=names,
            config=config,
            output=output,
            full=full,
            offline=offline,
            dask_address=dask_address,
            dask_workers=dask_workers,
        )
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    return settings, params


@prefect_app.command("run")
def prefect_run(
    source: PrefectSources = None,
    config: PrefectConfig = None,
    output: PrefectOutput = None,
    full: PrefectFull = False,
    offline: PrefectOffline = False,
    dask_address: PrefectAddress = None,
    dask_workers: PrefectWorkers = None,
) -> None:
    """Run the harvest flow once (PREFECT_API_URL, or Prefect's temporary server); print its report."""
    module = _prefect_module()
    settings, params = _prefect_parameters(
        module, source, config, output, full, offline, dask_address, dask_workers
    )
    configure_logging(settings.log_format, settings.log_level, secrets=settings.secrets())
    try:
        state = module.harvest_flow(**params, return_state=True)
    except KeyboardInterrupt:
        raise _fail("interrupted", 130) from None
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, ConfigError):
        raise _fail(str(outcome))
    if isinstance(outcome, BaseException):
        raise _fail(f"flow run {state.name}: {type(outcome).__name__}: {outcome}", 1)
    sys.stdout.write(orjson.dumps(outcome, option=orjson.OPT_INDENT_2).decode() + "\n")
    raise typer.Exit(0 if outcome.get("ok") else 1)


@prefect_app.command("serve")
def prefect_serve(
    source: PrefectSources = None,
    config: PrefectConfig = None,
    output: PrefectOutput = None,
    interval: Annotated[
        str | None, typer.Option("--interval", help="Time between runs, e.g. 6h (default daemon.interval).")
    ] = None,
    cron: Annotated[
        str | None, typer.Option("--cron", help='Cron schedule instead, e.g. "0 */6 * * *".')
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Deployment name.")] = "harvester",
    full: PrefectFull = False,
    offline: PrefectOffline = False,
    dask_address: PrefectAddress = None,
    dask_workers: PrefectWorkers = None,
) -> None:
    """Serve the harvest flow as a Prefect deployment on a schedule until interrupted (needs a server)."""
    module = _prefect_module()
    if interval is not None and cron is not None:
        raise _fail("--interval and --cron: give one schedule, not both")
    schedule = {"daemon": {"interval": interval}} if interval is not None else {}
    settings, params = _prefect_parameters(
        module, source, config, output, full, offline, dask_address, dask_workers, schedule
    )
    seconds = settings.daemon.interval if cron is None else None
    try:
        module.schedule_options(seconds, cron)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    configure_logging(settings.log_format, settings.log_level, secrets=settings.secrets())
    module.serve(name, interval=seconds, cron=cron, parameters=params)


def main() -> None:
    """Console-script entry point."""
    app()
