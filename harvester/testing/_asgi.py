"""The small vocabulary the fake services share: the :class:`FakeRequest` they read, the
:class:`Reply` they return and the :class:`FakeRoute` that joins them.

Each archive's fake declares its routes (a tuple of :class:`FakeRoute`, named by the ``fake`` field
of its registry entry); :class:`~harvester.testing.FakeArchive` matches a request's path against
every registered archive's routes. Only :mod:`~harvester.testing._archive` talks ASGI; it sends a
reply, possibly paced, delayed or cut short by a fault.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from harvester.testing._archive import FakeArchive

__all__ = [
    "FakeRequest",
    "FakeRoute",
    "Message",
    "Receive",
    "Reply",
    "Scope",
    "Send",
    "json_reply",
    "not_allowed",
    "text_reply",
]

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


def not_allowed() -> Reply:
    return text_reply(405, "Method Not Allowed")


@dataclass
class FakeRequest:
    """One request as a fake service sees it.

    ``params`` (what the request log shows) starts as the parsed query; a route's ``parse`` may
    replace it (MAST: the decoded invoke request) and add to ``subjects`` (the texts a
    :class:`~harvester.testing.Fault` ``match`` is looked for in). ``parsed`` is the route's own.
    """

    method: str
    path: str
    query: str
    host: str
    headers: dict[str, str]
    body: bytes
    params: dict[str, Any]
    subjects: tuple[str, ...]
    route: FakeRoute | None = None
    parsed: Any = None
    error: str | None = None
    lie_rows: int = 0  #: set by a lie_rows_total fault: the extra rows a paged answer claims


@dataclass(frozen=True)
class FakeRoute:
    """A path a fake archive answers: requests whose path ends with ``suffix`` or, when
    ``pattern`` is set, whose path it matches (``re.search``: keys of a bucket, say).

    :param methods: the methods answered; others get 405.
    :param answer: ``await answer(request, archive)`` builds the reply; ``archive`` is the
        :class:`~harvester.testing.FakeArchive` (its seed, "today", caches).
    :param parse: called at intake, before faults are matched, to fill ``params``, ``subjects``
        and ``parsed``.
    """

    suffix: str
    methods: tuple[str, ...]
    answer: Callable[[FakeRequest, FakeArchive], Awaitable[Reply]]
    parse: Callable[[FakeRequest], None] | None = None
    pattern: re.Pattern[str] | None = None

    def matches(self, path: str) -> bool:
        if self.pattern is not None:
            return self.pattern.search(path) is not None
        return path.endswith(self.suffix)
