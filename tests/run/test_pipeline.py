"""The pipeline: concurrent targets, dedup, --limit, atomic create-only writes, reruns, failures."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

import harvester
from harvester.archives.ztf.records import ZtfRecord
from tests.conftest import irsa_csv, irsa_row

CONES = [{"name": f"c{i}", "ra": 10.0 + i, "dec": 20.0, "radius": 0.01} for i in range(6)]


def ztf(**irsa: Any) -> dict[str, Any]:
    """Overrides that point ZTF at a fast budget and the given IRSA settings."""
    return {
        "data_sources": {
            "ztf": {
                "irsa": {"targets": CONES, **irsa},
                "rate_limit": {"requests_per_second": 500, "max_concurrency": 4},
                "retries": {"attempts": 1, "backoff_base": 0.0},
            }
        }
    }


def per_cone(n: int = 5, *, overlap: bool = False) -> httpx.MockTransport:
    """Each cone returns n epochs of its own object; with overlap, every cone also returns a shared object."""

    def handler(request: httpx.Request) -> httpx.Response:
        ra = float(request.url.params["POS"].split()[1])
        oid = 100000000000000 + int(ra)
        rows = [irsa_row(oid=oid, mjd=58000.0 + k) for k in range(n)]
        if overlap:
            rows += [irsa_row(oid=999999999999999, mjd=59000.0 + k) for k in range(3)]
        return httpx.Response(200, content=irsa_csv(*rows))

    return httpx.MockTransport(handler)


def record_files(out: Path) -> list[Path]:
    return sorted((out / "ztf").glob("record_*.json"))


async def test_records_are_written_one_file_each_with_a_readme(tmp_path: Path) -> None:
    """6 cones × 5 epochs give 30 valid record files named from the dedup key, plus a schema README."""
    report = await harvester.harvest("ztf", transport=per_cone(), output=tmp_path, **ztf())
    files = record_files(tmp_path)
    assert len(files) == 30 and report.sources["ztf"].written == 30 and report.exit_code == 0
    record = ZtfRecord.model_validate_json(files[0].read_bytes())
    assert files[0].name == f"record_{record.object_id}_{record.mjd!r}.json"
    readme = (tmp_path / "ztf" / "README.md").read_text()
    assert "| `mjd` | number or null | d |" in readme and "UTC, topocentric" in readme
    assert '"written": 30' in readme


async def test_overlapping_cones_are_deduplicated(tmp_path: Path) -> None:
    """Epochs returned by several cones are written once and counted as duplicates."""
    report = await harvester.harvest("ztf", transport=per_cone(overlap=True), output=tmp_path, **ztf())
    src = report.sources["ztf"]
    assert (src.records, src.duplicates, src.written) == (33, 15, 33)
    assert len(record_files(tmp_path)) == 33


async def test_rerun_writes_nothing(tmp_path: Path) -> None:
    """A second identical run finds every record present and writes none."""
    await harvester.harvest("ztf", transport=per_cone(), output=tmp_path, **ztf())
    before = {p: p.stat().st_mtime_ns for p in record_files(tmp_path)}
    report = await harvester.harvest("ztf", transport=per_cone(), output=tmp_path, **ztf())
    assert (report.sources["ztf"].written, report.sources["ztf"].already_present) == (0, 30)
    assert {p: p.stat().st_mtime_ns for p in record_files(tmp_path)} == before


async def test_limit_caps_records_and_stops_fetching(tmp_path: Path) -> None:
    """--limit 7 writes exactly 7 records and does not request every target."""
    requests: list[str] = []
    inner = per_cone()

    async def handler(request: httpx.Request) -> httpx.Response:
        requests.append(str(request.url))
        await anyio.sleep(0.02)
        return await inner.handle_async_request(request)

    many = [{"ra": 10.0 + i, "dec": 20.0, "radius": 0.01} for i in range(60)]
    overrides = ztf(targets=many)
    report = await harvester.harvest(
        "ztf", transport=httpx.MockTransport(handler), output=tmp_path, limit=7, **overrides
    )
    assert report.sources["ztf"].records == 7 and report.sources["ztf"].limit_reached
    assert len(record_files(tmp_path)) == 7
    assert len(requests) < 60


async def test_dry_run_writes_nothing_and_keeps_a_sample(tmp_path: Path) -> None:
    """A dry run fetches and validates, writes no file, and reports a sample record."""
    report = await harvester.harvest("ztf", transport=per_cone(), output=tmp_path, dry_run=True, **ztf())
    assert not (tmp_path / "ztf").exists()
    src = report.sources["ztf"]
    assert src.records == 30 and src.written == 0
    assert src.sample_record is not None and src.sample_record["source"] == "ztf"


async def test_jsonl_shards_are_complete_and_rerun_writes_nothing(tmp_path: Path) -> None:
    """--format jsonl writes full shards of jsonl_shard_records lines and a rerun adds none."""
    kwargs: dict[str, Any] = {"output": tmp_path, "format": "jsonl", "jsonl_shard_records": 8, **ztf()}
    await harvester.harvest("ztf", transport=per_cone(), **kwargs)
    shards = sorted((tmp_path / "ztf").glob("part-*.jsonl"))
    lines = [line for s in shards for line in s.read_bytes().splitlines()]
    assert len(shards) == 4 and len(lines) == 30
    assert len({(d["object_id"], d["mjd"]) for d in map(orjson.loads, lines)}) == 30
    report = await harvester.harvest("ztf", transport=per_cone(), **kwargs)
    assert (report.sources["ztf"].written, report.sources["ztf"].already_present) == (0, 30)
    assert sorted((tmp_path / "ztf").glob("part-*.jsonl")) == shards


async def test_a_failing_target_does_not_stop_the_others(tmp_path: Path) -> None:
    """One cone answering an HTML page is reported with its cause; the other five are written."""
    inner = per_cone()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params["POS"].split()[1] == "12.0":
            return httpx.Response(200, text="<html><title>Oops</title></html>")
        return await inner.handle_async_request(request)

    report = await harvester.harvest("ztf", transport=httpx.MockTransport(handler), output=tmp_path, **ztf())
    src = report.sources["ztf"]
    assert src.status == "partial" and report.exit_code == 1
    assert [(e.target, e.transient) for e in src.errors] == [("c2", False)]
    assert "HTML page" in src.errors[0].cause
    assert len(record_files(tmp_path)) == 25


async def test_source_failing_everywhere_is_failed(tmp_path: Path) -> None:
    """When every target fails with 503s, the source is 'failed' and nothing is written."""
    report = await harvester.harvest(
        "ztf", transport=httpx.MockTransport(lambda r: httpx.Response(503)), output=tmp_path, **ztf()
    )
    assert report.sources["ztf"].status == "failed" and report.exit_code == 1
    assert all(e.transient for e in report.sources["ztf"].errors)
    assert record_files(tmp_path) == []


async def test_fallback_to_sample_marks_records(tmp_path: Path) -> None:
    """With fallback_to_sample on, a dead archive is replaced by sample data, marked as such."""
    report = await harvester.harvest(
        "ztf",
        transport=httpx.MockTransport(lambda r: httpx.Response(503)),
        output=tmp_path,
        fallback_to_sample=True,
        limit=5,
        **ztf(),
    )
    src = report.sources["ztf"]
    assert src.sample and src.written == 5 and src.status == "partial"
    assert "sample archive" in src.warnings[0]
    assert all(
        ZtfRecord.model_validate_json(p.read_bytes()).provenance.sample for p in record_files(tmp_path)
    )


async def test_output_path_that_is_a_file_is_bad_input(tmp_path: Path) -> None:
    """An output path that is a regular file is refused before anything is fetched (ConfigError)."""
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(harvester.ConfigError, match="exists and is not a folder"):
        await harvester.harvest("ztf", transport=per_cone(), output=tmp_path / "blocker", **ztf())


async def test_output_folder_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    """A source folder that cannot be created (a file is in the way) fails the source with one line."""
    (tmp_path / "ztf").write_text("x")
    report = await harvester.harvest("ztf", transport=per_cone(), output=tmp_path, **ztf())
    src = report.sources["ztf"]
    assert src.status == "failed" and src.errors[0].target == "(output)"
    assert "cannot write to" in src.errors[0].cause


async def test_no_temporary_files_are_left(tmp_path: Path) -> None:
    """After a run the folder holds only finished records and the README."""
    await harvester.harvest("ztf", transport=per_cone(), output=tmp_path, **ztf())
    names = os.listdir(tmp_path / "ztf")
    assert all(
        n in ("README.md", ".harvester") or (n.startswith("record_") and n.endswith(".json")) for n in names
    )


def test_stale_temporary_files_are_cleaned_and_never_counted(tmp_path: Path) -> None:
    """A hidden temp file left by a killed run is removed by the next writer and never read as a record."""
    from harvester.io.writers import JsonFilesWriter

    folder = tmp_path / "ztf"
    folder.mkdir()
    (folder / ".record_x.json.abc.tmp").write_bytes(b'{"partial')
    anyio.run(JsonFilesWriter(folder).open)
    assert os.listdir(folder) == []


@pytest.mark.parametrize("route", ["unnamed file and link", "create-only rename", "hard link"])
async def test_a_record_file_is_created_once_and_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    """Every way a record file gets its name (an unnamed ``O_TMPFILE`` file linked under it; or
    a hidden temporary file and ``renameat2(RENAME_NOREPLACE)``, or a hard link where the system
    lacks that) creates it whole and only once: a file already under the name is left as it was
    and counted present, the records after it are written, and no temporary file stays behind."""
    from harvester.io import writers
    from harvester.io.writers import JsonFilesWriter
    from tests.display.test_tables import ztf as record

    renamed: list[bool | None] = []
    rename_noreplace = writers._rename_noreplace

    def spy(tmp: str, path: str) -> bool | None:
        renamed.append(None if route == "hard link" else rename_noreplace(tmp, path))
        return renamed[-1]

    monkeypatch.setattr(writers, "_rename_noreplace", spy)
    monkeypatch.setattr(writers, "_NO_RENAMEAT2", set())  # the refusal below is remembered per device
    monkeypatch.setattr(writers, "_NO_TMPFILE", set())
    if route != "unnamed file and link":
        monkeypatch.setattr(writers, "_O_TMPFILE", 0)  # as on a system without it
    folder = tmp_path / "ztf"
    writer = JsonFilesWriter(folder)
    await writer.open()
    taken, first, second = record(58000.1), record(58000.2), record(58000.3)
    writers.record_path(folder, taken).write_bytes(b"someone else's\n")
    result = await writer.write([(taken, "w"), (first, "w"), (second, "w")])
    assert (result.written, result.present, result.error) == (2, 1, None)
    expected = {"unnamed file and link": [], "create-only rename": [False, True, True], "hard link": [None]}
    # a refusal is remembered: the other files go straight to the link
    assert renamed == expected[route]
    for r in (first, second):
        assert writers.record_path(folder, r).read_bytes() == writers.dumps_record(r) + b"\n"
    assert writers.record_path(folder, taken).read_bytes() == b"someone else's\n"
    assert sorted(os.listdir(folder)) == sorted(
        writers.record_path(folder, r).name for r in (taken, first, second)
    )
    made = result.record_files
    assert made is not None and made.created == [writers.record_path(folder, r).name for r in (first, second)]
    assert made.names == [writers.record_path(folder, r).name for r in (taken, first, second)]
    assert made.digests == [hashlib.sha256(writers.dumps_record(r) + b"\n").digest() for r in (first, second)]


@pytest.mark.parametrize("step", ["open", "link"])
async def test_a_filesystem_refusing_unnamed_files_gets_them_another_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """A filesystem (or kernel, or sandbox) that refuses ``O_TMPFILE`` or the link of such a
    file gets its record files through a hidden temporary name instead, the refused one
    included, and the writer remembers that for the filesystem: later writes do not try."""
    import errno

    from harvester.io import writers
    from harvester.io.writers import JsonFilesWriter
    from tests.display.test_tables import ztf as record

    tries: list[str] = []
    real_open, real_link = os.open, os.link

    def refusing_open(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if flags & writers._O_TMPFILE == writers._O_TMPFILE and step == "open":
            tries.append("open")
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_open(path, flags, *args, **kw)

    def refusing_link(src: Any, dst: Any, **kw: Any) -> None:
        if kw.get("src_dir_fd") is not None and step == "link":
            tries.append("link")
            raise OSError(errno.EPERM, "Operation not permitted")
        real_link(src, dst, **kw)

    monkeypatch.setattr(os, "open", refusing_open)
    monkeypatch.setattr(os, "link", refusing_link)
    monkeypatch.setattr(writers, "_NO_TMPFILE", set())
    folder = tmp_path / "ztf"
    writer = JsonFilesWriter(folder)
    await writer.open()
    records = [record(58000.1), record(58000.2)]
    result = await writer.write([(r, "w") for r in records])
    again = await writer.write([(record(58000.3), "w")])
    assert (result.written, result.error, again.written, again.error) == (2, None, 1, None)
    assert tries == [step]
    assert sorted(os.listdir(folder)) == sorted(
        writers.record_path(folder, r).name for r in [*records, record(58000.3)]
    )
    for r in records:
        assert writers.record_path(folder, r).read_bytes() == writers.dumps_record(r) + b"\n"


async def test_a_refusal_whose_other_route_fails_too_is_reported_not_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the unnamed file's link is refused and the temporary name fails as well (the folder
    itself refuses), that failure is the one-line error, and the filesystem is not marked as
    one without unnamed files: the refusal said nothing about it."""
    import errno

    from harvester.errors import OutputError
    from harvester.io import writers
    from harvester.io.writers import JsonFilesWriter
    from tests.display.test_tables import ztf as record

    real_link = os.link

    def refusing_link(src: Any, dst: Any, **kw: Any) -> None:
        if kw.get("src_dir_fd") is not None:
            raise OSError(errno.EPERM, "Operation not permitted")
        real_link(src, dst, **kw)

    def failing_create_once(path: Any, data: Any, **kw: Any) -> None:
        raise OutputError(f"cannot write to {tmp_path / 'ztf'}: permission denied")

    monkeypatch.setattr(os, "link", refusing_link)
    monkeypatch.setattr(writers, "_create_once", failing_create_once)
    monkeypatch.setattr(writers, "_NO_TMPFILE", set())
    writer = JsonFilesWriter(tmp_path / "ztf")
    await writer.open()
    result = await writer.write([(record(58000.1), "w")])
    assert result.error is not None and result.written == 0
    assert result.error.message == f"cannot write to {tmp_path / 'ztf'}: permission denied"
    assert not writers._NO_TMPFILE and os.listdir(tmp_path / "ztf") == []


