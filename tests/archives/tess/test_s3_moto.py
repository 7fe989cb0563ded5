"""The S3 route against a real S3 protocol server (moto on loopback) holding the real TESS files
from tests/data/tess under the stpubdata layout; MAST itself is scripted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import harvester
from harvester.archives.tess.records import TessRecord
from tests.archives.tess.scripted import FILES, KEYS, S58, S70, ScriptedArchive
from tests.conftest import private_bucket, public_bucket


class Split(httpx.AsyncBaseTransport):
    """Requests for the S3 server go over loopback sockets; everything else to the scripted MAST."""

    def __init__(self, s3_url: str, mast: ScriptedArchive) -> None:
        self.s3_host = httpx.URL(s3_url).host
        self.s3_requests: list[httpx.Request] = []
        self._loopback = httpx.AsyncHTTPTransport()
        self._mast = httpx.MockTransport(mast)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == self.s3_host:
            self.s3_requests.append(request)
            return await self._loopback.handle_async_request(request)
        return await self._mast.handle_async_request(request)

    async def aclose(self) -> None:
        await self._loopback.aclose()


@pytest.fixture
def stpubdata(s3_url: str) -> str:
    """A public-read ``stpubdata`` bucket on the moto server with both real light curves at their keys."""
    public_bucket(s3_url, "stpubdata", {KEYS[name]: FILES[name] for name in (S58, S70)})
    return s3_url


async def test_real_files_come_from_the_bucket_anonymously(
    tmp_path: Path, stpubdata: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", stpubdata)
    monkeypatch.setenv("MAST_API_TOKEN", "mast-sekrit-789")
    mast = ScriptedArchive(files=(S58, S70))
    split = Split(stpubdata, mast)
    report = await harvester.harvest("tess", transport=split, output=tmp_path, **mast.tess())
    src = report.sources["tess"]
    assert (src.written, src.errors, src.warnings) == (2, [], [])
    assert mast.mast_downloads == [] and len(split.s3_requests) == 2
    assert all("authorization" not in r.headers for r in split.s3_requests)
    for name in (S58, S70):
        record = TessRecord.model_validate_json(
            (tmp_path / "tess" / f"record_{name.removesuffix('_lc.fits')}.json").read_bytes()
        )
        assert record.provenance.url == f"{stpubdata}/stpubdata/{KEYS[name]}" and record.product == name


async def test_a_key_missing_from_the_bucket_comes_from_mast(
    tmp_path: Path, stpubdata: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    boto3.client(
        "s3",
        endpoint_url=stpubdata,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    ).delete_object(Bucket="stpubdata", Key=KEYS[S70])
    monkeypatch.setenv("AWS_ENDPOINT_URL", stpubdata)
    mast = ScriptedArchive(files=(S58, S70))
    report = await harvester.harvest("tess", transport=Split(stpubdata, mast), output=tmp_path, **mast.tess())
    src = report.sources["tess"]
    assert src.written == 2 and len(mast.mast_downloads) == 1
    (line,) = src.warnings
    assert line.startswith(f"s3://stpubdata at {stpubdata}: 1 light curve had no object in the bucket")


async def test_a_private_mirror_is_read_with_signed_requests_and_mast_sees_no_signature(
    tmp_path: Path, s3_url: str, check_signatures: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cloud.credentials: aws``: moto checks every S3 request's signature against its IAM user;
    the MAST token goes to MAST only and the AWS signature to the mirror only."""
    key_id, secret = private_bucket(s3_url, "tess-mirror", {KEYS[name]: FILES[name] for name in (S58, S70)})
    check_signatures()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("MAST_API_TOKEN", "mast-sekrit-789")
    mast = ScriptedArchive(files=(S58, S70))
    split = Split(s3_url, mast)
    cloud = {"bucket": "tess-mirror", "endpoint_url": s3_url, "credentials": "aws"}
    report = await harvester.harvest("tess", transport=split, output=tmp_path, **mast.tess(cloud=cloud))
    src = report.sources["tess"]
    assert (src.written, src.errors, src.warnings) == (2, [], [])
    assert mast.mast_downloads == [] and len(split.s3_requests) == 2
    for request in split.s3_requests:
        assert request.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={key_id}/")
    assert mast.requests and all(
        r.headers.get("authorization") == "token mast-sekrit-789" and "x-amz-date" not in r.headers
        for r in mast.requests
    )
