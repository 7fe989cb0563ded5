"""The blocking twins: harvest_sync and stream_sync for scripts, refused inside a running event loop."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import harvester
from harvester.archives.ztf.records import ZtfRecord
from harvester.testing import FakeArchive, Fault


def cones(*ras: float) -> dict[str, Any]:
    """ZTF targets: one small cone per RA on the fake sky, with a fast budget and no retry waits."""
    return {
        "ztf": {
            "irsa": {"targets": [{"name": f"c{ra:g}", "ra": ra, "dec": 20.0, "radius": 0.01} for ra in ras]},
            "rate_limit": {"requests_per_second": 500, "max_concurrency": 2},
            "retries": {"attempts": 0},
        }
    }


def archive(**options: Any) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=FakeArchive(**options))


def portal_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "portal" in t.name]


def test_harvest_sync_returns_the_report_and_writes_records(tmp_path: Path) -> None:
    """harvest_sync runs a whole harvest from plain code and returns its report."""
    report = harvester.harvest_sync(
        "ztf", transport=archive(), output=tmp_path, limit=20, data_sources=cones(13.0)
    )
    assert report.ok and report.sources["ztf"].written == 20
    assert len(list((tmp_path / "ztf").glob("record_*.json"))) == 20


def test_harvest_sync_runs_again_in_the_same_process(tmp_path: Path) -> None:
    """No state survives a call: a second run works and finds the first run's records present."""
    first = harvester.harvest_sync(
        "ztf", transport=archive(), output=tmp_path, limit=20, data_sources=cones(13.0)
    )
    again = harvester.harvest_sync(
        "ztf", transport=archive(), output=tmp_path, limit=20, data_sources=cones(13.0)
    )
    assert first.run_id != again.run_id and again.ok
    assert again.sources["ztf"].written + again.sources["ztf"].already_present == 20


async def test_harvest_sync_refuses_a_running_event_loop(tmp_path: Path) -> None:
    """Inside a running loop (a notebook cell) harvest_sync raises at once and names the async call."""
    with pytest.raises(RuntimeError, match=r"inside a running event loop.*await harvester\.harvest\("):
        harvester.harvest_sync("ztf", transport=archive(), output=tmp_path, limit=5, data_sources=cones(13.0))
    assert not (tmp_path / "ztf").exists()


async def test_stream_sync_refuses_a_running_event_loop_when_called() -> None:
    """stream_sync refuses at the call, not at the first next(), and names `async for ... stream(`."""
    with pytest.raises(RuntimeError, match=r"async for record in harvester\.stream\("):
        harvester.stream_sync("ztf", transport=archive(), limit=5, data_sources=cones(13.0))


def test_stream_sync_yields_validated_records_and_writes_nothing(tmp_path: Path) -> None:
    """stream_sync is an iterator of validated records; no output folder is created."""
    records = list(
        harvester.stream_sync("ztf", transport=archive(), output=tmp_path, limit=15, data_sources=cones(13.0))
    )
    assert len(records) == 15 and all(isinstance(r, ZtfRecord) for r in records)
    assert list(tmp_path.iterdir()) == []


def test_stream_sync_closed_early_stops_its_fetchers_and_thread() -> None:
    """Closing the iterator after one record cancels the slow fetches and ends its helper thread."""
    slow = archive(latency_s=0.8)
    started = time.monotonic()
    eight = cones(*(10.0 + k for k in range(8)))
    with contextlib.closing(harvester.stream_sync("ztf", transport=slow, data_sources=eight)) as records:
        first = next(records)
    assert isinstance(first, ZtfRecord)
    assert time.monotonic() - started < 2.0  # all 8 cones at 0.8 s, 2 at a time, take 3.2 s
    assert portal_threads() == []


def test_stream_sync_raises_the_stream_error() -> None:
    """When every target fails, the HarvesterError of stream() comes out of the iteration."""
    broken = FakeArchive()
    broken.add_fault(Fault(kind="status", status=400))
    with pytest.raises(harvester.HarvesterError, match="every target failed"):
        list(
            harvester.stream_sync("ztf", transport=httpx.ASGITransport(app=broken), data_sources=cones(13.0))
        )
    assert portal_threads() == []
