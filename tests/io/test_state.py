"""State and incremental sweeps: the output's ledger (cross-run dedup, watermarks), the machine's
state store (runs, outcomes), order of effects, manifests."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

import harvester
from harvester.io.state import StateStore
from harvester.testing import FakeArchive

CONE = {"ra": 210.8023, "dec": 54.3489, "radius": 0.05}


def ztf(**irsa: Any) -> dict[str, Any]:
    return {
        "data_sources": {
            "ztf": {
                "irsa": {"cone_search": CONE, "filters": [], **irsa},
                "rate_limit": {"requests_per_second": 500, "max_concurrency": 4},
            }
        }
    }


def files(out: Path, source: str = "ztf") -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / source).glob("record_*.json"))}


def committed(folder: Path) -> set[str]:
    """The keys the output folder's ledger lists."""
    with contextlib.closing(sqlite3.connect(folder / ".harvester" / "ledger.sqlite")) as conn:
        return {row[0] for row in conn.execute("SELECT key FROM records")}


def watermarks(folder: Path) -> list[tuple[str, float]]:
    """(target, watermark) pairs the output folder's ledger holds."""
    with contextlib.closing(sqlite3.connect(folder / ".harvester" / "ledger.sqlite")) as conn:
        rows = conn.execute("SELECT label, watermark FROM targets WHERE watermark IS NOT NULL")
        return [(str(label), float(value)) for label, value in rows]


def irsa_times(archive: FakeArchive) -> list[str]:
    return [e.params.get("TIME", [""])[0] for e in archive.requests if e.path.endswith("nph_light_curves")]


async def test_second_sweep_fetches_only_the_new_part(tmp_path: Path) -> None:
    """After the archive gains epochs, the next sweep asks for TIME after the watermark, writes only those."""
    archive = FakeArchive(now_mjd=60000.0)
    transport = httpx.ASGITransport(app=archive)
    first = await harvester.harvest("ztf", transport=transport, output=tmp_path, **ztf())
    n1 = first.sources["ztf"].written
    assert n1 > 0 and irsa_times(archive) == [""]  # first sweep: no TIME constraint
    high = max(json.loads(b)["mjd"] for b in files(tmp_path).values())
    archive.now_mjd = 60300.0
    second = await harvester.harvest("ztf", transport=transport, output=tmp_path, **ztf())
    lower = float(irsa_times(archive)[1].split()[0])
    assert lower == pytest.approx(high - 1.0)  # watermark minus the default one-day overlap
    new = second.sources["ztf"]
    assert new.written > 0
    assert len(files(tmp_path)) == n1 + new.written
    fetched = [r for r in (json.loads(b) for b in files(tmp_path).values()) if r["mjd"] > high]
    assert len(fetched) == new.written  # everything new is after the watermark
    assert all(r["mjd"] >= high - 1.0 for r in fetched)


async def test_full_ignores_watermarks_but_writes_no_duplicate(tmp_path: Path) -> None:
    """--full asks for everything again, and nothing already harvested is written twice."""
    archive = FakeArchive()
    transport = httpx.ASGITransport(app=archive)
    await harvester.harvest("ztf", transport=transport, output=tmp_path, **ztf())
    before = files(tmp_path)
    report = await harvester.harvest("ztf", transport=transport, output=tmp_path, full=True, **ztf())
    assert irsa_times(archive) == ["", ""]
    assert report.sources["ztf"].written == 0 and report.sources["ztf"].already_present == len(before)
    assert files(tmp_path) == before


async def test_every_committed_key_has_its_file(tmp_path: Path) -> None:
    """Keys in the output's ledger are exactly the records on disk after a run."""
    transport = httpx.ASGITransport(app=FakeArchive())
    await harvester.harvest("ztf", transport=transport, output=tmp_path, **ztf())
    keys = committed(tmp_path / "ztf")
    names = {n.removeprefix("record_").removesuffix(".json") for n in files(tmp_path)}
    assert {k.replace("\x1f", "_") for k in keys} == names


async def test_lost_machine_state_changes_nothing_in_the_output(tmp_path: Path) -> None:
    """The machine's state database deleted: presence lives in the output, so a rerun rewrites nothing."""
    transport = httpx.ASGITransport(app=FakeArchive())
    await harvester.harvest("ztf", transport=transport, output=tmp_path, **ztf())
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ztf").glob("record_*.json")}
    for path in (tmp_path / "data/state").iterdir():
        path.unlink()
    report = await harvester.harvest("ztf", transport=transport, output=tmp_path, **ztf())
    assert report.sources["ztf"].written == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ztf").glob("record_*.json")} == before


async def test_lost_ledger_is_rebuilt_from_the_files_without_rewriting(tmp_path: Path) -> None:
    """Ledger deleted (or a kill between rename and commit): a rerun adopts the files, rewrites nothing."""
    transport = httpx.ASGITransport(app=FakeArchive())
    await harvester.harvest("ztf", transport=transport, output=tmp_path, **ztf())
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ztf").glob("record_*.json")}
    shutil.rmtree(tmp_path / "ztf" / ".harvester")
    report = await harvester.harvest("ztf", transport=transport, output=tmp_path, **ztf())
    assert report.sources["ztf"].written == 0
    assert report.sources["ztf"].adopted == len(before)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ztf").glob("record_*.json")} == before
    assert len(committed(tmp_path / "ztf")) == len(before)


