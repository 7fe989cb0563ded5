"""The fake archive (harvester.testing): IRSA and MAST behaviour, determinism, faults, politeness."""

from __future__ import annotations

import io
import json
import math
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from astropy.io import fits
from astropy.timeseries import LombScargle

import harvester.testing
from harvester.testing import IRSA_COLUMNS, FakeArchive, Fault, make_spoc_lightcurve, running_server

IRSA = "https://irsa.ipac.caltech.edu/cgi-bin/ZTF/nph_light_curves"
MAST = "https://mast.stsci.edu"
INVOKE = f"{MAST}/api/v0/invoke"
DOWNLOAD = f"{MAST}/api/v0.1/Download/file"
CENTER = (210.8023, 54.3489)
PI_MEN = 261136679  # sectors 1, 4, 8 in the fake
LC_COLUMNS = [
    "TIME", "TIMECORR", "CADENCENO", "SAP_FLUX", "SAP_FLUX_ERR", "SAP_BKG", "SAP_BKG_ERR", "PDCSAP_FLUX",
    "PDCSAP_FLUX_ERR", "QUALITY", "PSF_CENTR1", "PSF_CENTR1_ERR", "PSF_CENTR2", "PSF_CENTR2_ERR",
    "MOM_CENTR1", "MOM_CENTR1_ERR", "MOM_CENTR2", "MOM_CENTR2_ERR", "POS_CORR1", "POS_CORR2",
]  # fmt: skip


@pytest.fixture
def archive() -> FakeArchive:
    return FakeArchive(executing_polls=0)


@pytest.fixture
async def client(archive: FakeArchive) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=archive), timeout=10) as c:
        yield c


def cone(ra: float, dec: float, radius: float, **extra: str) -> dict[str, str]:
    return {"POS": f"CIRCLE {ra} {dec} {radius}", "FORMAT": "CSV", **extra}


async def irsa_rows(client: httpx.AsyncClient, params: dict[str, str]) -> list[list[str]]:
    response = await client.get(IRSA, params=params)
    lines = response.text.splitlines()
    assert lines[0] == ",".join(IRSA_COLUMNS), response.text[:300]
    return [line.split(",") for line in lines[1:]]


def mast_request(service: str, params: dict[str, Any], **extra: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "service": service,
        "params": params,
        "format": "json",
        "pagesize": 1000,
        "page": 1,
        "cachebreaker": "test",
    }
    request.update(extra)
    return request


async def invoke(client: httpx.AsyncClient, request: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(INVOKE, data={"request": json.dumps(request)})
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


def by_name(tic_ids: list[str], *more: dict[str, Any]) -> dict[str, Any]:
    filters = [{"paramName": "target_name", "values": tic_ids}, *more]
    return {"columns": "*", "filters": filters}


def position_params(radius: float = 0.2, *filters: dict[str, Any]) -> dict[str, Any]:
    return {"columns": "*", "filters": list(filters), "position": f"{CENTER[0]}, {CENTER[1]}, {radius}"}


# --------------------------------------------------------------------------- module surface


def test_public_api_is_pinned() -> None:
    """harvester.testing exports exactly the documented names (an archive's fake is built from
    FakeRoute, FakeRequest and Reply)."""
    assert sorted(harvester.testing.__all__) == sorted(
        [
            "FakeArchive",
            "Fault",
            "serve",
            "running_server",
            "make_spoc_lightcurve",
            "IRSA_COLUMNS",
            "FakeRequest",
            "FakeRoute",
            "Reply",
            "json_reply",
            "text_reply",
        ]
    )


# --------------------------------------------------------------------------- IRSA


async def test_irsa_same_request_is_byte_identical() -> None:
    """Two archives with the same seed answer a request with the same bytes; another seed differs."""
    bodies = []
    for seed in (0, 0, 1):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=FakeArchive(seed=seed))) as c:
            bodies.append((await c.get(IRSA, params=cone(*CENTER, 0.05))).content)
    assert bodies[0] == bodies[1]
    assert bodies[0] != bodies[2]
    assert bodies[0].count(b"\n") > 50


