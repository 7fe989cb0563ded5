"""The run summary and `harvester status` read well at 80 columns: no header cut to `sou…`, no
number wrapped, whole run ids and times, and each watermark names the output it belongs to."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from harvester.cli import app
from harvester.display.terminal import (
    WatermarkRow,
    print_status,
    print_summary,
    report_table,
    watermarks_table,
)
from harvester.run.report import RunReport, SourceReport, TargetFailure

RUN_ID = "20250131T235959-abcdef"
SUMMARY_LABELS = (
    *("status", "targets", "requests", "retries", "received", "records", "written"),
    *("already present", "duplicates", "errors"),
)


def render(draw: Any, width: int) -> str:
    """What ``draw(console)`` prints on a terminal of ``width`` columns, as plain text."""
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    draw(console)
    return console.export_text()


def assert_fits(text: str, width: int = 80) -> None:
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width, text
    assert "…" not in text, text


def big_report() -> RunReport:
    """Three sources with large counts and the longest statuses."""
    started = datetime(2025, 1, 31, 23, 59, 59, tzinfo=UTC)
    report = RunReport(run_id=RUN_ID, started_at=started, finished_at=started + timedelta(minutes=5))
    for name, status in (("ztf", "partial"), ("tess", "cancelled"), ("mast", "failed")):
        report.sources[name] = SourceReport(
            source=name,
            status=status,  # type: ignore[arg-type]
            targets=12_345,
            targets_ok=12_000,
            requests=1_234_567,
            retries=12_345,
            bytes_received=987_654_321_000,
            records=123_456_789,
            written=123_456_000,
            already_present=789,
            duplicates=12_345,
            errors=[
                TargetFailure(target=f"cone {i}", cause="HTTP 503 after 5 attempts", transient=True)
                for i in range(3)
            ],
        )
    return report


def test_summary_at_80_columns_keeps_every_header_and_number_whole() -> None:
    """At 80 columns the summary turns to one column per source: every label and value whole."""
    text = render(lambda console: print_summary(big_report(), console), 80)
    assert_fits(text)
    assert f"run {RUN_ID}" in text
    for label in SUMMARY_LABELS:
        assert label in text
    for value in ("987.7 GB", "123456789", "1234567", "12003/12345", "cancelled", "failed", "partial"):
        assert value in text


def test_summary_on_a_wide_terminal_is_one_row_per_source() -> None:
    """With room for it, each source is one row of the table (as before), nothing cut."""
    text = render(lambda console: console.print(report_table(big_report(), title="run")), 160)
    assert_fits(text, 160)
    rows = [line for line in text.splitlines() if line.startswith("│ ")]
    assert [row.split()[1] for row in rows] == ["ztf", "tess", "mast"]
    assert "987.7 GB" in rows[0]


def test_live_progress_table_fits_80_columns_while_running() -> None:
    """The live table (no finished_at yet: every source 'running') fits too."""
    report = big_report()
    report.finished_at = None
    text = render(lambda console: console.print(report_table(report, title="harvesting")), 80)
    assert_fits(text)
    assert text.count("running") == 3


def status_info(outputs: list[str]) -> dict[str, Any]:
    runs = [
        {
            "run_id": f"20250131T2359{i:02d}-abcde{i}",
            "started_at": f"2025-01-31T23:59:{i:02d}+00:00",
            "finished_at": None if status == "running" else f"2025-02-01T01:00:{i:02d}+00:00",
            "status": status,
            "report": {"totals": {"written": 123_456_789, "errors": 12_345}},
        }
        for i, status in enumerate(("ok", "failed", "cancelled", "interrupted", "running"))
    ]
    at = datetime(2025, 2, 1, 1, 0, tzinfo=UTC).timestamp()
    return {
        "state": "/var/lib/harvester/state/harvester.db",
        "runs": runs,
        "outputs": [
            {"source": "ztf", "folder": f"{output}/ztf", "ledger": "…", "records": 86, "files": 86}
            for output in outputs
        ],
        "watermarks": [
            {"source": "ztf", "output": output, "target": f"cone {k}", "value": 59848.44946, "at": at}
            for output in outputs
            for k in range(2)
        ],
        "failing_targets": [{"source": "ztf", "target": "210.80230+54.34890", "reason": "HTTP 503 " * 12}],
    }


def test_status_at_80_columns_shows_whole_run_ids_times_and_each_watermarks_output() -> None:
    """`status` at 80 columns: run ids and start times whole, watermarks under their output."""
    outputs = ["/srv/harvester/data/raw", "/mnt/big/archive/ztf-2025"]
    info = status_info(outputs)
    text = render(lambda console: print_status(info, console), 80)
    assert_fits(text)
    for run in info["runs"]:
        assert run["run_id"] in text
    assert "2025-01-31 23:59" in text and "1h01m" in text and "interrupted" in text
    for output in outputs:
        assert f"ztf → {output}" in text  # the output each watermark belongs to
    assert text.count("59848.44946") == 4


def test_status_folds_long_paths_instead_of_cutting_them() -> None:
    """A very long output path wraps onto more lines; nothing is replaced by an ellipsis."""
    long = "/very/long/" + "nested-folder/" * 8 + "raw"
    text = render(lambda console: print_status(status_info([long]), console), 80)
    assert_fits(text)
    assert f"ztf→{long}" in "".join(text.split())  # the watermarks' output line, folded


def test_watermarks_render_from_plain_rows() -> None:
    """The watermark table takes plain rows (source, output, target, value, at), whatever stores them."""
    rows = [
        WatermarkRow("tess", "data/raw", "TIC 261136679", 1325.5, 0.0),
        WatermarkRow("ztf@sample", "/tmp/out", "c0", 59848.44946, 1_738_371_600.0),
    ]
    text = render(lambda console: console.print(watermarks_table(rows)), 80)
    assert_fits(text)
    assert "ztf@sample → /tmp/out" in text and "tess → data/raw" in text
    assert "TIC 261136679" in text and "2025-02-01 01:00" in text


def test_status_command_after_an_offline_run_fits_80_columns(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: `run --offline` then `status` with COLUMNS=80."""
    monkeypatch.setenv("COLUMNS", "80")
    runner = CliRunner()
    ran = runner.invoke(app, ["run", "--source", "ztf", "--offline", "--log-format", "json"])
    assert ran.exit_code == 0, ran.output
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert_fits(result.stdout)
    run_id = next(line for line in ran.stderr.splitlines() if "run_started" in line).split('"run_id":"')[1][
        :22
    ]
    assert run_id in result.stdout
    # where each thing lives: the machine's state database, and the output folder's own ledger
    flat = " ".join(result.stdout.split())
    assert "machine state (runs, outcomes): data/state/harvester.db" in flat
    assert "data/raw/ztf" in flat and "ledger" in flat
