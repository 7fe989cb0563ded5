"""The ZTF source: IRSA request shape and the CSV contract, including IRSA's error bodies."""

from __future__ import annotations

import math

import httpx
import pytest

import harvester
from harvester.archives.common import ConeSearch
from harvester.archives.ztf.source import IRSA_COLUMNS, irsa_params, parse_irsa_csv
from harvester.errors import ArchiveResponseError
from harvester.settings import load_settings
from tests.conftest import ROW, irsa_csv, irsa_row

VOTABLE_ERROR = b"""<?xml version="1.0"?>
<VOTABLE version="1.3"><RESOURCE type="results">
<INFO name="QUERY_STATUS" value="ERROR">Invalid BANDNAME value: zg</INFO>
</RESOURCE></VOTABLE>"""
HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head><body>down</body></html>"
)


def test_request_parameters_follow_the_irsa_api() -> None:
    """zg/zr become BANDNAME=g,r; TIME, BAD_CATFLAGS_MASK, COLLECTION and FORMAT=CSV are always explicit."""
    s = load_settings(
        data_sources={
            "ztf": {
                "irsa": {
                    "filters": ["zg", "zr"],
                    "mjd_range": [59800, 59850.5],
                    "bad_catflags_mask": 32768,
                    "collection": "ztf_dr23",
                }
            }
        }
    )
    params = dict(irsa_params(ConeSearch(ra=210.8023, dec=54.3489, radius=0.05), s.data_sources.ztf.irsa))
    assert params == {
        "POS": "CIRCLE 210.8023 54.3489 0.05",
        "BANDNAME": "g,r",
        "TIME": "59800.0 59850.5",
        "BAD_CATFLAGS_MASK": "32768",
        "COLLECTION": "ztf_dr23",
        "FORMAT": "CSV",
    }


def test_all_bands_sends_no_bandname() -> None:
    """Empty filters means every band: no BANDNAME parameter."""
    s = load_settings()
    s.data_sources.ztf.irsa.filters = []
    params = dict(irsa_params(ConeSearch(ra=1, dec=2, radius=0.01), s.data_sources.ztf.irsa))
    assert "BANDNAME" not in params and params["FORMAT"] == "CSV"


def test_measured_row_parses_exactly() -> None:
    """The real measured IRSA row gives exactly its values, oid as a decimal string."""
    (row,) = parse_irsa_csv(irsa_csv(ROW), "t")
    assert row["object_id"] == "675103300002930"
    assert row["mjd"] == 58202.353159699996
    assert row["hjd"] == 2458202.8577286243
    assert (row["filter"], row["mag"], row["magerr"], row["catflags"]) == ("zg", 18.6746521, 0.0466535166, 0)
    assert (row["ra"], row["dec"]) == (209.99005510000001, 29.997625800000002)
    assert (row["field"], row["ccdid"], row["qid"], row["programid"]) == (675, 10, 3, 1)


def test_header_only_is_zero_records() -> None:
    """A header-only CSV is an empty result, not an error."""
    assert parse_irsa_csv(irsa_csv(), "t") == []


def test_nan_cells_become_null() -> None:
    """nan, empty and inf cells become None (JSON null), never NaN."""
    (row,) = parse_irsa_csv(irsa_csv(irsa_row(chi="nan", sharp="", airmass="inf")), "t")
    assert row["chi"] is None and row["sharp"] is None and row["airmass"] is None


def test_hex_ccdid_and_qid_are_understood() -> None:
    """ccdid/qid printed as hex are parsed defensively."""
    (row,) = parse_irsa_csv(irsa_csv(irsa_row(ccdid="0x0a", qid="0x3")), "t")
    assert (row["ccdid"], row["qid"]) == (10, 3)


def test_votable_query_status_error_is_an_error_with_irsas_message() -> None:
    """A 200 VOTable with QUERY_STATUS=ERROR is reported with IRSA's message, never parsed as data."""
    with pytest.raises(
        ArchiveResponseError, match="cone-7: IRSA answered QUERY_STATUS=ERROR: Invalid BANDNAME"
    ):
        parse_irsa_csv(VOTABLE_ERROR, "cone-7")


def test_html_page_is_an_error() -> None:
    """An HTML page served with 200 is an error naming the page title."""
    with pytest.raises(ArchiveResponseError, match="HTML page instead of CSV: '503 Service Unavailable'"):
        parse_irsa_csv(HTML_PAGE, "t")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "empty body"),
        (b"hello,world\n1,2\n", "missing columns oid, expid"),
        (b"\xff\xfe\x00bad", "not UTF-8"),
        (irsa_csv(ROW)[:-40], r"has \d+ cells, header has 24 \(truncated"),
        (irsa_csv(irsa_row(filtercode="g")), "filtercode 'g' is not zg"),
        (irsa_csv(irsa_row(mjd=math.nan)), "mjd is missing"),
        (irsa_csv(ROW.replace("675103300002930", "67510330000293x")), "oid '67510330000293x'"),
    ],
)
def test_other_bodies_are_clear_errors(body: bytes, match: str) -> None:
    """Empty, foreign, non-UTF-8, truncated or malformed bodies are one-line errors."""
    with pytest.raises(ArchiveResponseError, match=match) as info:
        parse_irsa_csv(body, "t")
    assert "\n" not in str(info.value)


def test_columns_in_another_order_are_accepted() -> None:
    """The column set is what matters; a reordered header still maps cells by name."""
    cols = list(reversed(IRSA_COLUMNS))
    cells = dict(zip(IRSA_COLUMNS, ROW.split(","), strict=True))
    body = (",".join(cols) + "\n" + ",".join(cells[c] for c in cols) + "\n").encode()
    (row,) = parse_irsa_csv(body, "t")
    assert row["object_id"] == "675103300002930" and row["mjd"] == 58202.353159699996


async def test_stream_yields_validated_records_with_provenance() -> None:
    """harvester.stream('ztf') yields ZtfRecords carrying the request URL and no secret."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=irsa_csv(ROW, irsa_row(mjd=58300.5)))

    records = [
        r
        async for r in harvester.stream(
            "ztf",
            transport=httpx.MockTransport(handler),
            data_sources={"ztf": {"irsa": {"cone_search": {"ra": 210.0, "dec": 30.0, "radius": 0.01}}}},
        )
    ]
    assert [type(r).__name__ for r in records] == ["ZtfRecord", "ZtfRecord"]
    first = records[0]
    assert isinstance(first, harvester.ZtfRecord)
    assert first.provenance.url.startswith(
        "https://irsa.ipac.caltech.edu/cgi-bin/ZTF/nph_light_curves?POS=CIRCLE"
    )
    assert "FORMAT=CSV" in first.provenance.url
    assert first.fetched_at.tzinfo is not None