async def test_irsa_csv_rows_look_like_irsa(client: httpx.AsyncClient) -> None:
    """CSV answers are text/csv with IRSA's 24 columns, 15-digit oids and one filter per oid."""
    response = await client.get(IRSA, params=cone(*CENTER, 0.05))
    assert response.headers["content-type"] == "text/csv"
    rows = await irsa_rows(client, cone(*CENTER, 0.05))
    assert all(len(r) == len(IRSA_COLUMNS) for r in rows)
    col = {name: i for i, name in enumerate(IRSA_COLUMNS)}
    assert all(len(r[col["oid"]]) == 15 for r in rows)
    filters_per_oid: dict[str, set[str]] = {}
    for r in rows:
        filters_per_oid.setdefault(r[col["oid"]], set()).add(r[col["filtercode"]])
    assert all(len(f) == 1 for f in filters_per_oid.values())
    assert 1 <= len(filters_per_oid) <= 40
    mags = [float(r[col["mag"]]) for r in rows]
    assert min(mags) > 13.0
    assert max(mags) < 22.5
    assert {r[col["exptime"]] for r in rows} == {"30.0"}
    assert all(float(r[col["hjd"]]) - float(r[col["mjd"]]) - 2400000.5 < 0.006 for r in rows)


async def test_irsa_time_range_is_inclusive(client: httpx.AsyncClient) -> None:
    """TIME=a b keeps exactly the epochs with a <= mjd <= b; one value means 'from then on'."""
    params = cone(*CENTER, 0.05)
    every = sorted(float(r[3]) for r in await irsa_rows(client, params))
    lo, hi = every[10], every[40]
    inside = await irsa_rows(client, {**params, "TIME": f"{lo!r} {hi!r}"})
    assert sorted(float(r[3]) for r in inside) == [m for m in every if lo <= m <= hi]
    since = await irsa_rows(client, {**params, "TIME": repr(lo)})
    assert len(since) == len([m for m in every if m >= lo])
    unbounded = await irsa_rows(client, {**params, "TIME": "-Inf Inf"})
    assert len(unbounded) == len(every)


async def test_irsa_bandname_selects_filters(client: httpx.AsyncClient) -> None:
    """BANDNAME=g keeps only zg objects, and '1' means the same as 'g'."""
    params = cone(*CENTER, 0.08)
    all_filters = {r[7] for r in await irsa_rows(client, params)}
    assert {"zg", "zr"} <= all_filters
    g_rows = await irsa_rows(client, {**params, "BANDNAME": "g"})
    assert g_rows
    assert {r[7] for r in g_rows} == {"zg"}
    assert await irsa_rows(client, {**params, "BANDNAME": "1"}) == g_rows


async def test_irsa_rejects_zg_as_bandname(client: httpx.AsyncClient) -> None:
    """BANDNAME=zg is an error VOTable with HTTP 200, as at IRSA."""
    response = await client.get(IRSA, params=cone(*CENTER, 0.05, BANDNAME="zg"))
    assert response.status_code == 200
    assert '<INFO name="QUERY_STATUS" value="ERROR">' in response.text
    assert "zg" in response.text


async def test_irsa_bad_catflags_mask_drops_flagged_epochs(client: httpx.AsyncClient) -> None:
    """BAD_CATFLAGS_MASK drops every epoch sharing a bit with the mask, and only those."""
    params = cone(*CENTER, 0.1)
    every = await irsa_rows(client, params)
    flagged = [r for r in every if int(r[6]) & 32768]
    assert flagged
    kept = await irsa_rows(client, {**params, "BAD_CATFLAGS_MASK": "32768"})
    assert len(kept) == len(every) - len(flagged)
    assert all(int(r[6]) & 32768 == 0 for r in kept)


@pytest.mark.parametrize("radius", ["0.2", "0", "-0.01"])
async def test_irsa_radius_outside_limit_is_an_error(client: httpx.AsyncClient, radius: str) -> None:
    """A radius outside (0, 0.1667] degrees answers a QUERY_STATUS=ERROR VOTable with HTTP 200."""
    response = await client.get(IRSA, params={"POS": f"CIRCLE 10 20 {radius}", "FORMAT": "CSV"})
    assert response.status_code == 200
    assert 'value="ERROR"' in response.text


async def test_irsa_far_south_is_header_only(client: httpx.AsyncClient) -> None:
    """ZTF sees nothing below Dec -31: the CSV is the header line alone."""
    response = await client.get(IRSA, params=cone(120.0, -45.0, 0.1667))
    assert response.text == ",".join(IRSA_COLUMNS) + "\n"


async def test_irsa_overlapping_cones_return_the_same_epochs(
    archive: FakeArchive, client: httpx.AsyncClient
) -> None:
    """A star inside two overlapping cones comes back with the same oids and identical rows."""
    star = archive.ztf_objects(*CENTER, 0.1)[0]
    west = await irsa_rows(client, cone(star.ra - 0.01, star.dec, 0.02))
    north = await irsa_rows(client, cone(star.ra, star.dec + 0.012, 0.02))
    oids = {o.oid for o in archive.ztf_objects(star.ra, star.dec, 1e-6)}
    assert str(star.oid) in {r[0] for r in west}
    assert [r for r in west if int(r[0]) in oids] == [r for r in north if int(r[0]) in oids]
    assert all(abs(float(r[9]) - star.dec) < 0.3 / 3600 for r in west if int(r[0]) == star.oid)


