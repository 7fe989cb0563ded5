"""Object ids as a ZTF selection (``data_sources.ztf.irsa.object_ids`` / ``object_ids_file``, ``--irsa-id``),
on both routes.

The API route asks IRSA for up to 200 ids a request (repeated ``ID``), never with a band (IRSA takes none
with ``ID``): the bands are kept here. The hats route finds the ids' pixels through the collection's
object-id index (tests/data/ztf_hats holds one) and reads only those leaves. On either route an object asked
by id gives the records a cone around it gives.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

import harvester
from harvester.archives.ztf.source import ID_CHUNK, ObjectIds, ZtfSource
from harvester.executors.units import plan_units, sky_cell, unit_settings
from harvester.settings import load_settings
from harvester.testing import FakeArchive
from harvester.testing._hats import load_folder
from harvester.testing._irsa import objects_in_cone
from tests.archives.ztf.test_hats_route import (
    CATALOG_URL,
    COLLECTION,
    CONE,
    PREFIX,
    records,
    reference,
    separation,
)
from tests.archives.ztf.test_routes import offline_cli_records

SAMPLE = {"ra": 210.8023, "dec": 54.3489, "radius": 0.02}
INDEX = COLLECTION / "ztf_dr5_sample_lc-hats_objectid" / "dataset" / "index"
#: fields that name the request or the moment, not the epoch
VOLATILE = ("fetched_at", "provenance")


def sample_ids(radius: float = SAMPLE["radius"]) -> list[int]:
    return [o.oid for o in objects_in_cone(FakeArchive().seed, SAMPLE["ra"], SAMPLE["dec"], radius)]


async def harvest(
    archive: FakeArchive, out: Path, irsa: dict[str, Any], seen: list[httpx.Request] | None = None, **ztf: Any
) -> Any:
    """Harvest ``irsa``'s selection from ``archive``, every request sent also kept in ``seen``."""
    query = {"cone_search": None, "mjd_range": None, "filters": [], **irsa}

    class Spy(httpx.ASGITransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if seen is not None:
                seen.append(request)
            return await super().handle_async_request(request)

    report = await harvester.harvest(
        "ztf", output=out, transport=Spy(app=archive), data_sources={"ztf": {"irsa": query, **ztf}}
    )
    return report.sources["ztf"]


def epochs(folder: Path) -> dict[tuple[str, ...], dict[str, Any]]:
    """Each record by its epoch, without the fields that say when and by which request it came."""
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    for r in records(folder):
        found[(r["object_id"], str(r["mjd"] if r["mjd"] is not None else r["hmjd"]), str(r["hmjd_seq"]))] = {
            k: v for k, v in r.items() if k not in VOLATILE
        }
    return found


def irsa_requests(archive: FakeArchive) -> list[dict[str, list[str]]]:
    return [r.params for r in archive.requests if r.path.endswith("nph_light_curves")]


# -- the API route -----------------------------------------------------------------------------------


async def test_ids_are_asked_200_a_request_as_repeated_id_without_a_band(tmp_path: Path) -> None:
    real = sample_ids(0.12)
    absent = [808100999000000 + i for i in range(450 - len(real))]  # well-formed, in no field of the sky
    fake = FakeArchive()
    src = await harvest(fake, tmp_path, {"object_ids": real + absent, "filters": ["zg", "zr"]})
    asked = irsa_requests(fake)
    assert src.errors == [] and src.targets == 3
    assert sorted(len(p["ID"]) for p in asked) == [50, ID_CHUNK, ID_CHUNK]
    assert sorted(int(i) for p in asked for i in p["ID"]) == sorted(real + absent)
    for params in asked:
        assert not {"BANDNAME", "BAND", "POS", "CIRCLE", "NOBS_MIN", "MAG"} & set(params)
        assert params["FORMAT"] == ["CSV"] and params["BAD_CATFLAGS_MASK"] == ["0"]
    assert {r["object_id"] for r in records(tmp_path / "ztf")} <= {str(i) for i in real}


async def test_bands_are_kept_client_side_as_a_cone_with_bandname_keeps_them(tmp_path: Path) -> None:
    by_cone = await harvest(FakeArchive(), tmp_path / "cone", {"cone_search": SAMPLE, "filters": ["zg"]})
    fake = FakeArchive()
    by_id = await harvest(fake, tmp_path / "ids", {"object_ids": sample_ids(), "filters": ["zg"]})
    assert by_cone.errors == by_id.errors == [] and by_id.written == by_cone.written > 0
    got = epochs(tmp_path / "ids" / "ztf")
    assert {r["filter"] for r in got.values()} == {"zg"}
    assert got == epochs(tmp_path / "cone" / "ztf")
    assert all("BANDNAME" not in p for p in irsa_requests(fake))


async def test_an_object_asked_by_id_gives_the_records_of_a_cone_around_it(tmp_path: Path) -> None:
    await harvest(FakeArchive(), tmp_path / "cone", {"cone_search": SAMPLE})
    await harvest(FakeArchive(), tmp_path / "ids", {"object_ids": sample_ids()})
    cone = epochs(tmp_path / "cone" / "ztf")
    assert cone and epochs(tmp_path / "ids" / "ztf") == cone


async def test_a_later_run_asks_only_for_newer_epochs_of_the_ids(tmp_path: Path) -> None:
    fake = FakeArchive(now_mjd=60000.0)
    first = await harvest(fake, tmp_path, {"object_ids": sample_ids()})
    newest = max(r["mjd"] for r in records(tmp_path / "ztf"))
    fake.now_mjd = 60300.0
    fake.requests.clear()
    second = await harvest(fake, tmp_path, {"object_ids": sample_ids()})
    (params,) = irsa_requests(fake)
    assert params["TIME"] == [f"{newest - 1.0!r} Inf"] and "BANDNAME" not in params
    assert first.written > 0 and second.written > 0 and second.already_present < first.written
    assert max(r["mjd"] for r in records(tmp_path / "ztf")) > newest


async def test_cones_and_ids_mix_in_one_selection(tmp_path: Path) -> None:
    elsewhere = [o.oid for o in objects_in_cone(FakeArchive().seed, 210.0, 54.0, 0.02)]
    await harvest(FakeArchive(), tmp_path / "cone", {"cone_search": SAMPLE})
    await harvest(FakeArchive(), tmp_path / "far", {"object_ids": elsewhere})
    fake = FakeArchive()
    src = await harvest(fake, tmp_path / "both", {"cone_search": SAMPLE, "object_ids": elsewhere})
    assert src.errors == [] and src.targets == 2 and len(irsa_requests(fake)) == 2
    both = epochs(tmp_path / "both" / "ztf")
    assert both == epochs(tmp_path / "cone" / "ztf") | epochs(tmp_path / "far" / "ztf")


def test_a_batch_is_labelled_by_its_first_and_last_id() -> None:
    source = ZtfSource(load_settings(None, data_sources={"ztf": {"irsa": {"object_ids": [3, 1, 2, 3]}}}))
    assert source.cones() == [] and [source.label(t) for t in source.resolved()] == ["oids 1..3 (3)"]
    assert ObjectIds((7,)).label == "oid 7"


def test_ids_are_targets_of_their_own_so_no_sample_cone_is_added() -> None:
    settings = load_settings(None, data_sources={"ztf": {"irsa": {"object_ids": [686103400067717]}}})
    assert settings.data_sources.ztf.names_targets()
    assert ZtfSource(settings).resolved() == [ObjectIds((686103400067717,))]


def test_work_units_carry_whole_batches_and_ask_what_a_local_run_asks(tmp_path: Path) -> None:
    ids = list(range(10**14, 10**14 + 450))
    cone = {"ra": 10.0, "dec": 20.0, "radius": 0.01}
    settings = load_settings(None, data_sources={"ztf": {"irsa": {"object_ids": ids, "targets": [cone]}}})
    units = plan_units("ztf", settings)
    cell = sky_cell(cone["ra"], cone["dec"])
    assert [u.unit_id for u in units] == [cell, f"oids-{ids[0]}", f"oids-{ids[200]}", f"oids-{ids[400]}"]
    local = ZtfSource(settings)
    keys = set()
    for unit in units:
        narrowed = ZtfSource(unit_settings(unit, settings, tmp_path / unit.unit_id))
        keys |= {narrowed.watermark_key(t) for t in narrowed.resolved()}
    assert keys == {local.watermark_key(t) for t in local.resolved()}


# -- settings ---------------------------------------------------------------------------------------------


def test_a_bad_id_is_one_line_naming_its_key() -> None:
    with pytest.raises(harvester.ConfigError, match=r"data_sources\.ztf\.irsa\.object_ids\.1") as caught:
        load_settings(None, data_sources={"ztf": {"irsa": {"object_ids": [686103400067717, -5]}}})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "686103400067717\n# a comment\n\n686103400067718\n",
        "oid,ra,dec\n686103400067717,1.0,2.0\n686103400067718,1.0,2.0\n",
        "name,objectid\na,686103400067717\nb,686103400067718\n",
        "\ufeffoid,ra\n686103400067717,1\n686103400067718,2\n",  # a spreadsheet's CSV, with its BOM
    ],
)
def test_an_ids_file_is_one_id_a_line_or_a_csv_with_an_oid_column(tmp_path: Path, text: str) -> None:
    (tmp_path / "ids.csv").write_text(text)
    settings = load_settings(None, data_sources={"ztf": {"irsa": {"object_ids_file": tmp_path / "ids.csv"}}})
    assert ZtfSource(settings).resolved() == [ObjectIds((686103400067717, 686103400067718))]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("686103400067717\nZTF18abc\n", "line 2: 'ZTF18abc' is not a ZTF object id (a positive integer)"),
        (
            "name,ra,dec\na,1,2\n",
            "line 1: an object ids file is one id a line, or a CSV with an oid or objectid",
        ),
        ("oid,ra\n686103400067717,1\n,2\n", "line 3: '' is not a ZTF object id"),
        ("686103400067717\n\u00b2\n", "line 2: '\u00b2' is not a ZTF object id"),  # a digit to isdigit()
        ("686103400067717\n\u0661\u0662\u0663\n", "line 2: '\u0661\u0662\u0663' is not a ZTF object id"),
    ],
)
def test_a_bad_ids_file_is_one_line_naming_the_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "ids.csv").write_text(text)
    settings = load_settings(None, data_sources={"ztf": {"irsa": {"object_ids_file": tmp_path / "ids.csv"}}})
    with pytest.raises(harvester.ConfigError) as caught:
        ZtfSource(settings).resolved()
    assert str(caught.value).startswith(f"{tmp_path / 'ids.csv'}: {message}") and "\n" not in str(
        caught.value
    )


