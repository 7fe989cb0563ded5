"""Packaged defaults: outside a checkout (no config/base.yaml), the quick start and the README's
"From Python" examples work, from the sample targets shipped inside the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

import harvester
from harvester import archives
from harvester.archives.tess.records import TessRecord
from harvester.settings import load_settings, packaged_targets

REPO = Path(__file__).resolve().parents[1]


def test_packaged_targets_ship_inside_the_package() -> None:
    """The sample targets are package data (harvester/defaults/targets.yaml), not a checkout file."""
    assert resources.files("harvester").joinpath("defaults", "targets.yaml").is_file()
    assert packaged_targets()["ztf"]["irsa"]["cone_search"] == {
        "ra": 210.8023,
        "dec": 54.3489,
        "radius": 0.05,
    }


def test_packaged_targets_equal_the_repository_config(tmp_path: Path) -> None:
    """From an empty folder the queries are the ones config/base.yaml sets in a checkout, so the two
    files cannot drift apart."""
    empty = load_settings().data_sources
    repo = load_settings(REPO / "config" / "base.yaml").data_sources
    assert empty.ztf.irsa.model_dump() == repo.ztf.irsa.model_dump()
    assert empty.tess.query.model_dump() == repo.tess.query.model_dump()
    assert empty.mast.query.model_dump() == repo.mast.query.model_dump()


def test_run_all_offline_from_an_empty_folder(tmp_path: Path) -> None:
    """`python -m harvester run --source all --offline` in a folder with no config exits 0 and writes
    records for ztf, tess and mast (at 80 columns, as a small terminal has)."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")} | {"COLUMNS": "80"}
    result = subprocess.run(
        [sys.executable, "-m", "harvester", "run", "--source", "all", "--offline", "--output", str(out)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no targets" not in result.stderr
    counts = {source: len(list((out / source).glob("record_*.json"))) for source in archives.names()}
    assert all(counts.values()), counts
    assert sorted(p.name for p in cwd.iterdir()) == ["data"]  # only the state, nothing else leaked


async def test_readme_python_examples_from_an_empty_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's notebook lines, in a folder with no config/base.yaml."""
    monkeypatch.chdir(tmp_path)
    assert not (tmp_path / "config").exists()
    report = await harvester.harvest("ztf", offline=True, limit=50)
    assert report.sources["ztf"].written == 50
    records = [record async for record in harvester.stream("tess", offline=True, limit=3)]
    assert len(records) == 3
    for record in records:
        assert isinstance(record, TessRecord)
        assert record.object_id in {"261136679", "21132157", "278892590"} and len(record.flux) > 0


def test_dry_run_from_an_empty_folder_names_the_sample_query(tmp_path: Path) -> None:
    """The sample query is visible: the dry-run sample record's URL carries the packaged cone, bands
    and MJD range."""
    from typer.testing import CliRunner

    from harvester.cli import app

    result = CliRunner().invoke(
        app, ["run", "--source", "ztf", "--offline", "--dry-run", "--limit", "1", "--log-format", "json"]
    )
    assert result.exit_code == 0, result.output
    url = json.loads(result.stdout)["sources"]["ztf"]["sample_record"]["provenance"]["url"]
    assert "POS=CIRCLE+210.8023+54.3489+0.05&BANDNAME=g%2Cr&TIME=59800.0+59850.0" in url