async def test_irsa_id_query_matches_the_cone(archive: FakeArchive, client: httpx.AsyncClient) -> None:
    """ID=oid (repeatable) returns the same rows the cone gave for those oids."""
    objects = archive.ztf_objects(*CENTER, 0.05)[:2]
    by_cone = await irsa_rows(client, cone(*CENTER, 0.05))
    ids: list[tuple[str, str | int | float | bool | None]] = [("ID", str(o.oid)) for o in objects]
    ids.append(("FORMAT", "CSV"))
    response = await client.get(IRSA, params=ids)
    by_id = [line.split(",") for line in response.text.splitlines()[1:]]
    assert by_id == [r for r in by_cone if int(r[0]) in {o.oid for o in objects}]


async def test_irsa_gains_epochs_when_now_advances(archive: FakeArchive, client: httpx.AsyncClient) -> None:
    """Raising now_mjd adds epochs after the old 'now' and keeps every earlier epoch unchanged."""
    archive.now_mjd = 59500.0
    before = await irsa_rows(client, cone(*CENTER, 0.05))
    archive.now_mjd = 60600.0
    after = await irsa_rows(client, cone(*CENTER, 0.05))
    assert len(after) > len(before)
    assert all(float(r[3]) <= 59500.0 for r in before)
    assert [r for r in after if float(r[3]) <= 59500.0] == before


async def test_irsa_names_are_case_insensitive_and_votable_is_default(client: httpx.AsyncClient) -> None:
    """Lower-case parameter names work; without FORMAT the answer is an OK VOTable."""
    lower = await client.get(IRSA, params={"pos": f"circle {CENTER[0]} {CENTER[1]} 0.05", "format": "csv"})
    upper = await client.get(IRSA, params=cone(*CENTER, 0.05))
    assert lower.content == upper.content
    votable = await client.get(IRSA, params={"CIRCLE": f"{CENTER[0]} {CENTER[1]} 0.05"})
    assert votable.headers["content-type"].startswith("text/xml")
    assert '<INFO name="QUERY_STATUS" value="OK"/>' in votable.text
    assert votable.text.count("<TR>") == upper.text.count("\n") - 1


# --------------------------------------------------------------------------- MAST searches


async def test_mast_executing_then_complete_with_the_same_cachebreaker() -> None:
    """The first poll of a request is EXECUTING; the identical request then completes."""
    archive = FakeArchive(executing_polls=1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=archive)) as c:
        request = mast_request("Mast.Caom.Filtered", by_name([str(PI_MEN)]), cachebreaker="abc")
        first = await invoke(c, request)
        second = await invoke(c, request)
        fresh = await invoke(c, {**request, "cachebreaker": "def"})
    assert first["status"] == "EXECUTING"
    assert not first["data"]
    assert second["status"] == "COMPLETE"
    assert len(second["data"]) == 3
    assert fresh["status"] == "EXECUTING"


async def test_mast_paging_over_three_pages(client: httpx.AsyncClient) -> None:
    """pagesize/page split the result; pagesFiltered counts pages; past the end is empty."""
    whole = await invoke(client, mast_request("Mast.Caom.Filtered.Position", position_params()))
    total = whole["paging"]["rowsTotal"]
    assert total >= 6
    size = math.ceil(total / 3)
    pages = [
        await invoke(
            client, mast_request("Mast.Caom.Filtered.Position", position_params(), pagesize=size, page=p)
        )
        for p in (1, 2, 3, 4)
    ]
    assert [p["paging"]["pagesFiltered"] for p in pages] == [3, 3, 3, 3]
    assert [p["paging"]["page"] for p in pages] == [1, 2, 3, 4]
    assert [row for p in pages[:3] for row in p["data"]] == whole["data"]
    assert pages[3]["data"] == []
    assert pages[3]["paging"]["rows"] == 0


async def test_mast_ids_are_json_ints_declared_string(client: httpx.AsyncClient) -> None:
    """obsid/objID are JSON integers although 'fields' declares them strings, as at MAST."""
    answer = await invoke(
        client, mast_request("Mast.Caom.Cone", {"ra": CENTER[0], "dec": CENTER[1], "radius": 0.2})
    )
    fields = {f["name"]: f["type"] for f in answer["fields"]}
    assert fields["obsid"] == "string"
    assert fields["objID"] == "string"
    assert {"distance", "_selected_"} <= fields.keys()
    assert answer["data"]
    assert all(isinstance(r["obsid"], int) for r in answer["data"])
    assert {r["obs_collection"] for r in answer["data"]} >= {"TESS", "HST"}


