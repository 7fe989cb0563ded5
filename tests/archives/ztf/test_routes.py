"""Choosing a ZTF route: ``route: api | hats | auto``, the ``--route`` flag, and what ``auto`` decides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

import harvester
from harvester.archives.ztf import source as ztf_source
from harvester.archives.ztf.hats import Selection
from harvester.archives.ztf.source import ZtfSource
from harvester.settings import load_settings


def ztf(route: str, cones: int, **hats: Any) -> ZtfSource:
    targets = [{"ra": 10.0 + i * 0.5, "dec": 20.0, "radius": 0.01} for i in range(cones)]
    block = {"route": route, "irsa": {"targets": targets}, "hats": hats}
    return ZtfSource(load_settings(None, data_sources={"ztf": block}))


API_KEYS: list[tuple[str, ...]] = [("808100771274782", "58225.17139261")]
RELEASE_KEYS: list[tuple[str, ...]] = [("202116200000001", "hmjd59128.31640625")]


async def test_auto_takes_hats_for_a_large_first_harvest() -> None:
    source = ztf("auto", 50)
    (target,) = await source.plan(source.resolved(), held=[])
    assert isinstance(target, Selection) and len(target.cones) == 50
    assert (source.route, source.auto_reason) == ("hats", "50 cones, at least 50")


async def test_auto_takes_the_api_for_a_small_selection() -> None:
    source = ztf("auto", 49)
    targets = await source.plan(source.resolved(), held=[])
    assert len(targets) == 49 and source.route == "api"


async def test_auto_stays_on_the_api_for_an_output_of_api_records() -> None:
    source = ztf("auto", 500)
    targets = await source.plan(source.resolved(), held=API_KEYS)
    assert len(targets) == 500 and source.route == "api"
    assert source.auto_reason == "the output holds API records"


async def test_auto_stays_on_hats_for_an_output_of_release_records() -> None:
    source = ztf("auto", 3)
    (target,) = await source.plan(source.resolved(), held=RELEASE_KEYS)
    assert isinstance(target, Selection) and source.route == "hats"


async def test_auto_threshold_is_a_setting() -> None:
    source = ztf("auto", 5, auto_min_targets=5)
    await source.plan(source.resolved(), held=[])
    assert source.route == "hats"


async def test_auto_never_mixes_routes_in_one_folder(tmp_path: Path) -> None:
    """An API run stopped by --limit (no watermarks advanced), then auto with many cones: the
    folder holds API records, so the API it stays (found in review: it switched to hats)."""
    cones = [{"ra": 210.8023 + i * 1e-4, "dec": 54.3489, "radius": 0.05} for i in range(60)]
    api = {"ztf": {"route": "api", "irsa": {"targets": cones}}}
    first = await harvester.harvest("ztf", offline=True, output=tmp_path, limit=10, data_sources=api)
    assert first.sources["ztf"].written == 10
    block = {"ztf": {"route": "auto", "irsa": {"targets": cones}}}
    second = await harvester.harvest("ztf", offline=True, output=tmp_path, data_sources=block)
    assert second.sources["ztf"].errors == []
    routes = {orjson.loads(p.read_bytes())["route"] for p in (tmp_path / "ztf").glob("*.json")}
    assert routes == {"api"}


async def test_auto_on_the_api_keeps_the_api_watermark_keys() -> None:
    """route: auto that takes the API asks exactly what route: api asks, so a folder switched
    from api to auto stays incremental (found in review: its watermark keys changed)."""
    api = ztf("api", 3)
    auto = ztf("auto", 3)
    await auto.plan(auto.resolved(), held=API_KEYS)
    assert [auto.watermark_key(t) for t in auto.resolved()] == [api.watermark_key(t) for t in api.resolved()]


async def test_auto_without_the_hats_library_stays_on_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ztf_source, "hats_available", lambda: False)
    source = ztf("auto", 100)
    targets = await source.plan(source.resolved(), held=[])
    assert len(targets) == 100 and source.route == "api" and "not installed" in str(source.auto_reason)


def test_an_explicit_hats_route_without_the_library_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ztf_source, "hats_available", lambda: False)
    with pytest.raises(harvester.ConfigError, match=r"pip install 'harvester\[hats\]'"):
        ztf("hats", 2).resolved()


def test_the_api_route_keeps_its_query_and_watermark_keys() -> None:
    """Existing API folders keep their watermarks: the route adds nothing to an API query."""
    api = ztf("api", 2)
    assert "route" not in api.describe_query()
    hats = ztf("hats", 2)
    assert hats.describe_query()["route"] == "hats" and "hats_catalog" in hats.describe_query()


def test_the_bucket_gets_its_own_budget_only_when_hats_may_run() -> None:
    assert [host for host, _ in ztf("api", 1).budgets()] == ["irsa.ipac.caltech.edu"]
    assert [host for host, _ in ztf("auto", 1).budgets()] == [
        "irsa.ipac.caltech.edu",
        "ipac-irsa-ztf.s3.amazonaws.com",
    ]


def test_a_bad_catalog_url_is_named() -> None:
    with pytest.raises(
        harvester.ConfigError, match=r"data_sources\.ztf\.hats\.catalog_url.*s3://bucket/prefix"
    ):
        load_settings(None, data_sources={"ztf": {"hats": {"catalog_url": "https://example.org/hats"}}})


def offline_cli_records(folder: Path, *args: str) -> list[dict[str, Any]]:
    """``harvester run --source ztf --offline --format jsonl ARGS`` in ``folder``: the records it wrote."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harvester",
            "run",
            "--source",
            "ztf",
            "--offline",
            "--format",
            "jsonl",
            *args,
        ],
        cwd=folder,
        env={**os.environ, "COLUMNS": "80", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [
        orjson.loads(line)
        for p in (folder / "data" / "raw" / "ztf").glob("part-*.jsonl")
        for line in p.read_bytes().splitlines()
    ]


def test_the_cli_runs_the_hats_route_offline_from_any_folder(tmp_path: Path) -> None:
    lines = offline_cli_records(tmp_path, "--route", "hats")
    assert lines and {r["route"] for r in lines} == {"hats"} and all(r["provenance"]["sample"] for r in lines)
    readme = (tmp_path / "data" / "raw" / "ztf" / "README.md").read_text()
    assert '"route": "hats"' in readme


def test_the_cli_refuses_an_unknown_route(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harvester", "run", "--source", "ztf", "--route", "ftp", "--offline"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and "ftp" in done.stderr and "Traceback" not in done.stderr


def test_hats_units_are_healpix_pixels_of_the_cone_centres() -> None:
    import cdshealpix
    from astropy import units as u

    from harvester.executors.units import plan_units

    cones = [
        {"ra": 210.8, "dec": 54.35, "radius": 0.01},
        {"ra": 210.81, "dec": 54.35, "radius": 0.01},
        {"ra": 20.25, "dec": -28.07, "radius": 0.1},
    ]
    settings = load_settings(None, data_sources={"ztf": {"route": "hats", "irsa": {"targets": cones}}})
    units = plan_units("ztf", settings, cell_deg=1.0)  # order 5: pixels of about 1.8 degrees
    pixels = cdshealpix.nested.lonlat_to_healpix(
        [c["ra"] for c in cones] * u.deg, [c["dec"] for c in cones] * u.deg, 5
    )
    assert {unit.unit_id: len(unit.targets) for unit in units} == {
        f"hpx5-{pixels[0]}": 2,
        f"hpx5-{pixels[2]}": 1,
    }


async def test_work_units_on_an_object_store_take_the_hats_route(tmp_path: Path, s3_env: str) -> None:
    """An object-store output runs units; each unit reads its pixel's cones from the release, and
    the records equal a local folder's."""
    import pyarrow.parquet as pq
    import s3fs

    from harvester.executors.compact import compact
    from harvester.io.objectstore import ObjectStore

    s3fs.S3FileSystem(endpoint_url=s3_env, key="test", secret="test").mkdir("hats-units")
    cones = [{"ra": 210.8023, "dec": 54.3489, "radius": 0.05}, {"ra": 210.0, "dec": 54.0, "radius": 0.05}]
    block = {"ztf": {"route": "hats", "irsa": {"targets": cones}}}
    units = await harvester.harvest("ztf", offline=True, output="s3://hats-units/raw", data_sources=block)
    local = await harvester.harvest("ztf", offline=True, output=tmp_path / "local", data_sources=block)
    assert units.ok and local.ok and units.sources["ztf"].written == local.sources["ztf"].written > 0
    rows, _dropped = compact("ztf", "s3://hats-units/raw", tmp_path / "units.parquet")
    merged = {(r["object_id"], r["hmjd"]) for r in pq.read_table(tmp_path / "units.parquet").to_pylist()}
    here = {
        (r["object_id"], r["hmjd"])
        for p in (tmp_path / "local" / "ztf").glob("*.json")
        for r in [orjson.loads(p.read_bytes())]
    }
    assert rows == len(merged) == len(here) and merged == here
    store = ObjectStore("s3://hats-units/raw")
    manifests = [orjson.loads(store.get(key) or b"{}") for key in store.list("_units/ztf")]
    by_unit = {
        key.split("/")[2]: m["records"] for key, m in zip(store.list("_units/ztf"), manifests, strict=True)
    }
    assert sorted(by_unit) == ["hpx5-2687", "hpx5-2858"] and all(n > 0 for n in by_unit.values())
