"""The DVC pipeline: `uv run dvc repro` in a temporary copy of the repository, offline.

The copy holds the files git tracks or would track (``git ls-files --cached --others
--exclude-standard``), in a fresh ``git init``; ``.dvc/`` comes with them (it is committed), so no
``dvc init`` is needed. The offline switch (``ingest.all.offline`` in params.yaml) and small limits
are set the way a user would, by editing params.yaml. ``uv run`` inside the copy reuses this test
run's environment (``UV_PROJECT_ENVIRONMENT`` = the running interpreter's prefix, no sync, no
network) with the copy's sources first on ``PYTHONPATH``, because resolving a fresh environment
would need the package index. One ``dvc repro`` (~35 s) serves every test in this module; the
fixture also keeps what it produced (records, feature tables) for the tests that run more steps.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from harvester.features.tess import TESS_COLUMNS
from harvester.features.ztf import ZTF_COLUMNS
from harvester.io.ledger import LEDGER_DIR, LEDGER_NAME, is_record_file

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("ztf", "tess", "mast")
LIMITS = {"ztf": 200, "tess": 3, "mast": 20}
FEATURES = ("ztf", "tess")


@dataclass(frozen=True)
class Repro:
    root: Path
    env: dict[str, str]
    output: str
    #: source -> its records as harvested by the first `dvc repro` (see :func:`_records`)
    records: dict[str, list[bytes]]
    #: source -> rows of data/processed/<source>/features.csv after the first `dvc repro`
    features: dict[str, list[list[str]]]


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _git() -> str:
    git = shutil.which("git")
    assert git, "git must be on PATH (the repository copy is listed and initialised with git)"
    return git


def _copy_repo(dest: Path) -> None:
    listed = subprocess.run(
        [_git(), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _env(root: Path) -> dict[str, str]:
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv must be on PATH (the pipeline's stages run `uv run harvester ...`)"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HARVESTER_")
        and k not in ("VIRTUAL_ENV", "ZTF_API_TOKEN", "TESS_API_TOKEN", "MAST_API_TOKEN")
    }
    env.update(
        PATH=f"{Path(uv).parent}{os.pathsep}{env.get('PATH', '')}",
        UV_PROJECT_ENVIRONMENT=sys.prefix,
        UV_NO_SYNC="1",
        UV_OFFLINE="1",
        PYTHONPATH=str(root),
        DVC_NO_ANALYTICS="1",
        DVC_SITE_CACHE_DIR=str(root.parent / "dvc-site-cache"),
        GIT_CONFIG_NOSYSTEM="1",
    )
    return env


@pytest.fixture(scope="module")
def repro(tmp_path_factory: pytest.TempPathFactory) -> Repro:
    """A copy of the repository after an offline `uv run dvc repro`."""
    root = tmp_path_factory.mktemp("dvc") / "repo"
    root.mkdir()
    _copy_repo(root)
    env = _env(root)
    _run([_git(), "init", "-q"], root, env)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["ingest"]["all"]["offline"] = True
    for source, limit in LIMITS.items():
        params["ingest"][source] = {"limit": limit}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = _run(["uv", "run", "dvc", "repro"], root, env)
    records = {source: _records(root / "data" / "raw" / source) for source in SOURCES}
    return Repro(root, env, output, records, {source: _features(root, source) for source in FEATURES})


def _record_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_record_file(p.name))


def _records(folder: Path) -> list[bytes]:
    """Every record of a raw folder (one per record file, or per jsonl line), without its
    ``fetched_at`` (the one field a second harvest of the same archive changes), sorted."""
    lines: list[bytes] = []
    for path in _record_files(folder):
        lines += [line for line in path.read_bytes().splitlines() if line.strip()]
    records = [{k: v for k, v in orjson.loads(line).items() if k != "fetched_at"} for line in lines]
    return sorted(orjson.dumps(record, option=orjson.OPT_SORT_KEYS) for record in records)


def _fetched_at(folder: Path) -> dict[str, datetime]:
    return {
        p.name: datetime.fromisoformat(orjson.loads(p.read_bytes())["fetched_at"])
        for p in folder.glob("record_*.json")
    }


def _features(root: Path, source: str) -> list[list[str]]:
    with (root / "data" / "processed" / source / "features.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def _ledger_listing(folder: Path) -> tuple[set[str], int]:
    """(file names, record count) the folder's ledger lists, read without writing anything."""
    path = folder / LEDGER_DIR / LEDGER_NAME
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        names = {str(row[0]) for row in conn.execute("SELECT name FROM files")}
        count = int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
    return names, count


