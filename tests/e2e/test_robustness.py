"""Disk faults, hostile identifiers, property-based parsing, and secrets that never leak."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import harvester
from harvester.archives.ztf.source import IRSA_COLUMNS, parse_irsa_csv
from harvester.errors import ArchiveResponseError
from harvester.records import key_text, record_names, stable_id
from harvester.testing import FakeArchive
from tests.conftest import irsa_csv, irsa_row

MOUNT = shutil.which("mount") or "/bin/mount"
UMOUNT = shutil.which("umount") or "/bin/umount"
GIT = shutil.which("git") or "/usr/bin/git"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 160 KiB tmpfs mounted for the test (the suite runs as root, as CI does)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run([MOUNT, "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run([UMOUNT, "-l", str(mount)], check=False)


def ztf_many(output: Path) -> dict[str, Any]:
    return {
        "output": output,
        "data_sources": {
            "ztf": {
                "irsa": {"cone_search": {"ra": 210.8023, "dec": 54.3489, "radius": 0.04}, "filters": []},
                "rate_limit": {"requests_per_second": 100, "max_concurrency": 4},
            }
        },
    }


def valid_records(folder: Path) -> list[Path]:
    names = sorted(folder.glob("record_*.json"))
    for path in names:
        json.loads(path.read_bytes())  # every visible file is complete
    return names


async def test_full_disk_is_a_clear_error_and_loses_nothing(tiny_disk: Path, tmp_path: Path) -> None:
    """ENOSPC fails the source with 'no space left on device'; what was written is whole and committed."""
    transport = httpx.ASGITransport(app=FakeArchive())
    report = await harvester.harvest("ztf", transport=transport, **ztf_many(tiny_disk / "out"))
    src = report.sources["ztf"]
    assert src.status == "failed" and report.exit_code == 1
    assert any("no space left on device" in e.cause for e in src.errors)
    written = valid_records(tiny_disk / "out" / "ztf")
    assert 0 < len(written) < src.records
    assert [p.name for p in (tiny_disk / "out" / "ztf").glob(".*")] == [".harvester"]  # the ledger only
    ledger = tiny_disk / "out" / "ztf" / ".harvester" / "ledger.sqlite"
    with contextlib.closing(sqlite3.connect(ledger)) as conn:  # the ledger never lists a missing file
        (keys,) = conn.execute("SELECT COUNT(*) FROM records").fetchone()
    assert keys <= len(written)
    await anyio.run_process([MOUNT, "-o", "remount,size=256m", str(tiny_disk)])  # disk freed
    again = await harvester.harvest("ztf", transport=transport, **ztf_many(tiny_disk / "out"))
    total = again.sources["ztf"].records
    assert again.ok and again.sources["ztf"].already_present == len(written)
    assert len(valid_records(tiny_disk / "out" / "ztf")) == total


async def test_read_only_output_is_a_clear_error(tiny_disk: Path) -> None:
    """An output on a read-only file system is refused before anything is fetched, in one line
    naming the folder and 'read-only file system'; nothing is written."""
    (tiny_disk / "out").mkdir()
    await anyio.run_process([MOUNT, "-o", "remount,ro", str(tiny_disk)])
    archive = FakeArchive()
    with pytest.raises(harvester.ConfigError, match="is not writable: read-only file system"):
        await harvester.harvest(
            "ztf", transport=httpx.ASGITransport(app=archive), **ztf_many(tiny_disk / "out")
        )
    assert archive.requests == [] and list((tiny_disk / "out").iterdir()) == []


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "a/b", "..", "x\x00y", "é" * 300, " ", "CON", "a" * 5000]
)
def test_hostile_identifiers_stay_inside_their_folder(tmp_path: Path, bad: str) -> None:
    """Keys with '/', '..', NUL or huge lengths give one safe, short, distinct file name each."""
    name = stable_id((bad, "58000.5"))
    assert "/" not in name and "\x00" not in name and ".." not in name and len(name) <= 140
    path = tmp_path / f"record_{name}.json"
    path.write_text("{}")
    assert path.parent == tmp_path
    assert stable_id((bad, "58000.5")) == name and stable_id((bad + "x", "58000.5")) != name


#: key parts: plain ones (digits, letters, "." "_" "-") and the characters that make a name unsafe
_PARTS = st.text(alphabet=st.sampled_from([*"09azAZ._-", "/", " ", "\x00", "\x1f", "\n", "é"]))


@given(st.lists(st.tuples(_PARTS, _PARTS), min_size=1, max_size=8))
@settings(max_examples=400)
def test_record_names_made_in_one_pass_are_the_stable_ids_key_by_key(keys: list[tuple[str, str]]) -> None:
    """The record-file names made in one pass over a batch's key texts are exactly those made
    key by key (:func:`stable_id`), or not made at all (None: the writer then goes key by key);
    plain keys, such as ZTF's, always get theirs in the one pass."""
    keys = [*keys, ("1" * 120, "5")]  # plain, but longer than a readable id may be
    names = record_names([key_text(k) for k in keys], 2)
    assert names is None or names == [f"record_{stable_id(k)}.json" for k in keys]
    plain = [(str(675103300002930 + i), repr(58000.5 + i / 7)) for i in range(8)]
    assert record_names([key_text(k) for k in plain], 2) == [f"record_{stable_id(k)}.json" for k in plain]


