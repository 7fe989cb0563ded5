"""Record writers: orjson to disk, atomically, never twice.

Three layouts under ``<output>/<source>/``:

- ``json`` (default): ``record_<stable id>.json``, one record per file. Each file is written
  unnamed (``O_TMPFILE``) and linked under its name, or, where the filesystem cannot, written to
  a hidden temporary file in the same folder and given its name by a create-only rename (or a
  hard link where the system has no such rename): atomic and create-only either way, so a
  reader never sees a partial file, and an existing record is never overwritten. A record whose file already
  exists counts as ``already_present`` and is not written again, so a rerun writes nothing.
- ``jsonl``: ``part-<run id>-<seq>.jsonl`` shards of ``jsonl_shard_records`` lines.
- ``parquet``: ``part-<run id>-<seq>.parquet`` shards of as many rows, typed and compressed, with
  the record model's schema (:mod:`harvester.io.arrow`).

A shard is built in memory, written to a hidden temporary file and named the same way when full
or at the end of the run, so every visible shard is complete.

Writers do not decide what is already in the output: the output's ledger does
(:mod:`harvester.io.ledger`), and the pipeline hands a writer only records the ledger lacks. The
per-record writer still creates each file only once, so even two processes racing on one folder
never overwrite a record (except on a filesystem without hard links or a create-only rename,
see :func:`_move_once`).

A kill at any moment leaves at most hidden ``.*.tmp`` files, which the next writer removes.
All file I/O runs on worker threads: the event loop never blocks on the disk.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import itertools
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import anyio
import orjson

from harvester.errors import OutputError
from harvester.io.batches import Batch
from harvester.io.files import (
    TMP_SUFFIX,
    fsync_folder,
    make_folder,
    output_error,
    write_text_atomic,
)
from harvester.io.ledger import FileInfo, RecordFiles
from harvester.io.limiter import on_cpu
from harvester.records import BaseRecord, key_text, record_name, record_names

__all__ = [
    "JsonFilesWriter",
    "JsonlWriter",
    "NullWriter",
    "ParquetWriter",
    "Shard",
    "WriteResult",
    "Writer",
    "dumps_record",
    "record_path",
    "write_text_atomic",
]

_STALE_TMP_S = 0.0  # a hidden temp file is never a finished record: any left over is from a dead run


def dumps_record(record: BaseRecord) -> bytes:
    """One record as compact JSON (NaN is never present: the models hold null instead)."""
    return orjson.dumps(record.model_dump(), option=orjson.OPT_SERIALIZE_NUMPY)


def record_path(folder: Path, record: BaseRecord) -> Path:
    return folder / record_name(record.dedup_key())


#: A record for the writer, with the watermark key of the target that emitted it (or None).
Item = tuple[BaseRecord, str | None]
#: A record's dedup key.
Key = tuple[str, ...]
#: Records now in one file, all from one target: (file name, watermark key, their dedup keys'
#: texts, :func:`harvester.records.key_text`).
Run = tuple[str, str | None, Sequence[str]]


@dataclass
class WriteResult:
    """What one write (or the final flush) did.

    ``runs`` holds the records that are now in a shard, a run of keys per file and target (no
    tuple per record), and ``record_files`` those now in record files (newly written or already
    there), as columns: only these may be committed to the ledger. ``files`` describes the
    shards created (name, size, modification time, sha256), for the ledger and the run
    manifest.
    """

    written: int = 0
    present: int = 0
    runs: list[Run] = field(default_factory=list)
    files: list[FileInfo] = field(default_factory=list)
    record_files: RecordFiles | None = None
    #: Full shards handed back unwritten, for the caller to :meth:`Shard.persist` (only from a
    #: writer asked to, by :meth:`Writer.defer_shards`); their records are not durable yet.
    shards: list[Shard] = field(default_factory=list)
    #: Set when the output failed part-way: what came before it is durable and listed above.
    error: OutputError | None = None

    @property
    def committable(self) -> bool:
        """Whether anything is durable for the ledger to enter."""
        return bool(self.runs or self.files or self.record_files)

    def listing(self) -> list[tuple[str, str]]:
        """Every file created, as (name, sha256 in hex): the run manifest's list."""
        listed = [(f.name, f.sha256) for f in self.files]
        if self.record_files is not None:
            made = self.record_files
            listed.extend(zip(made.created, (d.hex() for d in made.digests), strict=True))
        return listed


