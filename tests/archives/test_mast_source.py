"""The MAST source: service choice, recorded CAOM rows to records, paging, truncation reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson

import harvester
from harvester.archives.mast.records import MastRecord

CAOM = json.loads((Path(__file__).resolve().parents[1] / "data" / "mast" / "caom.json").read_text())
CONE = {"ra": 23.1, "dec": 60.6, "radius": 0.1}


def mast(**query: Any) -> dict[str, Any]:
    return {
        "data_sources": {
            "mast": {"query": query, "retries": {"attempts": 1, "backoff_base": 0.0}, "pagesize": 7}
        }
    }


class Server:
    """Answers every invoke with the recorded Mast.Caom.Cone rows, paged by the request's pagesize."""

    def __init__(self, *, lie: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.lie = lie

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(parse_qs(request.content.decode())["request"][0])
        self.bodies.append(body)
        size, page = body["pagesize"], body["page"]
        rows = CAOM["data"][(page - 1) * size : page * size]
        total = len(CAOM["data"])
        paging = {
            "page": page,
            "pageSize": size,
            "pagesFiltered": -(-total // size),
            "rows": len(rows),
            "rowsFiltered": total,
            "rowsTotal": total + self.lie,
        }
        return httpx.Response(200, json={**CAOM, "data": rows, "paging": paging})


async def test_cone_uses_mast_caom_cone_and_pages_through_everything(tmp_path: Path) -> None:
    """A bare cone asks Mast.Caom.Cone; 19 rows at pagesize 7 take 3 pages and give 19 records."""
    server = Server()
    report = await harvester.harvest(
        "mast", transport=httpx.MockTransport(server), output=tmp_path, **mast(cone_search=CONE)
    )
    assert [b["service"] for b in server.bodies] == ["Mast.Caom.Cone"] * 3
    assert [b["page"] for b in server.bodies] == [1, 2, 3]
    assert server.bodies[0]["params"] == {"ra": 23.1, "dec": 60.6, "radius": 0.1}
    assert report.sources["mast"].written == 19 and report.ok


async def test_recorded_row_maps_to_the_documented_record(tmp_path: Path) -> None:
    """The first recorded CAOM row becomes a record with str obsid, MJD times and no UI column."""
    await harvester.harvest(
        "mast", transport=httpx.MockTransport(Server()), output=tmp_path, **mast(cone_search=CONE)
    )
    raw = orjson.loads((tmp_path / "mast" / "record_2003585980.json").read_bytes())
    record = MastRecord.model_validate(raw)
    assert "_selected_" not in raw
    assert (record.obsid, record.obs_id, record.object_id) == ("2003585980", "U27XCS01T", "LO-LAT")
    assert (record.obs_collection, record.instrument_name, record.filters) == ("HST", "WFPC2/WFC", "F814W")
    assert (record.ra, record.dec, record.mjd, record.t_max) == (
        23.11817129395,
        60.64213575852,
        49756.25506,
        49756.27242,
    )
    assert (record.t_exptime, record.proposal_id, record.data_url) == (1500.0, "5371", None)
    assert record.provenance.service == "Mast.Caom.Cone"


async def test_constraints_switch_to_filtered_position(tmp_path: Path) -> None:
    """A cone plus collections and a t_min range asks Mast.Caom.Filtered.Position with MAST filters."""
    server = Server()
    await harvester.harvest(
        "mast",
        transport=httpx.MockTransport(server),
        output=tmp_path,
        **mast(cone_search=CONE, collections=["HST", "GALEX"], t_min=[49000, 50000]),
    )
    body = server.bodies[0]
    assert body["service"] == "Mast.Caom.Filtered.Position"
    assert body["params"]["position"] == "23.1, 60.6, 0.1"
    assert body["params"]["filters"] == [
        {"paramName": "obs_collection", "values": ["HST", "GALEX"]},
        {"paramName": "t_min", "values": [{"min": 49000.0, "max": 50000.0}]},
    ]


async def test_constraints_without_a_cone_use_filtered(tmp_path: Path) -> None:
    """Collections alone ask Mast.Caom.Filtered, as one target."""
    server = Server()
    report = await harvester.harvest(
        "mast", transport=httpx.MockTransport(server), output=tmp_path, **mast(collections=["JWST"])
    )
    assert server.bodies[0]["service"] == "Mast.Caom.Filtered"
    assert report.sources["mast"].targets == 1


async def test_short_result_is_reported_not_silent(tmp_path: Path) -> None:
    """When rowsTotal says more rows exist than were served, the report carries a warning."""
    report = await harvester.harvest(
        "mast", transport=httpx.MockTransport(Server(lie=100)), output=tmp_path, **mast(cone_search=CONE)
    )
    warnings = report.sources["mast"].warnings
    assert any("received 19 of 119 rows" in w for w in warnings), warnings
    assert "received 19 of 119 rows" in (tmp_path / "mast" / "README.md").read_text()


async def test_error_status_fails_the_target_with_mast_message(tmp_path: Path) -> None:
    """status ERROR is reported for the target with MAST's msg."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "ERROR", "msg": "Incorrect position format"})

    report = await harvester.harvest(
        "mast", transport=httpx.MockTransport(handler), output=tmp_path, **mast(cone_search=CONE)
    )
    src = report.sources["mast"]
    assert src.status == "failed" and "Incorrect position format" in src.errors[0].cause


async def test_a_row_without_obsid_is_skipped_and_reported(tmp_path: Path) -> None:
    """One CAOM row lacking obsid is skipped with a warning; the other 18 rows are written."""
    server = Server()

    def handler(request: httpx.Request) -> httpx.Response:
        response = server(request)
        body = response.json()
        if body["data"] and body["paging"]["page"] == 1:
            body["data"][0] = {**body["data"][0], "obsid": None}
        return httpx.Response(200, json=body)

    report = await harvester.harvest(
        "mast", transport=httpx.MockTransport(handler), output=tmp_path, **mast(cone_search=CONE)
    )
    src = report.sources["mast"]
    assert src.written == 18 and src.status == "ok"
    assert any("1 MAST rows without obsid were skipped" in w for w in src.warnings)
