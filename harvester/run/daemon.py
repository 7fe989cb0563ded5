"""The daemon: periodic sweeps over :func:`harvester.api.harvest`, resilient and observable.

- Each sweep is a normal run through the async API (state, watermarks, manifests included), so a
  sweep fetches only what is new.
- Per-source circuit breakers: after ``failure_threshold`` consecutive failed sweeps a source is
  paused for ``interval × 2^k`` (capped at ``max_pause``) while the others keep their schedule;
  when the pause is over it is tried again and a success closes the breaker.
- SIGINT/SIGTERM: no new target is started, in-flight work gets ``grace`` seconds to finish and is
  then cancelled; writers flush and state is committed (shielded), and the daemon exits 0.
- A crash inside one sweep is logged and the daemon goes on to the next sweep.
- Optional metrics (``--metrics-port``): Prometheus text at ``/metrics`` and a health check at
  ``/healthz`` that answers 503 when no sweep has succeeded for ``health_max_age``.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import anyio
import httpx
import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app

from harvester import api
from harvester.errors import RunInterrupted
from harvester.io.limiter import LimiterRegistry
from harvester.run.report import RunReport
from harvester.settings import Settings

if TYPE_CHECKING:
    from harvester.executors.driver import UnitEngine

__all__ = ["CircuitBreaker", "Daemon", "DaemonMetrics"]

log = structlog.get_logger("harvester.run.daemon")


@dataclass
class CircuitBreaker:
    """Backs a failing source off with a growing pause; closes again on its first success."""

    threshold: int
    base_pause_s: float
    max_pause_s: float
    failures: int = 0
    open_until: float = 0.0

    def allows(self, now: float) -> bool:
        return now >= self.open_until

    def record(self, ok: bool, now: float) -> None:
        if ok:
            self.failures, self.open_until = 0, 0.0
            return
        self.failures += 1
        if self.failures >= self.threshold:
            pause = min(self.base_pause_s * 2.0 ** (self.failures - self.threshold), self.max_pause_s)
            self.open_until = now + pause

    @property
    def state(self) -> str:
        return "open" if self.open_until > time.monotonic() else ("half-open" if self.failures else "closed")


@dataclass
class DaemonMetrics:
    """Prometheus metrics on a registry of its own (several daemons can live in one process)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    last_success: float | None = None

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("harvester_requests", "HTTP requests sent", ["source"], registry=r)
        self.retries = Counter("harvester_retries", "HTTP retries", ["source"], registry=r)
        self.written = Counter("harvester_records_written", "Records written", ["source"], registry=r)
        self.errors = Counter("harvester_errors", "Failed targets", ["source"], registry=r)
        self.sweeps = Counter("harvester_sweeps", "Sweeps by outcome", ["outcome"], registry=r)
        self.source_success = Gauge(
            "harvester_last_success_timestamp_seconds",
            "Unix time of the last successful sweep of a source",
            ["source"],
            registry=r,
        )
        self.sweep_success = Gauge(
            "harvester_last_successful_sweep_timestamp_seconds",
            "Unix time of the last sweep in which every source succeeded",
            registry=r,
        )
        self.breaker_open = Gauge(
            "harvester_circuit_open", "1 while a source's circuit breaker is open", ["source"], registry=r
        )

    def observe(self, report: RunReport) -> None:
        now = time.time()
        for name, src in report.sources.items():
            self.requests.labels(name).inc(src.requests)
            self.retries.labels(name).inc(src.retries)
            self.written.labels(name).inc(src.written)
            self.errors.labels(name).inc(len(src.errors))
            if src.status != "failed":
                self.source_success.labels(name).set(now)
        self.sweeps.labels("ok" if report.ok else "failed").inc()
        if report.ok:
            self.last_success = now
            self.sweep_success.set(now)

    def healthy(self, max_age_s: float, started: float) -> tuple[bool, dict[str, Any]]:
        """Healthy while the last fully successful sweep (or the start, before any) is recent."""
        reference = self.last_success if self.last_success is not None else started
        age = time.time() - reference
        return age <= max_age_s, {
            "last_success": self.last_success,
            "age_s": round(age, 1),
            "max_age_s": max_age_s,
        }


