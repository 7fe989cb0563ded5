"""The dedup keys a run has passed on, with memory that does not grow with the run.

Overlapping cones return the same epochs, so a run drops records whose key it already passed on.
Keys come in their text form (:func:`harvester.records.key_text`, one string a key). Up to
``memory_keys`` of them are held in memory as they are (a set of strings: ~120 bytes a key, and
no hashing beyond Python's own); beyond that every key moves, as a 16-byte digest, to a temporary
SQLite file (a B-tree on disk, a few MB of page cache), so a run of 10 million records holds no
more keys in memory than one of 200,000.

The file lives in the system's temporary folder, is private to the process and is removed when
the run ends (or by the OS, after a kill).
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harvester.errors import OutputError
from harvester.records import text_digest

__all__ = ["MEMORY_KEYS", "SeenKeys"]

#: a dedup key's text (:func:`harvester.records.key_text`)
Key = str

#: keys held in memory before the index moves to disk (≈ 40 MB)
MEMORY_KEYS = 200_000
_CHUNK = 500  # keys per SQLite IN (...) query


class SeenKeys:
    """Which dedup keys were passed on already. Not thread-safe: one caller at a time (the
    pipeline's dedup stage, which may call from a worker thread)."""

    def __init__(self, memory_keys: int | None = None) -> None:
        self.memory_keys = MEMORY_KEYS if memory_keys is None else memory_keys
        self._memory: set[Key] = set()
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._db: sqlite3.Connection | None = None

    @property
    def on_disk(self) -> bool:
        """Whether the index has moved to its temporary file."""
        return self._db is not None

    def __len__(self) -> int:
        if self._db is None:
            return len(self._memory)
        return int(self._db.execute("SELECT COUNT(*) FROM seen").fetchone()[0])

    def admit(self, keys: Sequence[Key], room: int | None = None) -> tuple[list[int], int]:
        """Remember the keys not seen before, in order, at most ``room`` of them; return their
        positions in ``keys`` and how many of ``keys`` were seen before (duplicates). A key seen
        before counts as a duplicate even once ``room`` is used up; a new key past it is left
        out and not remembered."""
        if self._db is None and len(self._memory) + len(keys) > self.memory_keys:
            self._spill()
        if self._db is None:
            return self._admit(keys, self._memory, room)
        digests = [text_digest(k) for k in keys]
        kept, duplicates = self._admit(digests, self._known(digests), room)
        self._remember({digests[i] for i in kept})
        return kept, duplicates

    @staticmethod
    def _admit(items: Sequence[Any], known: set[Any], room: int | None) -> tuple[list[int], int]:
        """Positions of the items new to ``known`` (added to it), at most ``room``, and the
        count of the others."""
        if room is None or room >= len(items):
            # the common case, all new (cones that do not overlap): set operations in C, ~3x
            # faster than the loop below (a batch with a repeat pays for both)
            fresh = set(items)
            if len(fresh) == len(items) and fresh.isdisjoint(known):
                known |= fresh
                return list(range(len(items))), 0
        kept: list[int] = []
        duplicates = 0
        for i, item in enumerate(items):
            if item in known:
                duplicates += 1
            elif room is None or len(kept) < room:
                kept.append(i)
                known.add(item)
        return kept, duplicates

    def _known(self, digests: list[bytes]) -> set[bytes]:
        """The digests the file holds (a fresh set: the caller adds to it)."""
        assert self._db is not None
        found: set[bytes] = set()
        unique = list(dict.fromkeys(digests))
        try:
            for i in range(0, len(unique), _CHUNK):
                chunk = unique[i : i + _CHUNK]
                q = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT k FROM seen WHERE k IN ({q})", chunk)  # noqa: S608
                found.update(row[0] for row in rows)
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        return found

    def _remember(self, digests: set[bytes]) -> None:
        assert self._db is not None
        try:
            with self._db:
                self._db.executemany("INSERT OR IGNORE INTO seen VALUES (?)", ((d,) for d in digests))
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def _spill(self) -> None:
        try:
            self._folder = tempfile.TemporaryDirectory(prefix="harvester-seen-")
            db = sqlite3.connect(Path(self._folder.name) / "seen.sqlite", check_same_thread=False)
            db.executescript(
                "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-8000;"
                "CREATE TABLE seen (k BLOB PRIMARY KEY) WITHOUT ROWID;"
            )
            with db:
                db.executemany("INSERT INTO seen VALUES (?)", sorted((text_digest(k),) for k in self._memory))
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise self._error(exc) from None
        self._db = db
        self._memory = set()

    def _error(self, exc: BaseException) -> OutputError:
        where = self._folder.name if self._folder is not None else tempfile.gettempdir()
        return OutputError(f"cannot keep this run's dedup keys in {where}: {exc}")

    def close(self) -> None:
        """Forget every key and remove the temporary file."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        if self._folder is not None:
            with contextlib.suppress(OSError):
                self._folder.cleanup()
            self._folder = None
        self._memory = set()