@dataclass
class Shard:
    """A full shard cut from a writer's buffer, under its own name: :meth:`persist` encodes and
    writes it (create-only, durable) on any thread, in any order with other shards."""

    path: Path
    encode: Callable[[], list[bytes | memoryview]]
    #: its records' keys: (file name, watermark key, keys)
    runs: list[Run]

    def persist(self) -> WriteResult:
        """Write the shard; what that made durable."""
        info = _write_shard(self.path, self.encode())
        return WriteResult(runs=self.runs, files=[info])


class Writer(Protocol):
    """Where deduplicated records go."""

    folder: Path | None

    async def open(self) -> None: ...

    def defer_shards(self) -> bool:
        """Ask the writer to hand full shards back (:attr:`WriteResult.shards`) instead of
        writing them, so the caller can write several at once; whether it will (a writer of
        one file per record has no shards). :meth:`close` still writes the last one itself."""
        ...

    def prepare(self, batch: Batch) -> None:
        """Work done on a batch before it reaches :meth:`write_batch`, on a worker thread of the
        stage before the writer (the JSON text, for the JSON layouts), so that it overlaps with
        the writer's disk work. Must not depend on what was written before."""
        ...

    async def write(self, items: list[Item]) -> WriteResult:
        """Write a batch of records the output does not hold yet."""
        ...

    async def write_batch(self, batch: Batch, wkey: str | None) -> WriteResult:
        """Write records given as columns (the output holds none of them yet), all emitted by
        the target with watermark key ``wkey``."""
        ...

    async def close(self) -> WriteResult:
        """Flush what is buffered; return what that made durable."""
        ...


def _prepare_folder(folder: Path) -> None:
    try:
        make_folder(folder)
        probe = folder / f".probe-{uuid.uuid4().hex}{TMP_SUFFIX}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise output_error(folder, exc) from None
    now = time.time()
    for leftover in folder.glob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            if now - leftover.stat().st_mtime >= _STALE_TMP_S:
                leftover.unlink()


class NullWriter:
    """Writes nothing: the dry-run writer."""

    folder: Path | None = None

    async def open(self) -> None:
        return None

    def prepare(self, batch: Batch) -> None:
        return None

    def defer_shards(self) -> bool:
        return False

    async def write(self, items: list[Item]) -> WriteResult:
        return WriteResult()

    async def write_batch(self, batch: Batch, wkey: str | None) -> WriteResult:
        return WriteResult()

    async def close(self) -> WriteResult:
        return WriteResult()


