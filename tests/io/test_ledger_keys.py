"""The ledger's bookkeeping of keys, through its API: every key committed is found, attributed to
the file and target that wrote it, forgotten exactly when its file is lost and struck off the lost
list exactly when it comes back, whichever way the commit entered it (a shard's keys in bulk, a
record file's row by row, a key SQLite's JSON reader cannot carry bound on its own)."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from pathlib import Path

from harvester.archives.ztf.records import ZtfRecord
from harvester.io.ledger import FileInfo, Key, Ledger, RecordFiles, file_info, ledger_path

RUN = "20261207T000000-test00"
EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

#: key parts that text, JSON or SQLite could each get wrong
ODD = [
    "a\x00b",  # NUL: json_each would cut the text short
    "\x00",
    "x\x1fy",  # the key separator inside a part
    "é😀\u2028",
    '"quoted" \\ back\\u0000slash',  # looks like an escaped NUL in JSON text
    "",
    "null",
    "1.5",
    "[1]",
]

Entry = tuple[Key, str, str | None]


def make_file(folder: Path, name: str) -> FileInfo:
    path = folder / name
    path.write_bytes(b"")
    return file_info(path, EMPTY_SHA)


def shard_keys(n: int, start: int, prefix: str = "6751033") -> list[Key]:
    # not in key order, as a shard's keys come (by object, then time, as repr text)
    return [(f"{prefix}{k % 7:08d}", repr(58000.0 + k * 0.37)) for k in range(start, start + n)]


def rows(folder: Path) -> dict[str, tuple[str, str | None]]:
    """key text -> (file name, wkey) as the ledger holds them."""
    with contextlib.closing(sqlite3.connect(ledger_path(folder))) as conn:
        found = conn.execute(
            "SELECT r.key, f.name, t.wkey FROM records r JOIN files f ON f.id = r.file "
            "LEFT JOIN targets t ON t.id = r.target"
        ).fetchall()
    return {str(k): (str(n), None if w is None else str(w)) for k, n, w in found}


def text(key: Key) -> str:
    return "\x1f".join(key)


async def test_shards_keys_are_found_and_attributed_then_exactly_a_lost_shards_come_back(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "ztf"
    folder.mkdir()
    expected: dict[str, tuple[str, str | None]] = {}
    shards: dict[str, list[Key]] = {}
    async with Ledger(folder, ZtfRecord) as ledger:
        start = 0
        for seq in range(1, 5):
            name = f"part-{RUN}-{seq:05d}.jsonl"
            info = make_file(folder, name)
            entries: list[Entry] = []
            # each shard: three runs of targets, one key with odd parts in the middle one
            for t, n in enumerate((900, 1, 1200)):
                wkey = f"cone-{(seq + t) % 5}"
                keys = shard_keys(n, start) if t != 1 else [(ODD[seq], ODD[-seq])]
                start += n
                entries += [(k, name, wkey) for k in keys]
            shards[name] = [k for k, _, _ in entries]
            expected.update({text(k): (name, w) for k, _, w in entries})
            assert await ledger.commit(entries, [info], RUN) == 0
        assert rows(folder) == expected
        await ledger.advance({f"cone-{i}": (f"cone-{i}", 59000.0) for i in range(5)}, RUN)
        every = [k for keys in shards.values() for k in keys]
        strangers = [(ODD[0], "never"), ("6751033", "58000.0"), *shard_keys(50, 10**6)]
        assert await ledger.present(every + strangers) == set(every)
        assert await ledger.count() == len(every)

        lost_name = f"part-{RUN}-00003.jsonl"
        (folder / lost_name).unlink()
        found = await ledger.reconcile()
        lost = shards.pop(lost_name)
        assert found.missing_on_disk == len(lost)
        assert await ledger.pending_refetch() == len(lost)
        kept = [k for keys in shards.values() for k in keys]
        assert await ledger.present(every) == set(kept)
        # the targets that wrote into the lost shard lose their watermarks, no other
        assert found.watermarks_dropped == 3
        assert set(await ledger.watermarks()) == {"cone-1", "cone-2"}

        # the lost keys come back in a new shard (with a few new ones): exactly they are struck off
        name = f"part-{RUN}-00005.jsonl"
        info = make_file(folder, name)
        fresh = shard_keys(10, 5 * 10**6)
        back: list[Entry] = [(k, name, "cone-9") for k in [*lost, *fresh]]
        assert await ledger.commit(back, [info], RUN) == len(lost)
        assert await ledger.pending_refetch() == 0
        assert await ledger.present(every + fresh) == set(every + fresh)
        assert {k for k, (n, _) in rows(folder).items() if n == name} == {text(k) for k in lost + fresh}


async def test_watermarks_of_exactly_the_lost_shards_targets_are_dropped(tmp_path: Path) -> None:
    folder = tmp_path / "ztf"
    folder.mkdir()
    async with Ledger(folder, ZtfRecord) as ledger:
        for seq, wkeys in enumerate((["a", "b"], ["c"], ["d", "a"]), start=1):
            name = f"part-{RUN}-{seq:05d}.jsonl"
            info = make_file(folder, name)
            entries = [
                (k, name, w) for i, w in enumerate(wkeys) for k in shard_keys(100, seq * 1000 + i * 100)
            ]
            await ledger.commit(entries, [info], RUN)
        await ledger.advance({w: (w, 59000.0) for w in "abcd"}, RUN)
        (folder / f"part-{RUN}-00001.jsonl").unlink()
        found = await ledger.reconcile()
        assert found.missing_on_disk == 200 and found.watermarks_dropped == 2
        assert await ledger.watermarks() == {"c": 59000.0, "d": 59000.0}


async def test_a_key_given_twice_keeps_its_last_file(tmp_path: Path) -> None:
    """As before the bulk commit: within one commit a later entry of a key wins, across runs of
    entries and between a shard's bulk runs and one-key runs."""
    folder = tmp_path / "ztf"
    folder.mkdir()
    k1, k2 = ("1", "58000.5"), ("2", "58001.5")
    async with Ledger(folder, ZtfRecord) as ledger:
        a, b = f"part-{RUN}-00001.jsonl", f"part-{RUN}-00002.jsonl"
        infos = [make_file(folder, a), make_file(folder, b)]
        many = shard_keys(100, 0)
        entries: list[Entry] = [
            (k1, a, "x"),
            *[(k, a, "x") for k in many],
            (k1, b, "y"),
            (k2, b, "y"),
            *[(k, b, "y") for k in many[:10]],
            (k2, a, "x"),
        ]
        await ledger.commit(entries, infos, RUN)
        held = rows(folder)
        assert held[text(k1)] == (b, "y") and held[text(k2)] == (a, "x")
        assert all(held[text(k)] == (b, "y") for k in many[:10])
        assert all(held[text(k)] == (a, "x") for k in many[10:])


