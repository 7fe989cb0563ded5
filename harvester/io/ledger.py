"""The output's ledger: what an output folder holds, kept inside that folder.

Every source folder of an output carries ``<output>/<source>/.harvester/ledger.sqlite``::

    files(id, name, size, mtime_ns, sha256, run_id, at)   every record file or jsonl shard written
    records(key, file, target)                            each record's dedup key -> its file
    targets(id, ns, wkey, label, watermark, run_id, at)   per (target, query) high-water marks

It is the one answer to "is this record already here?" and "how far did this target get?", so
the answer travels with the data: a copied or moved folder carries its ledger, a deleted folder
takes its ledger with it, and two outputs never share presence. The machine's SQLite state
(``state.path``) keeps only what belongs to the machine: run history, per-target outcomes and
the daemon's breakers.

**Checked against the disk** (:meth:`Ledger.reconcile`) at the start of every run, cheaply: one
directory listing with sizes and modification times, compared with the ledger in SQL; a file is
hashed only where size or time disagree. Then:

- a file the ledger lists but the disk lacks is *missing*: its records are forgotten, so they
  are harvested again, and the watermarks of the targets that wrote them are dropped (a watermark
  would otherwise tell the archive not to send them again; when the writer of a record is unknown,
  because it was adopted, every watermark of the folder is dropped). Lost keys stay listed
  (``lost``) until a run brings them back, and every run's report says how many are still out;
- a file whose size differs, or whose hash differs where only the time does (``--full``: every
  file is hashed), is *damaged*: it is moved into ``.harvester/damaged/`` (never deleted) and
  handled like a missing one;
- a record file or shard on disk that the ledger does not list (a kill between the rename and the
  ledger commit, a ledger deleted or copied from elsewhere, an output written before ledgers
  existed) is *adopted*: read, validated as records of this source and entered; one that does not
  read back as valid records (truncated mid-line, not JSON, not this source) is damaged.

A corrupt ledger is set aside (``ledger.sqlite.bad-<time>``) and rebuilt from the files (every
file is then adopted, and every watermark is gone: the next run asks the archive for everything).
A ledger that is locked, cannot be opened or was written by a newer harvester is an error, never
rebuilt over.

While a run writes a folder it holds ``.harvester/lock``: a second run on the same folder is
refused in one line. Order of effects: a file is in place (named create-only) before its records
are committed here, so the ledger never lists a file that was not written; a kill between the two
leaves a file the next run adopts. The ledger uses SQLite's rollback journal (not WAL), so a
closed ledger is one file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import operator
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import anyio
import orjson
import structlog
from pydantic import ValidationError

from harvester.errors import OutputError
from harvester.io.batches import parquet_keys
from harvester.io.files import make_folder, output_error, temp_path
from harvester.io.readers import is_record_file
from harvester.records import BaseRecord, key_from_text, key_text, record_name

__all__ = [
    "LEDGER_DIR",
    "LEDGER_NAME",
    "FileInfo",
    "Key",
    "Ledger",
    "Reconciled",
    "RecordFiles",
    "file_info",
    "is_record_file",
    "ledger_path",
    "read_summary",
]

log = structlog.get_logger("harvester.io.ledger")

T = TypeVar("T")
Key = tuple[str, ...]

LEDGER_DIR = ".harvester"
LEDGER_NAME = "ledger.sqlite"
LOCK_NAME = "lock"
DAMAGED_DIR = "damaged"
_PAGE = 2_000  # files per reconcile step (one thread call, one commit)
_VERSION = "1"
_BATCH = 500  # parameters per statement where keys are bound one by one
_ADOPT_BATCH = 20_000  # records adopted per ledger transaction
_CACHE_KIB = 32_000  # the ledger connection's page cache

# ``records`` has no index by file. Earlier versions had one (and build it again if they open
# this ledger; this version drops it on open: the tables are the same, nothing else to migrate).
# Every key of every commit paid for it (≈ 1.4× the inserts, twice the file, twice the
# ``quick_check`` of every open), and only forgetting a lost file needs it: that finds the file's
# keys in one pass over the records instead.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, sha256 BLOB NOT NULL, run_id TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS targets (
    id INTEGER PRIMARY KEY, ns TEXT NOT NULL, wkey TEXT NOT NULL, label TEXT NOT NULL,
    watermark REAL, run_id TEXT NOT NULL, at REAL NOT NULL, UNIQUE (ns, wkey));
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY, file INTEGER NOT NULL, target INTEGER) WITHOUT ROWID;
DROP INDEX IF EXISTS records_by_file;
CREATE TABLE IF NOT EXISTS lost (key TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
"""


def ledger_path(folder: Path) -> Path:
    """Where the ledger of a source folder lives."""
    return folder / LEDGER_DIR / LEDGER_NAME


