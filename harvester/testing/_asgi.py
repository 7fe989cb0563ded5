"""The small ASGI vocabulary the fake services share: type aliases and the :class:`Reply` they return.

A service handler is a plain function from a parsed request to a :class:`Reply` (status, headers,
body). Only :mod:`~harvester.testing._archive` talks ASGI; it sends a reply, possibly paced,
delayed or cut short by a fault.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Message", "Receive", "Reply", "Scope", "Send", "json_reply", "text_reply"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass
class Reply:
    """One HTTP answer, fully built in memory (sizes here are small, FITS files included)."""

    status: int
    body: bytes
    content_type: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_length: int | None = None  # sent instead of len(body) when set (HEAD)

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        length = len(self.body) if self.content_length is None else self.content_length
        out = [(b"content-type", self.content_type.encode()), (b"content-length", str(length).encode())]
        out.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers)
        return out


def text_reply(status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Reply:
    return Reply(status, text.encode(), content_type)


def json_reply(obj: Any, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(obj), "application/json")
