"""The output owns its truth: each source folder's ledger, checked against the disk every run.

Every damage below ends with the output identical to a clean run, and the report says what was
found; nothing is silent.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

import harvester
from harvester.run.report import RunReport
from harvester.testing import FakeArchive

CONES = [
    {"ra": 210.8023, "dec": 54.3489, "radius": 0.05},
    {"ra": 10.0, "dec": 20.0, "radius": 0.05},
]


def ztf(fmt: str = "json", **extra: Any) -> dict[str, Any]:
    return {
        "format": fmt,
        "jsonl_shard_records": 200,
        "data_sources": {
            "ztf": {
                "irsa": {"targets": CONES, "filters": []},
                "rate_limit": {"requests_per_second": 500, "max_concurrency": 4},
            }
        },
        **extra,
    }


def content(folder: Path) -> dict[str, dict[str, Any]]:
    """Every record of a source folder by dedup key (object_id, mjd), whatever the layout, without
    fetched_at (the one field that differs between runs). Fails on a record present twice."""
    found: dict[str, dict[str, Any]] = {}
    lines: list[bytes] = []
    for path in sorted(folder.glob("record_*.json")):
        lines.append(path.read_bytes())
    for path in sorted(folder.glob("part-*.jsonl")):
        lines.extend(line for line in path.read_bytes().splitlines() if line.strip())
    for line in lines:
        data = json.loads(line)
        data.pop("fetched_at")
        key = f"{data['object_id']}|{data['mjd']!r}"
        assert key not in found, f"record {key} is in the output twice"
        found[key] = data
    return found


def ledger_keys(folder: Path) -> int:
    with contextlib.closing(sqlite3.connect(folder / ".harvester" / "ledger.sqlite")) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])


def times(archive: FakeArchive) -> list[tuple[str, str]]:
    """(POS, TIME) of every IRSA request, in order."""
    return [
        (e.params.get("POS", [""])[0], e.params.get("TIME", [""])[0])
        for e in archive.requests
        if e.path.endswith("nph_light_curves")
    ]


class Harness:
    """One fake archive; harvest into any folder; the clean run's content to compare with."""

    def __init__(self, tmp: Path, fmt: str = "json") -> None:
        self.archive = FakeArchive()
        self.transport = httpx.ASGITransport(app=self.archive)
        self.fmt = fmt
        self.tmp = tmp

    async def run(self, out: Path, **kwargs: Any) -> RunReport:
        return await harvester.harvest("ztf", transport=self.transport, output=out, **ztf(self.fmt), **kwargs)

    async def clean(self) -> dict[str, dict[str, Any]]:
        out = self.tmp / f"clean-{self.fmt}"
        report = await self.run(out)
        assert report.ok
        return content(out / "ztf")


@pytest.fixture
async def json_out(tmp_path: Path) -> tuple[Harness, Path, dict[str, dict[str, Any]]]:
    h = Harness(tmp_path)
    out = tmp_path / "out"
    first = await h.run(out)
    assert first.ok and first.sources["ztf"].written > 100
    return h, out, await h.clean()


async def test_a_deleted_output_folder_is_harvested_again(json_out: Any) -> None:
    """`rm -rf <output>/ztf` (what DVC does before a stage runs): the rerun writes everything again."""
    h, out, clean = json_out
    n = len(clean)
    shutil.rmtree(out / "ztf")
    report = await h.run(out)
    src = report.sources["ztf"]
    assert report.ok and src.written == n and src.already_present == 0
    assert content(out / "ztf") == clean


async def test_deleted_record_files_are_reported_and_fetched_again(json_out: Any) -> None:
    """Files the ledger lists but the disk lacks: `missing_on_disk`, re-fetched, nothing else rewritten."""
    h, out, clean = json_out
    files = sorted((out / "ztf").glob("record_*.json"))
    for path in files[:7]:
        path.unlink()
    untouched = {p.name: p.stat().st_mtime_ns for p in files[7:]}
    report = await h.run(out)
    src = report.sources["ztf"]
    assert src.missing_on_disk == 7 and src.refetched == 7 and src.refetch_pending == 0
    assert src.written == 7
    assert any("missing_on_disk: 7, re-fetched: 7" in w for w in src.warnings)
    assert content(out / "ztf") == clean
    assert {p.name: p.stat().st_mtime_ns for p in files[7:]} == untouched