# -- the hats route ----------------------------------------------------------------------------------------


@pytest.fixture
def archive() -> FakeArchive:
    """The fake archive, its bucket holding the committed DR5 fixture (and its id index) under PREFIX."""
    fake = FakeArchive()
    fake.bucket_files.update(load_folder(COLLECTION, PREFIX))
    return fake


def hats(**irsa: Any) -> dict[str, Any]:
    return {"route": "hats", "hats": {"catalog_url": CATALOG_URL}, **irsa}


def fixture_rows() -> list[dict[str, Any]]:
    rows = []
    for path in sorted((COLLECTION / "ztf_dr5_sample_lc-hats" / "dataset").rglob("*.parquet")):
        rows += pq.read_table(path, columns=["objectid", "objra", "objdec", "_healpix_29"]).to_pylist()
    return rows


def cone_ids(cone: dict[str, float]) -> list[int]:
    return sorted(
        r["objectid"]
        for r in fixture_rows()
        if separation(r["objra"], r["objdec"], cone["ra"], cone["dec"]) <= cone["radius"]
    )


def by_id(ids: list[int], **selection: Any) -> dict[tuple[str, float], dict[str, Any]]:
    """The fixture's epochs of ``ids``, read with plain pyarrow: a cone of 0 degrees around each object."""
    positions = {r["objectid"]: r for r in fixture_rows()}
    cones = [{"ra": positions[i]["objra"], "dec": positions[i]["objdec"], "radius": 1e-9} for i in ids]
    return {k: v for k, v in reference(cones, **selection).items() if int(k[0]) in ids}