def _assert_complete(repro: Repro, step: str) -> None:
    """Every raw folder holds the first repro's records, with a ledger that lists exactly its
    files (closed: no journal, -wal or -shm beside it), and both feature tables are whole."""
    for source in SOURCES:
        folder = repro.root / "data" / "raw" / source
        assert _records(folder) == repro.records[source], f"{step}: data/raw/{source} is not complete"
        beside = [n for n in os.listdir(folder / LEDGER_DIR) if n.startswith(f"{LEDGER_NAME}-")]
        assert not beside, f"{step}: {source} ledger left {beside} (a journal: not closed)"
        names, count = _ledger_listing(folder)
        assert names == {p.name for p in _record_files(folder)}, f"{step}: {source} ledger vs files"
        assert count == len(repro.records[source]), f"{step}: {source} ledger's record count"
    for source in FEATURES:
        assert _features(repro.root, source) == repro.features[source], f"{step}: {source} features.csv"


def _header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh))


def _rows(path: Path) -> int:
    return len(path.read_text().splitlines()) - 1


def test_repro_builds_both_feature_tables(repro: Repro) -> None:
    """Offline `dvc repro` writes ztf and tess features.csv with exactly the documented columns."""
    ztf = repro.root / "data" / "processed" / "ztf" / "features.csv"
    tess = repro.root / "data" / "processed" / "tess" / "features.csv"
    assert _header(ztf) == [c.name for c in ZTF_COLUMNS] and _rows(ztf) > 0
    assert _header(tess) == [c.name for c in TESS_COLUMNS] and _rows(tess) == LIMITS["tess"]


def test_offline_switch_reaches_every_ingest_stage(repro: Repro) -> None:
    """Each ingest stage filled data/raw/<source> with sample-archive records only, within its limit."""
    for source in SOURCES:
        records = list((repro.root / "data" / "raw" / source).glob("record_*.json"))
        assert 0 < len(records) <= LIMITS[source]
        assert all(orjson.loads(p.read_bytes())["provenance"]["sample"] for p in records)


def test_repro_draws_quicklook_plots(repro: Repro) -> None:
    """The plots stage leaves non-empty PNGs for both sources."""
    for source in ("ztf", "tess"):
        pngs = list((repro.root / "data" / "processed" / "plots" / source).glob("*.png"))
        assert pngs and all(p.stat().st_size > 1000 for p in pngs)


def test_second_repro_has_nothing_to_do(repro: Repro) -> None:
    """Right after `dvc repro`, `dvc status` reports the pipeline up to date."""
    assert "up to date" in _run(["uv", "run", "dvc", "status"], repro.root, repro.env)


def test_outputs_stay_out_of_git(repro: Repro) -> None:
    """Nothing under data/ shows up as untracked in git after the repro (DVC outs are ignored)."""
    status = _run([_git(), "status", "--porcelain", "--untracked-files=all"], repro.root, repro.env)
    assert not [
        line for line in status.splitlines() if line[3:].startswith("data/") and "gitkeep" not in line
    ]


def test_refresh_and_rebuild_leave_every_output_complete(repro: Repro) -> None:
    """Issue 15: `dvc repro`, then the documented refresh `dvc repro --force --single-item
    ingest_ztf` (DVC deletes data/raw/ztf, the harvest starts from an empty folder and must fetch
    everything again: it used to leave only the README), then `rm -rf data/raw && dvc repro` (DVC
    restores the outputs, ledgers included, from its cache). After each step every raw folder and
    both feature tables are complete, and the pipeline ends up to date."""
    root, env = repro.root, repro.env
    shutil.copy2(REPO / "dvc.yaml", root / "dvc.yaml")  # the pipeline as shipped, whatever ran before
    _assert_complete(repro, "dvc repro")
    ztf = root / "data" / "raw" / "ztf"
    before = _fetched_at(ztf)

    _run(["uv", "run", "dvc", "repro", "--force", "--single-item", "ingest_ztf"], root, env)
    _assert_complete(repro, "dvc repro --force --single-item ingest_ztf")
    after = _fetched_at(ztf)
    assert after.keys() == before.keys() and all(after[name] > before[name] for name in before), (
        "every ZTF record is harvested again, none kept from the deleted folder"
    )

    shutil.rmtree(root / "data" / "raw")
    _run(["uv", "run", "dvc", "repro"], root, env)
    _assert_complete(repro, "rm -rf data/raw && dvc repro")
    assert "up to date" in _run(["uv", "run", "dvc", "status"], root, env)


