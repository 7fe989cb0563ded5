"""The machine's state: one SQLite database (WAL mode, ``state.path``).

What an output *holds* is not here: each output folder's ledger says that (``io/ledger.py``).
This database keeps what belongs to the machine::

    runs(run_id, started_at, finished_at, status, settings_digest, report)
    outcomes(run_id, source, target, ok, reason, at)    per-target result of every run
    seen(source, key, run_id, at)                       the work-unit driver's index of the keys
    watermarks(source, wkey, target, value, run_id, at)  and watermarks of unit outputs (namespace
                                                          ``<source>|units:<output>``), trusted only
                                                          while the output holds the units' data

Every call runs on a worker thread through one connection guarded by a capacity limiter of 1, so
the event loop never waits on SQLite and statements never interleave.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio

from harvester.errors import OutputError
from harvester.records import key_text

__all__ = ["StateStore", "Watermark"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    source TEXT NOT NULL, key TEXT NOT NULL, run_id TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (source, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS watermarks (
    source TEXT NOT NULL, wkey TEXT NOT NULL, target TEXT NOT NULL, value REAL NOT NULL,
    run_id TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (source, wkey));
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL,
    settings_digest TEXT NOT NULL, report TEXT);
CREATE TABLE IF NOT EXISTS outcomes (
    run_id TEXT NOT NULL, source TEXT NOT NULL, target TEXT NOT NULL, ok INTEGER NOT NULL,
    reason TEXT, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS outcomes_by_target ON outcomes (source, target, at);
"""
_BATCH = 500


@dataclass(frozen=True)
class Watermark:
    source: str
    target: str
    value: float
    at: float


