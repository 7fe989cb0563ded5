"""Benchmark part 12: ZTF light curves through the hats route, against lsdb and against the API route.

Run with ``uv run --group bench python -m tests.tools.bench.bench_ztf_hats [--quick]`` (or as part of
``python -m tests.tools.bench``). A script, not a test. Only loopback servers are used.

Issue 18's two goals for the hats route (``data_sources.ztf.route: hats``), each a ratio against a
baseline measured in the same run:

1. **One cone into Parquet against lsdb reading it into memory** (goal: harvester ≤ 1.0× lsdb's
   time). The committed fixture (IRSA's DR5 sample in DR24's layout, tests/data/ztf_hats) is
   served by a moto S3 server on 127.0.0.1 (``ThreadedMotoServer`` in this process, a public-read
   ``ipac-irsa-ztf`` bucket). The cone (20.25°, −28.07°, 0.1667°) holds 78 objects, 2,438 epochs:

   - harvester: ``harvester.harvest("ztf")`` with ``route: hats``, the collection's URL and the
     server as ``hats.endpoint_url``, ``format: parquet``, default settings otherwise (so the
     bucket's default budget, ``data_sources.ztf.hats.rate_limit``); the Parquet files are read
     back afterwards and must hold the 2,438 epochs of the 78 objects;
   - lsdb: ``lsdb.open_catalog(<catalog>, search_filter=lsdb.ConeSearch(...),
     storage_options={"anon": True, "client_kwargs": {"endpoint_url": ...}}).compute()`` (lsdb's
     default threaded scheduler, no progress bar): the NestedFrame must hold 78 rows and 2,438
     epochs. lsdb opens the catalog itself (so no margin cache), harvester the collection (one
     more small GET, ``collection.properties``).

   Each is timed two ways, alternating harvester and lsdb, medians reported (5 fresh and 3 warm
   runs of each; ``--quick``: 1 and 3): **fresh process**
   (``python -c``, timed end to end by this process: interpreter, imports, the read, exit; the
   goal is on this time), after one untimed run of each that fills the children's bytecode cache
   and the page cache; and **warm, in this process** (imports done, one untimed run of each
   first; the moto server's threads share this process's GIL, for both clients alike). A third
   client, harvester with the S3 host's budget raised to 1,000 requests/s, is a diagnostic (not a
   goal): what the default budget's spacing of request starts costs on this cone. The server
   counts each client's requests.

2. **1,000 ZTF objects through the hats route against the API route** at IRSA's default budget (2
   requests/s, 4 at once) with 150 ms latency (goal ≥ 100× faster). The fake archive runs on loopback with
   ``latency_s`` = 150 ms on every request of both routes (no bandwidth cap): IRSA's API as ``127.0.0.1``,
   its bucket, path-style, as ``localhost`` (another host, so its own budget: the hats route's default,
   ``data_sources.ztf.hats.rate_limit``). The cones are the 1,000 stars of the fake sky nearest (150°,
   30°) that hold exactly one ZTF object each (radius 0.0001° around the star: the cone holds that object
   alone, so 1,000 cones are 1,000 objects); the fake data release gets the pixels around them
   (``FakeArchive.hats_regions``). Both routes harvest the same cones (``irsa.targets``, ``format:
   parquet``, all bands, all epochs); every answer is generated before the clock starts. The API route at
   2 requests/s needs about 500 s for 1,000 cones, so the full run measures it on the first 100 cones and
   scales its time by 10 (said so in the table; ``--api-cones N`` chooses N, 0 for all). ``--quick``: 50
   cones, both routes on all of them, nothing scaled. Both routes must return exactly the chosen objects,
   each with as many epochs as the fake sky holds up to the archive's "today" (the fake release holds the
   fake API's epochs), and IRSA's host must see no rate-limit violation."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import harvester
from harvester.archives.ztf.settings import ZtfHats
from harvester.archives.ztf.source import ZtfSource, irsa_params
from harvester.settings import Settings
from harvester.testing import FakeArchive, running_server
from harvester.testing._hats import load_folder
from harvester.testing._irsa import ZtfObject, epochs_of, handle_irsa, objects_in_cone
from harvester.testing._sky import angular_sep_deg
from tests.conftest import public_bucket
from tests.tools.bench.bench_ztf_rate import IRSA_PATH, LATENCY_S, Goal, Part, bench_settings, print_part

FIXTURE = Path(__file__).resolve().parents[2] / "data" / "ztf_hats" / "ztf_dr5_sample_lc-hats"
BUCKET = "ipac-irsa-ztf"
PREFIX = "ztf/bench/dr5/hats"  # the collection; its catalog is PREFIX/CATALOG
CATALOG = "ztf_dr5_sample_lc-hats"
CONE = (20.25, -28.07, 0.1667)  # the fixture README's cone: 78 objects, 2,438 epochs
CONE_OBJECTS, CONE_EPOCHS = 78, 2438
REPEATS = 3  # warm reads of goal 1, hats-route runs of goal 2
FRESH_REPEATS = 5  # fresh processes of goal 1 (their times spread more: imports, page cache, load)
FAST_S3 = {"requests_per_second": 1000.0, "max_concurrency": 32}
DEFAULT_S3 = ZtfHats().rate_limit
HARVESTER, LSDB, FAST = "harvester", "lsdb", "harvester, S3 at 1,000 req/s"

REGION = (150.0, 30.0)  # goal 2's stars are the single-object stars nearest this position
STAR_RADIUS = 1e-4  # degrees: a cone holds its star only (the fake sky's stars are 0.027° apart)
IRSA_HOST, S3_HOST = "127.0.0.1", "localhost"
IRSA_RPS, IRSA_AT_ONCE = 2.0, 4
API_SUBSET = 100  # cones the full run's API route is measured on (the rest scaled)
SPEEDUP_GOAL = 100.0  # for GOAL_OBJECTS objects (fewer cones leave the fixed costs a larger share)
GOAL_OBJECTS = 1000


# -- goal 1: one cone, harvester against lsdb, from a moto server ------------------------------------

_REQUEST_LINE = re.compile(r"(?:^|m)(GET|HEAD|PUT|POST|DELETE) /")  # 206 lines come in ANSI colours


class RequestCounter(logging.Handler):
    """Counts the requests werkzeug (moto's server) logs, by method; prints nothing."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.by_method: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        found = _REQUEST_LINE.search(str(args[0])) if args else None
        if found:
            self.by_method[found.group(1)] += 1

    def since(self, before: Counter[str]) -> dict[str, int]:
        """The requests counted since ``before`` (a copy of :attr:`by_method`), by method."""
        return {k: v for k, v in (self.by_method - before).items() if v}


@contextmanager
def moto_bucket() -> Iterator[tuple[str, RequestCounter]]:
    """A moto S3 server on 127.0.0.1 holding the fixture under ``PREFIX`` in a public-read bucket
    (objects public-read too: moto answers unsigned reads only then); its URL and request counter."""
    from moto.server import ThreadedMotoServer

    counter = RequestCounter()
    werkzeug = logging.getLogger("werkzeug")
    saved = (werkzeug.level, werkzeug.propagate)
    werkzeug.addHandler(counter)  # werkzeug adds its own stderr handler only to a logger without one
    werkzeug.setLevel(logging.INFO)
    werkzeug.propagate = False
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        public_bucket(url, BUCKET, load_folder(FIXTURE, PREFIX))
        yield url, counter
    finally:
        server.stop()
        werkzeug.removeHandler(counter)
        werkzeug.setLevel(saved[0])
        werkzeug.propagate = saved[1]


def harvester_overrides(url: str, folder: Path, *, fast: bool = False) -> dict[str, Any]:
    """Settings for the cone through the hats route into Parquet under ``folder``."""
    ra, dec, radius = CONE
    hats: dict[str, Any] = {"catalog_url": f"s3://{BUCKET}/{PREFIX}", "endpoint_url": url}
    if fast:
        hats["rate_limit"] = FAST_S3
    return {
        "output": str(folder / "raw"),
        "log_level": "error",
        "state": {"path": str(folder / "state.db")},
        "format": "parquet",
        "data_sources": {
            "ztf": {
                "route": "hats",
                "hats": hats,
                "irsa": {
                    "cone_search": {"ra": ra, "dec": dec, "radius": radius},
                    "mjd_range": None,
                    "filters": [],
                },
            }
        },
    }


#: the fresh-process harvester: settings from an empty config file (no .env), then one harvest
_HARVESTER_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import anyio
import harvester
from harvester.settings import load_settings
t1 = time.perf_counter()
settings = load_settings(sys.argv[1], env_file=None, **json.loads(sys.argv[2]))
report = anyio.run(lambda: harvester.harvest("ztf", settings=settings))
t2 = time.perf_counter()
src = report.sources["ztf"]
print(json.dumps({"import_s": t1 - t0, "read_s": t2 - t1, "status": src.status, "errors": len(src.errors),
                  "bytes": src.bytes_received}))
"""

#: the fresh-process lsdb: open the catalog with the cone, compute into memory, count
_LSDB_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import lsdb
t1 = time.perf_counter()
path, endpoint = sys.argv[1], sys.argv[2]
ra, dec, radius_arcsec = map(float, sys.argv[3:6])
catalog = lsdb.open_catalog(path, search_filter=lsdb.ConeSearch(ra, dec, radius_arcsec),
                            storage_options={"anon": True, "client_kwargs": {"endpoint_url": endpoint}})
frame = catalog.compute(progress_bar=False)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "read_s": t2 - t1, "objects": len(frame),
                  "epochs": len(frame["lightcurve"].nest.to_flat())}))
"""


@dataclass
class ConeRun:
    """One read of the cone by one client."""

    client: str
    mode: str  # "fresh" or "warm"
    wall_s: float
    objects: int
    epochs: int
    requests: dict[str, int]  # as the server counted them, by method
    bytes: int | None = None  # as harvester counted them (lsdb: not known)
    import_s: float | None = None  # fresh: the client's imports, inside the child
    read_s: float | None = None  # fresh: the read itself, inside the child


def read_output(folder: Path) -> tuple[int, int]:
    """(objects, epochs) in a harvest's Parquet output under ``folder/raw``."""
    files = sorted((folder / "raw" / "ztf").glob("*.parquet"))
    if not files:
        return 0, 0
    table = pa.concat_tables(pq.read_table(p, columns=["object_id"]) for p in files)
    return len(pc.unique(table.column("object_id"))), table.num_rows


def child_env(pycache: Path) -> dict[str, str]:
    """The environment of the fresh processes: no AWS endpoint or credentials of the caller, no
    instance-metadata lookups (loopback only), and a bytecode cache of their own.

    An installed environment has its modules' bytecode cached; a process that finds none compiles
    every module it imports from source (seconds for pandas, dask and hats). The calling shell may
    forbid writing bytecode (``PYTHONDONTWRITEBYTECODE``), so the children keep theirs under
    ``pycache`` (``PYTHONPYCACHEPREFIX``), filled by the untimed first run of each client.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


def run_child(code: str, args: list[str], pycache: Path) -> tuple[float, dict[str, Any]]:
    """``python -c code args`` in a fresh process: its wall time, end to end, and its JSON line."""
    start = time.perf_counter()
    done = subprocess.run(  # our own interpreter and code
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=child_env(pycache),
        timeout=300,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return wall, json.loads(done.stdout.strip().splitlines()[-1])


def harvester_fresh(url: str, counter: RequestCounter, pycache: Path, *, fast: bool = False) -> ConeRun:
    with tempfile.TemporaryDirectory(prefix="bench-hats-") as tmp:
        folder = Path(tmp)
        config = folder / "bench.yaml"
        config.write_text("{}\n", encoding="utf-8")
        before = counter.by_method.copy()
        overrides = json.dumps(harvester_overrides(url, folder, fast=fast))
        wall, out = run_child(_HARVESTER_CHILD, [str(config), overrides], pycache)
        if out["status"] != "ok" or out["errors"]:
            raise RuntimeError(f"harvester (fresh process) did not succeed: {out}")
        objects, epochs = read_output(folder)
    client = FAST if fast else HARVESTER
    requests = counter.since(before)
    return ConeRun(
        client, "fresh", wall, objects, epochs, requests, out["bytes"], out["import_s"], out["read_s"]
    )


def lsdb_fresh(url: str, counter: RequestCounter, pycache: Path) -> ConeRun:
    ra, dec, radius = CONE
    before = counter.by_method.copy()
    args = [f"s3://{BUCKET}/{PREFIX}/{CATALOG}", url, str(ra), str(dec), str(radius * 3600.0)]
    wall, out = run_child(_LSDB_CHILD, args, pycache)
    requests = counter.since(before)
    return ConeRun(
        LSDB, "fresh", wall, out["objects"], out["epochs"], requests, None, out["import_s"], out["read_s"]
    )


def harvester_warm(url: str, counter: RequestCounter, *, fast: bool = False) -> ConeRun:
    with tempfile.TemporaryDirectory(prefix="bench-hats-") as tmp:
        folder = Path(tmp)
        settings = bench_settings(folder, **harvester_overrides(url, folder, fast=fast))
        before = counter.by_method.copy()
        start = time.perf_counter()
        report = anyio.run(lambda: harvester.harvest("ztf", settings=settings))
        wall = time.perf_counter() - start
        requests = counter.since(before)
        src = report.sources["ztf"]
        if src.status != "ok" or src.errors:
            raise RuntimeError(f"harvester did not succeed: {src.status} {src.errors[:2]}")
        objects, epochs = read_output(folder)
    return ConeRun(FAST if fast else HARVESTER, "warm", wall, objects, epochs, requests, src.bytes_received)


def lsdb_warm(url: str, counter: RequestCounter) -> ConeRun:
    # Any: lsdb ships type hints but not the re-exports mypy needs (and CI runs without it)
    lsdb: Any = importlib.import_module("lsdb")
    ra, dec, radius = CONE
    before = counter.by_method.copy()
    start = time.perf_counter()
    catalog: Any = lsdb.open_catalog(
        f"s3://{BUCKET}/{PREFIX}/{CATALOG}",
        search_filter=lsdb.ConeSearch(ra, dec, radius * 3600.0),
        storage_options={"anon": True, "client_kwargs": {"endpoint_url": url}},
    )
    frame: Any = catalog.compute(progress_bar=False)
    wall = time.perf_counter() - start
    requests = counter.since(before)
    return ConeRun(LSDB, "warm", wall, len(frame), len(frame["lightcurve"].nest.to_flat()), requests)


@dataclass
class ConeResult:
    """Every timed read of goal 1, by (client, mode), in the order they were first measured."""

    runs: dict[tuple[str, str], list[ConeRun]] = field(default_factory=dict)

    def add(self, run: ConeRun) -> None:
        self.runs.setdefault((run.client, run.mode), []).append(run)

    def median(self, client: str, mode: str) -> float:
        return statistics.median(r.wall_s for r in self.runs[(client, mode)])


def measure_cone(fresh_repeats: int = FRESH_REPEATS, warm_repeats: int = REPEATS) -> ConeResult:
    """Goal 1: harvester, lsdb and the diagnostic harvester, alternating, ``fresh_repeats`` times
    in fresh processes, then ``warm_repeats`` times in this process; each way after one untimed
    run of each client (0 repeats: that way is skipped)."""
    result = ConeResult()
    with moto_bucket() as (url, counter), tempfile.TemporaryDirectory(prefix="bench-hats-pyc-") as tmp:
        pycache = Path(tmp)
        if fresh_repeats:
            harvester_fresh(url, counter, pycache), lsdb_fresh(url, counter, pycache)  # bytecode, page cache
            for _ in range(fresh_repeats):
                result.add(harvester_fresh(url, counter, pycache))
                result.add(lsdb_fresh(url, counter, pycache))
                result.add(harvester_fresh(url, counter, pycache, fast=True))
        if warm_repeats:
            harvester_warm(url, counter), lsdb_warm(url, counter)  # imports, first-call caches
            for _ in range(warm_repeats):
                result.add(harvester_warm(url, counter))
                result.add(lsdb_warm(url, counter))
                result.add(harvester_warm(url, counter, fast=True))
    return result


def _median_of(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):.2f}" if known else "—"


def _requests(by_method: dict[str, int]) -> str:
    total = sum(by_method.values())
    return f"{total} ({', '.join(f'{n} {m}' for m, n in sorted(by_method.items()))})" if total else "0"


def render_cone(result: ConeResult) -> tuple[list[str], list[Goal]]:
    ra, dec, radius = CONE
    lines = [
        f"**1. One cone (ra {ra}°, dec {dec}°, radius {radius}°) from a moto S3 server on loopback** "
        "holding the committed fixture (IRSA's DR5 sample in DR24's layout): harvester's hats route into "
        "Parquet against `lsdb.open_catalog(..., search_filter=lsdb.ConeSearch(...)).compute()` into "
        "memory. Alternating runs, medians. *fresh*: a new `python -c` process timed end to end "
        "(interpreter, imports, the read, exit; after one untimed run of each, which fills the "
        "children's bytecode cache); *warm*: in this process, after one untimed run of each. "
        "*import s* and *read s* are the child's own clocks. harvester runs at the hats route's default "
        f"budget ({DEFAULT_S3.requests_per_second:g} requests/s × {DEFAULT_S3.max_concurrency}); the "
        "1,000 req/s row is a diagnostic, not the goal. S3 requests "
        "as the server counted them (one run).",
        "",
        "| client | mode | wall s (median) | runs, s | import s | read s | objects | epochs | S3 requests "
        "| bytes received |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (client, mode), runs in result.runs.items():
        last = runs[-1]
        lines.append(
            f"| {client} | {mode} | {result.median(client, mode):.3f} | "
            f"{', '.join(f'{r.wall_s:.3f}' for r in runs)} | {_median_of([r.import_s for r in runs])} | "
            f"{_median_of([r.read_s for r in runs])} | {last.objects} | {last.epochs:,} | "
            f"{_requests(last.requests)} | {'—' if last.bytes is None else f'{last.bytes:,}'} |"
        )
    counts_ok = all(
        (r.objects, r.epochs) == (CONE_OBJECTS, CONE_EPOCHS) for runs in result.runs.values() for r in runs
    )
    goals: list[Goal] = []
    modes = [mode for mode in ("fresh", "warm") if (HARVESTER, mode) in result.runs]
    lines.append("")
    for mode in modes:
        ours, theirs = result.median(HARVESTER, mode), result.median(LSDB, mode)
        ratio = ours / theirs
        fast = result.median(FAST, mode) / theirs
        lines.append(
            f"- {mode}: harvester / lsdb = {ours:.3f} s / {theirs:.3f} s = **{ratio:.2f}×** "
            f"(with the S3 budget at 1,000 req/s: {fast:.2f}×)"
        )
        what = "fresh processes" if mode == "fresh" else "warm, in-process"
        goal = mode == "fresh"
        goals.append(
            (
                f"ZTF hats: a cone to Parquet / lsdb into memory ({what})",
                f"{ratio:.2f}×",
                "≤ 1.0×" if goal else "—",
                ratio <= 1.0 if goal else None,
            )
        )
    goals.append(
        (
            "ZTF hats: the cone's objects / epochs, every run of both clients",
            f"{CONE_OBJECTS} / {CONE_EPOCHS:,}" if counts_ok else "**differ**",
            f"{CONE_OBJECTS} / {CONE_EPOCHS:,}",
            counts_ok,
        )
    )
    return lines, goals


# -- goal 2: 1,000 objects, hats route against API route, fake archive with latency -------------------


def pick_stars(n: int, seed: int = 0) -> list[ZtfObject]:
    """The ``n`` stars of the fake sky nearest ``REGION`` that hold exactly one ZTF object (one
    filter, one field), as those objects: a cone around such a star holds that object alone."""
    radius = 0.4
    while True:
        stars: dict[tuple[float, float], list[ZtfObject]] = defaultdict(list)
        for obj in objects_in_cone(seed, *REGION, radius):
            stars[(obj.ra, obj.dec)].append(obj)
        single = sorted(
            (angular_sep_deg(*REGION, o[0].ra, o[0].dec), o[0].oid, o[0])
            for o in stars.values()
            if len(o) == 1
        )
        if len(single) >= n:
            return [obj for _, _, obj in single[:n]]
        radius *= 1.4


def region_centres(objects: list[ZtfObject]) -> list[tuple[float, float]]:
    """Centres for ``FakeArchive.hats_regions``: a 0.5° grid over the stars (the fake release has
    the pixels within 1° of each centre, so every star's pixel is there)."""
    return sorted({(round(o.ra * 2) / 2, round(o.dec * 2) / 2) for o in objects})


def expected_epochs(objects: list[ZtfObject], now_mjd: float, seed: int = 0) -> dict[str, int]:
    """Each object's epochs up to the archive's "today", as the fake sky holds them."""
    return {str(o.oid): int((epochs_of(seed, o).mjd <= now_mjd).sum()) for o in objects}


@dataclass
class RouteRun:
    """One harvest of the cones by one route."""

    route: str
    cones: int
    wall_s: float
    requests: int
    bytes: int
    epochs: dict[str, int]  # object id → epochs written
    irsa_requests: int
    s3_requests: int
    leaves: int  # leaf files read (hats route)
    irsa_violations: int


def route_settings(url: str, folder: Path, objects: list[ZtfObject], route: str) -> Settings:
    """One cone per object, all bands and epochs, into Parquet; IRSA's default budget on the API,
    the S3 default on the bucket (``localhost``, path-style)."""
    port = url.rsplit(":", 1)[1]
    targets = [{"ra": o.ra, "dec": o.dec, "radius": STAR_RADIUS} for o in objects]
    return bench_settings(
        folder,
        format="parquet",
        data_sources={
            "ztf": {
                "route": route,
                "irsa": {
                    "base_url": url + IRSA_PATH,
                    "targets": targets,
                    "cone_search": None,
                    "mjd_range": None,
                    "filters": [],
                },
                "hats": {"endpoint_url": f"http://{S3_HOST}:{port}"},
                "rate_limit": {"requests_per_second": IRSA_RPS, "max_concurrency": IRSA_AT_ONCE},
            }
        },
    )


def epochs_by_object(folder: Path) -> dict[str, int]:
    files = sorted((folder / "raw" / "ztf").glob("*.parquet"))
    if not files:
        return {}
    table = pa.concat_tables(pq.read_table(p, columns=["object_id"]) for p in files)
    return {
        str(c["values"]): int(c["counts"]) for c in pc.value_counts(table.column("object_id")).to_pylist()
    }


def run_route(archive: FakeArchive, url: str, objects: list[ZtfObject], route: str) -> RouteRun:
    """``harvester.harvest("ztf")`` over one cone per object, by ``route``."""
    time.sleep(1.05)  # the previous run's arrivals leave the server's one-second window
    archive.forget_arrivals()
    seen = len(archive.requests)
    violations = archive.violations.get(IRSA_HOST, 0)
    with tempfile.TemporaryDirectory(prefix="bench-hats-route-") as tmp:
        folder = Path(tmp)
        settings = route_settings(url, folder, objects, route)
        start = time.perf_counter()
        report = anyio.run(lambda: harvester.harvest("ztf", settings=settings))
        wall = time.perf_counter() - start
        src = report.sources["ztf"]
        if src.status != "ok" or src.errors:
            raise RuntimeError(f"ztf harvest ({route}) did not succeed: {src.status} {src.errors[:2]}")
        epochs = epochs_by_object(folder)
    new = archive.requests[seen:]
    return RouteRun(
        route,
        len(objects),
        wall,
        src.requests,
        src.bytes_received,
        epochs,
        sum(1 for e in new if e.host == IRSA_HOST),
        sum(1 for e in new if e.host == S3_HOST),
        len({e.path for e in new if e.host == S3_HOST and e.path.endswith(".parquet")}),
        archive.violations.get(IRSA_HOST, 0) - violations,
    )


def warm(archive: FakeArchive, url: str, objects: list[ZtfObject]) -> None:
    """Generate every answer once before the clock starts: the release's leaves (through one
    untimed hats-route harvest without latency, which also warms harvester's imports) and the
    API's answers (the fake sky keeps them in its caches)."""
    latency, archive.latency_s = archive.latency_s, 0.0
    try:
        with tempfile.TemporaryDirectory(prefix="bench-hats-warm-") as tmp:
            settings = route_settings(url, Path(tmp), objects, "hats")
            anyio.run(lambda: harvester.harvest("ztf", settings=settings))
            irsa = settings.data_sources.ztf.irsa
            for cone in ZtfSource(settings).cones():
                query = str(httpx.QueryParams(tuple(irsa_params(cone, irsa))))
                handle_irsa(query, seed=archive.seed, now_mjd=archive.now_mjd)
    finally:
        archive.latency_s = latency


@dataclass
class RoutesResult:
    """Goal 2's runs: the hats route's (several) and the API route's (one, maybe on a subset)."""

    objects: list[ZtfObject]
    expected: dict[str, int]
    hats: list[RouteRun]
    api: RouteRun
    latency_s: float

    @property
    def hats_median(self) -> RouteRun:
        ordered = sorted(self.hats, key=lambda r: r.wall_s)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def api_scaled_s(self) -> float:
        """The API route's time for every cone: measured, or scaled linearly from its subset."""
        return self.api.wall_s * len(self.objects) / self.api.cones


def measure_routes(
    n: int, api_cones: int | None = None, *, latency_s: float = LATENCY_S, hats_runs: int = REPEATS
) -> RoutesResult:
    """Goal 2: the API route once over the first ``api_cones`` of ``n`` cones (all by default),
    then the hats route ``hats_runs`` times over all of them, on one loopback fake archive."""
    objects = pick_stars(n)
    archive = FakeArchive(latency_s=latency_s, rate_limit_rps=IRSA_RPS)
    archive.hats_regions.extend(region_centres(objects))
    with running_server(archive) as url:
        warm(archive, url, objects)
        api = run_route(archive, url, objects[: api_cones or n], "api")
        hats = [run_route(archive, url, objects, "hats") for _ in range(hats_runs)]
    return RoutesResult(objects, expected_epochs(objects, archive.now_mjd), hats, api, latency_s)


def render_routes(result: RoutesResult) -> tuple[list[str], list[Goal]]:
    n = len(result.objects)
    hats, api = result.hats_median, result.api
    scaled = api.cones < n
    spread = max(angular_sep_deg(*REGION, o.ra, o.dec) for o in result.objects)
    budget = ZtfHats().rate_limit
    lines = [
        f"**2. {n:,} ZTF objects, hats route against API route**: {n:,} cones of radius {STAR_RADIUS:g}°, "
        f"each around a star of the fake sky that holds exactly one object (the nearest such stars to "
        f"({REGION[0]:g}°, {REGION[1]:g}°), within {spread:.2f}°); {result.latency_s * 1e3:.0f} ms latency "
        f"on every request of both routes, no bandwidth cap. The API route at IRSA's default budget "
        f"({IRSA_RPS:g} req/s × {IRSA_AT_ONCE}) on 127.0.0.1, the hats route at the S3 host's default "
        f"budget ({budget.requests_per_second:g} req/s × {budget.max_concurrency}) on localhost. Hats "
        f"route: median of {len(result.hats)} runs ({', '.join(f'{r.wall_s:.2f}' for r in result.hats)} s).",
        "",
        "| route | cones | wall s | S3 requests | IRSA requests | leaves read | bytes received | objects "
        "| epochs | IRSA violations |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in (api, hats):
        lines.append(
            f"| {r.route} | {r.cones:,} | {r.wall_s:.2f} | {r.s3_requests:,} | {r.irsa_requests:,} | "
            f"{r.leaves:,} | {r.bytes:,} | {len(r.epochs):,} | {sum(r.epochs.values()):,} | "
            f"{r.irsa_violations} |"
        )
    lines.append("")
    if scaled:
        lines.append(
            f"- The API route was measured on the first {api.cones:,} of the {n:,} cones and its time "
            f"**scaled linearly**: {api.wall_s:.1f} s × {n:,}/{api.cones:,} = {result.api_scaled_s:.0f} s "
            f"(its budget, not the answers' size, sets its pace: {api.cones / api.wall_s:.2f} cones/s)."
        )
    ratio = result.api_scaled_s / hats.wall_s
    lines.append(
        f"- API / hats = {result.api_scaled_s:.1f} s / {hats.wall_s:.2f} s = **{ratio:.0f}×**; the hats "
        f"route used {hats.s3_requests:,} S3 requests and {hats.bytes / 1e6:.2f} MB "
        f"({hats.bytes / n / 1e3:.1f} kB per object) for {hats.leaves} leaves."
    )
    if hats.leaves:
        per_leaf = (hats.s3_requests - 3) / hats.leaves
        waves = -(-hats.leaves // budget.max_concurrency)
        lines.append(
            f"- Floors of the hats route here: {per_leaf:.0f} sequential requests per leaf (folder "
            f"listing, footer, row groups) with {budget.max_concurrency} leaves at once (the "
            f"budget's `max_concurrency`): {waves} waves × {per_leaf:.0f} × {result.latency_s * 1e3:.0f} ms "
            f"≈ {waves * per_leaf * result.latency_s:.1f} s, plus 3 catalog reads; the S3 budget: "
            f"{hats.s3_requests} requests / {budget.requests_per_second:g} per s = "
            f"{hats.s3_requests / budget.requests_per_second:.1f} s."
        )
    api_ids = {str(o.oid) for o in result.objects[: api.cones]}
    api_expected = {k: v for k, v in result.expected.items() if k in api_ids}
    hats_ok = all(r.epochs == result.expected for r in result.hats)
    api_ok = api.epochs == api_expected
    agree = {k: v for k, v in hats.epochs.items() if k in api_ids} == api.epochs
    violations = api.irsa_violations + sum(r.irsa_violations for r in result.hats)
    goals: list[Goal] = [
        (
            f"ZTF hats: {n:,} objects, API route / hats route ({result.latency_s * 1e3:.0f} ms latency"
            + (f"; API measured on {api.cones:,} cones, scaled" if scaled else "")
            + ")",
            f"{ratio:.0f}×",
            f"≥ {SPEEDUP_GOAL:.0f}×" if n >= GOAL_OBJECTS else f"— (the goal is for {GOAL_OBJECTS:,})",
            ratio >= SPEEDUP_GOAL if n >= GOAL_OBJECTS else None,
        ),
        (
            "ZTF hats: both routes give the chosen objects, each with the sky's epochs",
            f"hats {len(hats.epochs):,}/{n:,}, API {len(api.epochs):,}/{api.cones:,}"
            + ("" if hats_ok and api_ok and agree else ", **epochs differ**"),
            "all, equal",
            hats_ok and api_ok and agree,
        ),
        ("ZTF hats: rate-limit violations on IRSA's host", str(violations), "0", violations == 0),
    ]
    return lines, goals


def render(cone: ConeResult, routes: RoutesResult, load: tuple[float, float]) -> Part:
    cone_lines, cone_goals = render_cone(cone)
    route_lines, route_goals = render_routes(routes)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    note = (
        f"Load average (1 min) at the start and the end of this part: {load[0]:.1f}, {load[1]:.1f} "
        f"on {cores} cores."
    )
    return (
        "ZTF hats route: a cone against lsdb, 1,000 objects against the API route (part 12)",
        "\n".join([note, "", *cone_lines, "", *route_lines]),
        [*cone_goals, *route_goals],
    )


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def run(quick: bool, api_cones: int | None = None) -> Part:
    """Both goals: quick, 50 cones for both routes (and one fresh process per client); otherwise
    1,000 cones, the API route on ``api_cones`` of them (default ``API_SUBSET``; 0: all)."""
    start = _load()
    cone = measure_cone(fresh_repeats=1 if quick else FRESH_REPEATS)
    if quick:
        routes = measure_routes(50)
    else:
        routes = measure_routes(GOAL_OBJECTS, API_SUBSET if api_cones is None else api_cones or None)
    return render(cone, routes, (start, _load()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="50 cones, both routes on all; one fresh process per client"
    )
    parser.add_argument(
        "--api-cones",
        type=int,
        default=None,
        metavar="N",
        help=f"full run: the API route on the first N cones, scaled (default {API_SUBSET}; 0: all 1,000)",
    )
    args = parser.parse_args(argv)
    print_part(run(args.quick, args.api_cones))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