def record_files(folder: Path, keys: list[Key], wkeys: list[str | None]) -> RecordFiles:
    """Record files for ``keys`` (made on disk, empty), as a writer hands them to the ledger."""
    made = RecordFiles(wkeys=wkeys)
    for i, key in enumerate(keys):
        name = f"record_{i:04d}.json"
        info = make_file(folder, name)
        made.texts.append(text(key))
        made.names.append(name)
        made.created.append(name)
        made.sizes.append(info.size)
        made.mtimes_ns.append(info.mtime_ns)
        made.digests.append(bytes.fromhex(info.sha256))
    return made


async def test_record_files_one_key_each_and_odd_keys(tmp_path: Path) -> None:
    """Per-record files (one key per file, entered in bulk, from several targets) and keys with
    any characters (NUL among them: those keys are bound row by row)."""
    folder = tmp_path / "ztf"
    folder.mkdir()
    keys: list[Key] = [(a, b) for a in ODD for b in ODD[:3]]
    async with Ledger(folder, ZtfRecord) as ledger:
        made = record_files(folder, keys, [f"t{i % 3}" for i in range(len(keys))])
        assert await ledger.commit_files(made, RUN) == 0
        assert rows(folder) == {text(k): (n, w) for k, n, w in zip(keys, made.names, made.wkeys, strict=True)}
        assert await ledger.present([*keys, ("a", "b")]) == set(keys)
        for i in (0, 4, 5):
            (folder / f"record_{i:04d}.json").unlink()
        found = await ledger.reconcile()
        assert found.missing_on_disk == 3
        assert await ledger.present(keys) == set(keys) - {keys[0], keys[4], keys[5]}
        # back in one shard, in bulk, NUL keys among them
        name = f"part-{RUN}-00001.jsonl"
        info = make_file(folder, name)
        again = [(keys[i], name, "t0") for i in (0, 4, 5)] + [(k, name, "t0") for k in shard_keys(64, 0)]
        assert await ledger.commit(again, [info], RUN) == 3
        assert await ledger.pending_refetch() == 0
        assert await ledger.present(keys) == set(keys)