def _failing_renameat2(code: int, calls: list[int]) -> Any:
    """A stand-in for the C library's ``renameat2`` that fails with ``code``."""
    import ctypes

    def renameat2(*args: Any) -> int:
        calls.append(code)
        ctypes.set_errno(code)
        return -1

    return lambda: renameat2


async def test_a_filesystem_refusing_the_create_only_rename_gets_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``EINVAL`` (a filesystem without ``RENAME_NOREPLACE``) falls back to a hard link, and the
    writer remembers it for that filesystem: the next files go straight to the link."""
    import errno

    from harvester.io import writers
    from harvester.io.writers import JsonFilesWriter
    from tests.display.test_tables import ztf as record

    calls: list[int] = []
    monkeypatch.setattr(writers, "_renameat2", _failing_renameat2(errno.EINVAL, calls))
    monkeypatch.setattr(writers, "_NO_RENAMEAT2", set())
    monkeypatch.setattr(writers, "_O_TMPFILE", 0)  # record files through a temporary name
    writer = JsonFilesWriter(tmp_path / "ztf")
    await writer.open()
    records = [record(58000.1), record(58000.2), record(58000.3)]
    result = await writer.write([(r, "w") for r in records])
    assert (result.written, result.error, calls) == (3, None, [errno.EINVAL])
    assert sorted(os.listdir(tmp_path / "ztf")) == sorted(
        writers.record_path(tmp_path / "ztf", r).name for r in records
    )


async def test_a_failing_create_only_rename_is_one_line_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any other failure of the rename (here ``EACCES``) is the output's one-line error naming the
    folder; the temporary file is removed, and nothing is counted written."""
    import errno

    from harvester.io import writers
    from harvester.io.writers import JsonFilesWriter
    from tests.display.test_tables import ztf as record

    monkeypatch.setattr(writers, "_renameat2", _failing_renameat2(errno.EACCES, []))
    monkeypatch.setattr(writers, "_NO_RENAMEAT2", set())
    monkeypatch.setattr(writers, "_O_TMPFILE", 0)
    writer = JsonFilesWriter(tmp_path / "ztf")
    await writer.open()
    result = await writer.write([(record(58000.1), "w")])
    assert result.error is not None and result.written == 0 and not result.record_files
    assert result.error.message == f"cannot write to {tmp_path / 'ztf'}: permission denied"
    assert os.listdir(tmp_path / "ztf") == []


