"""The hats route against a real S3 protocol server (moto on loopback) holding the committed HATS
fixture (IRSA's DR5 sample in DR24's layout) in a public-read ``ipac-irsa-ztf`` bucket, read
anonymously: ranged GETs, ListObjectsV2 for DR24's folder leaves, the endpoint from the standard
``AWS_ENDPOINT_URL`` variable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import harvester
from harvester.testing._hats import load_folder
from tests.archives.ztf.test_hats_route import COLLECTION, CONE, reference
from tests.conftest import private_bucket, public_bucket

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
    assert_the_cone_was_written(report, tmp_path)
    assert transport.requests and all(
        str(r.url).startswith(f"{bucket}/ipac-irsa-ztf") for r in transport.requests
    )
    assert all("authorization" not in r.headers for r in transport.requests)
    ranged = [r for r in transport.requests if "range" in r.headers]
    listed = [r for r in transport.requests if r.url.params.get("list-type") == "2"]
    assert ranged and listed  # footers and row groups by range; DR24's folder leaves listed


async def test_a_private_mirror_is_read_with_signed_requests_only_it_sees(
    tmp_path: Path,
    s3_url: str,
    check_signatures: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``credentials: aws``: every request to the mirror carries an AWS Signature Version 4 that
    moto checks against its IAM user; the records are the public bucket's."""
    key_id, secret = private_bucket(s3_url, "ztf-mirror", load_folder(COLLECTION, PREFIX))
    check_signatures()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("ZTF_API_TOKEN", "irsa-sekrit-456")
    transport = Loopback()
    report = await harvester.harvest(
        "ztf", output=tmp_path, transport=transport, format="jsonl", data_sources=mirror(s3_url, "aws")
    )
    assert_the_cone_was_written(report, tmp_path)
    assert transport.requests and all(
        r.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={key_id}/")
        for r in transport.requests
    )
    assert "irsa-sekrit-456" not in repr([dict(r.headers) for r in transport.requests])
    written = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert secret.encode() not in written and key_id.encode() not in written


async def test_a_private_mirror_read_anonymously_fails_in_one_line(tmp_path: Path, s3_url: str) -> None:
    private_bucket(s3_url, "ztf-mirror", load_folder(COLLECTION, PREFIX))  # moto: 403 to unsigned reads
    report = await harvester.harvest(
        "ztf", output=tmp_path, format="jsonl", data_sources=mirror(s3_url, "anonymous")
    )
    src = report.sources["ztf"]
    assert src.written == 0
    (failure,) = src.errors
    assert "403" in failure.cause and "forbidden" in failure.cause and "\n" not in failure.cause


def mirror(s3_url: str, credentials: str) -> dict[str, Any]:
    """``data_sources`` for the cone from the fixture in the private bucket ``ztf-mirror``."""
    return {
        "ztf": {
            "route": "hats",
            "hats": {
                "catalog_url": f"s3://ztf-mirror/{PREFIX}",
                "endpoint_url": s3_url,
                "credentials": credentials,
            },
            "irsa": {"cone_search": CONE, "mjd_range": None, "filters": []},
        }
    }


def assert_the_cone_was_written(report: harvester.RunReport, output: Path) -> None:
    """Every epoch of the cone, each magnitude the fixture's own (read with pyarrow)."""
    src = report.sources["ztf"]
    assert (src.status, src.written, src.errors) == ("ok", 2438, [])
    got = {
        (r["object_id"], r["hmjd"]): r["mag"]
        for p in (output / "ztf").glob("part-*.jsonl")
        for r in map(orjson.loads, p.read_bytes().splitlines())
    }
    assert got == {key: values["mag"] for key, values in reference([CONE]).items()}


async def test_a_wrong_secret_is_refused_by_the_mirror_in_one_line(
    tmp_path: Path,
    s3_url: str,
    check_signatures: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The signature really is checked: the right key id with a wrong secret is refused
    (moto's SignatureDoesNotMatch), reported in one line, and nothing is written."""
    key_id, _secret = private_bucket(s3_url, "ztf-mirror", load_folder(COLLECTION, PREFIX))
    check_signatures()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    report = await harvester.harvest(
        "ztf", output=tmp_path, format="jsonl", data_sources=mirror(s3_url, "aws")
    )
    src = report.sources["ztf"]
    assert src.written == 0 and not list((tmp_path / "ztf").glob("part-*"))
    (failure,) = src.errors
    assert "HTTP 403" in failure.cause and "not readable with these credentials" in failure.cause
    assert "\n" not in failure.cause and "not-the-secret" not in failure.cause
