"""Smoke test of the benchmark command's set-up (``python -m tests.tools.bench``), in a tiny configuration.

The benchmarks themselves are not tests. This checks that their set-up still works: the fake
archive on loopback answers what astroquery calls (columnsconfig, HEAD on downloads) — with plain
httpx, since astroquery lives in the optional ``bench`` group — the harvester and the bare client
of part 1 fetch the same light curves, part 2's clients run, and the results land in the
generated block of a performance document.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import replace
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from harvester.executors.compact import compact
from harvester.testing import FakeArchive, running_server
from tests.tools.bench import bench_compact, bench_tess_compare, bench_tess_s3, bench_ztf_hats, bench_ztf_rate

bench_main = importlib.import_module("tests.tools.bench.__main__")


def test_tess_compare_setup_and_astroquery_endpoints() -> None:
    archive = bench_tess_compare.make_archive(realistic=False)
    tics, files = bench_tess_compare.pick_targets(2, archive.now_mjd)
    assert len(files) >= 2
    assert bench_tess_compare.prewarm(archive, tics) > 0
    with running_server(archive) as url:
        config = httpx.post(
            f"{url}/portal/Mashup/Mashup.asmx/columnsconfig",
            content=b"colConfigId=Mast.Caom.Products",
            headers={"Content-type": "application/x-www-form-urlencoded", "Accept": "text/plain"},
        )
        assert config.status_code == 200 and config.json()["size"]["vot.datatype"] == "long"
        uri = f"mast:TESS/product/{files[0]}"
        head = httpx.head(f"{url}{bench_tess_compare.DOWNLOAD_PATH}", params={"uri": uri})
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) > 2880

        ours = bench_tess_compare.run_harvester(archive, url, tics)
        bare = bench_tess_compare.run_bare(archive, url, files)
    assert ours.lightcurves == bare.lightcurves == len(files)
    assert bare.requests == len(files) and ours.requests > bare.requests
    assert ours.violations == bare.violations == 0
    _, body, goals = bench_tess_compare.render([ours, bare], len(tics), 1)
    assert "| harvester |" in body and goals[0][0].startswith("TESS: astroquery")


def test_tess_s3_part_takes_each_route() -> None:
    """Part 11 in a tiny configuration: the HTTPS run never asks the bucket, the S3 run never
    downloads from MAST, and both write the same light curves."""
    (https, s3), targets, nbytes = bench_tess_s3.measure(2, realistic=False)
    assert https.lightcurves == s3.lightcurves >= 2 and nbytes > 0
    assert (https.s3_gets, https.mast_downloads) == (0, https.lightcurves)
    assert (s3.s3_gets, s3.mast_downloads) == (s3.lightcurves, 0)
    _, body, goals = bench_tess_s3.render([https, s3], targets, nbytes)
    assert "| S3 |" in body and goals[0][0] == "TESS S3: HTTPS / S3 wall time"


def test_ztf_hats_cone_from_the_moto_bucket() -> None:
    """Part 12, goal 1's set-up: the fixture on a moto server, harvester's hats route (at both
    budgets) writes the cone's 78 objects and 2,438 epochs to Parquet, the server counts its
    requests, and lsdb (in the optional bench group) reads the same, when it is installed."""
    with bench_ztf_hats.moto_bucket() as (url, counter):
        ours = bench_ztf_hats.harvester_warm(url, counter)
        fast = bench_ztf_hats.harvester_warm(url, counter, fast=True)
        lsdb = importlib.util.find_spec("lsdb") is not None
        theirs = bench_ztf_hats.lsdb_warm(url, counter) if lsdb else replace(ours, client="lsdb")
    for run in (ours, fast, theirs):
        assert (run.objects, run.epochs) == (78, 2438) and run.requests.get("GET", 0) >= 5
    assert ours.bytes == fast.bytes and ours.bytes and set(ours.requests) == {"GET"}
    result = bench_ztf_hats.ConeResult()
    for run in (ours, theirs, fast):
        result.add(run)
    lines, goals = bench_ztf_hats.render_cone(result)
    assert [what for what, *_ in goals] == [
        "ZTF hats: a cone to Parquet / lsdb into memory (warm, in-process)",
        "ZTF hats: the cone's objects / epochs, every run of both clients",
    ]
    assert goals[0][3] is None and goals[1][3] is True and any("| lsdb | warm |" in line for line in lines)


def test_ztf_hats_routes_agree_on_a_few_stars() -> None:
    """Part 12, goal 2 in a tiny configuration (3 single-object stars, no latency): both routes
    return the same objects with the fake sky's epochs, and the table says what was scaled."""
    result = bench_ztf_hats.measure_routes(3, 2, latency_s=0.0, hats_runs=1)
    (hats,) = result.hats
    assert len(result.objects) == 3 and hats.epochs == result.expected and hats.leaves >= 1
    assert result.api.cones == 2 and result.api.irsa_requests == 2 and hats.irsa_requests == 0
    assert result.api.epochs == {k: v for k, v in result.expected.items() if k in result.api.epochs}
    lines, goals = bench_ztf_hats.render_routes(result)
    assert any("scaled linearly" in line for line in lines)
    assert goals[1][3] is True and goals[2][3] is True


