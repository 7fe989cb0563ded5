"""The TESS source end to end against a scripted MAST: query, products, download, decode, record."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import numpy as np
import pytest
from astropy.io import fits

import harvester
from harvester.archives.tess.records import TessRecord
from harvester.archives.tess.source import (
    is_lightcurve_product,
    lightcurve_from_observation,
    read_tic_file,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "tess"
LC_NAME = "tess2022302161335-s0058-0000000021132157-0247-s_lc.fits"
LC_BYTES = (DATA / LC_NAME).read_bytes()
OBS_ID = LC_NAME.removesuffix("_lc.fits")


def envelope(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "status": "COMPLETE",
        "msg": "",
        "data": rows,
        "fields": [{"name": k, "type": "string"} for k in rows[0]] if rows else [],
        "paging": {
            "page": 1,
            "pageSize": 50000,
            "pagesFiltered": 1 if rows else 0,
            "rows": len(rows),
            "rowsFiltered": len(rows),
            "rowsTotal": len(rows),
        },
    }


class ScriptedMast:
    """A MAST that knows one TESS observation of TIC 21132157 (sector 58) and serves the real file."""

    def __init__(
        self,
        download: Callable[[int], bytes] | None = None,
        *,
        data_url: str | None = None,
        twin: bool = False,
    ) -> None:
        self.data_url = data_url  # the observation row's dataURL; None: the row has no such column
        #: a second observation row (obsid 70000000059, no dataURL) whose product list names the
        #: same light curve, as MAST's duplicate products across obsids do
        self.twin = twin
        self.requests: list[httpx.Request] = []
        self.invokes: list[dict[str, Any]] = []
        self.downloads = 0
        self._download = download or (lambda n: LC_BYTES)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/api/v0/invoke":
            body = json.loads(parse_qs(request.content.decode())["request"][0])
            self.invokes.append(body)
            if body["service"].startswith("Mast.Caom.Filtered"):
                names = next(
                    f["values"] for f in body["params"]["filters"] if f["paramName"] == "target_name"
                )
                rows = (
                    [
                        {
                            "obsid": 70000000058,
                            "obs_id": OBS_ID,
                            "target_name": "21132157",
                            "obs_collection": "TESS",
                            "_selected_": None,
                        }
                        | ({} if self.data_url is None else {"dataURL": self.data_url})
                    ]
                    + ([{"obsid": 70000000059, "obs_id": OBS_ID, "_selected_": None}] if self.twin else [])
                    if names == ["21132157"]
                    else []
                )
                return httpx.Response(200, json=envelope(rows))
            if body["service"] == "Mast.Caom.Products":
                base = {"obsID": 70000000058, "obs_collection": "TESS", "_selected_": None}
                rows = [
                    {
                        **base,
                        "productFilename": LC_NAME,
                        "productSubGroupDescription": "LC",
                        "dataURI": f"mast:TESS/product/{LC_NAME}",
                        "obs_id": OBS_ID,
                        "size": len(LC_BYTES),
                    },
                    {
                        **base,
                        "productFilename": LC_NAME.replace("_lc", "_tp"),
                        "productSubGroupDescription": "TP",
                        "dataURI": "mast:TESS/product/x_tp.fits",
                        "obs_id": OBS_ID,
                        "size": 1,
                    },
                ]
                return httpx.Response(200, json=envelope(rows))
        if request.url.path == "/api/v0.1/Download/file":
            self.downloads += 1
            return httpx.Response(200, content=self._download(self.downloads))
        return httpx.Response(404)


def tess(**query: Any) -> dict[str, Any]:
    """The TESS block these tests use: MAST over HTTPS only (the S3 route is tests/archives/tess/)."""
    return {
        "data_sources": {
            "tess": {
                "query": {"tic_ids": [21132157], **query},
                "retries": {"attempts": 1, "backoff_base": 0.0},
                "cloud": {"enabled": False},
            }
        }
    }


def independent_read(mask: int = 175) -> tuple[np.ndarray, np.ndarray]:
    """TIME and PDCSAP_FLUX after cleaning, computed with astropy and numpy alone."""
    with fits.open(DATA / LC_NAME) as hdul:
        d = hdul["LIGHTCURVE"].data
        t, f, q = np.asarray(d["TIME"], float), np.asarray(d["PDCSAP_FLUX"], float), np.asarray(d["QUALITY"])
    keep = np.isfinite(t) & np.isfinite(f) & ((q & mask) == 0)
    return t[keep], f[keep]


async def test_real_light_curve_becomes_one_exact_record(tmp_path: Path) -> None:
    """TIC 21132157 sector 58 is written as one record whose arrays equal an independent astropy read."""
    mast = ScriptedMast()
    report = await harvester.harvest("tess", transport=httpx.MockTransport(mast), output=tmp_path, **tess())
    assert report.sources["tess"].written == 1, report.sources["tess"].errors
    record = TessRecord.model_validate_json((tmp_path / "tess" / f"record_{OBS_ID}.json").read_bytes())
    time, flux = independent_read()
    assert np.array_equal(np.array(record.time), time) and np.array_equal(np.array(record.flux), flux)
    assert (record.tic_id, record.sector, record.camera, record.ccd) == (21132157, 58, 1, 3)
    assert (record.object_id, record.obs_id, record.obsid, record.product) == (
        "21132157",
        OBS_ID,
        "70000000058",
        LC_NAME,
    )
    assert record.time_system == "BTJD" and record.mjd == pytest.approx(time[0] + 56999.5)
    assert record.n_points == len(time) < record.n_points_raw == 19962
    assert (
        record.provenance.url
        == f"https://mast.stsci.edu/api/v0.1/Download/file?uri=mast:TESS/product/{LC_NAME}"
    )
    assert mast.downloads == 1  # the target pixel file is not downloaded


async def test_query_shape_follows_the_mast_api(tmp_path: Path) -> None:
    """The query filters TESS timeseries by unpadded target_name and sector, then lists products."""
    mast = ScriptedMast()
    await harvester.harvest(
        "tess",
        transport=httpx.MockTransport(mast),
        output=tmp_path,
        **tess(sectors=[58], tic_ids=[], target_name="TIC 021132157"),
    )
    first, second = mast.invokes
    assert first["service"] == "Mast.Caom.Filtered" and first["format"] == "json"
    filters = {f["paramName"]: f["values"] for f in first["params"]["filters"]}
    assert filters == {
        "obs_collection": ["TESS"],
        "dataproduct_type": ["timeseries"],
        "target_name": ["21132157"],
        "sequence_number": ["58"],
    }
    assert second["service"] == "Mast.Caom.Products" and second["params"] == {"obsid": "70000000058"}


def same_record(path: Path) -> dict[str, Any]:
    """A written record without the one field that differs between runs (when it was fetched)."""
    data: dict[str, Any] = json.loads(path.read_bytes())
    data.pop("fetched_at")
    return data


async def test_a_2min_light_curve_named_in_dataurl_skips_the_product_list(tmp_path: Path) -> None:
    """An observation whose dataURL is its SPOC light curve is downloaded from that URI with no
    Mast.Caom.Products request, and written exactly as the product-list route writes it."""
    listed, direct = ScriptedMast(), ScriptedMast(data_url=f"mast:TESS/product/{LC_NAME}")
    for mast, out in ((listed, tmp_path / "listed"), (direct, tmp_path / "direct")):
        report = await harvester.harvest("tess", transport=httpx.MockTransport(mast), output=out, **tess())
        assert report.sources["tess"].written == 1, report.sources["tess"].errors
    assert [i["service"] for i in listed.invokes] == ["Mast.Caom.Filtered", "Mast.Caom.Products"]
    assert [i["service"] for i in direct.invokes] == ["Mast.Caom.Filtered"]
    assert direct.invokes[0]["params"]["columns"] == "obsid,dataURL"
    assert direct.requests[-1].url.params["uri"] == f"mast:TESS/product/{LC_NAME}"
    name = Path("tess") / f"record_{OBS_ID}.json"
    assert same_record(tmp_path / "direct" / name) == same_record(tmp_path / "listed" / name)


@pytest.mark.parametrize(
    ("data_url", "cadence", "cloud"),
    [
        pytest.param(None, "2min", False, id="no-dataURL"),
        pytest.param("mast:HLSP/tess-spoc/hlsp_tess-spoc_tess_phot_x_lc.fits", "2min", False, id="hlsp"),
        pytest.param(f"mast:TESS/product/{LC_NAME}", "20s", False, id="20-second"),
        pytest.param(f"mast:TESS/product/{LC_NAME}", "2min", True, id="s3-needs-size"),
    ],
)
async def test_other_observations_still_go_through_the_product_list(
    tmp_path: Path, data_url: str | None, cadence: str, cloud: bool
) -> None:
    """No SPOC 2-minute dataURL, the 20-s cadence, or the S3 route (which checks each object
    against the listed size): the product list is asked for, as before."""
    mast = ScriptedMast(data_url=data_url)
    config = tess()
    config["data_sources"]["tess"] |= {
        "cadence": cadence,
        "cloud": {"enabled": cloud, "endpoint_url": "http://127.0.0.1:9"} if cloud else {"enabled": False},
    }
    await harvester.harvest("tess", transport=httpx.MockTransport(mast), output=tmp_path, **config)
    assert [i["service"] for i in mast.invokes] == ["Mast.Caom.Filtered", "Mast.Caom.Products"]
    direct_possible = cadence == "2min" and not cloud
    assert mast.invokes[0]["params"]["columns"] == ("obsid,dataURL" if direct_possible else "obsid")


async def test_a_batch_lists_only_the_rows_without_a_light_curve_uri(tmp_path: Path) -> None:
    """One row names its light curve, the other does not: only the other is listed, and its
    product (the same file, as duplicates across obsids are) is downloaded once, not twice."""
    mast = ScriptedMast(data_url=f"mast:TESS/product/{LC_NAME}", twin=True)
    report = await harvester.harvest("tess", transport=httpx.MockTransport(mast), output=tmp_path, **tess())
    assert report.sources["tess"].written == 1, report.sources["tess"].errors
    assert mast.invokes[1]["service"] == "Mast.Caom.Products"
    assert mast.invokes[1]["params"] == {"obsid": "70000000059"}
    assert mast.downloads == 1


async def test_a_rerun_on_the_dataurl_route_downloads_nothing(tmp_path: Path) -> None:
    """A light curve taken from dataURL and already in the output is not downloaded again."""
    mast = ScriptedMast(data_url=f"mast:TESS/product/{LC_NAME}")
    for _ in range(2):
        report = await harvester.harvest(
            "tess", transport=httpx.MockTransport(mast), output=tmp_path, **tess()
        )
    assert mast.downloads == 1 and report.sources["tess"].written == 0
    assert [i["service"] for i in mast.invokes] == ["Mast.Caom.Filtered"] * 2


def test_only_a_spoc_2min_light_curve_uri_is_taken_from_an_observation() -> None:
    """dataURL is trusted only for ``mast:TESS/product/<SPOC 2-min file>``."""
    row = {"obsid": "70000000058", "dataURL": f"mast:TESS/product/{LC_NAME}"}
    assert lightcurve_from_observation(row) == {
        "productFilename": LC_NAME,
        "dataURI": f"mast:TESS/product/{LC_NAME}",
        "obsID": "70000000058",
    }
    fast = LC_NAME.replace("-s_lc.fits", "-a_fast-lc.fits")
    for other in (
        None,
        "",
        f"mast:TESS/product/{fast}",
        f"mast:TESS/product/{LC_NAME.replace('_lc', '_tp')}",
        f"mast:HLSP/tess-spoc/{LC_NAME}",
        f"mast:TESS/product/sub/{LC_NAME}",
        "mast:TESS/product/hlsp_tess-spoc_tess_phot_0000000021132157-s0058_tess_v1_lc.fits",
    ):
        assert lightcurve_from_observation({"obsid": "1", "dataURL": other}) is None, other
    assert lightcurve_from_observation({"dataURL": f"mast:TESS/product/{LC_NAME}"}) is None  # no obsid


async def test_position_query_uses_filtered_position(tmp_path: Path) -> None:
    """ra/dec/radius switch the query to Mast.Caom.Filtered.Position with a 'ra, dec, r' string."""
    mast = ScriptedMast()
    await harvester.harvest(
        "tess", transport=httpx.MockTransport(mast), output=tmp_path, **tess(ra=10.5, dec=-20.25, radius=0.01)
    )
    assert mast.invokes[0]["service"] == "Mast.Caom.Filtered.Position"
    assert mast.invokes[0]["params"]["position"] == "10.5, -20.25, 0.01"


async def test_rerun_downloads_nothing(tmp_path: Path) -> None:
    """A product whose record is already in the output is not downloaded again."""
    mast = ScriptedMast()
    await harvester.harvest("tess", transport=httpx.MockTransport(mast), output=tmp_path, **tess())
    report = await harvester.harvest("tess", transport=httpx.MockTransport(mast), output=tmp_path, **tess())
    assert mast.downloads == 1 and report.sources["tess"].written == 0


async def test_truncated_download_is_retried_once_then_succeeds(tmp_path: Path) -> None:
    """A download cut short (derived fixture: the first 1 MB of the real file) is retried and kept."""
    mast = ScriptedMast(download=lambda n: LC_BYTES[:1_000_000] if n == 1 else LC_BYTES)
    report = await harvester.harvest("tess", transport=httpx.MockTransport(mast), output=tmp_path, **tess())
    assert mast.downloads == 2 and report.sources["tess"].written == 1 and report.ok


async def test_corrupt_twice_is_reported_and_nothing_written(tmp_path: Path) -> None:
    """Two corrupt downloads report the product with the cause; no file reaches the output."""
    mast = ScriptedMast(download=lambda n: LC_BYTES[:1_000_000])
    report = await harvester.harvest("tess", transport=httpx.MockTransport(mast), output=tmp_path, **tess())
    src = report.sources["tess"]
    assert mast.downloads == 2 and src.written == 0 and src.status == "failed"
    assert src.errors[0].target == f"TIC 21132157/{LC_NAME}" and "truncated FITS" in src.errors[0].cause
    assert list((tmp_path / "tess").glob("record_*")) == []


async def test_token_is_sent_to_mast_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TESS_API_TOKEN goes to mast.stsci.edu as 'token <value>' and appears in no output file."""
    monkeypatch.setenv("TESS_API_TOKEN", "tess-sekrit-123")
    mast = ScriptedMast()
    await harvester.harvest("tess", transport=httpx.MockTransport(mast), output=tmp_path, **tess())
    assert {r.headers.get("Authorization") for r in mast.requests} == {"token tess-sekrit-123"}
    for path in (tmp_path / "tess").rglob("*"):  # records, README and the ledger
        assert not path.is_file() or b"tess-sekrit-123" not in path.read_bytes()


