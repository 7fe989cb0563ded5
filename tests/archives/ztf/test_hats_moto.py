"""The hats route against a real S3 protocol server (moto on loopback) holding the committed HATS
fixture (IRSA's DR5 sample in DR24's layout) in a public-read ``ipac-irsa-ztf`` bucket, read
anonymously: ranged GETs, ListObjectsV2 for DR24's folder leaves, the endpoint from the standard
``AWS_ENDPOINT_URL`` variable."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

import harvester
from harvester.testing._hats import load_folder
from tests.archives.ztf.test_hats_route import COLLECTION, CONE, reference
from tests.conftest import public_bucket

PREFIX = "ztf/enhanced/dr5sample/lc/hats"


class Loopback(httpx.AsyncHTTPTransport):
    """Real sockets to the moto server, every request kept for inspection."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await super().handle_async_request(request)


@pytest.fixture
def bucket(s3_url: str) -> str:
    """The fixture, public-read, in ``ipac-irsa-ztf`` on the moto server; the server's URL."""
    public_bucket(s3_url, "ipac-irsa-ztf", load_folder(COLLECTION, PREFIX))
    return s3_url


async def test_the_cone_comes_from_a_real_s3_server_anonymously(
    tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", bucket)
    monkeypatch.setenv("ZTF_API_TOKEN", "irsa-sekrit-456")
    transport = Loopback()
    report = await harvester.harvest(
        "ztf",
        output=tmp_path,
        transport=transport,
        format="jsonl",
        data_sources={
            "ztf": {
                "route": "hats",
                "hats": {"catalog_url": f"s3://ipac-irsa-ztf/{PREFIX}"},
                "irsa": {"cone_search": CONE, "mjd_range": None, "filters": []},
            }
        },
    )
    src = report.sources["ztf"]
    assert (src.status, src.written, src.errors) == ("ok", 2438, [])
    got = {
        (r["object_id"], r["hmjd"]): r["mag"]
        for p in (tmp_path / "ztf").glob("part-*.jsonl")
        for r in map(orjson.loads, p.read_bytes().splitlines())
    }
    assert got == {key: values["mag"] for key, values in reference([CONE]).items()}
    assert transport.requests and all(
        str(r.url).startswith(f"{bucket}/ipac-irsa-ztf") for r in transport.requests
    )
    assert all("authorization" not in r.headers for r in transport.requests)
    ranged = [r for r in transport.requests if "range" in r.headers]
    listed = [r for r in transport.requests if r.url.params.get("list-type") == "2"]
    assert ranged and listed  # footers and row groups by range; DR24's folder leaves listed
