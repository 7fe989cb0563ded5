"""Interrupting a harvest (a notebook cell, Ctrl-C) leaves only complete records, and a rerun finishes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson

import harvester
from harvester import archives
from harvester.testing import FakeArchive

#: 8 small cones on the fake sky, 6 of them with objects: about 1 s of work at the latency below.
ZTF_CONES = [{"name": f"c{k}", "ra": 10.0 + k, "dec": 20.0, "radius": 0.01} for k in range(8)]


def overrides(fmt: str = "json") -> dict[str, Any]:
    """ZTF cones and TESS light curves, two requests at a time per host, 5-record jsonl shards."""
    return {
        "format": fmt,
        "jsonl_shard_records": 5,
        "data_sources": {
            "ztf": {
                "irsa": {"targets": ZTF_CONES},
                "rate_limit": {"requests_per_second": 500, "max_concurrency": 2},
            },
            "tess": {
                "query": {"tic_ids": [261136679, 21132157, 278892590]},
                "rate_limit": {"requests_per_second": 500, "max_concurrency": 2},
            },
        },
    }


def slow_archive() -> httpx.ASGITransport:
    return httpx.ASGITransport(app=FakeArchive(latency_s=0.2, tess_cadences=500))


async def harvest_until_records_appear(out: Path, fmt: str) -> None:
    """Start a ZTF + TESS harvest and cancel it as soon as the first ZTF output file is visible."""
    pattern = "record_*.json" if fmt == "json" else "part-*.jsonl"
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: harvester.harvest(
                    ["ztf", "tess"], transport=slow_archive(), output=out, **overrides(fmt)
                )
            )
            with anyio.fail_after(10):
                while not list((out / "ztf").glob(pattern)):  # noqa: ASYNC110  # a folder has no event to await
                    await anyio.sleep(0.01)
            scope.cancel()
    assert scope.cancelled_caught


def leftovers(out: Path) -> list[Path]:
    """Hidden or temporary files: what a partial write would leave."""
    return [
        p
        for p in out.rglob("*")
        if ".harvester" not in p.parts  # the output's ledger (SQLite keeps it consistent itself)
        and (p.name.startswith(".") or p.name.endswith((".tmp", ".part")))
    ]


def parse_all(out: Path) -> int:
    """Validate every visible record in every source folder; return how many there are."""
    count = 0
    for path in [*out.rglob("record_*.json"), *out.rglob("part-*.jsonl")]:
        model = archives.record_model(path.parent.name)
        for line in path.read_bytes().splitlines():
            model.model_validate(orjson.loads(line))
            count += 1
    return count


async def test_cancelled_harvest_leaves_only_complete_record_files(tmp_path: Path) -> None:
    """After a cancel mid-run there is no temporary or partial file, and every record file is valid JSON."""
    await harvest_until_records_appear(tmp_path, "json")
    assert leftovers(tmp_path) == []
    assert parse_all(tmp_path) > 0


async def test_cancelled_harvest_leaves_only_complete_jsonl_shards(tmp_path: Path) -> None:
    """With jsonl output, every visible shard after a cancel is whole lines of valid records."""
    await harvest_until_records_appear(tmp_path, "jsonl")
    assert leftovers(tmp_path) == []
    assert parse_all(tmp_path) > 0


async def test_rerun_after_a_cancel_writes_every_record_the_cancelled_run_missed(tmp_path: Path) -> None:
    """A second call in the same process completes the output: the same files as one uninterrupted run."""
    await harvest_until_records_appear(tmp_path / "cut", "json")
    report = await harvester.harvest("ztf", transport=slow_archive(), output=tmp_path / "cut", **overrides())
    whole = await harvester.harvest("ztf", transport=slow_archive(), output=tmp_path / "whole", **overrides())
    assert report.ok and whole.ok
    assert names(tmp_path / "cut") == names(tmp_path / "whole")


def names(out: Path) -> set[str]:
    return {p.name for p in (out / "ztf").glob("record_*.json")}
