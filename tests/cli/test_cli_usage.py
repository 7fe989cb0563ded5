"""Usage errors and unusable outputs: one line on stderr, exit code 2, nothing fetched or written.

Also: ``--help`` stays readable at 80 columns, and ``--irsa-*`` flags given with a source other
than ztf are reported in one warning line instead of being ignored silently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from harvester import api
from harvester.cli import app
from harvester.testing import FakeArchive

runner = CliRunner()


@pytest.fixture
def archive(monkeypatch: pytest.MonkeyPatch) -> FakeArchive:
    """The sample archive behind ``--offline``, kept so a test can count the requests it answered."""
    fake = FakeArchive()
    monkeypatch.setattr(api, "offline_transport", lambda: httpx.ASGITransport(app=fake))
    return fake


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("harvester: error: "), stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["run", "--source", "foo"], ["--source", "'foo'", "ztf"]),
        (["run", "--limit", "0"], ["--limit", "greater than or equal to 1"]),
        (["run", "--irsa-ra", "abc"], ["--irsa-ra", "valid number"]),
        (["run", "--format", "csv"], ["--format", "'csv'"]),
        (["run", "--irsa-mjd-range", "59800"], ["--irsa-mjd-range", "2 arguments"]),
        (["run", "--bogus"], ["no such option", "--bogus"]),
        (["run", "--limit"], ["--limit", "requires an argument"]),
        (["bogus"], ["no such command", "'bogus'"]),
        (["daemon", "--metrics-port", "-1"], ["--metrics-port"]),
        (["status", "--runs", "0"], ["--runs"]),
        (["archive", "serve", "--port", "99999"], ["--port", "65535"]),
        (["features", "gaia"], ["'gaia'", "ztf"]),
        (["plot", "ztf", "--first", "0"], ["--first"]),
        (["compact"], ["missing argument", "source"]),
    ],
)
def test_every_usage_error_is_one_line_exit_2_and_nothing_fetched(
    project: Path, archive: FakeArchive, args: list[str], names: list[str]
) -> None:
    """A bad value, option or command of any command: one line naming the option and the cause."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    line = one_error_line(result.stderr)
    for name in names:
        assert name in line
    command = "harvester" if args[0] == "bogus" else f"harvester {args[0]}"
    assert f"(see: {command}" in line and line.endswith(" --help)")  # where the full usage is
    assert result.stdout == ""
    assert archive.requests == []
    assert not (project / "data").exists()