async def test_the_watermark_of_a_target_that_lost_files_is_not_trusted(json_out: Any) -> None:
    """Only the target whose record went missing is asked for its whole range again."""
    h, out, clean = json_out
    victim = next(iter(clean.values()))
    name = f"record_{victim['object_id']}_{victim['mjd']!r}.json"
    (out / "ztf" / name).unlink()
    h.archive.requests.clear()
    report = await h.run(out)
    assert report.sources["ztf"].refetched == 1
    asked = dict(times(h.archive))
    assert sorted(t == "" for t in asked.values()) == [False, True]  # one cone from scratch, one incremental
    assert content(out / "ztf") == clean


async def test_a_truncated_record_file_is_replaced(json_out: Any) -> None:
    """A record file cut short (or edited) is damaged: removed, fetched again, reported."""
    h, out, clean = json_out
    path = sorted((out / "ztf").glob("record_*.json"))[3]
    path.write_bytes(path.read_bytes()[:40])
    report = await h.run(out)
    src = report.sources["ztf"]
    assert src.damaged_on_disk == 1 and src.refetched == 1 and src.written == 1
    assert content(out / "ztf") == clean


async def test_a_changed_record_of_the_same_size_is_caught_by_its_hash(json_out: Any) -> None:
    """Same size, new time, other bytes: the hash decides, and the archive's record comes back."""
    h, out, clean = json_out
    path = sorted((out / "ztf").glob("record_*.json"))[5]
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"ztf"', b'"ZTF"', 1))
    report = await h.run(out)
    assert report.sources["ztf"].damaged_on_disk == 1
    assert content(out / "ztf") == clean


async def test_a_copied_output_carries_its_ledger(json_out: Any, tmp_path: Path) -> None:
    """A copy (new modification times, same bytes) is recognised by hash: nothing fetched twice."""
    h, out, clean = json_out
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, copy_function=shutil.copyfile)  # copyfile: times are not preserved
    report = await h.run(copy)
    src = report.sources["ztf"]
    assert report.ok and src.written == 0 and src.missing_on_disk == 0 and src.adopted == 0
    assert src.already_present == src.records > 0  # its watermarks came along: an incremental sweep
    assert content(copy / "ztf") == clean


async def test_two_outputs_never_share_presence(json_out: Any, tmp_path: Path) -> None:
    """A new, empty output starts from nothing, whatever the machine harvested elsewhere."""
    h, _, clean = json_out
    report = await h.run(tmp_path / "other")
    assert report.sources["ztf"].written == len(clean)
    assert content(tmp_path / "other" / "ztf") == clean


async def test_a_deleted_ledger_is_rebuilt_from_the_files(json_out: Any) -> None:
    """Ledger gone: every file is adopted, nothing is rewritten, every target is asked from scratch."""
    h, out, clean = json_out
    shutil.rmtree(out / "ztf" / ".harvester")
    before = {p.name: p.stat().st_mtime_ns for p in (out / "ztf").glob("record_*.json")}
    h.archive.requests.clear()
    report = await h.run(out)
    src = report.sources["ztf"]
    assert src.adopted == len(clean) and src.written == 0
    assert all(t == "" for _, t in times(h.archive))  # no watermark survived: full ranges
    assert {p.name: p.stat().st_mtime_ns for p in (out / "ztf").glob("record_*.json")} == before
    assert ledger_keys(out / "ztf") == len(clean)


async def test_a_corrupt_ledger_is_set_aside_and_rebuilt(json_out: Any) -> None:
    """Garbage in the ledger file: one warning, rebuilt from the files, output unchanged."""
    h, out, clean = json_out
    (out / "ztf" / ".harvester" / "ledger.sqlite").write_bytes(b"not a database\n" * 100)
    report = await h.run(out)
    src = report.sources["ztf"]
    assert any("ledger unreadable" in w for w in src.warnings)
    assert src.adopted == len(clean) and src.written == 0
    assert content(out / "ztf") == clean