async def test_mast_answers_extjs_when_format_is_missing(client: httpx.AsyncClient) -> None:
    """Without format=json the answer has MAST's extjs shape, not the JSON envelope."""
    request = mast_request("Mast.Caom.Filtered", by_name([str(PI_MEN)]))
    del request["format"]
    answer = await invoke(client, request)
    table = answer["data"]["Tables"][0]
    assert "fields" not in answer
    assert table["ExtendedProperties"]["Paging"]["rowsTotal"] == 3
    names = [f["name"] for f in table["Fields"]]
    assert len(table["Rows"]) == 3
    assert len(table["Rows"][0]) == len(names)


async def test_mast_zero_padded_tic_finds_nothing(client: httpx.AsyncClient) -> None:
    """target_name '021132157' (lightkurve's padding bug) matches nothing; '21132157' matches."""
    padded = await invoke(client, mast_request("Mast.Caom.Filtered", by_name(["021132157"])))
    plain = await invoke(client, mast_request("Mast.Caom.Filtered", by_name(["21132157"])))
    assert padded["status"] == "COMPLETE"
    assert padded["data"] == []
    (row,) = plain["data"]
    assert row["target_name"] == "21132157"
    assert row["sequence_number"] == 58
    assert row["obs_id"].startswith("tess")
    assert row["obs_id"].endswith("-s0058-0000000021132157-0241-s")
    assert row["dataURL"] == f"mast:TESS/product/{row['obs_id']}_lc.fits"
    assert (row["provenance_name"], row["t_exptime"], row["dataproduct_type"]) == (
        "SPOC",
        120.0,
        "timeseries",
    )


async def test_mast_filters_really_filter(client: httpx.AsyncClient) -> None:
    """Discrete filters (string values) and {min, max} ranges both restrict the rows."""
    service = "Mast.Caom.Filtered.Position"
    hst = await invoke(
        client,
        mast_request(service, position_params(0.3, {"paramName": "obs_collection", "values": ["HST"]})),
    )
    assert hst["data"]
    assert {r["obs_collection"] for r in hst["data"]} == {"HST"}
    window = {"paramName": "t_min", "values": [{"min": 58000.0, "max": 60000.0}]}
    ranged = await invoke(client, mast_request(service, position_params(0.3, window)))
    assert ranged["data"]
    assert all(58000.0 <= r["t_min"] <= 60000.0 for r in ranged["data"])
    sector = {"paramName": "sequence_number", "values": ["4"]}
    one = await invoke(client, mast_request("Mast.Caom.Filtered", by_name([str(PI_MEN)], sector)))
    assert [r["sequence_number"] for r in one["data"]] == [4]


async def test_mast_count_big(client: httpx.AsyncClient) -> None:
    """columns COUNT_BIG(*) answers data=[{'Column1': N}] with N the row count."""
    params = {**by_name([str(PI_MEN), "21132157"]), "columns": "COUNT_BIG(*)"}
    answer = await invoke(client, mast_request("Mast.Caom.Filtered", params))
    assert answer["data"] == [{"Column1": 4}]


async def test_mast_rows_appear_when_now_advances() -> None:
    """Only rows with t_min <= now_mjd exist; a later now_mjd shows the later sectors."""
    archive = FakeArchive(executing_polls=0, now_mjd=58400.0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=archive)) as c:
        early = await invoke(c, mast_request("Mast.Caom.Filtered", by_name([str(PI_MEN)])))
        archive.now_mjd = 60600.0
        late = await invoke(c, mast_request("Mast.Caom.Filtered", by_name([str(PI_MEN)]), cachebreaker="2"))
    assert [r["sequence_number"] for r in early["data"]] == [1]
    assert [r["sequence_number"] for r in late["data"]] == [1, 4, 8]


@pytest.mark.parametrize(
    "body",
    [
        {"request": json.dumps(mast_request("Mast.Nope", {}))},
        {"request": "{not json"},
        {"other": "field"},
    ],
)
async def test_mast_bad_requests_answer_status_error(client: httpx.AsyncClient, body: dict[str, str]) -> None:
    """An unknown service, unparsable JSON or no request field is status ERROR with HTTP 200."""
    response = await client.post(INVOKE, data=body)
    assert response.status_code == 200
    answer = response.json()
    assert answer["status"] == "ERROR"
    assert answer["msg"]


# --------------------------------------------------------------------------- products and files


