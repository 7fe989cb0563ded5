"""Terminal display: live per-source progress while a run works, a summary at the end, and status.

Only used on a terminal; with output redirected the CLI prints structured logs instead.
The display reads the live :class:`~harvester.run.report.RunReport` that the pipeline
fills in, so it costs the pipeline nothing.

Everything here reads well at 80 columns: the run summary is one row per source when the
terminal is wide enough and one column per source otherwise, and the status tables keep run ids,
times and numbers whole (long paths, targets and causes wrap instead of being cut).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from harvester.run.report import RunReport, SourceReport

__all__ = [
    "KEPT_IN_LEDGER",
    "KEPT_IN_STATE",
    "LiveProgress",
    "WatermarkRow",
    "print_status",
    "print_summary",
    "report_table",
    "status_renderables",
    "watermark_rows",
    "watermarks_table",
]


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


#: The summary's measures: (label, value of one source). The wide layout uses the short labels.
_MEASURES: list[tuple[str, str, Callable[[SourceReport], str]]] = [
    ("targets", "targets", lambda s: f"{s.targets_ok + len(s.errors)}/{s.targets}"),
    ("requests", "requests", lambda s: str(s.requests)),
    ("retries", "retries", lambda s: str(s.retries)),
    ("bytes", "received", lambda s: _size(s.bytes_received)),
    ("records", "records", lambda s: str(s.records)),
    ("written", "written", lambda s: str(s.written)),
    ("present", "already present", lambda s: str(s.already_present)),
    ("dups", "duplicates", lambda s: str(s.duplicates)),
    ("errors", "errors", lambda s: str(len(s.errors))),
]


#: Shown only when a source's output needed repair (its ledger disagreed with the disk).
_REPAIRS: list[tuple[str, str, Callable[[SourceReport], str]]] = [
    ("lost", "missing on disk", lambda s: str(s.missing_on_disk + s.damaged_on_disk)),
    ("back", "re-fetched", lambda s: str(s.refetched)),
    ("adopted", "adopted", lambda s: str(s.adopted)),
]


def _measures(sources: list[SourceReport]) -> list[tuple[str, str, Callable[[SourceReport], str]]]:
    repaired = any(s.missing_on_disk or s.damaged_on_disk or s.adopted for s in sources)
    return _MEASURES + _REPAIRS if repaired else _MEASURES


class _ReportTable(Table):
    """The summary table: one row per source when it fits the width it is drawn in, else the
    same numbers turned on their side (one column per source), so no header or number is cut."""

    def __init__(self, tall: Table, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tall = tall

    def _fits(self, console: Console, options: ConsoleOptions) -> bool:
        natural = super().__rich_measure__(console, options.update_width(10_000)).maximum
        return natural <= options.max_width

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        if self._fits(console, options):
            return super().__rich_measure__(console, options)
        return Measurement.get(console, options, self._tall)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self._fits(console, options):
            yield from super().__rich_console__(console, options)
        else:
            yield self._tall


def report_table(report: RunReport, *, title: str | None = None) -> Table:
    """The run's counters per source, drawn to fit the console's width (see :class:`_ReportTable`)."""
    sources = list(report.sources.items())
    statuses = [s.status if report.finished_at else "running" for _, s in sources]
    tall = Table(title=title, title_justify="left")
    tall.add_column("", no_wrap=True)
    for name, _ in sources:
        tall.add_column(name, justify="right", no_wrap=True)
    tall.add_row("status", *statuses)
    measures = _measures([s for _, s in sources])
    for _, label, value in measures:
        tall.add_row(label, *(value(s) for _, s in sources))
    table = _ReportTable(tall, title=title, title_justify="left")
    table.add_column("source", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for label, _, _ in measures:
        table.add_column(label, justify="right", no_wrap=True)
    for (name, s), status in zip(sources, statuses, strict=True):
        table.add_row(name, status, *(value(s) for _, _, value in measures))
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


def print_summary(report: RunReport, console: Console | None = None) -> None:
    """The end-of-run table and the first failures and warnings of each source."""
    console = console or Console()
    console.print(report_table(report, title=f"run {report.run_id}"))
    for name, s in report.sources.items():
        for failure in s.errors[:10]:
            console.print(Text.assemble((name, "red"), f" {failure.target}: {failure.cause}"))
        if len(s.errors) > 10:
            console.print(Text.assemble((name, "red"), f" … and {len(s.errors) - 10} more failed targets"))
        for warning in s.warnings:
            console.print(Text.assemble((name, "yellow"), f" {warning}"))


# --- harvester status ------------------------------------------------------------------------


#: Where a watermark is kept: an output folder's own ledger, or (for work-unit outputs, whose
#: output may be an object store) the machine's state database.
KEPT_IN_LEDGER = "ledger"
KEPT_IN_STATE = "state database"


@dataclass(frozen=True)
class WatermarkRow:
    """One watermark as status shows it: the output it belongs to is part of its identity, and
    where it is kept (``ledger`` or ``state database``) says which store to look in."""

    source: str
    output: str
    target: str
    value: float  # MJD of the newest epoch fetched for the target
    at: float  # when it last moved (Unix time)
    kept_in: str = KEPT_IN_LEDGER
    sample: bool = False  # kept for offline (sample archive) runs, apart from the real archive's


def watermark_rows(marks: Iterable[Mapping[str, Any]]) -> list[WatermarkRow]:
    """Rows from mappings with ``source``, ``target``, ``value``, ``at`` and optionally ``output``,
    ``kept_in`` and ``sample``. A source given as a state database namespace is split: the
    work units' ``<source>[@sample]|units:<output>`` (kept in the state database), or the older
    ``<source>|<output>``; the source is the part before ``@``."""
    rows = []
    for mark in marks:
        namespace = str(mark["source"])
        name, units, output = namespace.partition("|units:")
        if not units:
            name, _, output = namespace.partition("|")
        source, _, variant = name.partition("@")
        rows.append(
            WatermarkRow(
                source,
                str(mark.get("output") or output),
                str(mark["target"]),
                float(mark["value"]),
                float(mark["at"]),
                str(mark.get("kept_in") or (KEPT_IN_STATE if units else KEPT_IN_LEDGER)),
                bool(mark.get("sample")) or variant == "sample",
            )
        )
    return rows


def _when(value: str | float | None) -> str:
    """A time as ``2025-01-31 12:00`` (UTC): ISO 8601 text or Unix seconds; "—" when unknown."""
    if value is None or value == "":
        return "—"
    try:
        moment = (
            datetime.fromtimestamp(value, UTC)
            if isinstance(value, int | float)
            else datetime.fromisoformat(value).astimezone(UTC)
        )
    except (ValueError, OverflowError, OSError):
        return str(value)
    return moment.strftime("%Y-%m-%d %H:%M")


def _took(started: str | None, finished: str | None) -> str:
    if not started or not finished:
        return "—"
    try:
        seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    except ValueError:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _table(title: str | None) -> Table:
    return Table(
        title=title,
        min_width=len(title or ""),  # a narrow table keeps its title on one line
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )


def runs_table(runs: Iterable[Mapping[str, Any]], *, title: str = "recent runs") -> Table:
    """Run id (whole), start time (UTC), duration, status and counts of each run."""
    table = _table(title)
    table.add_column("run", no_wrap=True)
    table.add_column("started (UTC)", no_wrap=True)
    table.add_column("took", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("written", justify="right", no_wrap=True)
    table.add_column("errors", justify="right", no_wrap=True)
    for run in runs:
        totals = (run.get("report") or {}).get("totals", {})
        table.add_row(
            str(run["run_id"]),
            _when(run.get("started_at")),
            _took(run.get("started_at"), run.get("finished_at")),
            str(run["status"]),
            str(totals.get("written", "—")),
            str(totals.get("errors", "—")),
        )
    return table


#: The watermark tables' titles: where the watermarks are kept.
_WATERMARK_TITLES = {
    KEPT_IN_LEDGER: "watermarks in output ledgers (newest MJD fetched, per target)",
    KEPT_IN_STATE: "work-unit watermarks in the state database (newest MJD fetched, per target)",
}


def watermarks_table(rows: Iterable[WatermarkRow]) -> RenderableType:
    """Watermarks under the (source, output) they belong to, one line per target: one table per
    place they are kept (output folders' ledgers, the machine's state database), titled so."""
    kept: dict[str, dict[tuple[str, bool, str], list[WatermarkRow]]] = {}
    for row in rows:
        kept.setdefault(row.kept_in, {}).setdefault((row.source, row.sample, row.output), []).append(row)
    if not kept:
        return Text("watermarks: none")
    order = [*_WATERMARK_TITLES, *sorted(kept.keys() - _WATERMARK_TITLES.keys())]
    tables: list[RenderableType] = []
    for kept_in in (k for k in order if k in kept):
        title = _WATERMARK_TITLES.get(kept_in, f"watermarks kept in {kept_in} (newest MJD fetched)")
        table = _table(title)
        table.add_column("source → output / target", overflow="fold")
        table.add_column("MJD", justify="right", no_wrap=True)
        table.add_column("updated (UTC)", no_wrap=True)
        for (source, sample, output), marks in sorted(kept[kept_in].items()):
            name = f"{source}@sample" if sample else source
            table.add_row(Text(f"{name} → {output}", style="bold"), "", "")
            for mark in sorted(marks, key=lambda m: m.target):
                table.add_row(f"  {mark.target}", f"{mark.value:.5f}", _when(mark.at))
        tables += [Text(""), table] if tables else [table]
    return tables[0] if len(tables) == 1 else Group(*tables)


def _outputs_table(outputs: Iterable[Mapping[str, Any]]) -> RenderableType:
    """Each output and where its bookkeeping is kept: records per output folder, as the folder's
    own ledger lists them; work-unit outputs, whose watermarks the state database keeps."""
    outputs = list(outputs)
    if not outputs:
        return Text(
            "outputs: no ledger found in the configured output or recent runs' outputs, "
            "and no work-unit output in the state database"
        )
    table = _table("outputs (a folder's ledger: <folder>/.harvester/ledger.sqlite)")
    table.add_column("source", no_wrap=True)
    table.add_column("output", overflow="fold")
    table.add_column("kept in", no_wrap=True)
    table.add_column("records", justify="right", no_wrap=True)
    table.add_column("files", justify="right", no_wrap=True)
    for out in outputs:
        where = str(out.get("output") or out.get("folder"))
        kept_in = str(out.get("kept_in") or KEPT_IN_LEDGER)
        if out.get("error"):
            table.add_row(str(out["source"]), where, kept_in, "—", str(out["error"]))
        else:
            records, files = (str(out.get(k, "—")) for k in ("records", "files"))
            table.add_row(str(out["source"]), where, kept_in, records, files)
    return table


def status_renderables(
    *,
    state: str | None,
    runs: Iterable[Mapping[str, Any]],
    outputs: Iterable[Mapping[str, Any]],
    watermarks: Iterable[WatermarkRow],
    failing: Iterable[Mapping[str, Any]],
) -> list[RenderableType]:
    """`harvester status` as renderables: where things live, runs, records per output, watermarks,
    failing targets."""
    outputs = list(outputs)
    where = Text.assemble(
        ("machine state", "bold"),
        f" (runs, outcomes): {state or 'none yet'}\n",
        ("output ledgers", "bold"),
        " (records, watermarks): inside each output folder, listed below",
    )
    if any(out.get("kept_in") == KEPT_IN_STATE for out in outputs):
        where.append_text(
            Text.assemble(
                "\n",
                ("work-unit outputs", "bold"),
                " (watermarks): in the machine state database, listed below",
            )
        )
    parts: list[RenderableType] = [where, Text(""), runs_table(runs, title="recent runs"), Text("")]
    parts += [_outputs_table(outputs), Text(""), watermarks_table(watermarks), Text("")]
    failing = list(failing)
    if failing:
        table = _table("failing targets (latest outcome)")
        table.add_column("source", no_wrap=True)
        table.add_column("target", overflow="fold")
        table.add_column("reason", overflow="fold")
        for item in failing:
            table.add_row(str(item["source"]).partition("|")[0], str(item["target"]), item["reason"] or "")
        parts.append(table)
    else:
        parts.append(Text("no failing targets"))
    return parts


def print_status(info: Mapping[str, Any], console: Console | None = None) -> None:
    """`harvester status` as tables, from the mapping that ``status --json`` prints."""
    console = console or Console()
    for part in status_renderables(
        state=info.get("state"),
        runs=info["runs"],
        outputs=info.get("outputs", []),
        watermarks=watermark_rows(info["watermarks"]),
        failing=info["failing_targets"],
    ):
        console.print(part)
