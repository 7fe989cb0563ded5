"""Logging: structlog events, console on a terminal, JSON lines otherwise, secrets redacted.

Events are snake_case names with bound context (``source=``, ``target=``, ``run_id=``). Logs go
to stderr so that stdout stays clean for ``--dry-run``'s JSON summary. A redaction processor
replaces any configured token value that would appear anywhere in an event with ``[redacted]``:
tokens are never put in events on purpose, and this is the second line of defence.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal

import orjson
import structlog

__all__ = ["configure_logging"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class RedactSecrets:
    """Replace secret values wherever they appear in an event's values."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = [s for s in secrets if s]

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, "[redacted]")
            return value
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._clean(v) for v in value)
        return value

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if not self._secrets:
            return event
        return {k: self._clean(v) for k, v in event.items()}


class _Stderr:
    """Writes to whatever ``sys.stderr`` is at the time, so a live progress display can redirect it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(
    fmt: Literal["auto", "console", "json"] = "auto",
    level: str = "info",
    *,
    secrets: Iterable[str] = (),
    stream: Any = None,
) -> None:
    """Configure structlog once per process (the CLI calls this; libraries should not)."""
    out = stream or _Stderr()
    use_console = fmt == "console" or (fmt == "auto" and hasattr(out, "isatty") and out.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        RedactSecrets(secrets),
    ]
    if use_console:
        processors += [
            structlog.dev.ConsoleRenderer(
                colors=hasattr(out, "isatty") and out.isatty(),
                exception_formatter=structlog.dev.plain_traceback,
            )
        ]
    else:
        processors += [
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=out),  # type: ignore[arg-type]  # a TextIO-like proxy
        cache_logger_on_first_use=False,
    )
