"""``harvester prefect run|serve``: the harvest as a Prefect flow (the prefect extra)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from harvester.errors import ConfigError

if TYPE_CHECKING:
    from harvester.settings import Settings

from harvester.cli.app import PLAIN_HELP, _fail, app, configure_logging, source_option

prefect_app = typer.Typer(
    rich_markup_mode=PLAIN_HELP,
    help="The harvest as a Prefect flow on Dask (needs the prefect extra); the daemon stays the default.",
    no_args_is_help=True,
)
app.add_typer(prefect_app, name="prefect", short_help="Run or serve the harvest as a Prefect flow.")

PrefectSources = Annotated[
    list[str] | None,
    source_option("Which archive to harvest; repeatable (default all)."),
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
    source: list[str] | None,
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
        names = api.resolve_sources(source or ["all"], settings)
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