async def test_record_files_found_present_are_entered_and_lost_ones_come_back(tmp_path: Path) -> None:
    """A write's record files that were already on disk (another process made them: not
    created by this write) are entered from the disk, with their keys; a lost record's file
    written again strikes its key off the lost list; records of no target have none."""
    folder = tmp_path / "ztf"
    folder.mkdir()
    keys = shard_keys(5, 0)
    async with Ledger(folder, ZtfRecord) as ledger:
        first = record_files(folder, keys[:3], [None, None, None])
        await ledger.commit_files(first, RUN)
        (folder / "record_0001.json").unlink()
        assert (await ledger.reconcile()).missing_on_disk == 1
        (folder / "record_0001.json").write_bytes(b"{}\n")  # written again
        (folder / "record_0003.json").write_bytes(b"{}\n")  # made by someone else meanwhile
        made = RecordFiles(
            texts=[text(keys[1]), text(keys[3]), text(keys[4])],
            names=["record_0001.json", "record_0003.json", "record_0004.json"],
            wkeys=["w", "w", None],
        )
        info = make_file(folder, "record_0004.json")
        made.created, made.sizes, made.mtimes_ns = [info.name], [info.size], [info.mtime_ns]
        made.digests = [bytes.fromhex(info.sha256)]
        made.created.insert(0, "record_0001.json")  # this write created it again
        made.sizes.insert(0, 3)
        made.mtimes_ns.insert(0, (folder / "record_0001.json").stat().st_mtime_ns)
        made.digests.insert(0, hashlib.sha256(b"{}\n").digest())
        assert await ledger.commit_files(made, RUN) == 1
        assert await ledger.pending_refetch() == 0
        assert rows(folder) == {
            text(keys[0]): ("record_0000.json", None),
            text(keys[1]): ("record_0001.json", "w"),
            text(keys[2]): ("record_0002.json", None),
            text(keys[3]): ("record_0003.json", "w"),
            text(keys[4]): ("record_0004.json", None),
        }
        assert (await ledger.reconcile(verify=True)).missing_on_disk == 0


#: the ledger as the version before the bulk commit made it (with its index of records by file)
PREVIOUS_SCHEMA = """
CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE files (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, sha256 BLOB NOT NULL, run_id TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE targets (
    id INTEGER PRIMARY KEY, ns TEXT NOT NULL, wkey TEXT NOT NULL, label TEXT NOT NULL,
    watermark REAL, run_id TEXT NOT NULL, at REAL NOT NULL, UNIQUE (ns, wkey));
CREATE TABLE records (
    key TEXT PRIMARY KEY, file INTEGER NOT NULL, target INTEGER) WITHOUT ROWID;
CREATE INDEX records_by_file ON records (file);
CREATE TABLE lost (key TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('version', '1'), ('source', 'ztf');
"""


