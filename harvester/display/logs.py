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

__all__ = ["configure_logging", "redact", "register_secrets"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


#: Every token value any run of this process has used: redacted from logs and from report texts.
#: A set of strings only grows, so a second run in the same notebook kernel is covered too.
_KNOWN_SECRETS: set[str] = set()


def register_secrets(secrets: Iterable[str]) -> None:
    """Remember token values so that :func:`redact` and the log processor hide them."""
    _KNOWN_SECRETS.update(s for s in secrets if s)


def redact(text: str) -> str:
    """``text`` with every known token value replaced by ``[redacted]``.

    Used on anything that quotes an archive's answer (error causes quote the start of a body, and
    a misbehaving server could echo a request header back).
    """
    for secret in _KNOWN_SECRETS:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return text


class RedactSecrets:
    """Replace secret values wherever they appear in an event's values."""

    def __init__(self, secrets: Iterable[str]) -> None:
        register_secrets(secrets)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._clean(v) for v in value)
        return value

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if not _KNOWN_SECRETS:
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
        # one write per line, so processes sharing stderr (Dask workers) never split each other's lines
        logger_factory=structlog.WriteLoggerFactory(file=out),  # type: ignore[arg-type]  # TextIO-like proxy
        cache_logger_on_first_use=False,
    )