@dataclass(frozen=True)
class FileInfo:
    """A file as the ledger knows it: name in the folder, size, modification time, sha256."""

    name: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass
class RecordFiles:
    """Record files one write made durable, as columns (no object per file), for the ledger to
    enter in bulk: each record's key text, file name and watermark key, in the order written;
    and, of those, the files this write created (a file already under its name is not among
    them) with their size, modification time and sha256 digest."""

    texts: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    wkeys: list[str | None] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    mtimes_ns: list[int] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


def file_info(path: Path, sha256: str) -> FileInfo:
    """Size and modification time of a file just written whose hash the writer computed."""
    st = path.stat()
    return FileInfo(path.name, st.st_size, st.st_mtime_ns, sha256)


@dataclass
class Reconciled:
    """What checking the ledger against the disk found (all zero for a healthy output)."""

    files: int = 0
    #: records the ledger listed whose file is gone: harvested again
    missing_on_disk: int = 0
    #: records in files found truncated or changed (set aside in .harvester/damaged/): harvested again
    damaged: int = 0
    damaged_files: list[str] = field(default_factory=list)
    #: records found on disk that the ledger did not list, now entered
    adopted: int = 0
    #: records present in more than one file (adopted shards that repeat a record)
    repeated_on_disk: int = 0
    #: targets whose watermark was dropped because files they wrote are gone
    watermarks_dropped: int = 0
    #: files whose names are not UTF-8 (never written by harvester): left alone
    unreadable_names: int = 0
    hashed: int = 0
    #: why the ledger was rebuilt from the files (unreadable), if it was
    rebuilt: str | None = None
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "missing_on_disk": self.missing_on_disk,
            "damaged": self.damaged,
            "damaged_files": self.damaged_files[:20],
            "adopted": self.adopted,
            "repeated_on_disk": self.repeated_on_disk,
            "watermarks_dropped": self.watermarks_dropped,
            "unreadable_names": self.unreadable_names,
            "hashed": self.hashed,
            "rebuilt": self.rebuilt,
            "elapsed_s": self.elapsed_s,
        }


@dataclass
class _Read:
    """A file read for adoption: what the ledger will hold of it."""

    name: str
    size: int
    mtime_ns: int
    sha256: bytes
    keys: list[Key]


class _Damaged(Exception):
    """A file on disk that does not read back as this source's records."""


class _NewerLedger(Exception):
    """A ledger written by a newer harvester: refused, never rebuilt over."""


