"""``harvester[prefect]``: the distributed harvest as a Prefect flow, for teams that already run Prefect.

The built-in daemon stays the default scheduler; this module only lets Prefect drive the same
:class:`~harvester.executors.driver.DistributedRun` that ``executor: dask`` drives::

    harvest_flow (the driver: settings, plan, SQLite state, commits)
      └─ DaskTaskRunner: one coarse Prefect task per work unit (``harvest-unit``, retried) ─> run_unit
         on a Dask worker, under the cluster-wide Dask semaphores (the per-host budgets)

- The budgets stay on Dask's scheduler-held semaphores (:mod:`harvester.executors.dask_limiter`), as
  with ``executor: dask``: no Prefect global concurrency limit is used for them.
- The driver alone opens the SQLite state; workers return manifests, committed as they complete.
- Secrets: the flow's parameters are plain strings (sources, paths, addresses). Tokens come from
  the environment / ``.env`` / config of the process that runs the flow and travel to the Dask
  workers inside the unit (as with ``executor: dask``), never as a flow parameter. Unit tasks do
  not cache (no input hashing) and do not persist results; failure texts are redacted.

:func:`serve` (``harvester prefect serve``) serves :func:`harvest_flow` as a deployment on an
interval or cron schedule; :func:`build_deployment` builds the same deployment without serving.
"""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import dask
from prefect import flow, get_client, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.deployments.runner import RunnerDeployment
from prefect.futures import PrefectFuture
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Failed
from prefect.types.entrypoint import EntrypointType
from prefect_dask.task_runners import DaskTaskRunner
from pydantic import ValidationError

from harvester import api
from harvester.display.logs import redact, register_secrets
from harvester.errors import ConfigError, UnitFailed
from harvester.executors.driver import LEASE_TIMEOUT, LOCAL_CLUSTER, UNIT_RETRIES
from harvester.executors.worker import UnitTask, run_unit
from harvester.settings import Settings, load_settings

__all__ = [
    "DEPLOYMENT_NAME",
    "FLOW_NAME",
    "build_deployment",
    "flow_parameters",
    "flow_settings",
    "harvest_flow",
    "harvest_unit",
    "schedule_options",
    "serve",
    "task_runner",
]

FLOW_NAME = "harvester"
DEPLOYMENT_NAME = "harvester"
#: Seconds between the Prefect-level attempts of a unit (a unit whose every target failed).
UNIT_RETRY_DELAY_S = 10.0


class UnitError(Exception):
    """A unit's failure, its message redacted (raised instead of an exception that quoted a token)."""


@task(
    name="harvest-unit",
    task_run_name="{unit_task.unit.source}-{unit_task.unit.unit_id}",
    retries=UNIT_RETRIES,
    retry_delay_seconds=UNIT_RETRY_DELAY_S,
    cache_policy=NO_CACHE,  # no hash of the inputs (they hold the settings); units are idempotent anyway
    persist_result=False,  # the manifest goes back to the driver in memory; never written by Prefect
)
def harvest_unit(unit_task: UnitTask) -> dict[str, Any]:
    """One work unit on a Dask worker (:func:`~harvester.executors.worker.run_unit`)."""
    register_secrets(unit_task.settings.secrets())
    try:
        return run_unit(unit_task)
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        if redact(text) == text:
            raise
        raise UnitError(redact(text)) from None  # Prefect logs and stores the message and its chain


def task_runner(settings: Settings) -> DaskTaskRunner:
    """A DaskTaskRunner on ``settings.dask.address``, or on a temporary LocalCluster.

    The LocalCluster has ``settings.dask.workers`` processes (default: CPU cores) of one thread
    each, as ``executor: dask`` starts. Its scheduler runs in this process, so the semaphore lease
    timeout set here (≥ 60 s) applies to it; set it on a remote scheduler yourself.
    """
    dask.config.set({"distributed.scheduler.locks.lease-timeout": LEASE_TIMEOUT})
    if settings.dask.address:
        return DaskTaskRunner(address=settings.dask.address, client_kwargs={"timeout": "30s"})
    cluster: dict[str, Any] = dict(LOCAL_CLUSTER)
    if settings.dask.workers:
        cluster["n_workers"] = settings.dask.workers
    return DaskTaskRunner(cluster_kwargs=cluster)