def test_ztf_rate_clients_run() -> None:
    cones = bench_ztf_rate.star_cones(FakeArchive(), 2)
    ours = bench_ztf_rate.run_harvester(cones, 20.0, 2)
    loop = bench_ztf_rate.run_sequential(cones, 20.0)
    assert ours.requests == loop.requests == 2
    assert ours.records == loop.records > 0
    assert ours.violations == 0


def test_compact_bench_units_compact_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Part 8's units (each repeating its predecessor's last epoch) give the same rows streamed
    and through the in-memory baseline, with the overlaps dropped."""
    monkeypatch.setattr(bench_compact, "PER_UNIT", 5)
    bench_compact.write_units(tmp_path / "units", 12)
    streamed = compact("ztf", str(tmp_path / "units"), tmp_path / "streamed.parquet")
    in_memory = bench_compact.in_memory_compact("ztf", str(tmp_path / "units"), tmp_path / "memory.parquet")
    assert streamed == (12, 2) and in_memory[0] == 12
    rows = pq.read_table(tmp_path / "streamed.parquet").to_pylist()
    assert rows == pq.read_table(tmp_path / "memory.parquet").to_pylist()


def test_results_replace_only_the_generated_block(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nintro\n\n## Hand-written analysis\n\nkept\n", encoding="utf-8")
    part = ("Part title", "| a | b |", [("thing", "2.0×", "≥ 1×", True), ("other", "n/a", "—", None)])
    block = bench_main.render([(1, part, 3.0)], quick=True, total_s=60.0)
    assert "| 1 | thing | 2.0× | ≥ 1× | yes |" in block and "### Part title" in block
    bench_main.write_doc(block, doc)
    bench_main.write_doc(block.replace("2.0×", "3.0×"), doc)
    text = doc.read_text(encoding="utf-8")
    assert text.count(bench_main.BEGIN) == 1 and "3.0×" in text and "2.0×" not in text
    assert text.index("intro") < text.index(bench_main.BEGIN) < text.index("## Hand-written analysis")
    assert text.endswith("kept\n")


def test_startup_part_times_fresh_processes() -> None:
    """Part 10 times real commands in fresh interpreters and reports both start-up goals."""
    from tests.tools.bench import bench_startup

    title, body, goals = bench_startup.run(quick=True)
    assert "part 10" in title and body.count("\n| ") >= 6
    assert [what for what, *_ in goals] == ["`import harvester` (bare interpreter)", "`harvester --help`"]


def test_part_4_judges_no_share_of_a_baseline_whose_runs_disagree() -> None:
    """Medians of interleaved runs; a per-file share against a bare loop whose runs differ more
    than 1.5x (the disk's throttled and free minutes) is reported inconclusive, not met. Where
    the same pair also ran on tmpfs, that share decides, and the disk's is shown beside it."""
    from tests.tools.bench.bench_throughput import Measured, Throughput, median_of, render

    def runs(what: str, *seconds: float) -> Throughput:
        return median_of([Throughput(what, 100_000, s) for s in seconds])

    ours = [runs("jsonl", 0.5, 0.4, 0.45), runs("json", 5.0, 5.0, 5.0), runs("parquet", 0.3, 0.3, 0.3)]
    steady = runs("bare files", 4.0, 4.1, 4.2)
    assert steady.seconds == 4.1 and steady.runs == 3
    shaky = runs("bare files", 2.0, 4.1, 19.0)
    rest = [runs("bare jsonl", 0.2, 0.2, 0.2), runs("bare parquet", 1.0, 1.0, 1.0)]
    for bare, met in ((steady, True), (shaky, False)):
        _, body, goals = render(Measured(ours, [bare, *rest], []))
        (files,) = [g for g in goals if "per-record" in g[0]]
        assert files[3] is met and ("inconclusive" in files[1]) is not met
        assert "slowest – fastest" in body
    for memory, met in (
        ((runs("json", 2.0, 2.0), runs("bare", 1.5, 1.5)), True),
        ((runs("json", 3.0), runs("bare", 1.5)), False),
    ):
        _, body, goals = render(Measured(ours, [shaky, *rest], [], memory))
        (files,) = [g for g in goals if "per-record" in g[0]]
        assert files[3] is met and "on tmpfs" in files[1] and "on the disk" in files[1]
        assert body.count("| json |") == 2
