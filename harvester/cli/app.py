"""The typer app every ``harvester`` command registers on, and what the commands share:
one-line usage errors, exit codes, the common option types, settings from flags."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from harvester.run.report import EXIT_USAGE

__all__ = ["app", "archive_app", "cli_overrides"]

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


#: Help is plain text, as in docs/cli.md: rendering it with rich imports ~0.2 s of modules
#: (markdown, syntax highlighting, tracebacks) for every ``--help``; plain, it starts in ~0.15 s.
PLAIN_HELP = None

app = typer.Typer(
    cls=_OneLineErrors,
    rich_markup_mode=PLAIN_HELP,
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
    help="The built-in sample archive (a fake IRSA + MAST) for offline use and tests.",
    no_args_is_help=True,
    rich_markup_mode=PLAIN_HELP,
)
app.add_typer(archive_app, name="archive", short_help="Serve the built-in sample archive.")


class ArchiveName:
    """Parses an archive's name against the registry (``harvester.archives``) when the command
    runs, so an archive registered after import is a valid choice; with ``all_``, also ``all``.
    ``need`` keeps only archives whose entry sets that field (``features``, ``plot``)."""

    def __init__(self, *, all_: bool = True, need: str | None = None) -> None:
        self._all = all_
        self._need = need

    def choices(self) -> tuple[str, ...]:
        from harvester import archives

        found = tuple(s.name for s in archives.specs() if self._need is None or getattr(s, self._need))
        return (*found, "all") if self._all else found

    @property
    def metavar(self) -> str:
        return "<" + "|".join(self.choices()) + ">"

    def __call__(self, value: str) -> str:
        choices = self.choices()
        if value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, choices))}")
        return value


def source_option(help_text: str = "Which archive to harvest.") -> Any:
    """The ``--source/-s`` option: a registered archive or ``all``."""
    names = ArchiveName()
    return typer.Option("--source", "-s", parser=names, metavar=names.metavar, help=help_text)


def archive_argument(help_text: str, *, need: str | None = None) -> Any:
    """An ARCHIVE argument: one registered archive (with ``need``: one whose entry sets it)."""
    names = ArchiveName(all_=False, need=need)
    return typer.Argument(parser=names, help=f"{help_text} {names.metavar}", show_default=False)


class RouteChoice(str, Enum):
    api = "api"
    hats = "hats"
    auto = "auto"


class FormatChoice(str, Enum):
    json = "json"
    jsonl = "jsonl"
    parquet = "parquet"


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
    route: str | None = None,
    irsa_id: list[int] | None = None,
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
    if cone or irsa_id:  # the CLI's cone and ids replace the configured ZTF targets (the original
        # guide's --irsa-* override): the cone, the ids, or both
        irsa.update(cone_search=cone or None, targets=[], targets_file=None)
        irsa.update(object_ids=list(irsa_id or []), object_ids_file=None)
    if irsa_filter:
        irsa["filters"] = irsa_filter
    if irsa_mjd_range is not None:
        irsa["mjd_range"] = list(irsa_mjd_range)
    ztf: dict[str, Any] = {"irsa": irsa} if irsa else {}
    if route is not None:
        ztf["route"] = route
    if ztf:
        overrides["data_sources"] = {"ztf": ztf}
    return overrides


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