async def test_products_list_lc_with_the_exact_download_size(client: httpx.AsyncClient) -> None:
    """Each TESS obsid lists LC, TP and DVT products; the LC size is the downloaded byte count."""
    obs = await invoke(client, mast_request("Mast.Caom.Filtered", by_name([str(PI_MEN)])))
    obsids = [r["obsid"] for r in obs["data"]]
    products = await invoke(client, mast_request("Mast.Caom.Products", {"obsid": ",".join(map(str, obsids))}))
    rows = products["data"]
    assert {r["productSubGroupDescription"] for r in rows} >= {"LC", "TP", "DVT"}
    assert all(isinstance(r["obsID"], int) and isinstance(r["size"], int) for r in rows)
    uris = [r["dataURI"] for r in rows]
    assert len(uris) > len(set(uris))  # the multi-sector DVT is listed under every obsid
    lcs = [r for r in rows if r["productSubGroupDescription"] == "LC"]
    assert [r["obsID"] for r in lcs] == obsids
    for lc in lcs:
        assert lc["productFilename"].endswith("_lc.fits")
        assert lc["dataURI"] == f"mast:TESS/product/{lc['productFilename']}"
        body = await client.get(DOWNLOAD, params={"uri": lc["dataURI"]})
        assert body.status_code == 200
        assert len(body.content) == lc["size"]
        head = await client.head(DOWNLOAD, params={"uri": lc["dataURI"]})
        assert int(head.headers["content-length"]) == lc["size"]
        assert head.content == b""


async def test_fast_cadence_products_exist_for_some_targets(client: httpx.AsyncClient) -> None:
    """TRAPPIST-1 (sector 70) also lists a downloadable 20-second '-a_fast-lc.fits' product."""
    obs = await invoke(client, mast_request("Mast.Caom.Filtered", by_name(["278892590"])))
    products = await invoke(
        client, mast_request("Mast.Caom.Products", {"obsid": str(obs["data"][0]["obsid"])})
    )
    (fast,) = [r for r in products["data"] if r["productSubGroupDescription"] == "FAST-LC"]
    assert fast["productFilename"].endswith("-a_fast-lc.fits")
    body = await client.get(DOWNLOAD, params={"uri": fast["dataURI"]})
    with fits.open(io.BytesIO(body.content)) as hdus:
        assert hdus["LIGHTCURVE"].header["TIMEDEL"] == pytest.approx(20 / 86400)
    assert len(body.content) == fast["size"]


async def test_downloaded_file_is_a_spoc_light_curve(client: httpx.AsyncClient) -> None:
    """The served FITS has PRIMARY, LIGHTCURVE (the 20 SPOC columns) and APERTURE, with SPOC keys."""
    obs = await invoke(client, mast_request("Mast.Caom.Filtered", by_name(["21132157"])))
    response = await client.get(DOWNLOAD, params={"uri": obs["data"][0]["dataURL"]})
    assert response.headers["content-type"] == "application/octet-stream"
    with fits.open(io.BytesIO(response.content), checksum=True) as hdus:
        assert [h.name for h in hdus] == ["PRIMARY", "LIGHTCURVE", "APERTURE"]
        primary, lc = hdus[0].header, hdus[1]
        assert (primary["TICID"], primary["SECTOR"], primary["TELESCOP"]) == (21132157, 58, "TESS")
        assert primary["OBJECT"] == "TIC 21132157"
        assert lc.columns.names == LC_COLUMNS
        assert lc.columns["TIME"].format == "D"
        assert lc.columns["PDCSAP_FLUX"].unit == "e-/s"
        assert (lc.header["BJDREFI"], lc.header["TIMESYS"], lc.header["TIMEPIXR"]) == (2457000, "TDB", 0.5)
        time_col, quality = lc.data["TIME"], lc.data["QUALITY"]
        assert np.isnan(time_col).any()
        assert set(quality[np.isnan(time_col)]) == {8}
        assert 2886.0 < np.nanmin(time_col) < 2888.0
        assert hdus[2].data.shape == (11, 11)
        assert hdus[2].data.dtype.kind == "i"


async def test_unknown_download_is_404(client: httpx.AsyncClient) -> None:
    """A URI the archive does not hold (wrong sector, other mission) answers 404."""
    wrong_sector = "mast:TESS/product/tess2022307025558-s0057-0000000021132157-0241-s_lc.fits"
    for uri in (wrong_sector, "mast:HST/product/u9o40504m_c3m.fits"):
        assert (await client.get(DOWNLOAD, params={"uri": uri})).status_code == 404