async def test_unknown_tic_is_zero_records_not_an_error(tmp_path: Path) -> None:
    """A TIC with no TESS light curve yields no record and no error."""
    mast = ScriptedMast()
    report = await harvester.harvest(
        "tess", transport=httpx.MockTransport(mast), output=tmp_path, **tess(tic_ids=[1])
    )
    assert report.ok and report.sources["tess"].records == 0


def test_light_curve_products_are_selected_by_subgroup_and_name() -> None:
    """Only LC + _lc.fits (2-min) or FAST-LC + fast-lc.fits (20 s) qualify."""
    lc = {"productSubGroupDescription": "LC", "productFilename": "a-s_lc.fits"}
    fast = {"productSubGroupDescription": "FAST-LC", "productFilename": "a-a_fast-lc.fits"}
    tp = {"productSubGroupDescription": "TP", "productFilename": "a-s_tp.fits"}
    odd = {"productSubGroupDescription": "LC", "productFilename": "a-s_dvt.fits"}
    assert [is_lightcurve_product(p, "2min") for p in (lc, fast, tp, odd)] == [True, False, False, False]
    assert [is_lightcurve_product(p, "20s") for p in (lc, fast, tp, odd)] == [False, True, False, False]


def test_tic_file_reads_unpadded_ids(tmp_path: Path) -> None:
    """A targets file of TIC ids is read without zero padding, whatever its spelling."""
    path = tmp_path / "tics.csv"
    path.write_text("tic_id\n021132157\nTIC 278892590\n\n")
    assert read_tic_file(path) == ["21132157", "278892590"]
