"""``harvester status``: where each thing lives, and what it says."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import orjson
import typer

from harvester import archives
from harvester.errors import ConfigError, HarvesterError

if TYPE_CHECKING:
    from harvester.io.state import Watermark
    from harvester.settings import Settings

from harvester.cli.app import _fail, app


@app.command(short_help="Recent runs, failing targets, records and watermarks.")
def status(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    runs: Annotated[int, typer.Option("--runs", min=1, help="How many recent runs to show.")] = 5,
) -> None:
    """Where everything lives, and what it says: recent runs and failing targets (the machine's
    state database), records and watermarks of each output folder (its own ledger), watermarks
    of work-unit outputs (an object store, or ``--executor dask``: the machine's state database)."""
    from harvester.display.terminal import KEPT_IN_LEDGER, print_status, watermark_rows
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
    from harvester.display.terminal import KEPT_IN_STATE

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
