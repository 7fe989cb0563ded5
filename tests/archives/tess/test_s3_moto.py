"""The S3 route against a real S3 protocol server (moto on loopback) holding the real TESS files
from tests/data/tess under the stpubdata layout; MAST itself is scripted."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import harvester
from harvester.archives.tess.records import TessRecord
from tests.archives.tess.scripted import FILES, KEYS, S58, S70, ScriptedArchive
from tests.conftest import public_bucket


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