async def test_a_ledger_copied_from_another_output(json_out: Any, tmp_path: Path) -> None:
    """Another output's ledger dropped in: its entries are missing here, this folder's files are
    adopted, the missing ones are fetched; the output ends as a clean run's."""
    h, out, clean = json_out
    other = tmp_path / "other"
    await harvester.harvest(
        "ztf",
        transport=h.transport,
        output=other,
        **{**ztf(), "data_sources": {"ztf": {"irsa": {"targets": CONES[:1], "filters": []}}}},
    )
    kept = sorted((out / "ztf").glob("record_*.json"))
    for path in kept[::2]:
        path.unlink()
    shutil.copyfile(
        other / "ztf" / ".harvester" / "ledger.sqlite", out / "ztf" / ".harvester" / "ledger.sqlite"
    )
    report = await h.run(out)
    src = report.sources["ztf"]
    # this folder's files of the other cone are adopted; the shared cone's files differ from the
    # foreign ledger's (another fetched_at), so they are harvested again, like the missing ones
    assert src.adopted > 0 and src.missing_on_disk > 0 and src.damaged_on_disk > 0
    assert content(out / "ztf") == clean
    assert ledger_keys(out / "ztf") == len(clean)


async def test_a_file_written_but_not_recorded_is_adopted(json_out: Any) -> None:
    """A kill between the rename and the ledger commit leaves files the ledger lacks: adopted."""
    h, out, clean = json_out
    with contextlib.closing(sqlite3.connect(out / "ztf" / ".harvester" / "ledger.sqlite")) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM files ORDER BY id DESC LIMIT 9")]
        conn.executemany("DELETE FROM records WHERE file = ?", [(i,) for i in ids])
        conn.executemany("DELETE FROM files WHERE id = ?", [(i,) for i in ids])
        conn.commit()
    report = await h.run(out)
    src = report.sources["ztf"]
    assert src.adopted == 9 and src.written == 0 and src.missing_on_disk == 0
    assert content(out / "ztf") == clean


async def test_full_rewrites_only_what_is_missing(json_out: Any) -> None:
    """`--full` asks for everything and rewrites only the missing records, never a duplicate."""
    h, out, clean = json_out
    sorted((out / "ztf").glob("record_*.json"))[0].unlink()
    report = await h.run(out, full=True)
    src = report.sources["ztf"]
    assert src.written == 1 and src.already_present == len(clean) - 1
    assert content(out / "ztf") == clean


@pytest.fixture
async def jsonl_out(tmp_path: Path) -> tuple[Harness, Path, dict[str, dict[str, Any]]]:
    h = Harness(tmp_path, "jsonl")
    out = tmp_path / "out"
    assert (await h.run(out)).ok
    return h, out, await h.clean()


async def test_a_jsonl_shard_truncated_mid_line_is_replaced(jsonl_out: Any) -> None:
    """A shard cut mid-line is damaged: removed, its records fetched again into a new shard."""
    h, out, clean = jsonl_out
    shard = sorted((out / "ztf").glob("part-*.jsonl"))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2 + 7])
    report = await h.run(out)
    src = report.sources["ztf"]
    assert src.damaged_on_disk == 200 and src.refetched == 200 and src.written == 200
    assert not shard.exists()
    assert content(out / "ztf") == clean


async def test_a_deleted_jsonl_shard_is_fetched_again(jsonl_out: Any) -> None:
    h, out, clean = jsonl_out
    sorted((out / "ztf").glob("part-*.jsonl"))[-1].unlink()
    report = await h.run(out)
    src = report.sources["ztf"]
    assert src.missing_on_disk > 0 and src.refetched == src.missing_on_disk
    assert content(out / "ztf") == clean


