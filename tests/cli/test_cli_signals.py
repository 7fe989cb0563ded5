"""SIGTERM ends `harvester run` the way Ctrl-C does: the run is cancelled, a `cancelled` manifest
is written, one line says so on stderr, and the exit code is documented (143; 130 for SIGINT)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harvester.testing import FakeArchive, running_server


@pytest.fixture
def slow_archive() -> Iterator[tuple[FakeArchive, str]]:
    """The sample archive on loopback, answering each request after 0.2 s."""
    archive = FakeArchive(latency_s=0.2, executing_polls=0)
    with running_server(archive) as url:
        yield archive, url


def config(folder: Path, url: str) -> Path:
    """ZTF at the loopback archive, 40 cones two at a time (about 4 s of work), output in folder."""
    cones = [{"ra": 150.0 + 0.4 * i, "dec": 30.0 + 0.1 * (i % 5), "radius": 0.03} for i in range(40)]
    settings = {
        "output": str(folder / "out"),
        "state": {"path": str(folder / "state.db")},
        "data_sources": {
            "ztf": {
                "irsa": {"base_url": f"{url}/cgi-bin/ZTF/nph_light_curves", "targets": cones},
                "rate_limit": {"requests_per_second": 50, "max_concurrency": 2},
            }
        },
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


#: ``python -m harvester`` with SIGINT at Python's default, as from a terminal. A test run started
#: in the background by a script (``pytest &``) has SIGINT ignored, and a child inherits that:
#: Python then keeps it ignored, as it should for such a job, and the SIGINT case would test
#: nothing. (Set in the child itself: ``preexec_fn`` is unsafe with the archive's server thread.)
AS_FROM_A_TERMINAL = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('harvester', run_name='__main__', alter_sys=True)"
)


@pytest.mark.parametrize(
    ("signum", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")]
)
def test_signal_cancels_the_run_with_a_manifest_and_one_line(
    tmp_path: Path, slow_archive: tuple[FakeArchive, str], signum: int, code: int, name: str
) -> None:
    """A signal mid-run: exit code 143 (SIGTERM) or 130 (SIGINT), one plain line on stderr naming
    the signal and the run, and <output>/_manifests/run-<id>.json with status cancelled."""
    archive, url = slow_archive
    cfg = config(tmp_path, url)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            AS_FROM_A_TERMINAL,
            "run",
            "--source",
            "ztf",
            "--config",
            str(cfg),
            "--log-format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 30
    while not archive.requests and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # a few targets in flight
    assert proc.poll() is None, "the run ended before the signal"
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr[-2000:]
    plain = [line for line in stderr.splitlines() if line and not line.startswith("{")]
    assert len(plain) == 1, stderr[-2000:]
    assert plain[0].startswith(f"harvester: interrupted ({name}): run ")
    (manifest,) = (tmp_path / "out" / "_manifests").glob("run-*.json")
    data = json.loads(manifest.read_text())
    assert data["status"] == "cancelled" and data["sources"]["ztf"]["status"] == "cancelled"
    assert data["run_id"] in plain[0] and str(manifest) in plain[0]
    assert len(archive.requests) < 40  # stopped early: not every cone was asked
    assert stdout == ""


CTRL_C_DURING_ENCODING = """
import json, os, signal, threading, time
handled = []
signal.signal(signal.SIGINT, lambda *args: handled.append("run's handler"))
from harvester.io.batches import keep_ctrl_c_from_polars
keep_ctrl_c_from_polars()
import polars as pl
outcome = []
def encode():
    try:
        for _ in range(60):
            pl.DataFrame({"a": range(200_000)}).write_ndjson()
        outcome.append("encoded")
    except BaseException as exc:
        outcome.append(type(exc).__name__)
worker = threading.Thread(target=encode)
worker.start()
time.sleep(0.2)
os.kill(os.getpid(), signal.SIGINT)
worker.join()
print(json.dumps({"handled": handled, "outcome": outcome}))
"""


def test_ctrl_c_goes_to_the_runs_handler_not_into_a_thread_encoding_with_polars() -> None:
    """polars hooks SIGINT when imported and raises KeyboardInterrupt in the next query on any
    thread: in a run, a worker thread encoding a batch or a persist lane writing a shard. The run
    keeps Ctrl-C to itself: its handler is called, and the encoding finishes."""
    done = subprocess.run(
        [sys.executable, "-c", CTRL_C_DURING_ENCODING], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"handled": ["run's handler"], "outcome": ["encoded"]}


TESS_AND_MAST_RUN = """
import json, sys
import anyio, httpx
import harvester
from harvester.testing import FakeArchive

async def main():
    return await harvester.harvest(
        ["tess", "mast"],
        transport=httpx.ASGITransport(app=FakeArchive()),
        output=sys.argv[1],
        data_sources={
            "tess": {"base_url": "http://mast.test", "query": {"tic_ids": [261136679]}},
            "mast": {
                "base_url": "http://mast.test",
                "query": {"cone_search": {"ra": 210.8023, "dec": 54.3489, "radius": 0.1}},
            },
        },
    )

report = anyio.run(main)
print(json.dumps({"ok": report.ok, "polars": "polars" in sys.modules}))
"""


def test_a_run_without_ztf_does_not_import_polars(tmp_path: Path) -> None:
    """Only the ZTF source writes with polars (and takes Ctrl-C back from it): a TESS or MAST run
    does not pay its import (about half a second here) before its first request."""
    done = subprocess.run(
        [sys.executable, "-c", TESS_AND_MAST_RUN, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"ok": True, "polars": False}