def _make_private(path: Path) -> None:
    """A ledger that is a symlink or a hard link (DVC's ``symlink``/``hardlink`` cache types link a
    checked-out output to its read-only cache) is replaced by a private copy before anything is
    written: writing through the link would change the cached object under its hash."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise output_error(path.parent, exc) from None
    if not (stat.S_ISLNK(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_nlink > 1)):
        return
    tmp = temp_path(path)
    try:
        shutil.copyfile(path, tmp)  # follows the link: the bytes, not the link
        os.replace(tmp, path)  # replaces the link itself; the cache keeps its object
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise output_error(path.parent, exc) from None


def _lock_folder(path: Path, folder: Path) -> IO[bytes]:
    """Hold an exclusive lock on a source folder while a run writes it (released when closed)."""
    try:
        held = open(path, "ab")  # noqa: SIM115 - held open for the life of the ledger
    except OSError as exc:
        raise output_error(path.parent, exc) from None
    try:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held.close()
        raise OutputError(
            f"{folder}: another harvester run is writing this folder; wait for it to finish "
            f"(or stop it) and run again"
        ) from None
    except OSError:
        pass  # a filesystem without locks (some network mounts): run unlocked, as before
    return held


class Ledger:
    """The ledger of one source folder (async; every SQLite call runs on one worker thread).

    ::

        async with Ledger(folder, ZtfRecord) as ledger:
            found = await ledger.reconcile()          # check against the disk first
            new = await ledger.present(keys)          # which keys are already in the output
            await ledger.commit(entries, files, run_id)  # after a shard is in place
            await ledger.commit_files(made, run_id)      # after record files are
            await ledger.advance({wkey: (label, mjd)}, run_id)

    An open ledger holds an exclusive lock on its folder (``.harvester/lock``): a second run on the
    same folder is refused in one line instead of racing the first one's shards and temporaries.
    ``sample`` keeps the watermarks of sample-archive runs apart from the real archive's, so an
    offline run never narrows a real one (presence is shared: a record file is a record file).
    """

    def __init__(self, folder: Path, model: type[BaseRecord], *, sample: bool = False) -> None:
        self.folder = folder
        self.model = model
        self.path = ledger_path(folder)
        self.ns = "sample" if sample else ""
        self._conn: sqlite3.Connection | None = None
        self._held: IO[bytes] | None = None
        self._lock = anyio.CapacityLimiter(1)
        self._rebuilt: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> Ledger:
        await self._run(self._open_sync)
        return self

    async def __aenter__(self) -> Ledger:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._run(self._close_sync)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the ledger's thread; a SQLite failure becomes a one-line OutputError."""
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._lock)
        except sqlite3.Error as exc:
            raise _ledger_error(self.path, exc) from None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"ledger {self.path} is not open")
        return self._conn

    def _open_sync(self) -> None:
        try:
            make_folder(self.path.parent)
        except OSError as exc:
            raise output_error(self.path.parent, exc) from None
        self._held = _lock_folder(self.path.parent / LOCK_NAME, self.folder)
        try:
            _make_private(self.path)
            self._conn = self._connect_or_rebuild()
        except BaseException:
            self._held.close()
            self._held = None
            raise

    def _connect_or_rebuild(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.OperationalError as exc:  # locked, cannot open, I/O: not a damaged ledger
            raise _ledger_error(self.path, exc) from None
        except _NewerLedger as exc:
            raise OutputError(f"{self.path}: {exc}; upgrade harvester to write this output") from None
        except sqlite3.DatabaseError as exc:
            # Unreadable (truncated, overwritten, not a database, another source's): set aside
            # under a new name (never deleted), rebuilt from the files.
            aside = self._set_aside()
            self._rebuilt = f"ledger unreadable ({exc}); set aside as {aside.name}, rebuilt from the files"
            try:
                return self._connect()
            except sqlite3.Error as again:
                raise _ledger_error(self.path, again) from None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA synchronous=FULL")
            # 32 MB of page cache (SQLite's default is 2 MB): a large output's key B-tree is
            # inserted into at random places, and each page missed is read and journalled again
            conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
            check = conn.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {check[0] if check else 'no answer'}")
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT v FROM meta WHERE k = 'version'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO meta VALUES ('version', ?), ('source', ?)",
                    (_VERSION, self.model.model_fields["source"].default),
                )
            elif row[0] != _VERSION:
                raise _NewerLedger(f"ledger version {row[0]}, this harvester reads version {_VERSION}")
            src = conn.execute("SELECT v FROM meta WHERE k = 'source'").fetchone()
            expected = self.model.model_fields["source"].default
            if src is not None and src[0] != expected:
                raise sqlite3.DatabaseError(f"a ledger of source {src[0]!r}, not {expected!r}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _set_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        aside = self.path.with_name(f"{LEDGER_NAME}.bad-{stamp}")
        try:
            for suffix in ("-journal", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.path}{suffix}")
            os.replace(self.path, aside)
        except OSError as exc:
            raise output_error(self.path.parent, exc) from None
        return aside

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._held is not None:
            self._held.close()  # closing the file releases the lock
            self._held = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back on any error (a
        SQLite error becomes a one-line OutputError naming the ledger)."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise _ledger_error(self.path, exc) from None
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _write(self, statements: Iterable[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        with self._transaction() as conn:
            for sql, rows in statements:
                conn.executemany(sql, rows)

    # -- reconcile -------------------------------------------------------------------------------

    async def reconcile(self, *, verify: bool = False) -> Reconciled:
        """Check the ledger against the folder; forget, set aside or adopt files as the module
        says. ``verify`` hashes every file, not only those whose size or time changed (``--full``).

        Runs in bounded steps on the ledger's thread, each committed on its own, so a cancellation
        (Ctrl-C, SIGTERM) waits at most for one step; the next run simply checks again."""
        started = time.monotonic()
        found = Reconciled(rebuilt=self._rebuilt)
        await self._run(self._list_sync, found)
        after = 0
        while (after := await self._run(self._check_page, found, verify, after)) >= 0:
            pass
        while await self._run(self._adopt_page, found):
            pass
        await self._run(lambda: self.conn.execute("DELETE FROM temp.disk"))
        found.elapsed_s = round(time.monotonic() - started, 3)
        return found

    def _list_sync(self, found: Reconciled) -> None:
        """The folder's record files (one listing) into a temp table; forget what is gone."""
        conn = self.conn
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS disk (name TEXT PRIMARY KEY, size INT, mtime_ns INT)")
        conn.execute("DELETE FROM temp.disk")
        conn.executemany("INSERT OR REPLACE INTO temp.disk VALUES (?, ?, ?)", self._listing(found))
        found.files = int(conn.execute("SELECT COUNT(*) FROM temp.disk").fetchone()[0])
        gone = [
            int(fid)
            for (fid,) in conn.execute(
                "SELECT f.id FROM files f LEFT JOIN temp.disk d ON d.name = f.name WHERE d.name IS NULL"
            )
        ]
        forgotten, marks = self._forget(gone)
        found.missing_on_disk += forgotten
        found.watermarks_dropped += marks

    def _listing(self, found: Reconciled) -> Iterator[tuple[str, int, int]]:
        try:
            entries = os.scandir(self.folder)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise OutputError(f"cannot list {self.folder}: {exc.strerror or exc}") from None
        with entries:
            for entry in entries:
                if not is_record_file(entry.name):
                    continue
                try:
                    entry.name.encode("utf-8")
                except UnicodeEncodeError:  # bytes that are not UTF-8: never a name harvester wrote
                    found.unreadable_names += 1
                    continue
                try:
                    if not entry.is_file():  # a link to a regular file counts (DVC's symlink cache)
                        continue
                    st = entry.stat()
                except FileNotFoundError:
                    continue  # removed while listing
                except OSError as exc:
                    raise OutputError(
                        f"cannot read {self.folder / entry.name}: {exc.strerror or exc}"
                    ) from None
                yield entry.name, st.st_size, st.st_mtime_ns

    def _check_page(self, found: Reconciled, verify: bool, after: int) -> int:
        """Files whose size or time differ (every file with ``verify``), a page at a time: same
        bytes -> time refreshed; other bytes -> set aside and forgotten. The next page's start,
        or -1 when done."""
        rows = self.conn.execute(
            "SELECT f.id, f.name, f.size, f.sha256, f.mtime_ns, d.size, d.mtime_ns FROM files f "
            "JOIN temp.disk d ON d.name = f.name WHERE f.id > ? "
            "AND (? OR f.size != d.size OR f.mtime_ns != d.mtime_ns) ORDER BY f.id LIMIT ?",
            (after, verify, _PAGE),
        ).fetchall()
        if not rows:
            return -1
        damaged: list[tuple[int, str]] = []
        refreshed: list[tuple[int, int]] = []
        for fid, name, size, sha, mtime, disk_size, disk_mtime in rows:
            if size == disk_size:
                found.hashed += 1
                if _sha256_file(self.folder / name) == sha:
                    if disk_mtime != mtime:
                        refreshed.append((disk_mtime, fid))  # copied or touched, same bytes
                    continue
            damaged.append((fid, name))
        if refreshed:
            self._write([("UPDATE files SET mtime_ns = ? WHERE id = ?", refreshed)])
        for _, name in damaged:
            self._set_aside_file(name, found)  # first out of the way, then forgotten (together)
        forgotten, marks = self._forget([fid for fid, _ in damaged])
        found.damaged += forgotten
        found.watermarks_dropped += marks
        return int(rows[-1][0])

    def _adopt_page(self, found: Reconciled) -> bool:
        """Read, validate and enter up to one page of files the ledger does not list; False when
        none is left."""
        names = [
            str(n)
            for (n,) in self.conn.execute(
                "SELECT d.name FROM temp.disk d LEFT JOIN files f ON f.name = d.name "
                "WHERE f.name IS NULL ORDER BY d.name LIMIT ?",
                (_PAGE,),
            )
        ]
        if not names:
            return False
        batch: list[_Read] = []
        keys = 0
        for name in names:
            try:
                read = self._read(name)
            except _Damaged as exc:
                self._set_aside_file(name, found)
                found.damaged += exc.args[0]
                continue
            batch.append(read)
            keys += len(read.keys)
            if keys >= _ADOPT_BATCH:
                self._adopt(batch, found)
                batch, keys = [], 0
        self._adopt(batch, found)
        return True

    def _forget(self, file_ids: list[int]) -> tuple[int, int]:
        """Forget files and their records (keeping the keys in ``lost`` until they come back) and
        drop the watermarks that relied on them; return (records forgotten, watermarks dropped).

        A record knows the target that wrote it: that target's watermark (in both namespaces)
        is dropped. A record whose writer is unknown (adopted from disk) could belong to any
        target: then every watermark of the folder is dropped.

        Records are not indexed by file (a commit would pay for that index on every key, a lost
        file is rare): the files' keys are found in one pass over the records, whatever the
        number of files, and everything else looks them up by key."""
        if not file_ids:
            return 0, 0
        conn = self.conn
        now = time.time()
        with self._transaction():
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS gone (id INTEGER PRIMARY KEY)")
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS gone_keys "
                "(key TEXT PRIMARY KEY, target INTEGER) WITHOUT ROWID"
            )
            conn.execute("DELETE FROM temp.gone")
            conn.execute("DELETE FROM temp.gone_keys")
            conn.executemany("INSERT OR IGNORE INTO temp.gone VALUES (?)", [(i,) for i in file_ids])
            conn.execute(
                "INSERT INTO temp.gone_keys SELECT key, target FROM records "
                "WHERE file IN (SELECT id FROM temp.gone)"
            )
            if conn.execute("SELECT 1 FROM temp.gone_keys WHERE target IS NULL LIMIT 1").fetchone():
                marks = conn.execute(
                    "UPDATE targets SET watermark = NULL WHERE watermark IS NOT NULL"
                ).rowcount
            else:
                marks = conn.execute(
                    "UPDATE targets SET watermark = NULL WHERE watermark IS NOT NULL AND wkey IN "
                    "(SELECT wkey FROM targets WHERE id IN (SELECT target FROM temp.gone_keys))"
                ).rowcount
            conn.execute("INSERT OR IGNORE INTO lost SELECT key, ? FROM temp.gone_keys", (now,))
            records = conn.execute(
                "DELETE FROM records WHERE key IN (SELECT key FROM temp.gone_keys)"
            ).rowcount
            conn.execute("DELETE FROM files WHERE id IN (SELECT id FROM temp.gone)")
            conn.execute("DELETE FROM temp.gone")
            conn.execute("DELETE FROM temp.gone_keys")
        return int(records), int(marks)

    def _set_aside_file(self, name: str, found: Reconciled) -> None:
        """Move a damaged file into ``.harvester/damaged/`` (never deleted: a person may want it)."""
        found.damaged_files.append(name)
        self.conn.execute("DELETE FROM temp.disk WHERE name = ?", (name,))
        folder = self.path.parent / DAMAGED_DIR
        target = folder / name
        try:
            folder.mkdir(exist_ok=True)
            if target.exists():
                target = folder / f"{name}.{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
            os.replace(self.folder / name, target)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise output_error(self.folder, exc) from None
        log.warning("damaged_file_set_aside", folder=str(self.folder), file=name, moved_to=str(target))

    def _read(self, name: str) -> _Read:
        """Read a file the ledger did not list; _Damaged if it is not this source's records."""
        path = self.folder / name
        try:
            data = path.read_bytes()
            st = path.stat()
        except OSError as exc:
            raise OutputError(f"cannot read {path}: {exc.strerror or exc}") from None
        keys = self._keys_of(name, data)
        return _Read(name, st.st_size, st.st_mtime_ns, hashlib.sha256(data).digest(), keys)

    def _adopt(self, batch: list[_Read], found: Reconciled) -> None:
        """Enter files the ledger did not list, in one transaction (one sync for many files)."""
        if not batch:
            return
        conn = self.conn
        now = time.time()
        with self._transaction():
            for read in batch:
                fid = conn.execute(
                    "INSERT INTO files (name, size, mtime_ns, sha256, run_id, at) VALUES (?, ?, ?, ?, ?, ?)",
                    (read.name, read.size, read.mtime_ns, read.sha256, "adopted", now),
                ).lastrowid
                texts = sorted(key_text(k) for k in read.keys)
                before = conn.total_changes
                # the first file that holds a key keeps it (the others repeat it)
                self._insert_keys("INSERT OR IGNORE INTO records", texts, fid, None)
                adopted = conn.total_changes - before
                found.adopted += adopted
                found.repeated_on_disk += len(texts) - adopted
                self._unlose(texts)

    def _keys_of(self, name: str, data: bytes) -> list[Key]:
        if name.endswith(".parquet"):
            return self._parquet_keys(data)
        lines = [data] if name.endswith(".json") else data.split(b"\n")
        if name.endswith(".jsonl") and not data.endswith(b"\n"):
            raise _Damaged(max(1, data.count(b"\n")))  # truncated mid-line: not a finished shard
        keys: list[Key] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                record = self.model.model_validate(orjson.loads(line))
            except (orjson.JSONDecodeError, ValidationError):
                raise _Damaged(max(1, len(keys))) from None
            keys.append(record.dedup_key())
        if name.endswith(".json") and (len(keys) != 1 or name != record_name(keys[0])):
            raise _Damaged(1)
        return keys

    def _parquet_keys(self, data: bytes) -> list[Key]:
        """The keys of a Parquet shard whose schema is this source's (else it is damaged)."""
        try:
            return parquet_keys(self.model, data)
        except ValueError:
            raise _Damaged(_rows(data)) from None

    # -- presence --------------------------------------------------------------------------------

    async def present(self, keys: Sequence[Key]) -> set[Key]:
        """The subset of ``keys`` that the output holds."""
        by_text = {key_text(k): k for k in keys}
        return {by_text[t] for t in await self.present_texts(list(by_text))}

    async def present_texts(self, texts: Sequence[str]) -> set[str]:
        """The subset of ``texts`` (keys as :func:`harvester.records.key_text` writes them)
        that the output holds."""
        if not texts:
            return set()
        return await self._run(self._present_sync, list(dict.fromkeys(texts)))

    def _present_sync(self, texts: list[str]) -> set[str]:
        data = _each(texts)
        if data is not None:  # one statement: SQLite walks the array and searches the key B-tree
            rows = self.conn.execute(
                "SELECT r.key FROM json_each(?) j JOIN records r ON r.key = j.value", (data,)
            )
            return {row[0] for row in rows}
        found: set[str] = set()
        for i in range(0, len(texts), _BATCH):
            chunk = texts[i : i + _BATCH]
            q = ",".join("?" * len(chunk))
            rows = self.conn.execute(f"SELECT key FROM records WHERE key IN ({q})", chunk)  # noqa: S608
            found.update(row[0] for row in rows)
        return found

    async def count(self) -> int:
        """Records in the output."""
        return await self._run(lambda: int(self.conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]))

    async def some_keys(self, n: int) -> list[Key]:
        """Up to ``n`` keys the output holds (any ``n``: what kind of records a folder holds)."""

        def query() -> list[Key]:
            rows = self.conn.execute("SELECT key FROM records LIMIT ?", (n,)).fetchall()
            return [key_from_text(str(row[0])) for row in rows]

        return await self._run(query)

    # -- commit ----------------------------------------------------------------------------------

    async def commit(
        self,
        entries: Sequence[tuple[Key, str, str | None]],
        files: Sequence[FileInfo],
        run_id: str,
        runs: Sequence[tuple[str, str | None, Sequence[str]]] = (),
    ) -> int:
        """Enter ``files`` (now in place) and ``entries`` (key, file name, watermark key of the
        target that emitted it), then ``runs`` (file name, watermark key, the keys' texts: a
        shard's records, without a tuple per record); return how many of the keys this folder
        had lost (records harvested again)."""
        if not entries and not files and not runs:
            return 0
        return await self._run(self._commit_sync, list(entries), list(files), run_id, list(runs))

    def _commit_sync(
        self,
        entries: list[tuple[Key, str, str | None]],
        files: list[FileInfo],
        run_id: str,
        given: list[tuple[str, str | None, Sequence[str]]],
    ) -> int:
        now = time.time()
        # Entries come as a shard holds them: runs of keys of one file and one target
        # (thousands). Each run is entered in one statement. (Record files, one key each, go
        # in by :meth:`commit_files`.)
        grouped = itertools.groupby(entries, _place)
        runs = [(place, [key_text(e[0]) for e in run]) for place, run in grouped]
        runs += [((name, wkey), list(texts)) for name, wkey, texts in given]  # copies: sorted below
        created = [f.name for f in files]
        with self._transaction():
            first = self._insert_files(
                created,
                [f.size for f in files],
                [f.mtime_ns for f in files],
                [bytes.fromhex(f.sha256) for f in files],
                run_id,
                now,
            )
            file_ids = self._file_ids({name for (name, _), _ in runs}, created, first, run_id, now)
            target_ids = self._target_ids({w for (_, w), _ in runs if w is not None}, run_id, now)
            placed = [
                (texts, file_ids[name], target_ids.get(w) if w is not None else None)
                for (name, w), texts in runs
                if name in file_ids
            ]
            # A key given twice keeps its last file: runs go in in order, a later one replaces.
            for texts, fid, tid in placed:
                texts.sort()  # in key order: neighbouring keys share B-tree pages, ≈ 1.4x faster
                self._insert_keys("INSERT OR REPLACE INTO records", texts, fid, tid)
            return self._back([t for texts, _, _ in placed for t in texts])

    async def commit_files(self, made: RecordFiles, run_id: str) -> int:
        """Enter record files (:class:`RecordFiles`: the files a write created, and every record
        it made durable); return how many of the keys this folder had lost."""
        if not len(made):  # the files it created are among them
            return 0
        return await self._run(self._commit_files_sync, made, run_id)

    def _commit_files_sync(self, made: RecordFiles, run_id: str) -> int:
        """:meth:`commit` for record files, in bulk: one statement per table, the keys' rows as
        one JSON array (no Python call into SQLite per file where it can be helped)."""
        now = time.time()
        with self._transaction():
            first = self._insert_files(made.created, made.sizes, made.mtimes_ns, made.digests, run_id, now)
            fids: Sequence[int | None]
            if first is not None and made.names == made.created:  # all new: the usual case
                fids = range(first, first + len(made.names))
            else:  # some were there already: their ids by name (entered if the ledger lacks them)
                ids = self._file_ids(set(made.names), made.created, first, run_id, now)
                fids = [ids.get(name) for name in made.names]
            tids = self._target_ids({w for w in set(made.wkeys) if w is not None}, run_id, now)
            targets = [None if w is None else tids.get(w) for w in made.wkeys]
            rows = [row for row in zip(made.texts, fids, targets, strict=True) if row[1] is not None]
            # in key order (SQLite sorts); a key given twice keeps its last file
            data = _each(rows)
            if data is None:
                rows.sort(key=_first)
                self.conn.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", rows)
            else:
                self.conn.execute(
                    "INSERT OR REPLACE INTO records SELECT json_extract(value, '$[0]'), "
                    "json_extract(value, '$[1]'), json_extract(value, '$[2]') "
                    "FROM json_each(?) ORDER BY 1, key",
                    (data,),
                )
            return self._back([text for text, _, _ in rows])

    def _insert_files(
        self,
        names: list[str],
        sizes: list[int],
        mtimes_ns: list[int],
        digests: list[bytes],
        run_id: str,
        now: float,
    ) -> int | None:
        """Enter new files (a plain INSERT: a new file never replaces one the ledger lists, files
        are create-only); the first one's id when their ids follow on from it, else None.
        SQLite gives each new row the largest id so far plus one, so a batch's ids follow on
        from the largest before it; checked, as ids at their maximum make SQLite pick free ones
        at random (then :meth:`_file_ids` looks them up)."""
        if not names:
            return None
        conn = self.conn
        before = int(conn.execute("SELECT coalesce(max(id), 0) FROM files").fetchone()[0])
        n = len(names)
        conn.executemany(
            "INSERT INTO files (name, size, mtime_ns, sha256, run_id, at) VALUES (?, ?, ?, ?, ?, ?)",
            zip(names, sizes, mtimes_ns, digests, [run_id] * n, [now] * n, strict=True),
        )
        after = int(conn.execute("SELECT max(id) FROM files").fetchone()[0])
        return before + 1 if after - before == n else None

    def _file_ids(
        self, names: set[str], created: list[str], first: int | None, run_id: str, now: float
    ) -> dict[str, int]:
        """The ids of the files ``names``: those just ``created`` (from ``first`` on, or looked
        up), those the ledger lists, and a record file already on disk that this run found
        present, entered now (or left out if it is gone)."""
        if first is not None:
            ids = dict(zip(created, range(first, first + len(created)), strict=True))
        else:
            ids = self._ids("SELECT id, name FROM files WHERE name IN ({})", set(created))
        listed = names - ids.keys()
        if listed:
            ids.update(self._ids("SELECT id, name FROM files WHERE name IN ({})", listed))
        for name in sorted(names - ids.keys()):
            fid = self._enter_existing(name, run_id, now)
            if fid is not None:
                ids[name] = fid
        return ids

    def _target_ids(self, wkeys: set[str], run_id: str, now: float) -> dict[str, int]:
        """The ids of the targets ``wkeys`` (entered if new)."""
        if wkeys:
            self.conn.executemany(
                "INSERT OR IGNORE INTO targets (ns, wkey, label, watermark, run_id, at) "
                "VALUES (?, ?, ?, NULL, ?, ?)",
                [(self.ns, w, w, run_id, now) for w in wkeys],
            )
        sql = "SELECT id, wkey FROM targets WHERE ns = ? AND wkey IN ({})"
        return self._ids(sql, wkeys, prefix=(self.ns,))

    def _back(self, texts: list[str]) -> int:
        """Strike the keys ``texts`` (now in the output) off the lost list; how many were on it."""
        if self.conn.execute("SELECT 1 FROM lost LIMIT 1").fetchone() is None:
            return 0  # nothing lost: no key to look up
        return self._unlose(texts)

    def _insert_keys(self, insert: str, texts: list[str], fid: int | None, tid: int | None) -> None:
        """``insert`` (``INSERT OR ...  INTO records``) the keys ``texts`` of one file and target:
        one statement over a JSON array (no Python call per key), or row by row if it cannot be."""
        data = _each(texts)
        if data is None:
            self.conn.executemany(f"{insert} VALUES (?, ?, ?)", [(t, fid, tid) for t in texts])
        else:
            self.conn.execute(f"{insert} SELECT value, ?, ? FROM json_each(?)", (fid, tid, data))  # noqa: S608

    def _unlose(self, texts: list[str]) -> int:
        """Strike keys back in the output off the lost list; return how many were on it."""
        conn = self.conn
        data = _each(texts)
        if data is not None:
            return int(
                conn.execute(
                    "DELETE FROM lost WHERE key IN (SELECT value FROM json_each(?))", (data,)
                ).rowcount
            )
        back = 0
        for i in range(0, len(texts), _BATCH):
            chunk = texts[i : i + _BATCH]
            q = ",".join("?" * len(chunk))
            back += conn.execute(f"DELETE FROM lost WHERE key IN ({q})", chunk).rowcount  # noqa: S608
        return back

    def _enter_existing(self, name: str, run_id: str, now: float) -> int | None:
        path = self.folder / name
        try:
            data = path.read_bytes()
            st = path.stat()
        except OSError:
            return None
        cur = self.conn.execute(
            "INSERT INTO files (name, size, mtime_ns, sha256, run_id, at) VALUES (?, ?, ?, ?, ?, ?)",
            (name, st.st_size, st.st_mtime_ns, hashlib.sha256(data).digest(), run_id, now),
        )
        return cur.lastrowid

    def _ids(self, sql: str, names: set[str], *, prefix: tuple[Any, ...] = ()) -> dict[str, int]:
        found: dict[str, int] = {}
        items = list(names)
        for i in range(0, len(items), _BATCH):
            chunk = items[i : i + _BATCH]
            rows = self.conn.execute(sql.format(",".join("?" * len(chunk))), (*prefix, *chunk))
            found.update({str(name): int(fid) for fid, name in rows})
        return found

    async def pending_refetch(self) -> int:
        """Records this folder lost (found missing or damaged) that no run has brought back yet."""
        return await self._run(lambda: int(self.conn.execute("SELECT COUNT(*) FROM lost").fetchone()[0]))

    async def clear_lost(self) -> int:
        """After a complete from-scratch run: what is still lost, the archive no longer serves.
        Forget those keys (so they are not reported for ever); return how many."""
        return await self._run(lambda: int(self.conn.execute("DELETE FROM lost").rowcount))

    # -- watermarks ------------------------------------------------------------------------------

    async def watermarks(self) -> dict[str, float]:
        """wkey -> watermark of this output (only targets whose files are all in place)."""
        rows = await self._run(
            lambda: self.conn.execute(
                "SELECT wkey, watermark FROM targets WHERE ns = ? AND watermark IS NOT NULL", (self.ns,)
            ).fetchall()
        )
        return {str(k): float(v) for k, v in rows}

    async def advance(self, marks: dict[str, tuple[str, float]], run_id: str) -> None:
        """Raise (never lower) each watermark; ``marks`` maps wkey -> (target label, value)."""
        if not marks:
            return
        now = time.time()
        rows = [(self.ns, wkey, label, value, run_id, now) for wkey, (label, value) in marks.items()]
        await self._run(
            self._write,
            [
                (
                    "INSERT INTO targets (ns, wkey, label, watermark, run_id, at) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (ns, wkey) DO UPDATE SET "
                    "watermark = max(coalesce(watermark, excluded.watermark), excluded.watermark), "
                    "label = excluded.label, run_id = excluded.run_id, at = excluded.at",
                    rows,
                )
            ],
        )


def _first(row: tuple[Any, ...]) -> Any:
    return row[0]


#: an entry's (file name, watermark key): what a run of entries shares
_place = operator.itemgetter(1, 2)


def _each(texts: Sequence[object]) -> str | None:
    """Key texts (or rows of them) as one JSON array, for SQLite's ``json_each`` to enter or look
    up in one statement (bound one by one, each key costs a Python call into SQLite: ≈ 2x
    slower). None when a text holds NUL, which ``json_each`` would cut short: those are bound
    one by one, as before, so a key is the same text whichever way it went in (and so is one
    orjson refuses: a lone surrogate)."""
    try:
        data = orjson.dumps(texts)
    except orjson.JSONEncodeError:
        return None
    return None if b"\\u0000" in data else data.decode()


def _ledger_error(path: Path, exc: sqlite3.Error) -> OutputError:
    """A one-line OutputError for a failed ledger write, in the same words as the files' errors."""
    code = getattr(exc, "sqlite_errorcode", None)
    cause = {13: "no space left on device", 8: "read-only file system", 3: "permission denied"}.get(
        code if isinstance(code, int) else -1, str(exc)
    )
    return OutputError(f"cannot write to {path.parent.parent}: {cause} (ledger {path.name})")


def _sha256_file(path: Path) -> bytes:
    """A file's sha256; a read error is an error (never taken for damage)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        return b""  # removed since the listing: handled as gone by the next run
    except OSError as exc:
        raise OutputError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.digest()


def read_summary(folder: Path) -> dict[str, Any] | None:
    """What an output folder's ledger says, read-only (for ``harvester status``): records, files,
    watermarks; None when the folder has no ledger. Never creates or changes anything."""
    path = ledger_path(folder)
    if not path.is_file():
        return None
    try:
        with contextlib.closing(
            sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        ) as conn:
            records = int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
            files = int(conn.execute("SELECT COUNT(*) FROM files").fetchone()[0])
            marks = conn.execute(
                "SELECT ns, label, watermark, at FROM targets WHERE watermark IS NOT NULL ORDER BY label"
            ).fetchall()
    except sqlite3.Error as exc:
        return {"folder": str(folder), "ledger": str(path), "error": f"unreadable ({exc})"}
    return {
        "folder": str(folder),
        "ledger": str(path),
        "records": records,
        "files": files,
        "watermarks": [
            {"target": str(label), "value": float(v), "at": float(at), "sample": ns == "sample"}
            for ns, label, v, at in marks
        ],
    }


def _rows(data: bytes) -> int:
    """The rows a Parquet file says it holds (1 when it cannot say): a damaged shard's count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return int(pq.read_metadata(pa.BufferReader(data)).num_rows) or 1
    except (pa.ArrowException, OSError):
        return 1