async def test_a_ledger_failure_after_record_files_fails_the_source_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-record files commit in the writer's turn: a ledger that cannot be written fails the
    source with one line naming the ledger, and no file is written after the failed commit."""
    import sqlite3

    from harvester.io.ledger import Ledger

    def full(self: Ledger, *args: Any) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Ledger, "_commit_files_sync", full)
    report = await harvester.harvest("ztf", transport=per_cone(), output=tmp_path, **ztf())
    src = report.sources["ztf"]
    assert src.status == "failed" and report.exit_code == 1
    assert [e.cause for e in src.errors if e.target == "(output)"] == [
        f"cannot write to {tmp_path / 'ztf'}: database or disk is full (ledger ledger.sqlite)"
    ]
    assert 0 < len(record_files(tmp_path)) == src.written < 30


def test_the_create_only_rename_is_available_and_never_replaces(tmp_path: Path) -> None:
    """On Linux the writer names files with one ``renameat2(RENAME_NOREPLACE)``: it moves a file
    to a free name, and refuses (False) a taken one, leaving both files untouched."""
    from harvester.io.writers import _rename_noreplace

    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    assert _rename_noreplace(str(tmp_path / "a"), str(tmp_path / "c")) is True
    assert _rename_noreplace(str(tmp_path / "b"), str(tmp_path / "c")) is False
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {"b": b"b", "c": b"a"}


async def test_record_files_and_their_ledger_rows_are_made_one_after_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-record files: each write's keys go into the ledger before the next write begins
    (side by side, the two slowed each other down; docs/design.md). A slow commit makes any
    overlap certain."""
    import time

    from harvester.io.ledger import Ledger
    from harvester.io.writers import JsonFilesWriter

    spans: list[tuple[str, float, float]] = []

    def timed(name: str, fn: Any) -> Any:
        def run(*args: Any) -> Any:
            start = time.monotonic()
            try:
                return fn(*args)
            finally:
                spans.append((name, start, time.monotonic()))

        return run

    write, commit = JsonFilesWriter._write_files, Ledger._commit_files_sync
    monkeypatch.setattr(JsonFilesWriter, "_write_files", lambda self, *a: timed("write", write)(self, *a))

    def slow_commit(self: Ledger, *args: Any) -> Any:
        time.sleep(0.05)
        return commit(self, *args)

    monkeypatch.setattr(Ledger, "_commit_files_sync", lambda self, *a: timed("commit", slow_commit)(self, *a))
    report = await harvester.harvest("ztf", transport=per_cone(), output=tmp_path, **ztf())
    assert report.sources["ztf"].written == 30 and len(record_files(tmp_path)) == 30
    writes = [(a, b) for name, a, b in spans if name == "write"]
    commits = [(a, b) for name, a, b in spans if name == "commit"]
    assert len(writes) > 1 and len(commits) >= len(writes)
    assert not any(w0 < c1 and c0 < w1 for w0, w1 in writes for c0, c1 in commits)