class JsonFilesWriter:
    """One ``record_<stable id>.json`` per record, created atomically and only once."""

    def __init__(self, folder: Path) -> None:
        self.folder: Path | None = folder
        self._folder = folder

    async def open(self) -> None:
        await anyio.to_thread.run_sync(_prepare_folder, self._folder)

    def prepare(self, batch: Batch) -> None:
        batch.encode_json()

    def defer_shards(self) -> bool:
        return False

    async def write(self, items: list[Item]) -> WriteResult:
        def write() -> WriteResult:
            keys = [r.dedup_key() for r, _ in items]
            texts = [key_text(k) for k in keys]
            names = [record_name(k) for k in keys]
            data = [dumps_record(r) + b"\n" for r, _ in items]
            return self._write_files(texts, names, [w for _, w in items], data)

        return await anyio.to_thread.run_sync(write)

    async def write_batch(self, batch: Batch, wkey: str | None) -> WriteResult:
        def write() -> WriteResult:
            texts = batch.key_texts
            names = record_names(texts, len(batch.model.key_fields))
            if names is None:  # a key that is not its own readable id: key by key
                names = [record_name(key) for key in batch.keys]
            return self._write_files(texts, names, [wkey] * len(texts), batch.json_views())

        return await anyio.to_thread.run_sync(write)

    def _write_files(
        self,
        texts: list[str],
        names: list[str],
        wkeys: list[str | None],
        data: Iterable[bytes | memoryview],
    ) -> WriteResult:
        """Each record's file (its key text, file name, watermark key and bytes, newline
        included), in order, up to the first failure (the result names it; what came before
        is durable and listed)."""
        made = RecordFiles()
        result = WriteResult(record_files=made)
        created, sizes, mtimes, digests = made.created, made.sizes, made.mtimes_ns, made.digests
        done = 0
        try:
            with _RecordFolder(self._folder) as place:
                for name, piece in zip(names, data, strict=True):
                    stat = place.create(name, piece)
                    if stat is not None:
                        created.append(name)
                        sizes.append(stat.st_size)
                        mtimes.append(stat.st_mtime_ns)
                        digests.append(hashlib.sha256(piece).digest())
                    elif not os.path.isfile(os.path.join(place.path, name)):
                        raise OutputError(
                            f"cannot write {os.path.join(place.path, name)}: "
                            "something that is not a file is in the way"
                        )
                    done += 1
        except OSError as exc:
            result.error = output_error(self._folder, exc)
        except OutputError as exc:
            result.error = exc
        # the records before a failure are durable: report them
        made.texts, made.names, made.wkeys = texts[:done], names[:done], wkeys[:done]
        result.written = len(created)
        result.present = done - len(created)
        return result

    async def close(self) -> WriteResult:
        return WriteResult()


#: devices whose filesystem (or kernel) cannot create an unnamed file and link it: record files
#: there go through a hidden temporary name instead
_NO_TMPFILE: set[int] = set()
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)  # Linux 3.11 or later


class _RecordFolder:
    """Creates record files in one folder, each atomic and only once.

    Where the filesystem can (Linux: ext4, XFS, Btrfs, tmpfs and most local ones), a file is
    written unnamed (``O_TMPFILE``) and then linked under its name, which fails if the name
    exists: three system calls besides the write, nothing to clean up after a crash, and no
    rename; its paths are relative to descriptors of the folder and of ``/proc/self/fd``, so the
    kernel does not walk the output's path for each file. Elsewhere, through a hidden temporary
    name (:func:`_create_once`, full paths)."""

    def __init__(self, folder: Path) -> None:
        self.path = os.fspath(folder)
        self._dir = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        self._fds: int | None = None
        self._device = os.fstat(self._dir).st_dev
        if _O_TMPFILE and self._device not in _NO_TMPFILE:
            try:  # the unnamed file is linked through its /proc/self/fd entry
                self._fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.EACCES):  # no /proc here, for good
                    _NO_TMPFILE.add(self._device)
        # one temporary name for the other route: each file leaves it before the next
        self._tmp = _tmp_name(os.path.join(self.path, "record"))

    def __enter__(self) -> _RecordFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in (self._dir, self._fds):
            if fd is not None:
                os.close(fd)

    def create(self, name: str, data: bytes | memoryview) -> os.stat_result | None:
        """Create ``name`` holding ``data``: its status, or None if the name was taken (nothing
        changed)."""
        if self._fds is not None:
            try:
                fd = os.open(".", _O_TMPFILE | os.O_WRONLY, 0o666, dir_fd=self._dir)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
                # an old kernel or a filesystem without unnamed files
                return self._instead(name, data)
            else:
                return self._link(fd, name, data)
        return _create_once(os.path.join(self.path, name), data, tmp=self._tmp)

    def _link(self, fd: int, name: str, data: bytes | memoryview) -> os.stat_result | None:
        assert self._fds is not None
        try:
            _write_all(fd, data)
            stat = os.fstat(fd)
            os.link(str(fd), name, src_dir_fd=self._fds, dst_dir_fd=self._dir)
            return stat
        except FileExistsError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            return self._instead(name, data)  # the link refused (a sandbox): the other route
        finally:
            os.close(fd)

    def _instead(self, name: str, data: bytes | memoryview) -> os.stat_result | None:
        """Create ``name`` through a temporary name after the unnamed route was refused; if
        that works, the refusal was the filesystem's, and the route is not tried on it again
        (if it fails too, its error is the one to report, and nothing is remembered)."""
        stat = _create_once(os.path.join(self.path, name), data, tmp=self._tmp)
        _NO_TMPFILE.add(self._device)
        if self._fds is not None:
            os.close(self._fds)
            self._fds = None
        return stat


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_tmp_names = itertools.count()
_tmp_token = (0, "")