async def test_an_unfinished_shard_without_ledger_entry_is_adopted(jsonl_out: Any) -> None:
    """A complete shard renamed into place just before a kill (not recorded) is read and adopted."""
    h, out, clean = jsonl_out
    with contextlib.closing(sqlite3.connect(out / "ztf" / ".harvester" / "ledger.sqlite")) as conn:
        (fid,) = conn.execute("SELECT id FROM files ORDER BY id DESC LIMIT 1").fetchone()
        conn.execute("DELETE FROM records WHERE file = ?", (fid,))
        conn.execute("DELETE FROM files WHERE id = ?", (fid,))
        conn.commit()
    report = await h.run(out)
    src = report.sources["ztf"]
    assert src.adopted > 0 and src.written == 0
    assert content(out / "ztf") == clean


async def test_a_dry_run_reads_and_writes_no_state(json_out: Any) -> None:
    """After a complete harvest, `--dry-run --limit 5` still returns 5 records and touches nothing."""
    h, out, _ = json_out
    ledger = out / "ztf" / ".harvester" / "ledger.sqlite"
    stamp = ledger.stat().st_mtime_ns
    state = Path("data/state/harvester.db")
    runs_before = state.stat().st_mtime_ns if state.exists() else None
    h.archive.requests.clear()
    report = await h.run(out, dry_run=True, limit=5)
    src = report.sources["ztf"]
    assert src.records == 5 and src.already_present == 0
    assert all(t == "" for _, t in times(h.archive))  # no watermark applied
    assert ledger.stat().st_mtime_ns == stamp
    assert (state.stat().st_mtime_ns if state.exists() else None) == runs_before