async def test_hostile_oid_from_the_archive_is_rejected_not_written(tmp_path: Path) -> None:
    """A non-numeric oid such as '../x' is an archive error for the target; no file escapes."""
    body = irsa_csv(irsa_row(), irsa_row().replace("675103300002930", "../../x", 1))
    report = await harvester.harvest(
        "ztf",
        transport=httpx.MockTransport(lambda r: httpx.Response(200, content=body)),
        output=tmp_path,
        data_sources={"ztf": {"irsa": {"cone_search": {"ra": 1, "dec": 2, "radius": 0.01}}}},
    )
    assert "oid '../../x' is not an integer id" in report.sources["ztf"].errors[0].cause
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and "x" in p.name.split("_")[0]) == []


@given(st.binary(max_size=2000))
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_irsa_parser_never_raises_anything_but_archive_errors_on_bytes(body: bytes) -> None:
    """Arbitrary bytes give rows or an ArchiveResponseError, never another exception."""
    with contextlib.suppress(ArchiveResponseError):
        parse_irsa_csv(body, "t")


_cell = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "0x1f", "", "zg"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers().map(str),
)


@given(st.lists(st.lists(_cell, min_size=20, max_size=26), max_size=5))
@settings(max_examples=300)
def test_irsa_parser_on_csv_shaped_garbage(rows: list[list[str]]) -> None:
    """IRSA-headed CSV with random cells: rows validate as records, or one ArchiveResponseError."""
    body = (",".join(IRSA_COLUMNS) + "\n" + "\n".join(",".join(r) for r in rows)).encode("utf-8", "replace")
    try:
        parsed = parse_irsa_csv(body, "t")
    except ArchiveResponseError:
        return
    for row in parsed:
        assert row["mjd"] is not None and row["filter"] in ("zg", "zr", "zi")


