"""Terminal display: live per-source progress while a run works, and a summary table at the end.

Only used on a terminal; with output redirected the CLI prints structured logs instead.
The display reads the live :class:`~harvester.pipeline.report.RunReport` that the pipeline
fills in, so it costs the pipeline nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from harvester.pipeline.report import RunReport

__all__ = ["LiveProgress", "print_status", "print_summary", "report_table"]


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


def report_table(report: RunReport, *, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    for column in (
        "source",
        "status",
        "targets",
        "requests",
        "retries",
        "bytes",
        "records",
        "written",
        "present",
        "dups",
        "errors",
    ):
        table.add_column(column, justify="left" if column in ("source", "status") else "right")
    for name, s in report.sources.items():
        status = s.status if report.finished_at else "running"
        table.add_row(
            name,
            status,
            f"{s.targets_ok + len(s.errors)}/{s.targets}",
            str(s.requests),
            str(s.retries),
            _size(s.bytes_received),
            str(s.records),
            str(s.written),
            str(s.already_present),
            str(s.duplicates),
            str(len(s.errors)),
        )
    return table


class LiveProgress:
    """A rich live table of the report, refreshed a few times a second (a no-op when disabled)."""

    def __init__(self, report: RunReport, *, enabled: bool) -> None:
        self._report = report
        self._live: Live | None = None
        if enabled:
            self._live = Live(
                get_renderable=lambda: report_table(self._report, title="harvesting"),
                console=Console(stderr=True),
                refresh_per_second=4,
                transient=True,
                redirect_stderr=True,
                redirect_stdout=False,
            )

    def __enter__(self) -> LiveProgress:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.__exit__(kind, exc, tb)


def print_summary(report: RunReport) -> None:
    console = Console()
    console.print(report_table(report, title=f"run {report.run_id}"))
    for name, s in report.sources.items():
        for failure in s.errors[:10]:
            console.print(f"[red]{name}[/red] {failure.target}: {failure.cause}")
        if len(s.errors) > 10:
            console.print(f"[red]{name}[/red] … and {len(s.errors) - 10} more failed targets")
        for warning in s.warnings:
            console.print(f"[yellow]{name}[/yellow] {warning}")


def print_status(info: dict[str, Any]) -> None:
    """`harvester status` as tables: runs, seen keys, watermarks, failing targets."""
    console = Console()
    runs = Table(title=f"recent runs ({info['state']})", title_justify="left")
    for column in ("run", "started", "finished", "status", "written", "errors"):
        runs.add_column(column)
    for run in info["runs"]:
        totals = (run.get("report") or {}).get("totals", {})
        runs.add_row(
            run["run_id"],
            run["started_at"],
            run["finished_at"] or "—",
            run["status"],
            str(totals.get("written", "—")),
            str(totals.get("errors", "—")),
        )
    console.print(runs)
    seen = Table(title="records committed", title_justify="left")
    seen.add_column("source")
    seen.add_column("output")
    seen.add_column("records", justify="right")
    for namespace, count in info["seen"].items():
        source, _, output = namespace.partition("|")
        seen.add_row(source, output, str(count))
    console.print(seen)
    marks = Table(title="watermarks", title_justify="left")
    for column in ("source", "target", "value", "updated"):
        marks.add_column(column)
    for mark in info["watermarks"]:
        marks.add_row(
            mark["source"].partition("|")[0],
            mark["target"],
            f"{mark['value']:.5f}",
            datetime.fromtimestamp(mark["at"], UTC).isoformat(timespec="seconds"),
        )
    console.print(marks)
    if info["failing_targets"]:
        failing = Table(title="failing targets (latest outcome)", title_justify="left")
        for column in ("source", "target", "reason"):
            failing.add_column(column)
        for item in info["failing_targets"]:
            failing.add_row(item["source"].partition("|")[0], item["target"], item["reason"] or "")
        console.print(failing)
    else:
        console.print("no failing targets")