async def test_hats_ids_give_exactly_the_parquet_epochs_and_what_the_cone_gives(
    archive: FakeArchive, tmp_path: Path
) -> None:
    ids = cone_ids(CONE)
    cone = await harvest(archive, tmp_path / "cone", {"cone_search": CONE}, **hats())
    src = await harvest(archive, tmp_path / "ids", {"object_ids": ids}, **hats())
    assert (src.status, src.written, src.errors) == ("ok", 2438, []) and len(ids) == 78
    got = {(r["object_id"], r["hmjd"]): r for r in records(tmp_path / "ids" / "ztf")}
    expected = by_id(ids)
    assert set(got) == set(expected)
    for key, values in expected.items():
        assert {name: got[key][name] for name in values} == values, key
    assert cone.written == 2438 and epochs(tmp_path / "ids" / "ztf") == epochs(tmp_path / "cone" / "ztf")


async def test_hats_ids_read_only_their_index_row_groups_and_leaves(tmp_path: Path) -> None:
    """Ids of one index row group in one leaf: the index's other file is not read, the ranged GETs of
    its file cover that row group only, and only that leaf is read."""
    archive = FakeArchive()
    archive.bucket_files.update(load_folder(COLLECTION, PREFIX))
    part = pq.ParquetFile(INDEX / "part.0.parquet")
    group = part.read_row_group(2).to_pylist()
    ids = [r["objectid"] for r in group if (r["Norder"], r["Npix"]) == (group[0]["Norder"], group[0]["Npix"])]
    seen: list[httpx.Request] = []
    src = await harvest(archive, tmp_path, {"object_ids": ids}, seen, **hats())
    assert src.errors == [] and src.written == len(by_id(ids)) > 0
    index = [r for r in seen if "_objectid/dataset/index/" in r.url.path]
    assert {r.url.path.rsplit("/", 1)[1] for r in index} == {"part.0.parquet"}
    meta = part.metadata
    starts = [
        min(o for o in (c.dictionary_page_offset, c.data_page_offset) if o)
        for c in (meta.row_group(g).column(0) for g in range(meta.num_row_groups))
    ]
    spans = list(zip(starts, [*starts[1:], (INDEX / "part.0.parquet").stat().st_size], strict=True))
    ranges = [byte_range(r) for r in index if byte_range(r) is not None]  # not the tail (bytes=-n)
    read = {g for g, (lo, hi) in enumerate(spans) for start, stop in ranges if start < hi and lo < stop}
    assert ranges and read == {2}
    leaves = {r.url.path.split("/Npix=")[1].split("/")[0] for r in seen if "/Npix=" in r.url.path}
    assert leaves == {str(group[0]["Npix"])}