def _tmp_name(path: str) -> str:
    """A hidden temporary name next to ``path``, unique in this process (a counter) and across
    processes (the pid and a random token drawn once per process)."""
    global _tmp_token
    pid = os.getpid()
    if _tmp_token[0] != pid:
        _tmp_token = (pid, f"{pid:x}{uuid.uuid4().hex[:8]}")
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{_tmp_token[1]}-{next(_tmp_names)}{TMP_SUFFIX}")


def _create_once(
    path: Path | str,
    data: bytes | memoryview | Sequence[bytes | memoryview],
    *,
    durable: bool = False,
    tmp: str | None = None,
) -> os.stat_result | None:
    """Write ``data`` (bytes, or pieces written one after the other) to ``path`` atomically and
    only once: the new file's status, or None if the path already exists (nothing changed).
    ``durable``: on disk (file, then folder entry) before this returns. ``tmp``: the hidden
    temporary name to write first (next to ``path``; free again when this returns, whatever
    happened), else one of its own."""
    path = os.fspath(path)
    tmp = tmp or _tmp_name(path)
    named = False  # tmp is gone: renamed, or removed because the record exists
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            for piece in [data] if isinstance(data, bytes | memoryview) else data:
                _write_all(fd, piece)
            if durable:
                os.fsync(fd)
            stat = os.fstat(fd)
        finally:
            os.close(fd)
        moved = _move_once(tmp, path, stat.st_dev)
        named = True
        if not moved:
            return None
        if durable:
            fsync_folder(Path(path).parent)
        return stat
    except OSError as exc:
        raise output_error(Path(path).parent, exc) from None
    finally:
        if not named:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _move_once(tmp: str, path: str, device: int) -> bool:
    """Give the finished file ``tmp`` (on ``device``) the name ``path`` unless that name exists
    (then False, and ``tmp`` is removed): atomic and create-only. One
    ``renameat2(RENAME_NOREPLACE)`` where the system has it, else a hard link and an unlink.
    A filesystem without hard links gets a rename after an existence check: atomic, but two
    processes racing on one name there could both succeed (the later one's file wins)."""
    moved = None if device in _NO_RENAMEAT2 else _rename_noreplace(tmp, path)
    if moved is not None:
        if not moved:
            os.unlink(tmp)
        return moved
    _NO_RENAMEAT2.add(device)
    try:
        os.link(tmp, path)  # atomic and create-only: fails if the record exists
    except FileExistsError:
        os.unlink(tmp)
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(path):  # a filesystem without hard links: fall back to rename
            os.unlink(tmp)
            return False
        os.replace(tmp, path)
        return True
    os.unlink(tmp)
    return True


_RENAME_NOREPLACE = 1  # <linux/fs.h>
_AT_FDCWD = -100
#: devices whose filesystem refused a create-only rename: the hard link is used there at once
_NO_RENAMEAT2: set[int] = set()


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """The C library's ``renameat2`` (Linux, glibc 2.28 or later), or None. The standard
    library has no create-only rename; ctypes calls release the GIL like ``os`` calls do."""
    if sys.platform != "linux":
        return None
    import ctypes  # only here: ctypes costs start-up time no other command needs

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return cast("Callable[..., int]", fn)


