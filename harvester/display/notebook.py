"""A live progress display for harvests run from notebooks and scripts: :func:`progress`.

::

    with harvester.progress() as report:          # in a Jupyter cell
        await harvester.harvest("ztf", offline=True, limit=200, report=report)

The display reads the :class:`~harvester.run.report.RunReport` that ``harvest(report=...)``
fills in place, so it costs the pipeline nothing. It shows the per-source table of the CLI
(targets, requests, retries, bytes, records, written, errors) and adapts to where it runs:

- **Jupyter** (any frontend: JupyterLab, Notebook, VS Code, nbclient): an output updated in place
  through IPython's display handles (``display(..., display_id=True)`` then ``update``), as HTML
  with a plain-text twin. This needs no ipywidgets (rich's ``Live`` does, in Jupyter), and the last
  update stays in the notebook as the run's summary.
- **A terminal**: rich's ``Live`` table on stderr, refreshed 4 times a second; the final table stays.
- **Anything else** (stderr redirected to a file, cron, systemd): nothing. The run's structured log
  events (``run_started``, ``source_done``, ``run_finished``) are what belongs in a log.

Why rich and not ``tqdm.auto``: rich is already a dependency and renders the CLI's table; a run
has several sources with several counters each, which a table shows and a bar does not; and
tqdm's notebook bars need ipywidgets too.
"""

from __future__ import annotations

import contextvars
import io
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from harvester.display.terminal import report_table
from harvester.run.report import RunReport

__all__ = ["in_notebook", "new_report", "progress"]

_HTML_WIDTH = 110
_PRE_STYLE = (
    "white-space:pre;overflow-x:auto;line-height:normal;"
    "font-family:Menlo,'DejaVu Sans Mono',consolas,'Courier New',monospace"
)
_PRE_FORMAT = f'<pre style="{_PRE_STYLE}">{{code}}</pre>'


def new_report() -> RunReport:
    """An empty report for ``harvest(report=...)`` to fill in place."""
    return RunReport(run_id="", started_at=datetime.now(UTC))


def in_notebook() -> bool:
    """Whether this code runs in a Jupyter kernel (IPython's ZMQ shell, Colab, Databricks)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    if shell is None:
        return False
    kind = type(shell)
    return kind.__name__ == "ZMQInteractiveShell" or "google.colab" in kind.__module__


def _snapshot(report: RunReport) -> RunReport:
    """A copy of the report's header and source map, safe to read while the run updates it.

    Copying a dict of str keys holds the GIL throughout, so it never sees the map mid-change; the
    counters of each SourceReport are read as they are at that moment.
    """
    return RunReport(
        run_id=report.run_id,
        started_at=report.started_at,
        finished_at=report.finished_at,
        dry_run=report.dry_run,
        sources=dict(report.sources),
    )


def _table(report: RunReport) -> Table:
    view = _snapshot(report)
    if view.finished_at is not None:
        elapsed = (view.finished_at - view.started_at).total_seconds()
        title = f"run {view.run_id}: {'ok' if view.ok else 'failed: ' + ', '.join(view.failed_sources)}"
        return report_table(view, title=f"{title} ({elapsed:.1f} s)")
    return report_table(view, title=f"harvesting {view.run_id}".rstrip())


class _Rendered:
    """The table as a Jupyter display bundle: HTML, with the plain text for text frontends."""

    def __init__(self, report: RunReport) -> None:
        console = Console(
            file=io.StringIO(), record=True, width=_HTML_WIDTH, force_terminal=False, force_jupyter=False
        )
        console.print(_table(report))
        self.text = "\n".join(line.rstrip() for line in console.export_text().splitlines())
        self.html = console.export_html(inline_styles=True, code_format=_PRE_FORMAT)

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


class _NotebookDisplay:
    """One output in the current cell, updated from a helper thread until the run is done."""

    def __init__(self, report: RunReport, refresh_s: float) -> None:
        from IPython.display import display as ipython_display

        display: Any = ipython_display  # untyped in IPython
        self._report = report
        self._refresh_s = refresh_s
        self._stop = threading.Event()
        self._handle: Any = display(_Rendered(report), display_id=True)
        # The copied context carries the cell's parent header (ipykernel keeps it in a ContextVar),
        # so the updates are attributed to this cell's output.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._refresh,), name="harvester-progress", daemon=True
        )
        self._thread.start()

    def _refresh(self) -> None:
        while not self._stop.wait(self._refresh_s):
            self._handle.update(_Rendered(self._report))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._handle.update(_Rendered(self._report))  # the final state, from the cell's own thread


@contextmanager
def progress(
    report: RunReport | None = None,
    *,
    enabled: bool | None = None,
    console: Console | None = None,
    refresh_per_second: float = 4.0,
) -> Iterator[RunReport]:
    """Show a live table of ``report`` while the block runs; yield the report to pass to ``harvest``.

    :param report: the report that ``harvest(report=...)`` fills in place; a new one when omitted.
    :param enabled: ``None`` (default): in Jupyter or when ``console`` is a terminal (stderr by
        default), silent otherwise. ``True``: always; on a console that is not a terminal only the
        final table is printed. ``False``: never (the report is still yielded).
    :param console: the rich console for the terminal display (default: stderr).
    :param refresh_per_second: how often the display is redrawn.

    Safe in a running event loop (the display refreshes from its own thread) and reusable: each
    call has its own display and no state survives it.
    """
    report = report if report is not None else new_report()
    if enabled is False:
        yield report
        return
    if console is None and in_notebook():
        display = _NotebookDisplay(report, 1.0 / refresh_per_second)
        try:
            yield report
        finally:
            display.close()
        return
    console = console or Console(stderr=True)
    if enabled is None and not console.is_terminal:
        yield report
        return
    live = Live(
        get_renderable=lambda: _table(report),
        console=console,
        refresh_per_second=refresh_per_second,
        transient=False,
        redirect_stdout=True,
        redirect_stderr=True,
    )
    with live:
        yield report
