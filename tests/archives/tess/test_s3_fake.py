"""The fake archive's copy of MAST's bucket, and the S3 route through it: ``--offline`` end to
end, a loopback server read path-style, and a connection cut mid-object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

import harvester
from harvester.archives.tess.cloud import s3_key
from harvester.cli import app
from harvester.testing import FakeArchive, Fault, running_server
from harvester.testing._tess import lc_filename

TIC, SECTOR = 21132157, 58  # a real id the fake keeps with its real sector
NAME = lc_filename(TIC, SECTOR)
KEY = s3_key(TIC, SECTOR, NAME)


def tess(**block: Any) -> dict[str, Any]:
    return {"data_sources": {"tess": {"query": {"tic_ids": [TIC]}, **block}}}


async def test_the_fake_bucket_serves_the_download_endpoints_bytes() -> None:
    archive = FakeArchive()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=archive), base_url="http://fake"
    ) as client:
        via_mast = await client.get("/api/v0.1/Download/file", params={"uri": f"mast:TESS/product/{NAME}"})
        path_style = await client.get(f"/stpubdata/{KEY}")
        virtual = await client.get(f"https://stpubdata.s3.amazonaws.com/{KEY}")
        head = await client.head(f"/stpubdata/{KEY}")
        wrong_folder = await client.get(f"/stpubdata/{KEY.replace('/2113/', '/2114/')}")
        unknown = await client.get(f"/stpubdata/{s3_key(TIC, 59, NAME.replace('s0058', 's0059'))}")
    assert via_mast.status_code == path_style.status_code == virtual.status_code == 200
    assert path_style.content == virtual.content == via_mast.content
    assert head.headers["content-length"] == str(len(via_mast.content)) and head.headers["etag"]
    for missing in (wrong_folder, unknown):
        assert missing.status_code == 404 and b"<Code>NoSuchKey</Code>" in missing.content


def test_offline_run_takes_the_s3_route_end_to_end(tmp_path: Path) -> None:
    """``harvester run --source tess --offline``: every light curve comes from the sample bucket."""
    result = CliRunner().invoke(app, ["run", "--source", "tess", "--offline", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    records = [json.loads(p.read_bytes()) for p in (tmp_path / "tess").glob("record_*.json")]
    assert records and all(r["provenance"]["service"] == "s3" for r in records)
    assert all(
        r["provenance"]["url"].startswith("https://stpubdata.s3.amazonaws.com/tess/public/tid/")
        for r in records
    )
    assert all(r["provenance"]["sample"] for r in records)


async def test_a_loopback_mirror_is_read_path_style(tmp_path: Path) -> None:
    archive = FakeArchive(executing_polls=0)
    with running_server(archive) as url:
        report = await harvester.harvest(
            "tess", output=tmp_path, **tess(base_url=url, cloud={"endpoint_url": url})
        )
    assert report.sources["tess"].written == 1 and report.sources["tess"].warnings == []
    paths = [e.path for e in archive.requests if e.method == "GET"]
    assert paths == [f"/stpubdata/{KEY}"]  # the file; MAST's searches are POSTs
    assert not any(e.path.endswith("/Download/file") for e in archive.requests)


async def test_a_connection_cut_mid_object_is_retried_on_s3(tmp_path: Path) -> None:
    archive = FakeArchive(executing_polls=0)
    cut = archive.add_fault(Fault(match="/tess/public/", kind="truncate", fraction=0.5, times=1))
    transport = httpx.ASGITransport(app=archive)
    fast = {"attempts": 2, "backoff_base": 0.0}
    report = await harvester.harvest("tess", transport=transport, output=tmp_path, **tess(retries=fast))
    src = report.sources["tess"]
    assert cut.hits == 1 and (src.written, src.retries, src.warnings) == (1, 1, [])
    assert [e.path for e in archive.requests if "/tess/public/" in e.path] == [f"/{KEY}"] * 2
