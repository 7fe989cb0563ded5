"""The stages after the dedup stage: the writer cuts full shards, two persist lanes encode and
write them side by side, a commit stage enters their keys in the ledger (issue 17).

Whatever order the lanes finish in, the output is the one a single writer gave: every shard named
in sequence, on disk and in the ledger once with its hash, every record in exactly one shard. A
shard that cannot be written fails the source in one line; what was written before stays, listed.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import harvester
from harvester.archives.ztf import source as ztf_source
from harvester.errors import OutputError
from harvester.io import limiter
from harvester.io.ledger import ledger_path
from harvester.io.writers import Shard, WriteResult
from harvester.testing import FakeArchive
from tests.run.test_columnar import GOLDEN_CONES, by_key, golden, written


async def harvest(out: Path, fmt: str, shard_records: int) -> Any:
    return await harvester.harvest(
        "ztf",
        transport=httpx.ASGITransport(app=FakeArchive()),
        output=out,
        format=fmt,
        jsonl_shard_records=shard_records,
        data_sources={"ztf": {"irsa": {"targets": GOLDEN_CONES, "mjd_range": None, "filters": []}}},
    )


def ledger(folder: Path) -> tuple[dict[str, str], dict[str, int]]:
    """The ledger's files (name -> sha256) and how many records it lists in each."""
    with sqlite3.connect(ledger_path(folder)) as conn:
        files = {name: sha.hex() for name, sha in conn.execute("SELECT name, sha256 FROM files")}
        counts = dict(
            conn.execute(
                "SELECT f.name, COUNT(*) FROM records r JOIN files f ON f.id = r.file GROUP BY f.name"
            )
        )
    return files, counts


def on_disk(folder: Path, suffix: str) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob(f"part-*.{suffix}")}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
async def test_shards_written_side_by_side_are_each_in_the_ledger_once_and_in_sequence(
    fmt: str, tmp_path: Path
) -> None:
    """Small shards (7 records): dozens of them go through the lanes at once."""
    report = await harvest(tmp_path, fmt, shard_records=7)
    source = report.sources["ztf"]
    assert report.ok and source.written == len(golden())
    folder = tmp_path / "ztf"
    disk = on_disk(folder, fmt)
    files, counts = ledger(folder)
    assert files == disk  # every shard listed, with the hash of what is on disk
    assert sorted(n for n, _ in source.files) == sorted(disk)
    numbers = sorted(int(name.rsplit("-", 1)[1].split(".")[0]) for name in disk)
    assert numbers == list(range(1, len(disk) + 1))  # no gap, none twice
    assert all(n == 7 for name, n in counts.items() if name != max(counts))
    assert sum(counts.values()) == len(golden())
    got = [{k: v for k, v in r.items() if k != "fetched_at"} for r in written(folder, fmt)]
    if fmt == "jsonl":  # Parquet reads back as models; the golden comparison is in test_columnar
        assert by_key(got) == by_key(golden())


async def test_a_shard_that_cannot_be_written_fails_the_source_in_one_line_and_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third shard meets a full disk: the source fails with one line naming the folder,
    the shards written before are on disk and in the ledger (nothing listed that is not on
    disk), and a rerun completes the output."""
    persist = Shard.persist
    calls = 0

    def full_disk_on_the_third(self: Shard) -> WriteResult:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OutputError(f"cannot write to {self.path.parent}: no space left on device")
        return persist(self)

    monkeypatch.setattr(Shard, "persist", full_disk_on_the_third)
    report = await harvest(tmp_path, "jsonl", shard_records=7)
    source = report.sources["ztf"]
    assert source.status == "failed"
    assert [(e.target, e.cause) for e in source.errors] == [
        ("(output)", f"cannot write to {tmp_path / 'ztf'}: no space left on device")
    ]
    folder = tmp_path / "ztf"
    files, counts = ledger(folder)
    assert files == on_disk(folder, "jsonl") and len(files) >= 2
    assert sum(counts.values()) == sum(len(p.read_bytes().splitlines()) for p in folder.glob("part-*"))

    monkeypatch.setattr(Shard, "persist", persist)
    again = await harvest(tmp_path, "jsonl", shard_records=7)
    assert again.ok
    got = [{k: v for k, v in r.items() if k != "fetched_at"} for r in written(folder, "jsonl")]
    assert by_key(got) == by_key(golden())  # each record once, none lost


async def test_a_cancelled_run_writes_and_commits_the_shards_already_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while lanes are busy: each shard handed to a lane is still written and its
    keys committed, so the next run adopts nothing (no file without its ledger entries)."""
    persist = Shard.persist
    started = anyio.Event()

    def slow(self: Shard) -> WriteResult:
        anyio.from_thread.run_sync(started.set)
        time.sleep(0.05)  # a slow disk: the cancellation lands while shards are in the lanes
        return persist(self)

    monkeypatch.setattr(Shard, "persist", slow)
    async with anyio.create_task_group() as tg:
        tg.start_soon(harvest, tmp_path, "jsonl", 7)
        await started.wait()
        tg.cancel_scope.cancel()
    folder = tmp_path / "ztf"
    files, _counts = ledger(folder)
    assert files == on_disk(folder, "jsonl") and files
    monkeypatch.setattr(Shard, "persist", persist)
    again = await harvest(tmp_path, "jsonl", shard_records=7)
    assert again.ok and again.sources["ztf"].adopted == 0
    got = [{k: v for k, v in r.items() if k != "fetched_at"} for r in written(folder, "jsonl")]
    assert by_key(got) == by_key(golden())


async def test_a_fast_archive_is_parsed_on_at_most_one_thread_per_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Responses that arrive together wait for a core rather than each waking a thread of its own
    (more threads than cores finish no sooner, and each keeps memory after the burst)."""
    monkeypatch.setattr(limiter, "cpu_cores", lambda: 1)
    parse = ztf_source.parse_irsa_batch
    busy = peak = 0
    lock = threading.Lock()

    def slow_parse(*args: Any, **kwargs: Any) -> Any:
        nonlocal busy, peak
        with lock:
            busy += 1
            peak = max(peak, busy)
        time.sleep(0.05)  # long enough for the other responses to arrive meanwhile
        try:
            return parse(*args, **kwargs)
        finally:
            with lock:
                busy -= 1

    monkeypatch.setattr(ztf_source, "parse_irsa_batch", slow_parse)
    cones = [{"ra": 210.8 + 0.1 * i, "dec": 54.35, "radius": 0.02} for i in range(12)]
    report = await harvester.harvest(
        "ztf",
        transport=httpx.ASGITransport(app=FakeArchive()),
        output=tmp_path,
        data_sources={
            "ztf": {
                "irsa": {"targets": cones, "mjd_range": None, "filters": []},
                "rate_limit": {"requests_per_second": 1000, "max_concurrency": 8},
            }
        },
    )
    assert report.ok and report.sources["ztf"].targets_ok == 12
    assert peak == 1