class StateStore:
    """Async facade over the SQLite state database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = anyio.CapacityLimiter(1)

    async def open(self) -> StateStore:
        await self._run(self._open_sync)
        return self

    async def __aenter__(self) -> StateStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _open_sync(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise OutputError(f"cannot open state database {self.path}: {exc}") from None
        self._conn = conn

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._run(self._close_sync)

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._lock)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("state store is not open")
        return self._conn

    def _write(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(sql, rows)
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise OutputError(f"cannot write state database {self.path}: {exc}") from None

    # -- seen keys -------------------------------------------------------------------------------

    async def seen(self, source: str, keys: Sequence[tuple[str, ...]]) -> set[tuple[str, ...]]:
        """The subset of ``keys`` already committed for ``source``."""
        return await self._run(self._seen_sync, source, list(keys))

    def _seen_sync(self, source: str, keys: list[tuple[str, ...]]) -> set[tuple[str, ...]]:
        found: set[tuple[str, ...]] = set()
        by_text = {key_text(k): k for k in keys}
        texts = list(by_text)
        for i in range(0, len(texts), _BATCH):
            chunk = texts[i : i + _BATCH]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT key FROM seen WHERE source = ? AND key IN ({marks})",  # noqa: S608
                (source, *chunk),
            )
            found.update(by_text[row[0]] for row in rows)
        return found

    async def commit_keys(self, source: str, keys: Sequence[tuple[str, ...]], run_id: str) -> None:
        """Record keys whose records are durably in the output."""
        if keys:
            now = time.time()
            rows = [(source, key_text(k), run_id, now) for k in keys]
            await self._run(self._write, "INSERT OR IGNORE INTO seen VALUES (?, ?, ?, ?)", rows)

    # -- watermarks ------------------------------------------------------------------------------

    async def watermarks(self, source: str) -> dict[str, float]:
        """wkey -> value for a source."""
        rows = await self._run(
            lambda: self.conn.execute(
                "SELECT wkey, value FROM watermarks WHERE source = ?", (source,)
            ).fetchall()
        )
        return {str(k): float(v) for k, v in rows}

    async def advance_watermarks(self, source: str, marks: dict[str, tuple[str, float]], run_id: str) -> None:
        """Raise (never lower) each watermark; ``marks`` maps wkey -> (target label, value)."""
        now = time.time()
        rows = [(source, wkey, label, value, run_id, now) for wkey, (label, value) in marks.items()]
        await self._run(
            self._write,
            """
            INSERT INTO watermarks VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (source, wkey) DO UPDATE SET value = max(value, excluded.value),
                target = excluded.target, run_id = excluded.run_id, at = excluded.at""",
            rows,
        )

    async def all_watermarks(self) -> list[Watermark]:
        rows = await self._run(
            lambda: self.conn.execute(
                "SELECT source, target, value, at FROM watermarks ORDER BY source, target"
            ).fetchall()
        )
        return [Watermark(str(s), str(t), float(v), float(a)) for s, t, v, a in rows]

    # -- runs and outcomes -----------------------------------------------------------------------

    async def start_run(self, run_id: str, started_at: str, settings_digest: str) -> None:
        await self._run(
            self._write,
            "INSERT OR REPLACE INTO runs VALUES (?, ?, NULL, 'running', ?, NULL)",
            [(run_id, started_at, settings_digest)],
        )

    async def unfinished_run(self, settings_digest: str) -> str | None:
        """The latest run with this digest that never finished (killed mid-run), if any."""
        row = await self._run(
            lambda: self.conn.execute(
                "SELECT run_id FROM runs WHERE settings_digest = ? AND finished_at IS NULL "
                "ORDER BY started_at DESC LIMIT 1",
                (settings_digest,),
            ).fetchone()
        )
        return str(row[0]) if row else None

    async def interrupt_unfinished(self, digest_prefix: str, finished_at: str) -> list[str]:
        """Close every unfinished run whose digest starts with ``digest_prefix`` as ``interrupted``."""

        def close() -> list[str]:
            rows = self.conn.execute(
                "SELECT run_id FROM runs WHERE finished_at IS NULL AND substr(settings_digest, 1, ?) = ?",
                (len(digest_prefix), digest_prefix),
            ).fetchall()
            self._write(
                "UPDATE runs SET finished_at = ?, status = 'interrupted' WHERE run_id = ?",
                [(finished_at, r[0]) for r in rows],
            )
            return [str(r[0]) for r in rows]

        return await self._run(close)

    async def finish_run(self, run_id: str, finished_at: str, status: str, report: dict[str, Any]) -> None:
        await self._run(
            self._write,
            "UPDATE runs SET finished_at = ?, status = ?, report = ? WHERE run_id = ?",
            [(finished_at, status, json.dumps(report, default=str), run_id)],
        )

    async def record_outcomes(
        self, run_id: str, source: str, outcomes: Sequence[tuple[str, bool, str | None]]
    ) -> None:
        now = time.time()
        rows = [(run_id, source, target, int(ok), reason, now) for target, ok, reason in outcomes]
        await self._run(self._write, "INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?)", rows)

    async def last_runs(self, n: int = 5) -> list[dict[str, Any]]:
        def query() -> list[dict[str, Any]]:
            rows = self.conn.execute(
                "SELECT run_id, started_at, finished_at, status, settings_digest, report "
                "FROM runs ORDER BY started_at DESC LIMIT ?",
                (n,),
            ).fetchall()
            return [
                {
                    "run_id": r[0],
                    "started_at": r[1],
                    "finished_at": r[2],
                    "status": r[3],
                    "settings_digest": r[4],
                    "report": json.loads(r[5]) if r[5] else None,
                }
                for r in rows
            ]

        return await self._run(query)

    async def failing_targets(self) -> list[dict[str, Any]]:
        """Targets whose latest outcome is a failure, with the reason."""

        def query() -> list[dict[str, Any]]:
            rows = self.conn.execute("""
                SELECT o.source, o.target, o.reason, o.run_id, o.at FROM outcomes o
                JOIN (SELECT source, target, max(at) AS at FROM outcomes GROUP BY source, target) last
                  ON o.source = last.source AND o.target = last.target AND o.at = last.at
                WHERE o.ok = 0 ORDER BY o.source, o.target""").fetchall()
            return [
                {"source": r[0], "target": r[1], "reason": r[2], "run_id": r[3], "at": r[4]} for r in rows
            ]

        return await self._run(query)
