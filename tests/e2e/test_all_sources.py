"""`--source all`: three sources at once over loopback, isolated failures, one MAST budget, one summary."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import harvester
from harvester.cli import app
from harvester.testing import FakeArchive, Fault, running_server

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def archive() -> FakeArchive:
    return FakeArchive(latency_s=0.05, executing_polls=0, rate_limit_rps=12.0)


@pytest.fixture
def base_url(archive: FakeArchive) -> Iterator[str]:
    with running_server(archive) as url:
        yield url


def loopback(url: str, *, mast_rps: float = 12.0) -> dict[str, Any]:
    """Settings pointing every source at the loopback archive: IRSA as 'localhost', MAST as 127.0.0.1."""
    port = url.rsplit(":", 1)[1]
    fast = {"attempts": 2, "backoff_base": 0.05}
    mast_budget = {"requests_per_second": mast_rps, "max_concurrency": 8}
    return {
        "data_sources": {
            "ztf": {
                "irsa": {
                    "base_url": f"http://localhost:{port}/cgi-bin/ZTF/nph_light_curves",
                    "targets": [
                        {"ra": 210.8023 + 0.05 * i, "dec": 54.3489, "radius": 0.02} for i in range(4)
                    ],
                },
                "rate_limit": {"requests_per_second": 20, "max_concurrency": 4},
                "retries": fast,
            },
            "tess": {
                "base_url": url,
                "query": {"tic_ids": [261136679, 21132157]},
                "rate_limit": mast_budget,
                "retries": fast,
            },
            "mast": {
                "base_url": url,
                "query": {"cone_search": {"ra": 210.8023, "dec": 54.3489, "radius": 0.1}},
                "rate_limit": mast_budget,
                "retries": fast,
                "pagesize": 5,
            },
        }
    }


async def test_three_sources_run_concurrently_over_loopback(
    archive: FakeArchive, base_url: str, tmp_path: Path
) -> None:
    """ZTF, TESS and MAST requests interleave in the server's log, and every source writes records."""
    report = await harvester.harvest("all", output=tmp_path, **loopback(base_url))
    assert report.ok, {n: s.errors for n, s in report.sources.items()}
    assert all(report.sources[n].written > 0 for n in ("ztf", "tess", "mast"))
    spans = {}
    for kind, marker in (("ztf", "nph_light_curves"), ("mast", "/api/")):
        times = [e.t for e in archive.requests if marker in e.path]
        spans[kind] = (min(times), max(times))
    assert (
        spans["ztf"][0] < spans["mast"][1] and spans["mast"][0] < spans["ztf"][1]
    )  # overlapping, not serial


async def test_tess_and_mast_share_one_budget_with_no_violation(
    archive: FakeArchive, base_url: str, tmp_path: Path
) -> None:
    """TESS and MAST together stay within 127.0.0.1's 12 req/s: the server counts no violation."""
    report = await harvester.harvest(["tess", "mast"], output=tmp_path, **loopback(base_url))
    assert report.ok
    mast_requests = [e for e in archive.requests if e.host == "127.0.0.1"]
    assert len(mast_requests) >= 8
    assert archive.violations.get("127.0.0.1", 0) == 0


async def test_one_failing_source_does_not_stop_the_others(
    archive: FakeArchive, base_url: str, tmp_path: Path
) -> None:
    """With IRSA answering 503 forever, ZTF fails while TESS and MAST complete; the report names ZTF."""
    archive.add_fault(Fault(match="nph_light_curves", kind="status", status=503))
    report = await harvester.harvest("all", output=tmp_path, **loopback(base_url))
    assert report.failed_sources == ["ztf"] and report.exit_code == 1
    assert report.sources["tess"].status == "ok" and report.sources["mast"].status == "ok"
    assert report.sources["tess"].written > 0 and report.sources["mast"].written > 0


def test_all_dry_run_prints_one_consolidated_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run --source all --offline --dry-run` prints per-source counts and totals as one JSON document."""
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "base.yaml", tmp_path / "config" / "base.yaml")
    result = CliRunner().invoke(
        app, ["run", "--source", "all", "--offline", "--dry-run", "--limit", "3", "--log-format", "json"]
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert sorted(summary["sources"]) == ["mast", "tess", "ztf"]
    assert summary["totals"]["records"] == sum(s["records"] for s in summary["sources"].values()) == 9
    assert all(s["sample_record"]["source"] == n for n, s in summary["sources"].items())
    assert not (tmp_path / "data").exists()