def test_make_spoc_lightcurve_is_deterministic_and_periodic() -> None:
    """Same arguments, same bytes; the PDCSAP flux holds the target's true period."""
    archive = FakeArchive()
    targets = (archive.tess_target(t) for t in range(1000, 100000))
    truth = next(t for t in targets if t.period_d < 1.0 and t.amplitude > 0.01 and t.tessmag < 12)
    tic = truth.tic_id
    data = make_spoc_lightcurve(tic, truth.sectors[0], seed=3)
    assert data == make_spoc_lightcurve(tic, truth.sectors[0], seed=3)
    with fits.open(io.BytesIO(data)) as hdus:
        table = hdus[1].data
        ok = np.isfinite(table["TIME"]) & np.isfinite(table["PDCSAP_FLUX"])
        t, f = table["TIME"][ok], table["PDCSAP_FLUX"][ok]
    frequency, power = LombScargle(t, f).autopower(minimum_frequency=0.2, maximum_frequency=5.0)
    assert 1.0 / frequency[np.argmax(power)] == pytest.approx(truth.period_d, rel=0.05)


async def test_whoami_and_columnsconfig(client: httpx.AsyncClient) -> None:
    """/whoami is anonymous unless an 'Authorization: token ...' is sent; columnsconfig is JSON."""
    assert (await client.get(f"{MAST}/whoami")).json() == {"anon": True}
    signed = await client.get(f"{MAST}/whoami", headers={"Authorization": "token abc123"})
    assert signed.json() == {"anon": False}
    config = await client.post(
        f"{MAST}/portal/Mashup/Mashup.asmx/columnsconfig", data={"colConfigId": "Mast.Caom.Cone"}
    )
    assert config.json()["t_min"]["vot.datatype"] == "double"
    assert config.json()["obs_collection"]["separator"] == ";"


async def test_astroquery_wire_format(client: httpx.AsyncClient) -> None:
    """What astroquery.mast sends (upstream-apis.md §2.1, §2.7) is answered as MAST answers it.

    A raw ``colConfigId=<service>`` form body gets that service's columns (products or CAOM); an
    invoke body ``request=<quoted JSON>`` with ``cacheBreaker`` and pagesize 50000 works; a download
    URL with the uri quoted ``safe=":/"`` answers HEAD with the size (no body) and GET with the file.
    """
    form = {"Content-type": "application/x-www-form-urlencoded", "Accept": "text/plain"}
    url = f"{MAST}/portal/Mashup/Mashup.asmx/columnsconfig"
    products = (await client.post(url, content=b"colConfigId=Mast.Caom.Products", headers=form)).json()
    assert (
        products["size"]["vot.datatype"] == "long" and products["productFilename"]["vot.datatype"] == "char"
    )
    assert "t_min" not in products and "_selected_" in products
    caom = (await client.post(url, content=b"colConfigId=Mast.Caom.Cone", headers=form)).json()
    assert "size" not in caom and caom["t_exptime"]["vot.datatype"] == "double"

    request = {
        "service": "Mast.Caom.Filtered",
        "params": by_name(
            [str(PI_MEN)], {"paramName": "obs_collection", "separator": ";", "values": ["TESS"]}
        ),
        "format": "json",
        "pagesize": 50000,
        "page": 1,
        "cacheBreaker": "0b6c3c7e-1f1d-4b8e-9d43-3c1a3c0e6f00",
    }
    body = "request=" + urllib.parse.quote(json.dumps(request))
    answer = (await client.post(INVOKE, content=body.encode(), headers=form)).json()
    assert answer["status"] == "COMPLETE" and answer["paging"]["rows"] == 3
    name = answer["data"][0]["dataURL"].rsplit("/", 1)[-1]
    download = f"{DOWNLOAD}?uri=" + urllib.parse.quote(f"mast:TESS/product/{name}", safe=":/")
    head = await client.head(download)
    assert head.status_code == 200 and head.content == b""
    got = await client.get(download)
    assert int(head.headers["content-length"]) == len(got.content) > 0
    assert got.headers["content-disposition"] == f'attachment; filename="{name}"'


# --------------------------------------------------------------------------- politeness and pacing


async def test_rate_limit_counts_violations_when_too_fast() -> None:
    """Ten back-to-back requests against a 5 req/s limit make five violations (count mode)."""
    archive = FakeArchive(rate_limit_rps=5)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=archive)) as c:
        statuses = [(await c.get(f"{MAST}/whoami")).status_code for _ in range(10)]
    assert statuses == [200] * 10
    assert archive.violations == {"mast.stsci.edu": 5}


async def test_rate_limit_no_violation_at_the_limit() -> None:
    """Requests spaced 1/rps apart never count as violations."""
    archive = FakeArchive(rate_limit_rps=10)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=archive)) as c:
        for _ in range(12):
            await c.get(f"{MAST}/whoami")
            await anyio.sleep(0.1)
    assert archive.violations == {"mast.stsci.edu": 0}