class Daemon:
    """Sweeps on a schedule until told to stop."""

    def __init__(
        self,
        settings: Settings,
        sources: list[str],
        *,
        once: bool = False,
        metrics_port: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.sources = sources
        self.once = once
        self.metrics_port = metrics_port
        self.transport = transport
        self.rng = rng or random.Random()  # noqa: S311  # schedule jitter, not cryptography
        d = settings.daemon
        self.breakers = {s: CircuitBreaker(d.failure_threshold, d.interval, d.max_pause) for s in sources}
        self.metrics = DaemonMetrics()
        self.limiters = LimiterRegistry()  # one pacing per host for the daemon's whole life
        self.stop = anyio.Event()
        self.sweeps = 0
        self.started = time.time()
        self.metrics_bound: int | None = None
        #: work units (executor: dask, or an object-store output) instead of the in-process pipeline
        self.units = api.uses_units(settings)
        self._dask: tuple[Any, Any] | None = None  # (client, cluster): one for the daemon's life
        self._engine_kept: UnitEngine | None = None

    def request_stop(self) -> None:
        self.stop.set()

    async def run(self) -> int:
        """Sweep until stopped (or once); return the exit code: 0 on a clean stop, 1 if --once failed."""
        log.info(
            "daemon_started",
            sources=self.sources,
            interval_s=self.settings.daemon.interval,
            jitter_s=self.settings.daemon.jitter,
            once=self.once,
            metrics_port=self.metrics_port,
        )
        last: RunReport | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_signals)
            server = self._start_metrics() if self.metrics_port is not None else None
            while not self.stop.is_set():
                last = await self.sweep()
                if self.once or self.stop.is_set():
                    break
                delay = self.settings.daemon.interval + self.rng.uniform(0, self.settings.daemon.jitter)
                log.info("next_sweep", in_s=round(delay, 1))
                with anyio.move_on_after(delay):
                    await self.stop.wait()
            if server is not None:
                await anyio.to_thread.run_sync(server.shutdown)
            with anyio.move_on_after(30):
                await anyio.to_thread.run_sync(self._close_dask, abandon_on_cancel=True)
            tg.cancel_scope.cancel()
        log.info("daemon_stopped", sweeps=self.sweeps)
        if self.once and (last is None or not last.ok):
            return 1  # --once is used from cron and CI: a failed sweep must be visible
        return 0

    async def sweep(self) -> RunReport | None:
        """One sweep over the sources whose breaker allows it; never raises."""
        now = time.monotonic()
        due = [s for s in self.sources if self.breakers[s].allows(now)]
        for s in self.sources:
            self.metrics.breaker_open.labels(s).set(0 if s in due else 1)
        skipped = [s for s in self.sources if s not in due]
        if skipped:
            log.warning(
                "sources_paused",
                sources=skipped,
                until_s={s: round(self.breakers[s].open_until - now, 1) for s in skipped},
            )
        if not due:
            return None
        self.sweeps += 1
        report: RunReport | None = None
        try:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._cancel_after_grace, scope)
                    report = await self._harvest(due)
                    tg.cancel_scope.cancel()
        except Exception as exc:  # a crash in one sweep must not end the daemon
            log.error("sweep_crashed", error=_describe(exc))
            self.metrics.sweeps.labels("crashed").inc()
            for s in due:
                self.breakers[s].record(False, time.monotonic())
            return None
        if report is None:
            log.warning("sweep_cancelled", reason="shutdown grace period over")
            return None
        self.metrics.observe(report)
        now = time.monotonic()
        for name, src in report.sources.items():
            ok = src.status != "failed"
            self.breakers[name].record(ok, now)
            if not ok and not self.breakers[name].allows(now):
                log.warning(
                    "circuit_opened",
                    source=name,
                    failures=self.breakers[name].failures,
                    pause_s=round(self.breakers[name].open_until - now, 1),
                )
        log.info(
            "sweep_done", sweep=self.sweeps, ok=report.ok, failed=report.failed_sources, **report.totals()
        )
        return report

    async def _harvest(self, due: list[str]) -> RunReport | None:
        engine = await self._engine() if self.units else None
        try:
            return await api.harvest(
                due,
                settings=self.settings,
                transport=self.transport,
                stop=self.stop,
                limiters=self.limiters,
                executor=engine,
            )
        except RunInterrupted:  # work units: a stop cancelled the units in flight; the next start resumes
            return None

    async def _engine(self) -> UnitEngine:
        """The daemon's one engine for its work units: in this process (host budgets kept across
        sweeps), or one Dask cluster for the daemon's life."""
        from harvester.executors.driver import DaskUnits, LocalUnits, dask_client

        if self._engine_kept is None:
            if self.settings.executor != "dask":
                self._engine_kept = LocalUnits()
            else:
                self._dask = await anyio.to_thread.run_sync(dask_client, self.settings)
                self._engine_kept = DaskUnits(self._dask[0])
        return self._engine_kept

    def _close_dask(self) -> None:
        self._engine_kept = None
        if self._dask is not None:
            client, cluster = self._dask
            self._dask = None
            client.close()
            if cluster is not None:
                cluster.close()

    async def _cancel_after_grace(self, scope: anyio.CancelScope) -> None:
        await self.stop.wait()
        log.info("stopping", grace_s=self.settings.daemon.grace)
        await anyio.sleep(self.settings.daemon.grace)
        scope.cancel()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("signal_received", signal=signal.Signals(signum).name)
                self.request_stop()

    def _start_metrics(self) -> WSGIServer:
        """/metrics and /healthz on a loopback WSGI server in its own thread (off the event loop)."""
        server = make_server(
            "127.0.0.1", self.metrics_port or 0, self.wsgi_app(), handler_class=_QuietHandler
        )
        self.metrics_bound = int(server.server_port)
        threading.Thread(target=server.serve_forever, name="harvester-metrics", daemon=True).start()
        log.info("metrics_serving", url=f"http://127.0.0.1:{self.metrics_bound}/metrics")
        return server

    def wsgi_app(self) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
        """/metrics (Prometheus text) and /healthz (JSON; 503 when unhealthy)."""
        metrics_app = make_wsgi_app(registry=self.metrics.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == "/healthz":
                ok, detail = self.metrics.healthy(self.settings.daemon.health_max_age, self.started)
                start_response(
                    "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")]
                )
                return [orjson.dumps({"ok": ok, **detail})]
            result: Iterable[bytes] = metrics_app(environ, start_response)
            return result

        return app


def _describe(exc: BaseException) -> str:
    """The innermost causes of an exception (task groups wrap them in exception groups)."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        return None
