"""The harvester command: offline runs, reruns, dry-run JSON, one-line errors with exit code 2."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harvester._version import __version__ as harvester_version
from harvester.archives.ztf.records import ZtfRecord
from harvester.cli import app, cli_overrides

runner = CliRunner()


def records(folder: Path) -> list[Path]:
    return sorted(folder.glob("record_*.json"))


def test_offline_limit_50_writes_50_valid_records_and_a_readme(project: Path) -> None:
    """`run --source ztf --offline --limit 50` writes 50 valid files and a README; a rerun writes none."""
    result = runner.invoke(
        app, ["run", "--source", "ztf", "--offline", "--limit", "50", "--log-format", "json"]
    )
    assert result.exit_code == 0, result.output
    files = records(project / "data/raw/ztf")
    assert len(files) == 50
    for path in files:
        record = ZtfRecord.model_validate_json(path.read_bytes())
        assert record.provenance.sample
    assert (project / "data/raw/ztf/README.md").is_file()
    mtimes = [p.stat().st_mtime_ns for p in files]
    again = runner.invoke(
        app, ["run", "--source", "ztf", "--offline", "--limit", "50", "--log-format", "json"]
    )
    assert again.exit_code == 0
    assert [p.stat().st_mtime_ns for p in records(project / "data/raw/ztf")] == mtimes


def test_dry_run_prints_json_summary_and_writes_nothing(project: Path) -> None:
    """--dry-run prints one JSON summary (requests, records, duplicates, errors, a sample), writes nothing."""
    result = runner.invoke(
        app, ["run", "--source", "ztf", "--offline", "--dry-run", "--limit", "5", "--log-format", "json"]
    )
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    ztf = summary["sources"]["ztf"]
    assert summary["dry_run"] is True and ztf["records"] == 5 and ztf["written"] == 0
    assert {"requests", "duplicates", "errors"} <= ztf.keys()
    assert ztf["sample_record"]["source"] == "ztf"
    assert not (project / "data").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--irsa-radius", "0.5"], "invalid setting data_sources.ztf.irsa.cone_search.radius"),
        (["--irsa-dec", "-91"], "invalid setting data_sources.ztf.irsa.cone_search.dec"),
        (["--irsa-filter", "g"], "invalid setting data_sources.ztf.irsa.filters.0"),
        (["--irsa-mjd-range", "59850", "59800"], "invalid setting data_sources.ztf.irsa.mjd_range"),
        (["--config", "missing.yaml"], "config file not found: missing.yaml"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(project: Path, args: list[str], message: str) -> None:
    """Bad flags or a missing config give exactly one error line, exit code 2 and no output folder."""
    result = runner.invoke(app, ["run", "--source", "ztf", "--offline", *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harvester: error: ") and message in lines[0]
    assert not (project / "data").exists()


def test_irsa_ids_replace_the_configured_targets() -> None:
    irsa = cli_overrides(irsa_id=[686103400067717, 686103400067718])["data_sources"]["ztf"]["irsa"]
    assert irsa == {
        "cone_search": None,
        "targets": [],
        "targets_file": None,
        "object_ids": [686103400067717, 686103400067718],
        "object_ids_file": None,
    }


def test_irsa_overrides_reach_ztf_only() -> None:
    """--irsa-* flags become data_sources.ztf.irsa settings only; the cone replaces any targets list
    (and object ids)."""
    overrides = cli_overrides(irsa_ra=1.0, irsa_dec=2.0, irsa_filter=["zr"], irsa_mjd_range=(1.0, 2.0))
    assert overrides == {
        "data_sources": {
            "ztf": {
                "irsa": {
                    "cone_search": {"ra": 1.0, "dec": 2.0},
                    "targets": [],
                    "targets_file": None,
                    "object_ids": [],
                    "object_ids_file": None,
                    "filters": ["zr"],
                    "mjd_range": [1.0, 2.0],
                }
            }
        }
    }


def test_failed_source_exits_1(project: Path) -> None:
    """A source whose archive answers 404 fails the run with exit code 1."""
    (project / "bad.yaml").write_text(
        "data_sources:\n  ztf:\n    irsa:\n      base_url: http://127.0.0.1:9/nowhere\n"
        "      cone_search: {ra: 1, dec: 2, radius: 0.01}\n    retries: {attempts: 0}\n"
        "    timeout: {connect: 0.5, read: 0.5, total: 2}\n"
    )
    result = runner.invoke(app, ["run", "--source", "ztf", "--config", "bad.yaml", "--log-format", "json"])
    assert result.exit_code == 1


def test_python_dash_m_works(project: Path) -> None:
    """`python -m harvester --help` lists the run command."""
    out = subprocess.run(
        [sys.executable, "-m", "harvester", "--help"], capture_output=True, text=True, check=True, cwd=project
    )
    assert "run" in out.stdout


def test_irsa_cone_replaces_the_configured_targets(project: Path) -> None:
    """With targets in the config, --irsa-ra/dec/radius harvest that one cone only."""
    (project / "t.yaml").write_text(
        "data_sources:\n  ztf:\n    irsa:\n      targets:\n"
        "        - {ra: 10, dec: 20, radius: 0.01}\n        - {ra: 11, dec: 20, radius: 0.01}\n"
    )
    result = runner.invoke(
        app,
        [
            "run",
            "--source",
            "ztf",
            "--offline",
            "--dry-run",
            "--config",
            "t.yaml",
            "--irsa-ra",
            "210.8",
            "--irsa-dec",
            "54.35",
            "--irsa-radius",
            "0.02",
            "--log-format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["sources"]["ztf"]["targets"] == 1


def test_version_flag() -> None:
    """`harvester --version` prints the package version."""
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"harvester {harvester_version}"


def test_tess_offline_limit_5_writes_5_light_curves(project: Path) -> None:
    """`run --source tess --offline --limit 5` writes five light-curve records with equal-length arrays."""
    result = runner.invoke(
        app, ["run", "--source", "tess", "--offline", "--limit", "5", "--log-format", "json"]
    )
    assert result.exit_code == 0, result.stderr
    files = records(project / "data/raw/tess")
    assert len(files) == 5
    for path in files:
        record = json.loads(path.read_bytes())
        assert (
            record["time_system"] == "BTJD"
            and len(record["time"]) == len(record["flux"]) == record["n_points"]
        )


def test_status_says_where_each_thing_lives(tmp_path: Path) -> None:
    """`status --json`: runs from the machine's state database; records and watermarks from the
    ledger of every output folder a recent run wrote, even one given with --output; with the
    state database gone, the outputs are still there to report."""
    elsewhere = tmp_path / "elsewhere"
    ran = runner.invoke(app, ["run", "--source", "ztf", "--offline", "--output", str(elsewhere)])
    assert ran.exit_code == 0, ran.output
    info = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert info["state"] == "data/state/harvester.db" and len(info["runs"]) == 1
    (out,) = info["outputs"]
    assert out["folder"] == str(elsewhere / "ztf") and out["records"] == 86
    assert out["ledger"] == str(elsewhere / "ztf" / ".harvester" / "ledger.sqlite")
    assert info["watermarks"] and {w["output"] for w in info["watermarks"]} == {str(elsewhere / "ztf")}
    shutil.rmtree(tmp_path / "data" / "state")
    runner.invoke(app, ["run", "--source", "ztf", "--offline"])  # the configured output, new state
    shutil.rmtree(tmp_path / "data" / "state")
    info = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert info["state"] is None and info["runs"] == []
    assert [o["folder"] for o in info["outputs"]] == ["data/raw/ztf"]


def test_status_lists_work_unit_watermarks_kept_in_the_state_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A work-unit run's watermarks live in the machine's state database (namespace
    ``ztf@sample|units:<output>``), a plain folder run's in the folder's ledger: `status --json`
    lists both, each under its source and output and saying where it is kept; the outputs list
    names the unit output with its count of watermarks. Older ``<source>|<folder>`` namespaces
    (from before ledgers) are left out. At 80 columns every line fits."""
    from harvester.executors.driver import harvest_units
    from harvester.settings import load_settings

    state = tmp_path / "state" / "harvester.db"
    monkeypatch.setenv("HARVESTER_STATE__PATH", str(state))
    plain = runner.invoke(app, ["run", "--source", "ztf", "--offline", "--output", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    units_out = tmp_path / "a-rather-long-folder-name-for-work-units" / "nested" / "output"
    settings = load_settings(None, output=units_out, offline=True, state={"path": str(state)})
    report = harvest_units(["ztf"], settings)
    assert report.ok and report.sources["ztf"].written > 0
    with sqlite3.connect(state) as db:  # a namespace from before ledgers: obsolete, not shown
        db.execute("INSERT INTO watermarks VALUES ('ztf|/old/folder', 'k', 'old target', 59000.0, 'r0', 0.0)")

    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert {"state", "runs", "outputs", "watermarks", "failing_targets"} <= info.keys()
    assert info["state"] == str(state) and len(info["runs"]) == 2
    in_state = [w for w in info["watermarks"] if w["kept_in"] == "state database"]
    in_ledger = [w for w in info["watermarks"] if w["kept_in"] == "ledger"]
    assert in_state and in_ledger and len(in_state) + len(in_ledger) == len(info["watermarks"])
    assert {(w["source"], w["output"], w["sample"]) for w in in_state} == {("ztf", str(units_out), True)}
    assert {(w["source"], w["output"]) for w in in_ledger} == {("ztf", str(tmp_path / "plain" / "ztf"))}
    with sqlite3.connect(state) as db:
        old = db.execute("SELECT COUNT(*) FROM watermarks WHERE source = 'ztf|/old/folder'").fetchone()
    assert old == (1,)  # still in the database, yet not listed
    assert "old target" not in {w["target"] for w in info["watermarks"]}
    folder, unit = info["outputs"]
    assert folder["kept_in"] == "ledger"
    assert folder["folder"] == folder["output"] == str(tmp_path / "plain" / "ztf")
    assert folder["records"] == 86 and folder["watermarks"] == len(in_ledger)
    assert unit == {
        "source": "ztf",
        "output": str(units_out),
        "kept_in": "state database",
        "watermarks": len(in_state),
    }

    monkeypatch.setenv("COLUMNS", "80")
    table = runner.invoke(app, ["status"])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, table.stdout
    assert "…" not in table.stdout
    above, in_state_db = table.stdout.split("work-unit watermarks in the state database")
    _, in_ledgers = above.split("watermarks in output ledgers")
    flat = "".join(in_ledgers.split())  # long outputs fold onto more lines
    assert f"ztf@sample→{tmp_path / 'plain' / 'ztf'}" in flat and str(units_out) not in flat
    assert f"ztf@sample→{units_out}" in "".join(in_state_db.split())
    flat = "".join(table.stdout.split())
    assert "work-unitoutputs(watermarks):inthemachinestatedatabase" in flat
    assert "oldtarget" not in flat and "/old/folder" not in flat