async def test_rate_limit_enforce_answers_429() -> None:
    """In enforce mode the violating request is answered 429 with Retry-After: 1."""
    archive = FakeArchive(rate_limit_rps=2, rate_limit_mode="enforce")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=archive)) as c:
        responses = [await c.get(IRSA, params=cone(*CENTER, 0.01)) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[2].headers["retry-after"] == "1"
    assert archive.violations == {"irsa.ipac.caltech.edu": 1}


async def test_latency_and_bandwidth_slow_answers_down() -> None:
    """latency_s delays each answer; bandwidth_bps paces the body."""
    archive = FakeArchive(latency_s=0.15, bandwidth_bps=250_000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=archive)) as c:
        start = time.monotonic()
        response = await c.get(IRSA, params=cone(*CENTER, 0.02))
        elapsed = time.monotonic() - start
    assert len(response.content) > 50_000
    assert elapsed >= 0.15 + 0.9 * len(response.content) / 250_000


async def test_request_log_records_each_request(archive: FakeArchive, client: httpx.AsyncClient) -> None:
    """archive.requests holds host, method, path, parsed params and status of every request."""
    await client.get(IRSA, params=cone(*CENTER, 0.01))
    await invoke(client, mast_request("Mast.Caom.Filtered", by_name(["21132157"])))
    irsa, mast = archive.requests
    assert (irsa.host, irsa.method, irsa.status, irsa.fault) == ("irsa.ipac.caltech.edu", "GET", 200, None)
    assert irsa.params["FORMAT"] == ["CSV"]
    assert (mast.host, mast.method, mast.path) == ("mast.stsci.edu", "POST", "/api/v0/invoke")
    assert mast.params["service"] == "Mast.Caom.Filtered"
    assert irsa.t <= mast.t


# --------------------------------------------------------------------------- faults


async def test_fault_status_three_times_then_recovery(
    archive: FakeArchive, client: httpx.AsyncClient
) -> None:
    """A 503 fault with times=3 hits three requests (with Retry-After), then the archive recovers."""
    fault = archive.add_fault(
        Fault(match="nph_light_curves", kind="status", status=503, retry_after="7", times=3)
    )
    statuses = [(await client.get(IRSA, params=cone(*CENTER, 0.01))) for _ in range(4)]
    assert [r.status_code for r in statuses] == [503, 503, 503, 200]
    assert statuses[0].headers["retry-after"] == "7"
    assert fault.hits == 3
    assert [e.fault for e in archive.requests] == ["status"] * 3 + [None]


async def test_fault_after_skips_the_first_matches(archive: FakeArchive, client: httpx.AsyncClient) -> None:
    """after=N lets N matching requests through before the fault hits; other paths are untouched."""
    archive.add_fault(Fault(match="whoami", kind="status", status=500, after=2, times=1))
    codes = [(await client.get(f"{MAST}/whoami")).status_code for _ in range(4)]
    assert codes == [200, 200, 500, 200]
    assert (await client.get(IRSA, params=cone(*CENTER, 0.01))).status_code == 200


async def test_fault_html_page(archive: FakeArchive, client: httpx.AsyncClient) -> None:
    """kind html answers HTTP 200 with an HTML page instead of CSV."""
    archive.add_fault(Fault(match="nph_light_curves", kind="html", message="down for maintenance"))
    response = await client.get(IRSA, params=cone(*CENTER, 0.01))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "down for maintenance" in response.text


async def test_fault_votable_error(archive: FakeArchive, client: httpx.AsyncClient) -> None:
    """kind votable_error answers HTTP 200 with a QUERY_STATUS=ERROR VOTable even for FORMAT=CSV."""
    archive.add_fault(Fault(match="nph_light_curves", kind="votable_error", message="database busy"))
    response = await client.get(IRSA, params=cone(*CENTER, 0.01))
    assert response.status_code == 200
    assert '<INFO name="QUERY_STATUS" value="ERROR">database busy</INFO>' in response.text


async def test_fault_truncate_in_process_raises_mid_body(
    archive: FakeArchive, client: httpx.AsyncClient
) -> None:
    """kind truncate surfaces in-process as httpx.RemoteProtocolError."""
    archive.add_fault(Fault(match="Download", kind="truncate", times=1))
    uri = "mast:TESS/product/tess2022307025558-s0058-0000000021132157-0241-s_lc.fits"
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get(DOWNLOAD, params={"uri": uri})
    assert (await client.get(DOWNLOAD, params={"uri": uri})).status_code == 200