def test_usage_error_from_the_console_script_is_one_line(tmp_path: Path) -> None:
    """The real entry point (`python -m harvester`, as cron runs it): one line, no box, exit 2."""
    out = subprocess.run(
        [sys.executable, "-m", "harvester", "run", "--source", "foo"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "80"},
        timeout=60,
    )
    assert out.returncode == 2
    line = one_error_line(out.stderr)
    assert "--source" in line and "'foo'" in line
    assert "╭" not in out.stderr and out.stdout == ""


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["status", "--help"], ["daemon", "--help"]])
def test_help_reads_at_80_columns(tmp_path: Path, args: list[str]) -> None:
    """--help still prints the usage and every option, within 80 columns, and exits 0."""
    out = subprocess.run(
        [sys.executable, "-m", "harvester", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "80"},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout
    assert max(len(line) for line in out.stdout.splitlines()) <= 80
    assert "…" not in out.stdout


def test_help_keeps_bracketed_words() -> None:
    """Help texts reach the terminal whole (markup would eat a `[dask]`; help is plain text)."""
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "needs the dask extra" in " ".join(result.stdout.split())


def test_bare_group_still_prints_its_help() -> None:
    """`harvester archive` (no sub-command) shows the group's help, as before, with exit code 2."""
    result = runner.invoke(app, ["archive"])
    assert result.exit_code == 2
    assert "serve" in result.output


# --- unusable outputs -----------------------------------------------------------------------------


def unwritable_outputs(tmp_path: Path) -> list[tuple[str, str]]:
    """Outputs that cannot be written even by root (CI runs as root, where chmod stops nothing)."""
    (tmp_path / "afile").write_text("x")
    return [
        (str(tmp_path / "afile"), "exists and is not a folder"),
        (str(tmp_path / "afile" / "raw"), "afile is a file"),
        ("/proc/harvester-test/raw", "is not writable"),  # procfs: no folder can be created
        ("/sys/harvester-test/raw", "is not writable"),  # sysfs: permission denied, root or not
    ]


def test_unwritable_output_is_one_line_exit_2_and_nothing_fetched(
    project: Path, archive: FakeArchive
) -> None:
    """An output that is a file, under a file or on a read-only tree: one line naming the folder."""
    for output, cause in unwritable_outputs(project):
        result = runner.invoke(app, ["run", "--source", "ztf", "--offline", "--output", output])
        assert result.exit_code == 2, (output, result.output)
        line = one_error_line(result.stderr)
        assert f"output folder {output}" in line and cause in line, line
        assert result.stdout == ""
    assert archive.requests == []
    assert not (project / "data").exists()


def test_read_only_output_folder_is_refused_before_fetching(project: Path, archive: FakeArchive) -> None:
    """A folder without write permission (as a non-root user) or a writable one (root): never a
    run that fetches and then fails on every write."""
    folder = project / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = runner.invoke(
            app,
            ["run", "--source", "ztf", "--offline", "--output", str(folder / "raw"), "--log-format", "json"],
        )
        if os.access(folder, os.W_OK):  # root: the folder is writable after all, and the run works
            assert result.exit_code == 0, result.output
            assert len(archive.requests) > 0
        else:
            assert result.exit_code == 2
            line = one_error_line(result.stderr)
            assert f"output folder {folder / 'raw'} is not writable: permission denied" in line
            assert archive.requests == []
    finally:
        folder.chmod(0o755)


def test_writable_output_check_leaves_no_file(project: Path) -> None:
    """The write check creates the output folder and removes its probe file."""
    result = runner.invoke(
        app, ["run", "--source", "ztf", "--offline", "--limit", "1", "--log-format", "json"]
    )
    assert result.exit_code == 0, result.output
    out = project / "data" / "raw"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_dry_run_creates_no_output_folder(project: Path) -> None:
    """A dry run checks nothing that needs a write: the output folder is not created."""
    output = project / "new" / "raw"
    result = runner.invoke(
        app,
        ["run", "--source", "ztf", "--offline", "--dry-run", "--limit", "1", "--output", str(output)],
    )
    assert result.exit_code == 0, result.output
    assert not (project / "new").exists()


# --- --irsa-* with another source -----------------------------------------------------------------


def plain_lines(stderr: str) -> list[str]:
    """stderr without the JSON log lines."""
    return [line for line in stderr.splitlines() if line and not line.startswith("{")]


def test_irsa_flags_with_another_source_warn_in_one_line_and_run(project: Path) -> None:
    """`run --source tess --irsa-ra 10`: one warning naming the flag; the tess run still happens."""
    result = runner.invoke(
        app,
        [
            "run",
            *("--source", "tess", "--offline", "--dry-run", "--limit", "1"),
            *("--irsa-ra", "10", "--irsa-filter", "zg", "--log-format", "json"),
        ],
    )
    assert result.exit_code == 0, result.output
    (line,) = plain_lines(result.stderr)
    assert line.startswith("harvester: warning: --irsa-ra, --irsa-filter apply to ztf only")
    assert "--source tess" in line
    summary = json.loads(result.stdout)
    assert summary["sources"]["tess"]["records"] == 1
    assert "ztf" not in summary["sources"]


@pytest.mark.parametrize("source", ["ztf", "all"])
def test_irsa_flags_with_ztf_or_all_do_not_warn(project: Path, source: str) -> None:
    """With --source ztf or all the flags configure the ZTF part: no warning."""
    result = runner.invoke(
        app,
        [
            "run",
            *("--source", source, "--offline", "--dry-run", "--limit", "1"),
            *("--irsa-ra", "210.8023", "--irsa-dec", "54.3489", "--irsa-radius", "0.01"),
            *("--log-format", "json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert plain_lines(result.stderr) == []
    assert json.loads(result.stdout)["sources"]["ztf"]["targets"] == 1