def _api_for_workers() -> AbstractContextManager[Any]:
    """Point the unit tasks at this flow's API, also when it is Prefect's ephemeral server.

    Without ``PREFECT_API_URL`` each process that reports a task run starts its own ephemeral
    server (10–20 s each): every Dask worker would. The URL of the flow's own server travels to
    the workers with the task-run context instead. (A remote cluster needs a real server anyway.)
    """
    if PREFECT_API_URL.value():
        return nullcontext()
    api = str(get_client(sync_client=True).api_url).rstrip("/")
    return temporary_settings(updates={PREFECT_API_URL: api})


def flow_settings(
    config: str | Path | None = None,
    *,
    offline: bool = False,
    dask_address: str | None = None,
    dask_workers: int | None = None,
    **overrides: Any,
) -> Settings:
    """The settings :func:`harvest_flow` runs with (``executor: dask``); ConfigError when bad."""
    overrides["executor"] = "dask"
    if offline:
        overrides["offline"] = True
    cluster = {k: v for k, v in (("address", dask_address), ("workers", dask_workers)) if v is not None}
    if cluster:
        overrides["dask"] = cluster
    return load_settings(config, **overrides)


@flow(name=FLOW_NAME, log_prints=False)
def harvest_flow(
    sources: list[str] | None = None,
    config: str | None = None,
    output: str | None = None,
    full: bool = False,
    offline: bool = False,
    dask_address: str | None = None,
    dask_workers: int | None = None,
    run_id: str | None = None,
) -> dict[str, Any] | State[Any]:
    """Harvest ``sources`` (default all) as work units on Dask; return the run report as plain data.

    A run with a failed unit or source ends in a ``Failed`` state whose data is the report (calling
    the flow then raises; ``return_state=True`` and ``state.result(raise_on_failure=False)`` give it).

    :param sources: ``ztf``, ``tess``, ``mast`` or ``all`` (default: all).
    :param config: YAML settings on the machine that runs the flow (default ``config/base.yaml``).
        Tokens come from that machine's environment or ``.env``, never from a parameter.
    :param output: a folder or fsspec URL (``s3://…``); default the settings' ``output``.
    :param full: ignore the watermarks (committed records are still not written again).
    :param offline: harvest the built-in sample archive.
    :param dask_address: a Dask scheduler; unset = ``dask.address``, else a temporary LocalCluster.
    :param dask_workers: the LocalCluster's worker processes (default ``dask.workers`` or CPU cores).
    :param run_id: resume this run id (default: the output's unfinished run, else a new one).
    """
    logger = get_run_logger()
    settings = flow_settings(config, offline=offline, dask_address=dask_address, dask_workers=dask_workers)
    names = api.resolve_sources(sources or "all", settings)
    if output is not None:
        settings = flow_settings(
            config, offline=offline, dask_address=dask_address, dask_workers=dask_workers, output=output
        )
    with _api_for_workers(), task_runner(settings) as runner:
        engine = PrefectUnits(runner, logger)
        run = anyio.run(
            partial(api.harvest, names, settings=settings, full=full, run_id=run_id, executor=engine)
        )
    report = run.as_dict()
    summary = ", ".join(
        f"{name}: {s.written} written, {len(s.errors)} failed" for name, s in run.sources.items()
    )
    if not run.ok:  # the run's state says so (alerts, automations); its data is still the report
        return Failed(message=f"run {run.run_id} failed ({summary})", data=report)
    logger.info("run %s: ok (%s)", run.run_id, summary)
    return report