async def test_fault_slow_delays_the_body(archive: FakeArchive, client: httpx.AsyncClient) -> None:
    """kind slow holds the body back for delay_s."""
    archive.add_fault(Fault(match="whoami", kind="slow", delay_s=0.3))
    start = time.monotonic()
    response = await client.get(f"{MAST}/whoami")
    assert response.json() == {"anon": True}
    assert time.monotonic() - start >= 0.3


async def test_fault_reset_in_process_raises(archive: FakeArchive, client: httpx.AsyncClient) -> None:
    """kind reset answers nothing: in-process the request raises a transport error; logged as 0."""
    archive.add_fault(Fault(match="", kind="reset", times=1))
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        await client.get(f"{MAST}/whoami")
    assert archive.requests[-1].status == 0


async def test_fault_mast_error_and_executing_forever(
    archive: FakeArchive, client: httpx.AsyncClient
) -> None:
    """kind mast_error answers status ERROR; executing_forever keeps answering EXECUTING."""
    request = mast_request("Mast.Caom.Filtered", by_name(["21132157"]))
    archive.add_fault(
        Fault(match="Mast.Caom.Filtered", kind="mast_error", message="Query timed out", times=1)
    )
    archive.add_fault(Fault(match="Mast.Caom.Filtered", kind="executing_forever", times=3))
    answers = [await invoke(client, request) for _ in range(5)]
    assert answers[0] == {"status": "ERROR", "msg": "Query timed out"}
    assert [a["status"] for a in answers[1:]] == ["EXECUTING"] * 3 + ["COMPLETE"]


async def test_fault_lie_rows_total(archive: FakeArchive, client: httpx.AsyncClient) -> None:
    """kind lie_rows_total inflates paging.rowsTotal while the data stays complete."""
    archive.add_fault(Fault(match="Mast.Caom.Filtered", kind="lie_rows_total", extra_rows=5))
    answer = await invoke(client, mast_request("Mast.Caom.Filtered", by_name([str(PI_MEN)])))
    assert len(answer["data"]) == 3
    assert answer["paging"]["rowsTotal"] == 8
    assert answer["paging"]["pagesFiltered"] == 1


async def test_fault_redirect(archive: FakeArchive, client: httpx.AsyncClient) -> None:
    """kind redirect answers 302 to the given location, which a following client reaches."""
    archive.add_fault(
        Fault(match="whoami", kind="redirect", location="https://archive.example/elsewhere", times=1)
    )
    response = await client.get(f"{MAST}/whoami")
    assert response.status_code == 302
    assert response.headers["location"] == "https://archive.example/elsewhere"
    archive.add_fault(Fault(match="/whoami", kind="redirect", location=f"{MAST}/api/v0.1/whoami", times=1))
    followed = await client.get(f"{MAST}/whoami", follow_redirects=True)
    assert followed.status_code == 200
    assert followed.json() == {"anon": True}


async def test_set_down_answers_503_everywhere(archive: FakeArchive, client: httpx.AsyncClient) -> None:
    """While the archive is down every request answers 503; afterwards it serves again."""
    archive.set_down(True)
    assert (await client.get(IRSA, params=cone(*CENTER, 0.01))).status_code == 503
    assert (await client.post(INVOKE, data={"request": "{}"})).status_code == 503
    archive.set_down(False)
    assert (await client.get(IRSA, params=cone(*CENTER, 0.01))).status_code == 200


def test_fault_rejects_unknown_kind() -> None:
    """A Fault with an unknown kind fails at construction."""
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault(kind="explode")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- loopback


async def test_loopback_server_serves_and_cuts_connections() -> None:
    """running_server serves the same bytes over TCP; truncate and reset cut the real connection."""
    archive = FakeArchive(executing_polls=0)
    in_process = FakeArchive()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=in_process)) as c:
        expected = (await c.get(IRSA, params=cone(*CENTER, 0.05))).content
    with running_server(archive) as base:
        assert base.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=base, timeout=5) as c:
            path = "/cgi-bin/ZTF/nph_light_curves"
            assert (await c.get(path, params=cone(*CENTER, 0.05))).content == expected
            archive.add_fault(Fault(match="nph_light_curves", kind="truncate", times=1))
            with pytest.raises(httpx.RemoteProtocolError):
                await c.get(path, params=cone(*CENTER, 0.05))
            archive.add_fault(Fault(match="whoami", kind="reset", times=1))
            with pytest.raises(httpx.TransportError):
                await c.get("/whoami")
            assert (await c.get("/whoami")).json() == {"anon": True}
    assert {e.host for e in archive.requests} == {"127.0.0.1"}
    async with httpx.AsyncClient(timeout=2) as c:
        with pytest.raises(httpx.ConnectError):
            await c.get(f"{base}/whoami")
