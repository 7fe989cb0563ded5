"""Atomic files: the one place that turns "write a file" into "a reader never sees half of it".

Every file harvester creates (records, shards, READMEs, manifests, feature tables, plots) is written
to a hidden ``.<name>.<random>.tmp`` file in the destination folder and moved into place, so a
crash, a kill or a full disk leaves either the old file, the new file, or a hidden temporary file
that the next writer removes. OS errors become one-line :class:`~harvester.errors.OutputError` s.

Files that commit something (jsonl shards, work-unit objects and manifests, compacted Parquet)
are also *durable*: flushed to disk (``fsync``) before they are moved into place, and their
folder flushed after, so a power loss cannot leave a committed name over missing bytes.
Per-record JSON files are not (one ``fsync`` each would cost ~0.3 ms per record; docs/design.md).
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from harvester.errors import OutputError

__all__ = [
    "TMP_SUFFIX",
    "atomic_open",
    "fsync_folder",
    "fsync_path",
    "make_folder",
    "os_cause",
    "output_error",
    "temp_path",
    "write_bytes_atomic",
    "write_text_atomic",
]

TMP_SUFFIX = ".tmp"


def os_cause(exc: OSError) -> str:
    """Why a write failed, in plain words (full disk, read-only, permissions, or the OS's text)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)


def output_error(folder: Path, exc: OSError) -> OutputError:
    """A one-line OutputError naming the folder and the cause in plain words."""
    return OutputError(f"cannot write to {folder}: {os_cause(exc)}")


def fsync_path(path: Path) -> None:
    """Flush a file's bytes, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries to disk, where the filesystem allows it (some FUSE and network
    filesystems refuse to open or sync a folder): the file itself is already in place."""
    with contextlib.suppress(OSError):
        fsync_path(folder)


def make_folder(folder: Path) -> None:
    """``mkdir -p`` whose new folders are durable: each created folder's entry is flushed in its
    parent (best effort), so a power loss cannot drop a folder that already holds committed files."""
    missing: list[Path] = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        fsync_folder(created.parent)


def temp_path(path: Path) -> Path:
    """A hidden, unique temporary name next to ``path`` (same folder, so the move is atomic)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_open(path: Path, *, binary: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; when the block ends without error, replace ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(path.parent, exc) from None
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") if binary else open(tmp, "w", encoding="utf-8", newline="") as fh:
            yield fh
        os.replace(tmp, path)
    except OSError as exc:
        raise output_error(path.parent, exc) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically."""
    with atomic_open(path) as fh:
        fh.write(text)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_open(path, binary=True) as fh:
        fh.write(data)