def _rename_noreplace(tmp: str, path: str) -> bool | None:
    """Rename ``tmp`` to ``path`` unless ``path`` exists: True if renamed, False if it exists,
    None if this system or filesystem cannot (the caller links instead)."""
    fn = _renameat2()
    if fn is None:
        return None
    import ctypes

    src, dst = os.fsencode(tmp), os.fsencode(path)
    while fn(_AT_FDCWD, src, _AT_FDCWD, dst, _RENAME_NOREPLACE) != 0:
        err = ctypes.get_errno() or errno.EIO
        if err != errno.EINTR:  # os calls retry an interrupted call; a ctypes call does not
            break
    else:
        return True
    if err == errno.EEXIST:
        return False
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
        return None  # kernel or filesystem without RENAME_NOREPLACE (or a sandbox refusing it)
    raise OSError(err, os.strerror(err), path)


class _ShardWriter:
    """Sharded ``part-<run id>-<seq>.<suffix>`` files of ``shard_records`` records, each built in
    memory and created in place once complete (create-only, durable before it counts)."""

    suffix = ""

    def __init__(self, folder: Path, model: type[BaseRecord], *, run_id: str, shard_records: int) -> None:
        self.folder: Path | None = folder
        self._folder = folder
        self._model = model
        self._run_id = run_id
        self._shard_records = shard_records
        self._seq = 0
        #: the buffered records' keys (their texts), in order: runs of one target's keys
        self._pending: list[tuple[str | None, Sequence[str]]] = []
        self._buffered = 0
        self._defer = False

    async def open(self) -> None:
        await anyio.to_thread.run_sync(_prepare_folder, self._folder)

    def prepare(self, batch: Batch) -> None:
        return None

    def defer_shards(self) -> bool:
        self._defer = True
        return True

    def _add(self, record: BaseRecord) -> None:
        raise NotImplementedError

    def _add_batch(self, batch: Batch) -> None:
        raise NotImplementedError

    def _cheap(self, batch: Batch) -> bool:
        """Whether :meth:`_add_batch` is only a copy or a reference for ``batch``."""
        return False

    def _cut(self) -> Callable[[], list[bytes | memoryview]]:
        """Take the buffered records out (the buffer is emptied); the function that encodes
        them as one shard's bytes, in pieces, on any thread."""
        raise NotImplementedError

    async def write(self, items: list[Item]) -> WriteResult:
        result = WriteResult()
        for record, wkey in items:
            # Records the output holds never reach the writer (the ledger filters them), nor do
            # this run's duplicates (the dedup stage drops them): memory stays bounded by the shard.
            self._add(record)
            self._pending.append((wkey, [key_text(record.dedup_key())]))
            self._buffered += 1
            result.written += 1
            if self._buffered >= self._shard_records:
                await self._flush(result, defer=self._defer)
        return result

    async def write_batch(self, batch: Batch, wkey: str | None) -> WriteResult:
        result = WriteResult()
        start = 0
        while start < len(batch):
            stop = min(len(batch), start + self._shard_records - self._buffered)
            part = batch.slice(start, stop)
            if self._cheap(part):  # no encoding left to do: not worth a thread
                self._add_batch(part)
            else:
                await on_cpu(self._add_batch, part)
            self._pending.append((wkey, part.key_texts))
            self._buffered += len(part)
            result.written += len(part)
            start = stop
            if self._buffered >= self._shard_records:
                await self._flush(result, defer=self._defer)
        return result

    async def _flush(self, result: WriteResult, *, defer: bool = False) -> None:
        if not self._buffered:
            return
        pending, self._pending, self._buffered = self._pending, [], 0
        self._seq += 1
        path = self._folder / f"part-{self._run_id}-{self._seq:05d}.{self.suffix}"
        runs: list[Run] = [(path.name, wkey, keys) for wkey, keys in pending]
        shard = Shard(path, self._cut(), runs)
        if defer:
            result.shards.append(shard)
            return
        # only after persist (the rename) are these records durable
        done = await anyio.to_thread.run_sync(shard.persist)
        result.runs.extend(done.runs)
        result.files.extend(done.files)

    async def close(self) -> WriteResult:
        result = WriteResult()
        with anyio.CancelScope(shield=True):
            await self._flush(result)
        return result