async def test_failed_target_keeps_its_watermark_and_is_retried(tmp_path: Path) -> None:
    """A target that failed does not advance its watermark, and its outcome is recorded as failed."""
    calls = {"n": 0}
    archive = FakeArchive()
    inner = httpx.ASGITransport(app=archive)

    async def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(200, text="<html><title>Oops</title></html>")
        return await inner.handle_async_request(request)

    overrides = ztf()
    overrides["data_sources"]["ztf"]["retries"] = {"attempts": 0}
    bad = await harvester.harvest("ztf", transport=httpx.MockTransport(handler), output=tmp_path, **overrides)
    assert bad.sources["ztf"].status == "failed"
    assert watermarks(tmp_path / "ztf") == []
    async with StateStore(tmp_path / "data/state/harvester.db") as store:
        failing = await store.failing_targets()
    assert [f["reason"] for f in failing] == ["IRSA answered an HTML page instead of CSV: 'Oops'"]
    good = await harvester.harvest(
        "ztf", transport=httpx.MockTransport(handler), output=tmp_path, **overrides
    )
    assert good.ok and good.sources["ztf"].written > 0
    async with StateStore(tmp_path / "data/state/harvester.db") as store:
        assert await store.failing_targets() == []
    assert len(watermarks(tmp_path / "ztf")) == 1


async def test_limit_does_not_advance_watermarks(tmp_path: Path) -> None:
    """When --limit dropped records, the watermark stays put so the next sweep gets them."""
    transport = httpx.ASGITransport(app=FakeArchive())
    report = await harvester.harvest("ztf", transport=transport, output=tmp_path, limit=3, **ztf())
    assert report.sources["ztf"].limit_reached
    assert watermarks(tmp_path / "ztf") == []


async def test_mast_watermark_becomes_a_t_min_filter(tmp_path: Path) -> None:
    """The second MAST sweep asks Mast.Caom.Filtered.Position for t_min after the last harvested t_min."""
    archive = FakeArchive(executing_polls=0)
    transport = httpx.ASGITransport(app=archive)
    overrides: dict[str, Any] = {
        "data_sources": {"mast": {"query": {"cone_search": {"ra": 10.0, "dec": 20.0, "radius": 0.15}}}}
    }
    await harvester.harvest("mast", transport=transport, output=tmp_path, **overrides)
    high = max(json.loads(p.read_bytes())["mjd"] or 0 for p in (tmp_path / "mast").glob("record_*.json"))
    await harvester.harvest("mast", transport=transport, output=tmp_path, **overrides)
    invokes = [e.params for e in archive.requests if e.path.endswith("/invoke")]
    assert invokes[0]["service"] == "Mast.Caom.Cone"
    last = invokes[-1]
    assert last["service"] == "Mast.Caom.Filtered.Position"
    (t_min,) = [f for f in last["params"]["filters"] if f["paramName"] == "t_min"]
    assert t_min["values"][0]["min"] == pytest.approx(high - 1.0)


async def test_manifest_records_counts_and_hashes_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each run writes a manifest with per-source counts and the sha256 of every file written, no token."""
    monkeypatch.setenv("ZTF_API_TOKEN", "ztf-sekrit-999")
    transport = httpx.ASGITransport(app=FakeArchive())
    report = await harvester.harvest("ztf", transport=transport, output=tmp_path, **ztf())
    path = tmp_path / "_manifests" / f"run-{report.run_id}.json"
    text = path.read_text()
    assert "ztf-sekrit-999" not in text
    manifest = json.loads(text)
    listed = manifest["files"]["ztf"]
    assert manifest["sources"]["ztf"]["written"] == listed["files_written"] == len(files(tmp_path))
    import hashlib

    for entry in listed["files"]:
        assert hashlib.sha256((tmp_path / "ztf" / entry["name"]).read_bytes()).hexdigest() == entry["sha256"]
    assert len(manifest["settings_sha256"]) == 64


async def test_dry_run_leaves_no_state(tmp_path: Path) -> None:
    """A dry run creates no state database and commits nothing."""
    transport = httpx.ASGITransport(app=FakeArchive())
    await harvester.harvest("ztf", transport=transport, output=tmp_path, dry_run=True, **ztf())
    assert not (tmp_path / "data/state").exists()


def readme_query(folder: Path) -> dict[str, Any]:
    """The query block of a source folder's README (the first JSON block after 'Query:')."""
    text = (folder / "README.md").read_text()
    block = text.split("Query:", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    return dict(json.loads(block))


async def test_readme_states_the_targets_and_the_window_actually_asked(tmp_path: Path) -> None:
    """The folder's README names the cone and the MJD window the last run really requested: the
    configured range first, the incremental one (watermark minus overlap) on the next sweep."""
    archive = FakeArchive(now_mjd=60000.0)
    transport = httpx.ASGITransport(app=archive)
    overrides = ztf(mjd_range=[58000.0, 61000.0])
    await harvester.harvest("ztf", transport=transport, output=tmp_path, **overrides)
    first = readme_query(tmp_path / "ztf")["targets"]
    assert first["count"] == 1
    (asked,) = first["asked"]
    assert asked == {
        "target": "210.80230+54.34890",
        "mjd_from": 58000.0,
        "mjd_to": 61000.0,
        "incremental": False,
    }
    high = max(json.loads(b)["mjd"] for b in files(tmp_path).values())
    await harvester.harvest("ztf", transport=transport, output=tmp_path, **overrides)
    (again,) = readme_query(tmp_path / "ztf")["targets"]["asked"]
    assert again["incremental"] and again["mjd_from"] == pytest.approx(high - 1.0)
    assert readme_query(tmp_path / "ztf")["mjd_range"] == [58000.0, 61000.0]  # the configured one too