async def test_record_files_are_entered_with_their_size_time_and_hash_and_listed_once(
    tmp_path: Path,
) -> None:
    """Every record file a run writes is in the ledger with its size, modification time and
    sha256, attributed to its key and target, and in the run's list of files with its sha256;
    that list (one entry per record here) is left out of the report's repr."""
    import contextlib
    import sqlite3

    from harvester.io.ledger import ledger_path

    report = await harvester.harvest("ztf", transport=per_cone(overlap=True), output=tmp_path, **ztf())
    src = report.sources["ztf"]
    files = {p.name: p for p in record_files(tmp_path)}
    assert len(files) == src.written == 33
    assert sorted(src.files) == sorted(
        (n, hashlib.sha256(p.read_bytes()).hexdigest()) for n, p in files.items()
    )
    with contextlib.closing(sqlite3.connect(ledger_path(tmp_path / "ztf"))) as conn:
        entered = conn.execute(
            "SELECT f.name, f.size, f.mtime_ns, f.sha256, r.key, t.wkey FROM records r "
            "JOIN files f ON f.id = r.file JOIN targets t ON t.id = r.target"
        ).fetchall()
    assert len(entered) == 33
    for name, size, mtime_ns, sha256, key, wkey in entered:
        body, stat = files[name].read_bytes(), files[name].stat()
        assert (size, mtime_ns, sha256) == (stat.st_size, stat.st_mtime_ns, hashlib.sha256(body).digest())
        record = orjson.loads(body)
        assert key == f"{record['object_id']}\x1f{record['mjd']!r}" and wkey
    assert not any(name in repr(report) for name in files) and len(repr(report)) < 5000