def _damaged_cache_objects(root: Path) -> list[str]:
    """Objects of the DVC cache whose content no longer has the md5 their path names."""
    bad = []
    for path in (root / ".dvc" / "cache" / "files" / "md5").glob("*/*"):
        name = path.parent.name + path.name.removesuffix(".dir")
        if hashlib.md5(path.read_bytes()).hexdigest() != name:  # noqa: S324 - DVC's own object names
            bad.append(str(path.relative_to(root)))
    return bad


def test_unprotect_keeps_a_linked_cache_intact(repro: Repro, tmp_path: Path) -> None:
    """docs/operations-dvc.md: with `cache.type: hardlink` (or symlink) a checked-out output's
    files, the ledger among them, are links to the cache; `dvc unprotect` before running harvester
    on it outside `dvc repro` gives the ledger a private copy, so its writes never reach the cache."""
    root = tmp_path / "repo"
    shutil.copytree(repro.root, root, symlinks=True)
    env = _env(root)
    ledger = root / "data" / "raw" / "ztf" / LEDGER_DIR / LEDGER_NAME
    _run(["uv", "run", "dvc", "config", "cache.type", "hardlink"], root, env)
    _run(["uv", "run", "dvc", "checkout", "--relink", "ingest_ztf"], root, env)
    assert ledger.stat().st_nlink == 2  # the ledger file is the cache object
    _run(["uv", "run", "dvc", "unprotect", "data/raw/ztf"], root, env)
    assert ledger.stat().st_nlink == 1
    args = [
        "--config",
        "config/base.yaml",
        "--output",
        "data/raw",
        "--offline",
        "--limit",
        str(LIMITS["ztf"]),
    ]
    _run(["uv", "run", "harvester", "run", "--source", "ztf", *args], root, env)
    assert _damaged_cache_objects(root) == []
    assert _records(ledger.parent.parent) == repro.records["ztf"]


def _stages() -> dict[str, Any]:
    stages: dict[str, Any] = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return stages


def test_ingest_stages_write_source_folders_and_track_settings() -> None:
    """Each ingest stage runs `harvester run --source X` into data/raw/X and tracks its config block."""
    stages = _stages()
    for source in SOURCES:
        stage = stages[f"ingest_{source}"]
        assert f"harvester run --source {source} " in stage["cmd"] and "--output data/raw" in stage["cmd"]
        assert stage["outs"] == [f"data/raw/{source}"]
        assert {"config/base.yaml": [f"data_sources.{source}", "format"]} in stage["params"]


def test_pipeline_defaults_to_the_real_archives() -> None:
    """params.yaml ships with the offline switch off: a plain `dvc repro` harvests the real archives."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["ingest"]["all"] == {"offline": False}


def _documented_unit_stages() -> dict[str, Any]:
    """The dvc.yaml stages that docs/operations-dvc.md tells users to add for a distributed harvest."""
    text = (REPO / "docs" / "operations-dvc.md").read_text()
    section = text.split("## Distributed harvests", 1)[1]
    block = section.split("```yaml", 1)[1].split("```", 1)[0]
    stages: dict[str, Any] = yaml.safe_load(block)["stages"]
    return stages


def test_documented_dask_stages_track_the_compacted_parquet(repro: Repro) -> None:
    """The documented unit + compact stages, added to dvc.yaml: `dvc repro compact_ztf` harvests in work
    units on a local cluster, compacts them, and DVC records the Parquet (one file) in dvc.lock."""
    import pyarrow.parquet as pq

    pipeline = yaml.safe_load((repro.root / "dvc.yaml").read_text())
    pipeline["stages"].update(_documented_unit_stages())
    (repro.root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    env = {**repro.env, "HARVESTER_DASK__WORKERS": "2"}
    _run(["uv", "run", "dvc", "repro", "compact_ztf"], repro.root, env)
    lock = yaml.safe_load((repro.root / "dvc.lock").read_text())["stages"]
    (out,) = lock["compact_ztf"]["outs"]
    assert out["path"] == "data/processed/ztf.parquet" and out["md5"]
    table = pq.read_table(repro.root / "data" / "processed" / "ztf.parquet")
    keys = set(zip(table["object_id"].to_pylist(), table["mjd"].to_pylist(), strict=True))
    assert table.num_rows == len(keys) > 0
    assert "up to date" in _run(["uv", "run", "dvc", "status", "compact_ztf"], repro.root, env)
