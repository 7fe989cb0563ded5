"""The harvester's exception tree: every error says whether retrying can help.

::

    HarvesterError                  base of everything raised on purpose
    ├── ConfigError                 bad settings, CLI flags or input files (exit code 2)
    │   └── FeatureInputError       (features/_io.py) records a feature table cannot be built from
    ├── BudgetUnavailable           the shared per-host budget (a Dask scheduler) cannot be reached
    ├── UnitFailed                  every target of a work unit failed: the unit is retried
    ├── RunInterrupted              a stop was requested; the work-unit run stays open to resume
    ├── TransientError              may succeed if retried later (timeouts, resets, 429, 5xx)
    └── TerminalError               retrying the same request cannot help
        ├── HttpStatusError         an HTTP status no retry can change (404, 403, other 4xx)
        ├── ArchiveResponseError    the archive answered, but not with data (HTML, VOTable ERROR,
        │                           MAST status ERROR, wrongly shaped JSON, corrupt FITS)
        ├── SizeLimitError          a body larger than the configured cap
        ├── OutputError             the output cannot be written (permissions, full disk)
        ├── ClusterError            the Dask scheduler cannot be reached
        └── DriverBusy              another driver is harvesting the same output and state

Retry code asks ``err.transient`` (as dlt does) rather than which class it is.
Messages name the target and the cause and never carry a secret.
"""

from __future__ import annotations


class HarvesterError(Exception):
    """Base class for errors the harvester raises on purpose."""

    transient: bool = False

    def __init__(self, message: str, *, target: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.target = target

    def __str__(self) -> str:
        if self.target:
            return f"{self.target}: {self.message}"
        return self.message


class ConfigError(HarvesterError):
    """Settings, CLI flags or an input file are invalid; nothing was fetched or written."""


class BudgetUnavailable(HarvesterError):
    """The cluster-wide budget of a host cannot be reached (its Dask scheduler is gone or closing).

    Not a failure of the target being fetched: it stops the whole work unit, which writes nothing
    and is retried (and recorded as a failed unit if every attempt meets it).
    """

    transient = True


def budget_lost(exc: BaseException) -> BudgetUnavailable | None:
    """The :class:`BudgetUnavailable` that ``exc`` is, or that a task group's exception group
    holds (at any depth); None otherwise."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := budget_lost(inner)) is not None:
                return found
        return None
    return exc if isinstance(exc, BudgetUnavailable) else None


class TransientError(HarvesterError):
    """A failure that may go away if the same request is retried later."""

    transient = True


class TerminalError(HarvesterError):
    """A failure that the same request will meet again."""


class HttpStatusError(TerminalError):
    """The server answered a status that no retry can change (a 4xx other than 408/429):
    ``status`` and the start of the ``body`` (an S3 error's ``<Code>``, say) let a caller decide
    what it means for its route."""

    def __init__(self, message: str, *, status: int, body: bytes = b"", target: str | None = None) -> None:
        super().__init__(message, target=target)
        self.status = status
        self.body = body


class ArchiveResponseError(TerminalError):
    """The archive answered, but the body is not the data that was asked for."""


class SizeLimitError(TerminalError):
    """A response body announced or reached more bytes than the configured cap."""


class OutputError(TerminalError):
    """The output cannot be written (permissions, full disk): stops the source, keeps what was written."""


class UnitFailed(HarvesterError):
    """Every target of a work unit failed: raised on the worker so that the engine retries the
    unit (transient: a later attempt may succeed)."""

    transient = True


class RunInterrupted(HarvesterError):
    """A stop was requested: units in flight were cancelled; the run stays open to be resumed."""


class ClusterError(TerminalError):
    """The Dask scheduler cannot be reached."""


class DriverBusy(TerminalError):
    """Another driver is harvesting the same output with the same state."""
