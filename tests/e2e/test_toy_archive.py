"""A fourth archive, registered through the public registry, runs end to end with no edit to
harvester: the CLI's choices, its settings block and token, its records, the fake archive's
routes, the ledger, the daemon, status and Dask work units all come from its registry entry.

The toy archive's files are tests/e2e/toy/ (settings.py, records.py, source.py, fake.py and the
``SPEC`` in ``__init__.py``); docs/adding-an-archive.md walks through the same files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from harvester import archives
from harvester.cli import app
from harvester.errors import ConfigError
from harvester.settings import load_settings
from harvester.testing import FakeArchive, running_server
from tests.e2e.toy import SPEC
from tests.e2e.toy.fake import epochs
from tests.e2e.toy.records import ToyRecord

STARS = [3, 4, 5, 8]  # 4 + n % 3 epochs each: 4 + 5 + 6 + 6
NOW = 60100.0
runner = CliRunner()


def expected(stars: list[int], now: float = NOW) -> set[tuple[str, float]]:
    return {(str(s), row["mjd"]) for s in stars for row in epochs(s, now)}


@pytest.fixture
def toy() -> Iterator[None]:
    archives.register(SPEC)
    try:
        yield
    finally:
        archives.unregister("toy")


@pytest.fixture
def fake(toy: None) -> Iterator[tuple[FakeArchive, str]]:
    archive = FakeArchive(now_mjd=NOW)  # made after registration: it answers the toy's routes
    with running_server(archive) as url:
        yield archive, url


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: tuple[FakeArchive, str]) -> Path:
    """A working directory whose config/base.yaml points the toy archive at the loopback fake."""
    _, url = fake
    config = {
        "output": "out",
        "state": {"path": "state/harvester.db"},
        "data_sources": {"toy": {"base_url": url, "stars": STARS}},
    }
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "base.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOY_API_TOKEN", "toy-sekrit")
    return tmp_path


def toy_records(folder: Path) -> list[ToyRecord]:
    return [ToyRecord.model_validate_json(p.read_bytes()) for p in sorted(folder.glob("record_*.json"))]


def run(*args: str) -> str:
    result = runner.invoke(app, [*args, "--log-format", "json"])
    assert result.exit_code == 0, result.output[-3000:]
    return result.stdout


def test_registering_an_archive_gives_it_settings_a_token_and_a_cli_choice(
    toy: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry entry alone makes `data_sources.toy`, TOY_API_TOKEN and `--source toy` valid."""
    assert "toy" in archives.names()
    monkeypatch.chdir(tmp_path)  # no config file here
    settings = load_settings(None, data_sources={"toy": {"stars": [1]}}, toy_api_token="t0k")
    assert settings.data_sources.toy.stars == [1]
    token = settings.token("toy")
    assert token is not None and token.get_secret_value() == "t0k" and "t0k" not in repr(settings)
    assert settings.token("ztf") is None  # another archive never gets the toy's token
    # `--source toy` is a valid choice; the toy source's own target check is what answers
    bad = runner.invoke(app, ["run", "--source", "toy", "--offline", "--dry-run"])
    assert bad.exit_code == 2
    assert bad.stderr.strip() == "harvester: error: toy: no stars configured (data_sources.toy.stars)"


def test_all_means_every_archive_that_names_a_target(toy: None, tmp_path: Path) -> None:
    """`--source all` leaves out a registered archive whose block names no target (the others run);
    with no archive configured at all it is a usage error."""
    from harvester import api

    config = tmp_path / "c.yaml"
    config.write_text("data_sources: {ztf: {irsa: {cone_search: {ra: 1, dec: 2, radius: 0.01}}}}\n")
    assert api.resolve_sources("all", load_settings(config)) == ["ztf"]
    configured = load_settings(config, data_sources={"toy": {"stars": [1]}})
    assert api.resolve_sources("all", configured) == ["ztf", "toy"]
    with pytest.raises(ConfigError, match="toy: no stars configured"):
        api.check_targets(api.resolve_sources("toy", load_settings(config)), load_settings(config))
    empty = tmp_path / "empty.yaml"
    empty.write_text("output: out\n")
    with pytest.raises(ConfigError, match="no archive names a target"):
        api.resolve_sources("all", load_settings(empty))


def test_run_dry_run_rerun_and_ledger(project: Path, fake: tuple[FakeArchive, str]) -> None:
    """run writes every epoch once; --dry-run writes nothing; a rerun asks only for newer data and
    writes nothing; a deleted record file is harvested again from the ledger's account."""
    archive, _ = fake
    summary = json.loads(run("run", "--source", "toy", "--dry-run"))
    assert summary["sources"]["toy"]["records"] == len(expected(STARS))
    assert not (project / "out").exists()

    run("run", "--source", "toy")
    folder = project / "out" / "toy"
    got = toy_records(folder)
    assert {(r.object_id, r.mjd) for r in got} == expected(STARS) and len(got) == len(expected(STARS))
    assert all(r.provenance.archive == "toy" and not r.provenance.sample for r in got)
    assert (folder / "README.md").is_file() and (folder / ".harvester" / "ledger.sqlite").is_file()
    # the token went to the toy's host only, and nowhere on disk
    assert not any(b"toy-sekrit" in p.read_bytes() for p in project.rglob("*") if p.is_file())

    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.glob("record_*.json")}
    archive.requests.clear()
    run("run", "--source", "toy")
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("record_*.json")} == mtimes
    sinces = [r.params.get("since") for r in archive.requests if r.path.endswith("/toy/lightcurve")]
    assert len(sinces) == len(STARS) and all(sinces)  # incremental: each star from its watermark

    victim = sorted(folder.glob("record_*.json"))[0]
    before = orjson.loads(victim.read_bytes())
    victim.unlink()
    run("run", "--source", "toy")
    after = orjson.loads(victim.read_bytes())
    assert {k: v for k, v in after.items() if k != "fetched_at"} == {
        k: v for k, v in before.items() if k != "fetched_at"
    }
    assert len(list(folder.glob("record_*.json"))) == len(expected(STARS))


def test_daemon_once_and_status(project: Path, fake: tuple[FakeArchive, str]) -> None:
    """`daemon --once` sweeps the toy archive like any other; `status` lists it."""
    archive, _ = fake
    run("daemon", "--source", "toy", "--once")
    assert len(toy_records(project / "out" / "toy")) == len(expected(STARS))
    archive.now_mjd = NOW + 10  # the archive gains epochs: the next sweep writes only those
    run("daemon", "--source", "toy", "--once")
    assert len(toy_records(project / "out" / "toy")) == len(expected(STARS, NOW + 10))
    status = runner.invoke(app, ["status"], env={"COLUMNS": "80"})
    assert status.exit_code == 0, status.output
    assert "toy" in status.stdout


def test_dask_run_in_work_units(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run --executor dask`: the toy's units (by id parity) run on worker processes that learn
    the archive from the pickled settings, and commit every epoch exactly once."""
    monkeypatch.setenv("HARVESTER_DASK__WORKERS", "2")
    run("run", "--source", "toy", "--executor", "dask")
    manifests = sorted((project / "out" / "_units" / "toy").rglob("*.json"))
    assert {m.parent.name for m in manifests} == {"parity-0", "parity-1"}
    lines = [
        orjson.loads(line)
        for f in (project / "out" / "toy").rglob("*.jsonl")
        for line in f.read_bytes().splitlines()
    ]
    keys = [(r["object_id"], r["mjd"]) for r in lines]
    assert len(keys) == len(set(keys)) and set(keys) == expected(STARS)
