"""The Source contract: what every archive module provides to the pipeline.

A source turns settings into *targets* (cones, TIC ids, ...) and a target into a stream of
validated records. It never rate-limits (the HTTP session does), never dedups and never writes
(the pipeline does). Each archive's package has one Source subclass (``archives/<name>/source.py``),
named by its registry entry; docs/adding-an-archive.md walks through writing one.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import urlsplit

from harvester.archives.common import ArchiveSettings, RateLimit, Retries, Timeout
from harvester.io.batches import Batch
from harvester.io.http import HttpSession, RetryPolicy, Timeouts
from harvester.records import BaseRecord
from harvester.settings import Settings

__all__ = ["FetchContext", "Source", "SourceNotes", "host_of", "retry_policy", "timeouts", "utcnow"]

T = TypeVar("T")


def host_of(url: str) -> str:
    """The lower-case host name of a URL (no port): the key of its rate limiter."""
    return (urlsplit(url).hostname or "").lower()


def retry_policy(retries: Retries) -> RetryPolicy:
    return RetryPolicy(
        retries=retries.attempts,
        backoff_base_s=retries.backoff_base,
        backoff_cap_s=retries.backoff_cap,
        retry_after_cap_s=retries.retry_after_cap,
    )


def timeouts(timeout: Timeout) -> Timeouts:
    return Timeouts(connect_s=timeout.connect, read_s=timeout.read, total_s=timeout.total)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class SourceNotes:
    """Things a source wants in the run report besides counts (e.g. incomplete MAST results).

    :meth:`tally` keeps one warning line per kind of event, its count kept current (a fallback
    that happens for 500 products is one line, not 500).
    """

    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    _lines: dict[str, int] = field(default_factory=dict, repr=False)

    def tally(self, kind: str, line: Callable[[int], str]) -> int:
        """Count one more ``kind`` event; its warning line becomes ``line(count)``. Returns the count."""
        count = self.counts.get(kind, 0) + 1
        self.counts[kind] = count
        where = self._lines.get(kind)
        if where is None:
            self._lines[kind] = len(self.warnings)
            self.warnings.append(line(count))
        else:
            self.warnings[where] = line(count)
        return count


@dataclass
class FetchContext:
    """What the pipeline hands a source for one target.

    - ``session``: the source's HTTP session (rate-limited, retried).
    - ``emit``: send one validated record downstream (awaits when the pipeline is busy).
    - ``emit_batch``: send many records at once as a :class:`~harvester.io.batches.Batch` (the
      columnar path: an Arrow table in the record model's schema, no model per row).
    - ``present``: which of these dedup keys the output already holds (one lookup for many keys),
      so a source can skip expensive work (a FITS download) for data it already has.
    - ``fail``: report a failure of one part of a target (a product) without failing the rest.
    - ``watermark``: the highest ``watermark_field`` value harvested for this target and query by
      an earlier run (None on a first run or with ``--full``): ask the archive only for newer data.
    """

    session: HttpSession
    emit: Callable[[BaseRecord], Awaitable[None]]
    emit_batch: Callable[[Batch], Awaitable[None]]
    present: Callable[[list[tuple[str, ...]]], Awaitable[set[tuple[str, ...]]]]
    fail: Callable[[str, str, bool], None]
    watermark: float | None = None


class Source(ABC, Generic[T]):
    """One archive's fetch logic. Subclasses set ``name`` and implement the abstract methods."""

    name: ClassVar[str]
    #: The ``Authorization`` scheme the archive expects its token in.
    auth_scheme: ClassVar[str] = "Bearer"
    #: The record field whose per-target maximum is kept as the watermark (None: no watermark).
    watermark_field: ClassVar[str | None] = None

    def __init__(self, settings: Settings, *, sample: bool = False) -> None:
        self.settings = settings
        self.sample = sample
        self.notes = SourceNotes()
        self._resolved: list[T] | None = None

    def resolved(self) -> list[T]:
        """:meth:`targets`, resolved once for this Source (a targets file is read once per run)."""
        if self._resolved is None:
            self._resolved = self.targets()
        return self._resolved

    @property
    @abstractmethod
    def base_url(self) -> str:
        """The archive endpoint this source talks to."""

    @property
    def config(self) -> ArchiveSettings:
        """This archive's settings block, ``data_sources.<name>`` (an archive narrows the type)."""
        return self.settings.data_sources.block(self.name)

    @property
    def rate_limit(self) -> RateLimit:
        """The politeness budget for :attr:`base_url`'s host (``data_sources.<name>.rate_limit``)."""
        return self.config.rate_limit

    def budgets(self) -> list[tuple[str, RateLimit]]:
        """Every host this source talks to with its budget: :attr:`base_url`'s host and
        :attr:`rate_limit` by default; a source with a second host (TESS's S3 bucket) adds it."""
        return [(self.host, self.rate_limit)]

    def session_options(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`harvester.io.http.Http.session`: the block's retry policy
        and timeouts, and the archive's token (:meth:`Settings.token`) for :attr:`host` only, sent
        as ``Authorization: <auth_scheme> <token>``."""
        block = self.config
        token = self.settings.token(self.name)
        secret = token.get_secret_value() if token is not None else ""
        auth = (self.host, f"{self.auth_scheme} {secret}") if secret else None
        return {"retry": retry_policy(block.retries), "timeouts": timeouts(block.timeout), "auth": auth}

    @abstractmethod
    def targets(self) -> list[T]:
        """Resolve the configured targets; raise ConfigError if there are none or they are bad."""

    async def plan(self, targets: list[T], *, held: list[tuple[str, ...]]) -> list[T]:
        """The targets this run fetches, once the output is known: ``held`` is a few of the keys
        the output holds (none for an empty output, or one without a ledger). The default keeps
        ``targets``; ZTF decides ``route: auto`` here, from the kind of keys it holds."""
        return targets

    @abstractmethod
    def label(self, target: T) -> str:
        """A short, secret-free name of a target for logs and reports."""

    @abstractmethod
    async def fetch(self, target: T, ctx: FetchContext) -> None:
        """Fetch one target and ``await ctx.emit(record)`` for each validated record.

        Raise a :class:`~harvester.errors.HarvesterError` when the whole target fails; use
        ``ctx.fail`` for a part of it. A source may run its own task group here.
        """

    @abstractmethod
    def describe_query(self) -> dict[str, Any]:
        """The query as plain data (no secrets), for the output folder's README."""

    def requested(self, target: T, watermark: float | None) -> dict[str, Any]:
        """What is asked of the archive for ``target`` given its watermark (the time window
        actually requested), for the output folder's README; empty when there is nothing to say."""
        return {}

    # -- work units (executors/units.py) -----------------------------------------------------

    def unit_groups(self, *, cell_deg: float, tic_buckets: int) -> list[tuple[str, tuple[Any, ...]]]:
        """How this source's targets split into work units: ``(unit id, targets as plain data)``
        per unit, sorted by id. The default is one unit, ``"all"``, carrying the whole query (an
        archive without a target list, or one not split yet)."""
        return [("all", ())]

    def narrow(self, data_sources: Any, targets: tuple[Any, ...]) -> None:
        """Make ``data_sources`` (a deep copy) ask only for ``targets`` (one unit's, as
        :meth:`unit_groups` gave them)."""
        raise NotImplementedError(f"{self.name}: a unit with targets needs {type(self).__name__}.narrow")

    def clear_targets(self, data_sources: Any) -> None:
        """Drop the target lists from ``data_sources`` (a shallow copy: replace, never mutate,
        the blocks): every unit then carries its own targets to its worker."""

    @property
    def host(self) -> str:
        return host_of(self.base_url)

    def watermark_key(self, target: T) -> str:
        """Identifies (target, query) for watermarks: a changed query starts from scratch."""
        query = {k: v for k, v in self.describe_query().items() if k != "targets"}
        text = json.dumps({"target": repr(target), "query": query}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]