class JsonlWriter(_ShardWriter):
    """Sharded ``part-<run id>-<seq>.jsonl`` files, one record per line."""

    suffix = "jsonl"

    def __init__(self, folder: Path, model: type[BaseRecord], *, run_id: str, shard_records: int) -> None:
        super().__init__(folder, model, run_id=run_id, shard_records=shard_records)
        # The shard's text in pieces, written as they are: a batch's text (or a view into it)
        # as it came, and one growing buffer for records given one by one (orjson's bytes
        # objects keep their whole working buffer, so a list of them costs ~10x their size).
        self._pieces: list[bytes | memoryview] = []
        self._buffer = bytearray()

    def prepare(self, batch: Batch) -> None:
        batch.encode_json()

    def _add(self, record: BaseRecord) -> None:
        self._buffer += dumps_record(record)
        self._buffer += b"\n"

    def _add_batch(self, batch: Batch) -> None:
        self._close_buffer()
        self._pieces.append(batch.json_buffer())

    def _close_buffer(self) -> None:
        if self._buffer:
            self._pieces.append(bytes(self._buffer))
            self._buffer = bytearray()

    def _cheap(self, batch: Batch) -> bool:
        return batch.json_ready

    def _cut(self) -> Callable[[], list[bytes | memoryview]]:
        self._close_buffer()
        pieces, self._pieces = self._pieces, []
        return lambda: pieces


class ParquetWriter(_ShardWriter):
    """Sharded ``part-<run id>-<seq>.parquet`` files: typed, zstd-compressed, with the record
    model's schema (:func:`harvester.io.arrow.arrow_schema`: units and descriptions in the field
    metadata); one row per record (a TESS light curve is one row with list columns)."""

    suffix = "parquet"

    def __init__(self, folder: Path, model: type[BaseRecord], *, run_id: str, shard_records: int) -> None:
        super().__init__(folder, model, run_id=run_id, shard_records=shard_records)
        from harvester.io.arrow import arrow_schema

        self._schema = arrow_schema(model)
        self._records: list[BaseRecord] = []
        self._tables: list[Any] = []  # pyarrow tables, in the order their records came

    def _add(self, record: BaseRecord) -> None:
        self._records.append(record)

    def _add_batch(self, batch: Batch) -> None:
        self._table_records()
        self._tables.append(batch.table)

    def _cheap(self, batch: Batch) -> bool:
        return not self._records

    def _table_records(self) -> None:
        from harvester.io.arrow import records_table

        if self._records:
            self._tables.append(records_table(self._records, self._schema))
            self._records = []

    def _cut(self) -> Callable[[], list[bytes | memoryview]]:
        tables, records, schema = self._tables, self._records, self._schema
        self._tables, self._records = [], []

        def encode() -> list[bytes | memoryview]:
            import pyarrow as pa

            from harvester.io.arrow import parquet_bytes, records_table

            if records:  # records given one by one come after the tables (see _add_batch)
                tables.append(records_table(records, schema))
            return [parquet_bytes(pa.concat_tables(tables) if len(tables) > 1 else tables[0])]

        return encode


def _write_shard(path: Path, pieces: list[bytes | memoryview]) -> FileInfo:
    """A complete, durable shard under a name no other file has (create-only, like records),
    written from its pieces as they are (no copy into one buffer)."""
    stat = _create_once(path, pieces, durable=True)
    if stat is None:
        raise OutputError(f"cannot write {path}: a shard of that name exists (never overwritten)")
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
    return FileInfo(path.name, stat.st_size, stat.st_mtime_ns, digest.hexdigest())
