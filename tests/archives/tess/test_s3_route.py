"""The TESS source's S3 route against a scripted MAST and bucket holding the real light curves:
which route a file comes by, what each S3 fault does, and that records do not depend on the route."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import harvester
from harvester import api
from harvester.archives.base import FetchContext
from harvester.archives.tess.records import TessRecord
from harvester.archives.tess.source import TessSource
from harvester.io.batches import Batch
from harvester.io.http import Http
from harvester.records import BaseRecord
from harvester.settings import load_settings
from tests.archives.tess.scripted import (
    AWS_HOST,
    FILES,
    KEYS,
    MAST_HOST,
    S58,
    S70,
    ScriptedArchive,
    real_object,
    s3_error,
)


def record(out: Path, name: str) -> TessRecord:
    stem = name.removesuffix("_lc.fits")
    return TessRecord.model_validate_json((out / "tess" / f"record_{stem}.json").read_bytes())


async def harvest(archive: ScriptedArchive, out: Path, **block: object) -> harvester.RunReport:
    transport = httpx.MockTransport(archive)
    return await harvester.harvest("tess", transport=transport, output=out, **archive.tess(**block))


async def test_a_light_curve_with_a_cloud_copy_comes_from_s3(tmp_path: Path) -> None:
    archive = ScriptedArchive(files=(S58, S70))
    report = await harvest(archive, tmp_path)
    src = report.sources["tess"]
    assert (src.written, src.warnings, src.errors) == (2, [], [])
    assert archive.mast_downloads == []
    assert sorted(str(r.url) for r in archive.s3_requests) == sorted(
        f"https://{AWS_HOST}/{KEYS[name]}" for name in (S58, S70)
    )
    for name in (S58, S70):
        provenance = record(tmp_path, name).provenance
        assert (provenance.archive, provenance.service) == ("mast", "s3")
        assert provenance.url == f"https://{AWS_HOST}/{KEYS[name]}"


async def test_same_file_through_s3_and_https_gives_identical_records(tmp_path: Path) -> None:
    """Only the provenance (route, URL) and fetched_at tell the two routes apart."""
    await harvest(ScriptedArchive(files=(S58, S70)), tmp_path / "s3")
    await harvest(ScriptedArchive(files=(S58, S70)), tmp_path / "https", cloud={"enabled": False})
    for name in (S58, S70):
        via_s3, via_https = record(tmp_path / "s3", name), record(tmp_path / "https", name)
        assert via_https.provenance.service == "Download/file" and via_s3.provenance.service == "s3"
        ignore = {"provenance", "fetched_at"}
        assert via_s3.model_dump(exclude=ignore) == via_https.model_dump(exclude=ignore)


async def test_a_missing_key_falls_back_to_mast_and_is_reported(tmp_path: Path) -> None:
    archive = ScriptedArchive(files=(S58, S70), s3=lambda name, n: s3_error(404, "NoSuchKey"))
    report = await harvest(archive, tmp_path)
    src = report.sources["tess"]
    assert src.written == 2 and src.errors == [] and len(archive.mast_downloads) == 2
    assert record(tmp_path, S58).provenance.service == "Download/file"
    (line,) = src.warnings
    assert line.startswith("s3://stpubdata: 2 light curves had no object in the bucket; downloaded from MAST")
    assert line.endswith((f"(first: {S58}: HTTP 404)", f"(first: {S70}: HTTP 404)"))


async def test_a_missing_bucket_turns_the_route_off_for_the_run() -> None:
    """NoSuchBucket: the product goes to MAST, and no later product asks the bucket again."""
    archive = ScriptedArchive(files=(S58, S70), s3=lambda name, n: s3_error(404, "NoSuchBucket"))
    settings = load_settings(
        None, **archive.tess(query={"tic_ids": [21132157, 278892590], "tic_batch_size": 1})
    )
    source = TessSource(settings)
    records: list[BaseRecord] = []

    async def emit(record: BaseRecord) -> None:
        records.append(record)

    async def emit_batch(batch: Batch) -> None:
        records.extend(batch.records())

    async def absent(keys: list[tuple[str, ...]]) -> set[tuple[str, ...]]:
        return set()

    def fail(part: str, cause: str, transient: bool) -> None:
        pytest.fail(f"{part}: {cause}")

    async with Http(api.host_limiters([source]), transport=httpx.MockTransport(archive)) as http:
        ctx = FetchContext(
            session=http.session("tess", **source.session_options()),
            emit=emit,
            emit_batch=emit_batch,
            present=absent,
            fail=fail,
        )
        for target in source.resolved():  # one TIC after the other
            await source.fetch(target, ctx)
    assert [r.provenance.service for r in records] == ["Download/file", "Download/file"]
    assert len(archive.s3_requests) == 1 and source.cloud is None
    assert source.notes.warnings == [
        "s3://stpubdata: 1 light curve met a missing bucket (S3 route off for the rest of the run); "
        f"downloaded from MAST over HTTPS (first: {S58}: bucket stpubdata does not exist)"
    ]


async def test_slow_down_and_throttling_are_retried_on_s3(tmp_path: Path) -> None:
    """503 SlowDown, then a throttling 503 with Retry-After: the session retries; no fallback."""

    def busy(name: str, n: int) -> httpx.Response:
        if n == 1:
            return s3_error(503, "SlowDown")
        if n == 2:
            return httpx.Response(
                503, headers={"Retry-After": "0"}, content=b"<Error><Code>RequestLimitExceeded"
            )
        return real_object(name, n)

    archive = ScriptedArchive(s3=busy)
    report = await harvest(archive, tmp_path)
    src = report.sources["tess"]
    assert (src.written, src.retries, src.warnings) == (1, 2, [])
    assert len(archive.s3_requests) == 3 and archive.mast_downloads == []
    assert record(tmp_path, S58).provenance.service == "s3"


async def test_s3_that_stays_busy_falls_back_after_the_retries(tmp_path: Path) -> None:
    archive = ScriptedArchive(s3=lambda name, n: s3_error(503, "SlowDown"))
    report = await harvest(archive, tmp_path)
    src = report.sources["tess"]
    assert src.written == 1 and len(archive.s3_requests) == 3 and len(archive.mast_downloads) == 1
    (line,) = src.warnings
    assert "1 light curve could not be read" in line and "HTTP 503" in line


@pytest.mark.parametrize(
    ("damage", "cause"),
    [
        (lambda data: data[:1_000_000], "S3 object is 1,000,000 bytes, MAST lists 2,027,520"),
        (lambda data: data[:40_000] + bytes([data[40_000] ^ 0x01]) + data[40_001:], "CHECKSUM"),
    ],
    ids=["truncated", "flipped-byte"],
)
async def test_a_truncated_or_corrupt_object_falls_back_and_is_reported(
    tmp_path: Path, damage: object, cause: str
) -> None:
    archive = ScriptedArchive(s3=lambda name, n: httpx.Response(200, content=damage(FILES[name])))  # type: ignore[operator]
    report = await harvest(archive, tmp_path)
    src = report.sources["tess"]
    assert src.written == 1 and src.errors == [] and len(archive.mast_downloads) == 1
    assert record(tmp_path, S58).provenance.service == "Download/file"
    (line,) = src.warnings
    assert "1 light curve came back truncated or corrupt (size or CHECKSUM/DATASUM)" in line and cause in line


async def test_no_token_is_ever_sent_to_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MAST_API_TOKEN goes to mast.stsci.edu as 'token <value>'; S3 requests carry no Authorization."""
    monkeypatch.setenv("MAST_API_TOKEN", "mast-sekrit-456")
    archive = ScriptedArchive(
        files=(S58, S70),
        s3=lambda name, n: s3_error(404, "NoSuchKey") if n == 1 and name == S70 else real_object(name, n),
    )
    await harvest(archive, tmp_path)
    assert archive.s3_requests and archive.mast_downloads  # both routes were taken
    assert all("authorization" not in r.headers for r in archive.s3_requests)
    assert all(b"mast-sekrit-456" not in r.url.raw_path + r.content for r in archive.s3_requests)
    assert {r.headers.get("Authorization") for r in archive.to(MAST_HOST)} == {"token mast-sekrit-456"}


async def test_aws_endpoint_url_points_s3_reads_at_a_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://s3.mirror.test:9000")
    archive = ScriptedArchive()
    report = await harvest(archive, tmp_path)
    assert report.sources["tess"].written == 1
    (request,) = archive.s3_requests
    assert str(request.url) == f"http://s3.mirror.test:9000/stpubdata/{KEYS[S58]}"
    assert record(tmp_path, S58).provenance.url == str(request.url)


async def test_cloud_off_downloads_from_mast_only(tmp_path: Path) -> None:
    archive = ScriptedArchive()
    report = await harvest(archive, tmp_path, cloud={"enabled": False})
    assert (
        report.sources["tess"].written == 1 and archive.s3_requests == [] and len(archive.mast_downloads) == 1
    )
