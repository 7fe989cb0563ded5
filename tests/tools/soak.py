"""Soak: the daemon's sweeps, many times, against a misbehaving archive; memory and descriptors stay flat.

``run_soak`` is used by tests/e2e/test_robustness.py (a short soak) and by
``python -m tests.tools.faults_report --soak-sweeps N`` (a longer one for docs/reliability.md).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from harvester.run.daemon import Daemon
from harvester.settings import load_settings
from harvester.testing import FakeArchive, Fault
from harvester.testing._archive import FaultKind

KINDS: tuple[FaultKind, ...] = ("status", "truncate", "reset", "html", "slow")


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass
class SoakResult:
    sweeps: int
    faults_injected: int
    rss_start_mib: float
    rss_end_mib: float
    rss_peak_mib: float
    fds_start: int
    fds_end: int
    violations: int
    failed_sweeps: int


async def run_soak(sweeps: int, *, warmup: int = 3) -> SoakResult:
    archive = FakeArchive(executing_polls=0, rate_limit_rps=20.0)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        settings = load_settings(
            output=out / "out",
            state={"path": out / "state.db"},
            daemon={"interval": 0, "jitter": 0, "failure_threshold": 1000},
            data_sources={
                "ztf": {
                    "irsa": {
                        "targets": [{"ra": 210.8 + 0.05 * i, "dec": 54.35, "radius": 0.02} for i in range(4)]
                    },
                    "rate_limit": {"requests_per_second": 20, "max_concurrency": 4},
                    "retries": {"attempts": 3, "backoff_base": 0.01, "backoff_cap": 0.05},
                    "timeout": {"read": 0.5, "total": 3},
                },
            },
        )
        daemon = Daemon(settings, ["ztf"], transport=httpx.ASGITransport(app=archive))
        injected = failed = 0
        rss_start = fds_start = 0.0
        peak = 0.0
        for i in range(sweeps):
            archive.clear_faults()
            fault = archive.add_fault(
                Fault(
                    "nph_light_curves",
                    KINDS[i % len(KINDS)],
                    delay_s=0.6,
                    times=2 if KINDS[i % len(KINDS)] != "html" else 1,
                )
            )
            archive.now_mjd = 59000.0 + 10.0 * i  # the archive keeps gaining epochs
            report = await daemon.sweep()
            injected += fault.hits
            failed += 0 if (report is not None and report.ok) else 1
            peak = max(peak, rss_mib())
            if i + 1 == warmup:
                rss_start, fds_start = rss_mib(), open_fds()
        return SoakResult(
            sweeps,
            injected,
            round(rss_start, 1),
            round(rss_mib(), 1),
            round(peak, 1),
            int(fds_start),
            open_fds(),
            sum(archive.violations.values()),
            failed,
        )