async def test_a_dry_run_in_a_fresh_folder_creates_nothing(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    report = await h.run(tmp_path / "never", dry_run=True, limit=5)
    assert report.sources["ztf"].records == 5
    assert not (tmp_path / "never").exists() and not Path("data").exists()


def test_a_closed_ledger_is_one_file_and_its_lock(tmp_path: Path) -> None:
    """Rollback journal, not WAL: a copy of a closed folder, or DVC's, has the whole ledger."""
    import anyio

    h = Harness(tmp_path)
    anyio.run(h.run, tmp_path / "o")
    assert sorted(os.listdir(tmp_path / "o" / "ztf" / ".harvester")) == ["ledger.sqlite", "lock"]


async def test_damage_after_a_rebuilt_ledger_drops_every_watermark(json_out: Any) -> None:
    """Records adopted from disk do not know the target that wrote them: when one of their files
    is lost later, no watermark can be trusted, so every target is asked from scratch and the lost
    record comes back (it would stay lost behind a watermark otherwise)."""
    h, out, clean = json_out
    shutil.rmtree(out / "ztf" / ".harvester")
    assert (await h.run(out)).sources["ztf"].adopted == len(clean)  # watermarks advance again
    files = sorted((out / "ztf").glob("record_*.json"))
    for path in files[:5]:
        path.unlink()
    h.archive.requests.clear()
    report = await h.run(out)
    src = report.sources["ztf"]
    assert src.missing_on_disk == 5 and src.refetched == 5 and src.refetch_pending == 0
    assert all(t == "" for _, t in times(h.archive))
    assert content(out / "ztf") == clean


async def test_a_record_still_missing_is_reported_until_it_is_back(json_out: Any) -> None:
    """A lost record the archive does not serve in this run (here: IRSA answers with no rows) stays
    listed as lost, and the next run says so, until it comes back."""
    from tests.conftest import irsa_csv

    h, out, clean = json_out
    sorted((out / "ztf").glob("record_*.json"))[0].unlink()
    real = h.transport
    h.transport = httpx.MockTransport(lambda _: httpx.Response(200, content=irsa_csv()))
    first = (await h.run(out)).sources["ztf"]
    h.transport = real
    assert first.missing_on_disk == 1 and first.refetched == 0 and first.refetch_pending == 1
    assert any("not back yet: 1" in w for w in first.warnings)
    second = (await h.run(out)).sources["ztf"]  # nothing newly missing; the record comes back now
    assert second.missing_on_disk == 0 and second.refetched == 1 and second.refetch_pending == 0
    assert content(out / "ztf") == clean


async def test_a_second_run_on_the_same_folder_is_refused(json_out: Any) -> None:
    """Two runs writing one folder would race shards and temporaries: the second fails in one line."""
    from harvester.archives.ztf.records import ZtfRecord
    from harvester.io.ledger import Ledger

    h, out, _ = json_out
    async with Ledger(out / "ztf", ZtfRecord):
        report = await h.run(out)
    (failure,) = report.sources["ztf"].errors
    assert failure.target == "(output)" and "another harvester run is writing this folder" in failure.cause


async def test_a_locked_ledger_is_an_error_not_a_rebuild(json_out: Any) -> None:
    """SQLite saying 'locked' or 'cannot open' is not damage: the ledger is never set aside for it."""
    h, out, _ = json_out
    ledger = out / "ztf" / ".harvester" / "ledger.sqlite"
    ledger.unlink()
    ledger.mkdir()  # a folder where the ledger should be: SQLite cannot open it
    report = await h.run(out)
    (failure,) = report.sources["ztf"].errors
    assert failure.target == "(output)" and "ledger" in failure.cause
    assert ledger.is_dir() and not list(ledger.parent.glob("ledger.sqlite.bad-*"))


async def test_a_damaged_file_is_set_aside_not_deleted(json_out: Any) -> None:
    h, out, clean = json_out
    path = sorted((out / "ztf").glob("record_*.json"))[2]
    path.write_bytes(b"{not json")
    await h.run(out)
    assert (out / "ztf" / ".harvester" / "damaged" / path.name).read_bytes() == b"{not json"
    assert content(out / "ztf") == clean


async def test_full_hashes_every_file(json_out: Any) -> None:
    """`--full` catches a same-size edit whose modification time was put back (`touch -r`)."""
    h, out, clean = json_out
    path = sorted((out / "ztf").glob("record_*.json"))[4]
    stat = path.stat()
    path.write_bytes(path.read_bytes().replace(b'"ztf"', b'"ZTF"', 1))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (await h.run(out)).sources["ztf"].damaged_on_disk == 0  # a plain rerun trusts size and time
    report = await h.run(out, full=True)
    assert report.sources["ztf"].damaged_on_disk == 1
    assert content(out / "ztf") == clean


async def test_fallback_after_an_output_failure_never_overwrites_a_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """jsonl: the third shard fails to write; the sample fallback writes its own shards, and every
    committed shard keeps exactly the records the ledger lists."""
    import harvester.io.writers as writers

    calls = {"n": 0}
    real = writers._write_shard

    def failing(path: Path, data: list[bytes | memoryview]) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise harvester.OutputError(f"cannot write to {path.parent}: no space left on device")
        return real(path, data)

    monkeypatch.setattr(writers, "_write_shard", failing)
    h = Harness(tmp_path, "jsonl")
    out = tmp_path / "out"
    await h.run(out, fallback_to_sample=True)
    monkeypatch.setattr(writers, "_write_shard", real)
    lines = sum(len(p.read_bytes().splitlines()) for p in (out / "ztf").glob("part-*.jsonl"))
    assert ledger_keys(out / "ztf") == lines  # no shard was overwritten under its keys
    rerun = await h.run(out)
    assert rerun.sources["ztf"].missing_on_disk == 0 and rerun.sources["ztf"].damaged_on_disk == 0


@pytest.mark.parametrize("link", ["hardlink", "symlink"])
async def test_a_linked_ledger_is_copied_before_it_is_written(
    json_out: Any, tmp_path: Path, link: str
) -> None:
    """DVC's hardlink and symlink caches check an output out as links to read-only cached objects:
    the ledger becomes a private copy first, so the cached object keeps its bytes (and its hash)."""
    h, out, clean = json_out
    ledger = out / "ztf" / ".harvester" / "ledger.sqlite"
    cached = tmp_path / "cache-object"
    shutil.copyfile(ledger, cached)
    before = cached.read_bytes()
    ledger.unlink()
    if link == "hardlink":
        os.link(cached, ledger)
    else:
        ledger.symlink_to(cached)
    sorted((out / "ztf").glob("record_*.json"))[0].unlink()  # so the run writes to the ledger
    report = await h.run(out)
    assert report.sources["ztf"].refetched == 1
    assert cached.read_bytes() == before
    assert not ledger.is_symlink() and ledger.stat().st_nlink == 1
    assert content(out / "ztf") == clean
