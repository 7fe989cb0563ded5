"""Shared fixtures: isolated working directory and environment, IRSA CSV builders."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import orjson
import pytest

from harvester import archives
from harvester.archives.ztf.source import IRSA_COLUMNS

REPO = Path(__file__).resolve().parents[1]

ROW = (
    "675103300002930,44835315,2458202.8577286243,58202.353159699996,18.6746521,0.0466535166,0,zg,"
    "209.99005510000001,29.997625800000002,1.2,0.01,20180323353160,675,10,3,20.5,26.2,0.03,-0.04,0.0001,"
    "30,1.2,1"
)


def irsa_csv(*rows: str) -> bytes:
    """An IRSA light-curve CSV body with the real header and the given rows."""
    return (",".join(IRSA_COLUMNS) + "\n" + "".join(r + "\n" for r in rows)).encode()


def irsa_row(oid: int = 675103300002930, mjd: float = 58202.353159699996, **cells: str) -> str:
    """ROW with its oid and mjd (and any named cells) replaced."""
    values = dict(zip(IRSA_COLUMNS, ROW.split(","), strict=True))
    values.update(oid=str(oid), mjd=repr(mjd), **cells)
    return ",".join(values[c] for c in IRSA_COLUMNS)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs in an empty working directory with no harvester variables, tokens or S3
    endpoint (``s3_env`` sets one) from the developer's environment."""
    tokens = {t.env for spec in archives.specs() for t in spec.tokens}
    for name in list(os.environ):
        if (
            name.startswith("HARVESTER_")
            or name in tokens
            or name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
        ):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A working directory with the repository's config/base.yaml, as a user's checkout has."""
    (tmp_path / "config").mkdir(exist_ok=True)
    shutil.copy(REPO / "config" / "base.yaml", tmp_path / "config" / "base.yaml")
    return tmp_path


def public_bucket(url: str, bucket: str, objects: Mapping[str, bytes]) -> None:
    """Create ``bucket`` on the S3 look-alike at ``url`` holding ``objects`` (key → bytes), the
    bucket and every object public-read: moto answers anonymous reads only for those."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=bucket, ACL="public-read")
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, ACL="public-read")


def private_bucket(url: str, bucket: str, objects: Mapping[str, bytes]) -> tuple[str, str]:
    """Create a private ``bucket`` (no public access) on the S3 look-alike at ``url`` holding
    ``objects``, and an IAM user allowed to read it; the user's ``(access key id, secret)``.
    With :func:`check_signatures`, moto then answers only requests signed with that key."""
    import boto3

    setup = {"endpoint_url": url, "aws_access_key_id": "test", "aws_secret_access_key": "test"}
    s3 = boto3.client("s3", region_name="us-east-1", **setup)
    s3.create_bucket(Bucket=bucket)
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    iam = boto3.client("iam", region_name="us-east-1", **setup)
    user = f"reader-{bucket}-{uuid.uuid4().hex[:8]}"  # moto's IAM state is per process, not per server
    iam.create_user(UserName=user)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=orjson.dumps(policy).decode())
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture
def check_signatures(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Call it once buckets and users are set up: from then on the moto server checks every
    request's AWS signature against its IAM users (moto skips authentication for its first
    ``INITIAL_NO_AUTH_ACTION_COUNT`` requests, by default all of them). Undone after the test."""
    import moto.settings

    def on() -> None:
        monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)

    return on


@pytest.fixture
def s3_url() -> Iterator[str]:
    """A local S3 look-alike (moto) on 127.0.0.1; its base URL. Needs the dask extra's moto."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The S3 look-alike as the default endpoint, with test credentials, for this process and the
    worker processes it starts; its URL."""
    for name, value in {
        "AWS_ENDPOINT_URL": s3_url,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # fsspec reuses filesystems made for an earlier endpoint
    return s3_url