async def test_fallback_uses_the_real_archive_paths_even_with_a_custom_base_url(tmp_path: Path) -> None:
    """A dead custom IRSA mirror falls back to sample data served for IRSA's own path."""
    overrides = ztf(base_url="http://mirror.example/irsa/lc")
    overrides["data_sources"]["ztf"]["rate_limit"] = {"requests_per_second": 500, "max_concurrency": 4}
    report = await harvester.harvest(
        "ztf",
        transport=httpx.MockTransport(lambda r: httpx.Response(503)),
        output=tmp_path,
        fallback_to_sample=True,
        limit=5,
        **overrides,
    )
    assert report.sources["ztf"].written == 5


class _DiskLog:
    """What reached the disk, in order: ``("sync", path)`` per fsync, ``("name", path)`` when a
    file becomes visible under its final name (create-only rename, link or rename)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from harvester.io import writers

        self.events: list[tuple[str, str]] = []
        fsync, link, replace = os.fsync, os.link, os.replace
        rename_noreplace = writers._rename_noreplace

        def logged_rename_noreplace(src: str, dst: str) -> bool | None:
            moved = rename_noreplace(src, dst)
            if moved:
                self.events.append(("name", dst))
            return moved

        def logged_fsync(fd: int) -> None:
            self.events.append(("sync", os.readlink(f"/proc/self/fd/{fd}")))
            fsync(fd)

        def logged_link(src: Any, dst: Any, **kw: Any) -> None:
            link(src, dst, **kw)
            self.events.append(("name", str(dst)))

        def logged_replace(src: Any, dst: Any, **kw: Any) -> None:
            replace(src, dst, **kw)
            self.events.append(("name", str(dst)))

        monkeypatch.setattr(os, "fsync", logged_fsync)
        monkeypatch.setattr(os, "link", logged_link)
        monkeypatch.setattr(os, "replace", logged_replace)
        monkeypatch.setattr(writers, "_rename_noreplace", logged_rename_noreplace)

    def flushed_then_named(self, path: Path) -> bool:
        """``path``'s bytes were synced before it got its name, and its folder's entry after."""
        named = self.events.index(("name", str(path)))
        before = [p for kind, p in self.events[:named] if kind == "sync"]
        after = [p for kind, p in self.events[named:] if kind == "sync"]
        return any(Path(p).name.startswith(f".{path.name}") for p in before) and str(path.parent) in after


async def test_committing_files_are_on_disk_before_they_get_their_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A jsonl shard (its keys are committed to the state once it is in place), a work unit's
    object and a compacted Parquet file are flushed to disk before their final names appear, and
    new folders' entries after: a power loss cannot leave a committed name over missing bytes."""
    from harvester.executors.compact import compact
    from harvester.io.objectstore import ObjectStore
    from harvester.io.writers import JsonlWriter, dumps_record
    from tests.display.test_tables import ztf

    disk = _DiskLog(monkeypatch)
    writer = JsonlWriter(tmp_path / "shards", ZtfRecord, run_id="r1", shard_records=2)
    await writer.open()
    await writer.write([(ztf(58000.1), None), (ztf(58000.2), None)])
    body = dumps_record(ztf(58000.3)) + b"\n"
    store = ObjectStore(tmp_path / "out")
    store.put_new("ztf/units/c1/r1-d.jsonl", body)
    manifest = {"data": "ztf/units/c1/r1-d.jsonl", "sha256": hashlib.sha256(body).hexdigest()}
    store.put_new("_units/ztf/c1/r1-d.json", orjson.dumps(manifest))
    compact("ztf", str(tmp_path / "out"), tmp_path / "ztf.parquet")
    assert disk.flushed_then_named(tmp_path / "shards" / "part-r1-00001.jsonl")
    assert disk.flushed_then_named(tmp_path / "out" / "ztf" / "units" / "c1" / "r1-d.jsonl")
    assert disk.flushed_then_named(tmp_path / "out" / "_units" / "ztf" / "c1" / "r1-d.json")
    assert disk.flushed_then_named(tmp_path / "ztf.parquet")
    # the folders the unit's objects created have their entries flushed in their parents too
    synced = {path for kind, path in disk.events if kind == "sync"}
    units = tmp_path / "out" / "ztf" / "units"
    assert {str(units), str(units.parent), str(units.parent.parent), str(tmp_path)} <= synced


def test_run_ids_sort_in_start_order_within_one_second() -> None:
    """The unit driver orders manifests by run id: ids made a few milliseconds apart (the same
    second, usually) sort as they were made, in the documented form."""
    import re
    import time

    from harvester.run.report import new_run_id

    ids = []
    for _ in range(5):
        ids.append(new_run_id())
        time.sleep(0.003)
    assert all(re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{6}", i) for i in ids)
    assert ids == sorted(ids)
