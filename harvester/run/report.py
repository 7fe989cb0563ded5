"""The run report: what each source did, as counters a user (or the CLI's exit code) can trust."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "RunReport", "SourceReport", "TargetFailure", "new_run_id"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

Status = Literal["ok", "partial", "failed", "cancelled"]


@dataclass
class TargetFailure:
    """A target that produced no (or incomplete) data, and why."""

    target: str
    cause: str
    transient: bool


@dataclass
class SourceReport:
    """Counters for one source in one run."""

    source: str
    status: Status = "ok"
    targets: int = 0
    targets_ok: int = 0
    requests: int = 0
    retries: int = 0
    bytes_received: int = 0
    records: int = 0
    duplicates: int = 0
    written: int = 0
    already_present: int = 0
    #: records the output's ledger listed whose file was gone at the start (harvested again)
    missing_on_disk: int = 0
    #: records in files found truncated or changed at the start (removed, harvested again)
    damaged_on_disk: int = 0
    #: records found on disk that the ledger did not list (entered, not fetched again)
    adopted: int = 0
    #: of the missing and damaged records, how many this run wrote back
    refetched: int = 0
    #: of the missing and damaged records, how many are still not back (the archive no longer
    #: serves them, or the run stopped early)
    refetch_pending: int = 0
    #: targets whose watermark was not trusted because files they wrote were gone
    watermarks_dropped: int = 0
    limit_reached: bool = False
    sample: bool = False
    output: str | None = None
    elapsed_s: float = 0.0
    errors: list[TargetFailure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sample_record: dict[str, Any] | None = None
    #: (name, sha256) of every file written, for the run manifest; left out of the repr: a
    #: per-record-file run lists one per record (and Python 3.11's ``asyncio.run`` reprs the
    #: main task's result when it restores the SIGINT handler)
    files: list[tuple[str, str]] = field(default_factory=list, repr=False)

    def finish(self) -> None:
        """Derive the status from the failures recorded."""
        if self.status == "cancelled":
            return
        if self.errors and self.targets_ok == 0 and self.records == 0:
            self.status = "failed"
        elif self.errors:
            self.status = "partial"
        else:
            self.status = "ok"

    def as_dict(self, *, with_sample: bool = False) -> dict[str, Any]:
        # file hashes go to the run manifest, not the summary (one per record in the json layout:
        # left out before the deep copy, not after)
        data = asdict(replace(self, files=[]))
        data.pop("files")
        if not with_sample:
            data.pop("sample_record")
        return data


def new_run_id() -> str:
    """A run id: the UTC start time to the second, then 6 hex digits: the millisecond (3 digits)
    and 3 random ones (``20261207T034501-3e71c2``). Sortable by start time to the millisecond (two
    runs in one second used to sort at random, and the unit driver orders manifests by run id) and
    unique across machines but for a 1-in-4096 chance within the same millisecond. Every run, local
    or in work units, gets one here."""
    now = datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}-{now.microsecond // 1000:03x}{uuid.uuid4().hex[:3]}"


@dataclass
class RunReport:
    """The outcome of one harvest run."""

    run_id: str
    started_at: datetime
    finished_at: datetime | None = None
    dry_run: bool = False
    sources: dict[str, SourceReport] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(s.status == "ok" for s in self.sources.values())

    @property
    def failed_sources(self) -> list[str]:
        return [name for name, s in self.sources.items() if s.status != "ok"]

    @property
    def status(self) -> str:
        """ok, cancelled (interrupted) or failed: the run as one word, for state and manifests."""
        if self.ok:
            return "ok"
        if any(s.status == "cancelled" for s in self.sources.values()):
            return "cancelled"
        return "failed"

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_FAILED

    def totals(self) -> dict[str, int]:
        keys = (
            "targets",
            "targets_ok",
            "requests",
            "retries",
            "bytes_received",
            "records",
            "duplicates",
            "written",
            "already_present",
        )
        totals = {k: sum(getattr(s, k) for s in self.sources.values()) for k in keys}
        totals["errors"] = sum(len(s.errors) for s in self.sources.values())
        return totals

    def as_dict(self, *, with_sample: bool = False) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "status": self.status,
            "failed_sources": self.failed_sources,
            "sources": {n: s.as_dict(with_sample=with_sample) for n, s in self.sources.items()},
            "totals": self.totals(),
        }