class PrefectUnits:
    """Units as Prefect tasks (:func:`harvest_unit`, retried by Prefect) on the flow's Dask task
    runner: :func:`harvester.executors.driver.drive` awaits them like any engine's."""

    at_once = 64

    def __init__(self, runner: DaskTaskRunner, logger: Any) -> None:
        self.runner = runner
        self.logger = logger
        self._futures: dict[str, PrefectFuture[dict[str, Any]]] = {}

    async def start(self, tasks: list[UnitTask]) -> None:
        self._futures = {t.name: self.runner.submit(harvest_unit, {"unit_task": t}) for t in tasks}
        self.logger.info("%d units submitted", len(tasks))

    async def execute(self, task: UnitTask) -> dict[str, Any]:
        unit = task.unit
        outcome = await anyio.to_thread.run_sync(_outcome, self._futures[task.name], abandon_on_cancel=True)
        if not isinstance(outcome, dict):
            cause = redact(f"{type(outcome).__name__}: {outcome}")
            self.logger.error("unit %s/%s failed: %s", unit.source, unit.unit_id, cause)
            raise UnitFailed(cause)
        self.logger.info("unit %s/%s: %d records", unit.source, unit.unit_id, outcome["records"])
        return outcome

    async def cancel(self) -> None:
        return None  # a flow run is cancelled through Prefect, which stops its task runs


def _outcome(future: PrefectFuture[dict[str, Any]]) -> Any:
    """The unit's manifest, or the exception of its last attempt."""
    return future.result(raise_on_failure=False)


# --- deployment -----------------------------------------------------------------------------------


def flow_parameters(
    *,
    sources: list[str] | None = None,
    config: str | Path | None = None,
    output: str | Path | None = None,
    full: bool = False,
    offline: bool = False,
    dask_address: str | None = None,
    dask_workers: int | None = None,
) -> dict[str, Any]:
    """The deployment's default parameters: only those given, local paths made absolute.

    A served run starts in a new process, possibly elsewhere: a relative ``config`` or ``output``
    would depend on its working directory.
    """
    params: dict[str, Any] = {}
    if sources:
        params["sources"] = api.resolve_sources(sources)
    if config is not None:
        params["config"] = str(Path(config).resolve())
    if output is not None:
        text = str(output)
        params["output"] = text if "://" in text else str(Path(text).resolve())
    if full:
        params["full"] = True
    if offline:
        params["offline"] = True
    if dask_address is not None:
        params["dask_address"] = dask_address
    if dask_workers is not None:
        params["dask_workers"] = dask_workers
    return params


def schedule_options(interval: float | None, cron: str | None) -> dict[str, Any]:
    """``interval`` (seconds) or ``cron`` as keyword arguments of ``serve``; ConfigError when bad."""
    if interval is not None and cron is not None:
        raise ConfigError("give an interval or a cron schedule, not both")
    if cron is not None:
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=cron)
        except ValidationError as exc:
            cause = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
            raise ConfigError(f"invalid cron schedule {cron!r}: {cause}") from None
        return {"cron": cron}
    if interval is None or interval <= 0:
        raise ConfigError("the schedule needs an interval > 0 or a cron string")
    return {"interval": dt.timedelta(seconds=interval)}


async def build_deployment(
    name: str = DEPLOYMENT_NAME,
    *,
    interval: float | None = None,
    cron: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> RunnerDeployment:
    """The deployment :func:`serve` serves, without serving it (``interval`` in seconds)."""
    return await harvest_flow.ato_deployment(
        name,
        parameters=parameters or {},
        entrypoint_type=EntrypointType.MODULE_PATH,
        **schedule_options(interval, cron),
    )


def serve(
    name: str = DEPLOYMENT_NAME,
    *,
    interval: float | None = None,
    cron: str | None = None,
    parameters: dict[str, Any] | None = None,
    pause_on_shutdown: bool = True,
) -> None:
    """Serve :func:`harvest_flow` as deployment ``name`` on a schedule until interrupted (blocking).

    Needs a Prefect server (``PREFECT_API_URL``) to be useful beyond this process. One run at a
    time (``limit=1``): two runs on one output and state would only wait on each other.
    """
    harvest_flow.serve(
        name,
        parameters=parameters or {},
        entrypoint_type=EntrypointType.MODULE_PATH,
        pause_on_shutdown=pause_on_shutdown,
        limit=1,
        **schedule_options(interval, cron),
    )