def previous_ledger(folder: Path, shards: dict[str, list[Key]]) -> None:
    """A ledger written by the previous version: its schema, its rows bound one by one."""
    path = ledger_path(folder)
    path.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(PREVIOUS_SCHEMA)
        conn.execute(
            "INSERT INTO targets (ns, wkey, label, watermark, run_id, at) "
            "VALUES ('', 'a', 'a', 59000.0, ?, 0)",
            (RUN,),
        )
        for name, keys in shards.items():
            info = make_file(folder, name)
            fid = conn.execute(
                "INSERT INTO files (name, size, mtime_ns, sha256, run_id, at) VALUES (?, ?, ?, ?, ?, 0)",
                (name, info.size, info.mtime_ns, bytes.fromhex(info.sha256), RUN),
            ).lastrowid
            conn.executemany("INSERT INTO records VALUES (?, ?, 1)", [(text(k), fid) for k in keys])
        conn.commit()


def has_file_index(folder: Path) -> bool:
    with contextlib.closing(sqlite3.connect(ledger_path(folder))) as conn:
        return (
            conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'records_by_file'").fetchone() is not None
        )


async def test_a_ledger_of_the_previous_version_opens_and_loses_exactly_a_deleted_shards_keys(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "ztf"
    folder.mkdir()
    shards = {f"part-{RUN}-{i:05d}.jsonl": shard_keys(700, i * 1000) for i in range(1, 4)}
    shards[f"part-{RUN}-00002.jsonl"].append(("a\x00b", "58000.5"))  # a NUL key bound by the old code
    previous_ledger(folder, shards)
    assert has_file_index(folder)
    every = [k for keys in shards.values() for k in keys]
    async with Ledger(folder, ZtfRecord) as ledger:
        assert (await ledger.reconcile()).missing_on_disk == 0
        assert not has_file_index(folder)  # dropped on open: commits no longer pay for it
        assert await ledger.present([*every, ("x", "y")]) == set(every)
    # a previous harvester opening it again builds its index again: both versions keep working
    with contextlib.closing(sqlite3.connect(ledger_path(folder))) as conn:
        conn.execute("CREATE INDEX IF NOT EXISTS records_by_file ON records (file)")
        conn.commit()
    (folder / f"part-{RUN}-00002.jsonl").unlink()
    async with Ledger(folder, ZtfRecord) as ledger:
        found = await ledger.reconcile()
        lost = shards.pop(f"part-{RUN}-00002.jsonl")
        assert found.missing_on_disk == len(lost) == 701 and found.watermarks_dropped == 1
        assert await ledger.present(every) == set(every) - set(lost)
        name = f"part-{RUN}-00009.jsonl"
        info = make_file(folder, name)
        assert await ledger.commit([(k, name, "a") for k in lost], [info], RUN) == len(lost)
        assert await ledger.present(every) == set(every)
        assert await ledger.pending_refetch() == 0


async def test_record_files_keep_their_keys_when_sqlite_picks_file_ids_at_random(tmp_path: Path) -> None:
    """New files' ids follow on from the largest id, which the commit relies on to skip looking
    them up; once the largest id is taken, SQLite picks free ids at random and the commit must
    look them up instead. Either way each key is attributed to its own file."""
    folder = tmp_path / "ztf"
    folder.mkdir()
    keys = shard_keys(6, 0)
    async with Ledger(folder, ZtfRecord) as ledger:
        made = record_files(folder, keys, ["w"] * 6)
        before, after = RecordFiles(), RecordFiles()
        for part, sl in ((before, slice(0, 3)), (after, slice(3, 6))):
            for column in ("texts", "names", "wkeys", "created", "sizes", "mtimes_ns", "digests"):
                setattr(part, column, getattr(made, column)[sl])
        await ledger.commit_files(before, RUN)
        ledger.conn.execute(
            "INSERT INTO files (id, name, size, mtime_ns, sha256, run_id, at) "
            "VALUES (9223372036854775807, 'top', 0, 0, x'00', ?, 0)",
            (RUN,),
        )
        await ledger.commit_files(after, RUN)
    assert rows(folder) == {text(k): (n, "w") for k, n in zip(keys, made.names, strict=True)}
