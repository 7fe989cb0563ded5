"""``credentials: aws``: S3 requests signed with AWS Signature Version 4 (botocore), the signature
sent to the bucket's host only, never logged, and a clear line when no credentials exist."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import httpx
import pytest
from botocore.credentials import Credentials

from harvester.archives.common import S3Access
from harvester.display.logs import redact
from harvester.errors import ConfigError, TerminalError
from harvester.io.http import CREDENTIAL_HEADERS, Http
from harvester.io.limiter import LimiterRegistry
from harvester.io.s3 import AwsSigner, CloudRoute, S3Sessions, load_signer

# AWS's own worked example of a signed GET Object with a Range header ("Signature Calculations
# for the Authorization Header: Transferring Payload in a Single Chunk", Amazon S3 API reference).
EXAMPLE_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
EXAMPLE_SIGNATURE = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An environment with no AWS credentials anywhere botocore looks."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


async def test_a_request_is_signed_as_aws_documents_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.auth

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: datetime.datetime(2013, 5, 24))
    signer = AwsSigner(Credentials(EXAMPLE_KEY_ID, EXAMPLE_SECRET), "us-east-1", where="test")
    request = httpx.Request(
        "GET", "https://examplebucket.s3.amazonaws.com/test.txt", headers={"Range": "bytes=0-9"}
    )
    await signer(request)
    assert request.headers["x-amz-date"] == "20130524T000000Z"
    assert request.headers["x-amz-content-sha256"] == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # the empty body
    )
    authorization = request.headers["authorization"]
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={EXAMPLE_KEY_ID}/20130524/us-east-1/s3/")
    assert "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date" in authorization
    assert authorization.endswith(f"Signature={EXAMPLE_SIGNATURE}")
    assert EXAMPLE_SECRET not in repr(signer)


def test_a_signed_route_percent_encodes_keys_and_listings_as_the_signature_does() -> None:
    signed, anonymous = (
        CloudRoute("b", "http://mirror:9000", signed=True),
        CloudRoute("b", "http://mirror:9000"),
    )
    key = "hats/dataset/Norder=5/Dir=10000/Npix=12240/part0.snappy.parquet"
    assert (
        signed.url(key)
        == "http://mirror:9000/b/hats/dataset/Norder%3D5/Dir%3D10000/Npix%3D12240/part0.snappy.parquet"
    )
    assert anonymous.url(key).endswith("/Norder=5/Dir=10000/Npix=12240/part0.snappy.parquet")
    url = httpx.URL(signed.list_url([("list-type", "2"), ("prefix", "a b/Norder=5")]))
    assert url.query == b"list-type=2&prefix=a%20b%2FNorder%3D5"  # sent exactly as signed


async def test_the_signature_goes_to_the_bucket_host_only_redirects_included() -> None:
    seen: list[httpx.Request] = []

    def archive(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "mirror.example":
            return httpx.Response(307, headers={"Location": "https://elsewhere.example/copy"})
        return httpx.Response(200, content=b"ok")

    limiters = LimiterRegistry()
    for host in ("mirror.example", "elsewhere.example"):
        limiters.register(host, 100, 4)
    credentials = Credentials(EXAMPLE_KEY_ID, EXAMPLE_SECRET, token="session-token-secret")
    signer = AwsSigner(credentials, "us-east-1", where="test")
    async with Http(limiters, transport=httpx.MockTransport(archive)) as http:
        base = http.session("ztf", auth=("irsa.ipac.caltech.edu", "Bearer irsa-sekrit"))
        session = base.signed("mirror.example", signer)
        response = await session.fetch("GET", "https://mirror.example/b/key", target="t")
    assert response.content == b"ok"
    first, second = seen
    assert first.headers["authorization"].startswith("AWS4-HMAC-SHA256")
    assert first.headers["x-amz-security-token"] == "session-token-secret"
    assert not any(name in second.headers for name in CREDENTIAL_HEADERS)
    assert "irsa-sekrit" not in repr([dict(r.headers) for r in seen])
    assert redact("echoed: session-token-secret") == "echoed: [redacted]"  # a role's token, too


async def test_the_environment_s_credentials_and_region_are_used(
    no_aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", EXAMPLE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", EXAMPLE_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    import os

    signer = await load_signer(S3Access(credentials="aws"), os.environ, key="data_sources.ztf.hats")
    assert signer.region == "eu-west-2" and signer.where == "env"
    pinned = await load_signer(S3Access(credentials="aws", region="us-west-1"), os.environ, key="k")
    assert pinned.region == "us-west-1"
    assert EXAMPLE_SECRET not in repr(signer)


async def test_no_credentials_is_one_line_naming_the_setting(no_aws: None) -> None:
    with pytest.raises(ConfigError) as caught:
        await load_signer(S3Access(credentials="aws"), {}, key="data_sources.ztf.hats")
    message = caught.value.message
    assert message.startswith("data_sources.ztf.hats.credentials is aws, but no AWS credentials were found")
    assert "\n" not in message


async def test_an_unknown_profile_is_one_line(no_aws: None) -> None:
    with pytest.raises(ConfigError) as caught:
        await load_signer(S3Access(credentials="aws", profile="nosuch"), {}, key="data_sources.tess.cloud")
    assert caught.value.message.startswith("data_sources.tess.cloud.credentials: ")
    assert "nosuch" in caught.value.message


async def test_anonymous_access_never_looks_for_credentials(no_aws: None) -> None:
    limiters = LimiterRegistry()
    async with Http(limiters, transport=httpx.MockTransport(lambda r: httpx.Response(200))) as http:
        base = http.session("tess", auth=("mast.stsci.edu", "token mast-sekrit"))
        sessions = S3Sessions(CloudRoute("stpubdata"), S3Access(), {}, key="data_sources.tess.cloud")
        session = await sessions.session(base)
    assert session._auth is None


async def test_botocore_never_logs_a_signature(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, no_aws: None
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", EXAMPLE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", EXAMPLE_SECRET)
    caplog.set_level(logging.DEBUG)
    import os

    signer = await load_signer(S3Access(credentials="aws"), os.environ, key="k")
    request = httpx.Request("GET", "https://b.s3.amazonaws.com/key")
    await signer(request)
    signature = request.headers["authorization"].rsplit("Signature=", 1)[1]
    assert signature not in caplog.text and EXAMPLE_SECRET not in caplog.text


async def test_a_redirect_to_cleartext_or_another_port_of_the_same_host_carries_no_credentials() -> None:
    seen: list[httpx.Request] = []

    def archive(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.scheme == "https" and request.url.path == "/b/key":
            return httpx.Response(301, headers={"Location": "http://mirror.example:8080/b/other"})
        return httpx.Response(200, content=b"ok")

    limiters = LimiterRegistry()
    limiters.register("mirror.example", 100, 4)
    signer = AwsSigner(
        Credentials(EXAMPLE_KEY_ID, EXAMPLE_SECRET, token="session-token"), "us-east-1", where="t"
    )
    async with Http(limiters, transport=httpx.MockTransport(archive)) as http:
        session = http.session("ztf").signed("mirror.example", signer)
        await session.fetch("GET", "https://mirror.example/b/key", target="t")
    first, second = seen
    assert "authorization" in first.headers and first.headers["x-amz-security-token"] == "session-token"
    assert not any(name in second.headers for name in CREDENTIAL_HEADERS)


async def test_credentials_that_cannot_be_refreshed_fail_the_request_in_one_line() -> None:
    from botocore.exceptions import CredentialRetrievalError

    class Expired:
        """Temporary credentials whose refresh fails (an expired SSO session)."""

        def refresh_needed(self) -> bool:
            return True

        def get_frozen_credentials(self) -> object:
            raise CredentialRetrievalError(provider="sso", error_msg="session expired\nrun aws sso login")

    signer = AwsSigner(
        Expired(), "us-east-1", where="profile mirror", key="data_sources.ztf.hats.credentials"
    )
    with pytest.raises(TerminalError) as caught:
        await signer(httpx.Request("GET", "https://mirror.example/b/key"))
    message = caught.value.message
    assert message.startswith(
        "data_sources.ztf.hats.credentials: AWS credentials from profile mirror could not"
    )
    assert "session expired run aws sso login" in message and "\n" not in message