def byte_range(request: httpx.Request) -> Any:
    """``(start, stop)`` of a ``Range: bytes=a-b`` request; None for a tail or a whole object."""
    start, _, stop = request.headers.get("range", "bytes=-").split("=")[1].partition("-")
    return (int(start), int(stop) + 1) if start else None


async def test_ids_not_in_the_release_give_no_record_and_no_error(
    archive: FakeArchive, tmp_path: Path
) -> None:
    src = await harvest(archive, tmp_path, {"object_ids": [202116200000002, 999999999999999]}, **hats())
    assert (src.status, src.written, src.errors) == ("ok", 0, [])
    assert not [r for r in archive.requests if "/Npix=" in r.path]  # no leaf is read


async def test_hats_cones_and_ids_mix_and_keep_bands_and_times(archive: FakeArchive, tmp_path: Path) -> None:
    far = [i for i in cone_ids({"ra": 20.6, "dec": -27.8, "radius": 0.05}) if i not in cone_ids(CONE)][:5]
    window = (59150.0, 59300.0)
    selection: dict[str, Any] = {"bands": {1}, "hmjd_range": window, "mask": 32768}
    irsa = {"cone_search": CONE, "object_ids": far, "filters": ["zg"], "mjd_range": list(window)}
    src = await harvest(archive, tmp_path, irsa | {"bad_catflags_mask": 32768}, **hats())
    expected = reference([CONE], **selection) | by_id(far, **selection)
    assert far and src.errors == [] and src.written == len(expected)
    assert {(r["object_id"], r["hmjd"]) for r in records(tmp_path / "ztf")} == set(expected)