async def test_tokens_never_leave_their_host_or_reach_any_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With all three tokens set and debug logs on, no token appears in logs, records, READMEs, manifests
    or state, and each goes only to its own archive's host (none to MAST's public S3 bucket)."""
    secrets = {
        "ZTF_API_TOKEN": "ztf-tok-1a2b",
        "TESS_API_TOKEN": "tess-tok-3c4d",
        "MAST_API_TOKEN": "mast-tok-5e6f",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    archive = FakeArchive(executing_polls=0)
    inner = httpx.ASGITransport(app=archive)
    sent: list[tuple[str, str | None]] = []

    async def recording(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.host, request.headers.get("Authorization")))
        return await inner.handle_async_request(request)

    import structlog

    from harvester.display.logs import configure_logging

    structlog.reset_defaults()
    configure_logging("json", "debug", secrets=list(secrets.values()))
    report = await harvester.harvest(
        "all",
        transport=httpx.MockTransport(recording),
        output=tmp_path / "out",
        data_sources={
            "ztf": {"irsa": {"cone_search": {"ra": 210.8, "dec": 54.35, "radius": 0.02}}},
            "tess": {"query": {"tic_ids": [21132157]}},
            "mast": {"query": {"cone_search": {"ra": 10.0, "dec": 20.0, "radius": 0.1}}},
        },
    )
    assert report.ok
    by_host: dict[str, set[str | None]] = {}
    for host, auth in sent:
        by_host.setdefault(host, set()).add(auth)
    assert by_host["irsa.ipac.caltech.edu"] == {"Bearer ztf-tok-1a2b"}
    assert by_host["mast.stsci.edu"] <= {"token tess-tok-3c4d", "token mast-tok-5e6f"}
    assert by_host["stpubdata.s3.amazonaws.com"] == {None}  # TESS files from the public bucket: no token
    captured = capsys.readouterr()
    blobs = [captured.out, captured.err, json.dumps(report.as_dict(with_sample=True), default=str)]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            blobs.append(path.read_bytes().decode("utf-8", "replace"))
    for value in secrets.values():
        assert all(value not in blob for blob in blobs), f"{value} leaked"
    structlog.reset_defaults()


def test_dotenv_is_ignored_by_git_and_only_the_example_is_committed() -> None:
    """.env is listed in .gitignore; .env.example is tracked."""
    repo = Path(__file__).resolve().parents[2]
    assert ".env" in (repo / ".gitignore").read_text().splitlines()
    tracked = subprocess.run([GIT, "ls-files"], cwd=repo, capture_output=True, text=True, check=True).stdout
    assert ".env.example" in tracked.splitlines() and ".env" not in tracked.splitlines()


def test_no_shell_eval_or_pickle_in_the_package() -> None:
    """The package never shells out, evals or unpickles (archive data is never executed)."""
    package = Path(harvester.__file__).parent
    for path in package.rglob("*.py"):
        text = path.read_text()
        for needle in (
            "import pickle",
            "pickle.load",
            "allow_pickle=True",
            "eval(",
            "exec(",
            "shell=True",
            "os.system(",
            "verify=False",
        ):
            assert needle not in text, f"{needle} in {path}"


async def test_short_soak_keeps_memory_and_descriptors_flat() -> None:
    """25 daemon sweeps against a faulty, growing archive: RSS and descriptors stay flat, no violation."""
    from tests.tools.soak import run_soak

    result = await run_soak(25)
    assert result.faults_injected >= 25
    assert result.violations == 0
    assert result.fds_end <= result.fds_start + 2
    assert result.rss_end_mib - result.rss_start_mib < 25.0, result


async def test_a_server_echoing_the_token_cannot_leak_it_into_reports_manifests_or_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An archive echoing the Authorization header in an error page: the cause stays, the token does not."""
    monkeypatch.setenv("ZTF_API_TOKEN", "echo-tok-9z8y")

    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, text=f"<html><title>Denied {request.headers.get('Authorization')}</title></html>"
        )

    report = await harvester.harvest(
        "ztf",
        transport=httpx.MockTransport(echo),
        output=tmp_path / "out",
        data_sources={"ztf": {"irsa": {"cone_search": {"ra": 1, "dec": 2, "radius": 0.01}}}},
    )
    (failure,) = report.sources["ztf"].errors
    assert "HTML page instead of CSV" in failure.cause and "[redacted]" in failure.cause
    blobs = [json.dumps(report.as_dict(with_sample=True), default=str)]
    blobs += [p.read_bytes().decode("utf-8", "replace") for p in tmp_path.rglob("*") if p.is_file()]
    assert all("echo-tok-9z8y" not in blob for blob in blobs)