async def test_a_release_without_an_id_index_fails_the_ids_in_one_line_and_reads_the_cones(
    archive: FakeArchive, tmp_path: Path
) -> None:
    key = f"{PREFIX}/collection.properties"
    archive.bucket_files[key] = b"".join(
        line for line in io.BytesIO(archive.bucket_files[key]) if not line.startswith(b"all_indexes")
    )
    src = await harvest(archive, tmp_path, {"cone_search": CONE, "object_ids": [202116200000001]}, **hats())
    (failure,) = src.errors
    assert failure.target == "hats: 1 cone, 1 object id/object ids"
    assert failure.cause == (
        f"object ids need the release's object-id index: {CATALOG_URL}/collection.properties lists no "
        "object-id index (no all_indexes); select by cone, or take route: api"
    )
    assert src.written == 2438  # the cone's epochs


async def test_a_catalog_url_of_the_catalog_itself_has_no_index_to_read(
    archive: FakeArchive, tmp_path: Path
) -> None:
    url = f"{CATALOG_URL}/ztf_dr5_sample_lc-hats"
    src = await harvest(
        archive, tmp_path, {"object_ids": [202116200000001]}, route="hats", hats={"catalog_url": url}
    )
    (failure,) = src.errors
    assert failure.cause.startswith(f"object ids need the release's object-id index: {url} is a catalog, not")
    assert src.written == 0 and "\n" not in failure.cause


async def test_offline_both_routes_give_an_objects_epochs_by_id(tmp_path: Path) -> None:
    """The fake release has an id index too: the ids the API answers are the ids the release holds."""
    ids = sample_ids()
    for route in ("api", "hats"):
        report = await harvester.harvest(
            "ztf",
            offline=True,
            output=tmp_path / route,
            data_sources={"ztf": {"route": route, "irsa": {"cone_search": None, "object_ids": ids}}},
        )
        assert report.sources["ztf"].errors == [] and report.sources["ztf"].written > 0
    api = {(r["object_id"], r["filter"]) for r in records(tmp_path / "api" / "ztf")}
    release = {(r["object_id"], r["filter"]) for r in records(tmp_path / "hats" / "ztf")}
    assert api == release and {int(oid) for oid, _ in api} <= set(ids)


def test_the_cli_takes_ids_on_the_hats_route_offline(tmp_path: Path) -> None:
    ids = sample_ids()[:3]
    lines = offline_cli_records(
        tmp_path, "--route", "hats", *(a for oid in ids for a in ("--irsa-id", str(oid)))
    )
    assert lines and {int(r["object_id"]) for r in lines} == set(ids)
    assert {r["route"] for r in lines} == {"hats"}
