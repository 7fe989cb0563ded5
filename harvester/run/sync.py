"""Blocking twins of the async API, for scripts: :func:`harvest_sync` and :func:`stream_sync`.

::

    report = harvester.harvest_sync("ztf", offline=True, limit=50, progress=True)

    with contextlib.closing(harvester.stream_sync("tess", offline=True, limit=3)) as records:
        for record in records:           # records arrive while later ones are still being fetched
            print(record.object_id, record.sector)

Each call starts its own event loop and ends it before returning, so there is no state between
calls: a script or a kernel can call them any number of times.

**Inside a running event loop** (a Jupyter cell, IPython with autoawait, an async application)
both raise :class:`RuntimeError` at once, saying to use the async API there instead
(``await harvester.harvest(...)``, ``async for record in harvester.stream(...)``). They do not
fall back to running in a worker thread: that would block the notebook's own loop (and with it
widgets and the progress display) for the whole run, and interrupting the cell would stop the
wait but leave the harvest running in the background. ``await`` in a cell runs on the kernel's
loop, so interrupting the cell cancels the harvest itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Sequence
from pathlib import Path
from typing import Any, cast

import anyio
import httpx
from anyio.from_thread import start_blocking_portal
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from harvester import api
from harvester.display.notebook import progress as live_progress
from harvester.records import BaseRecord
from harvester.run.report import RunReport
from harvester.settings import Settings

__all__ = ["harvest_sync", "in_event_loop", "stream_sync"]

#: Records handed from the event-loop thread to the caller ahead of the caller's loop.
_HANDOFF_BUFFER = 64


def in_event_loop() -> bool:
    """Whether this thread is running an event loop (asyncio, Jupyter's included, or trio)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return True
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


def _refuse_in_event_loop(name: str, instead: str) -> None:
    if in_event_loop():
        raise RuntimeError(
            f"harvester.{name}() cannot run inside a running event loop (a Jupyter or IPython cell, "
            f"an async application): use `{instead}` there instead"
        )


def harvest_sync(
    sources: str | Sequence[str] = "all",
    *,
    settings: Settings | None = None,
    config: str | Path | None = None,
    dry_run: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    report: RunReport | None = None,
    full: bool = False,
    progress: bool = False,
    **overrides: Any,
) -> RunReport:
    """Run :func:`harvester.harvest` to completion and return its report (blocking; for scripts).

    Takes the arguments of :func:`harvester.harvest`, plus:

    :param progress: show a live per-source table while the run works: in place in Jupyter, on
        stderr in a terminal, and nothing at all when stderr is not a terminal (cron, log files).
    :raises RuntimeError: when called inside a running event loop; ``await harvester.harvest(...)``
        there instead.
    :raises ConfigError: for bad settings or targets, before anything is fetched or written.

    Ctrl-C cancels the run (record files are written atomically: none is left partial) and then
    raises :class:`KeyboardInterrupt`.
    """
    _refuse_in_event_loop("harvest_sync", "report = await harvester.harvest(...)")
    with live_progress(report, enabled=None if progress else False) as filled:
        run = functools.partial(
            api.harvest,
            sources,
            settings=settings,
            config=config,
            dry_run=dry_run,
            transport=transport,
            report=filled,
            full=full,
            **overrides,
        )
        return anyio.run(run)


def stream_sync(
    source: str,
    *,
    settings: Settings | None = None,
    config: str | Path | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    **overrides: Any,
) -> Generator[BaseRecord, None, None]:
    """An iterator over :func:`harvester.stream`'s validated records, nothing written (for scripts).

    Records are yielded as they arrive; a bounded buffer keeps memory flat however many there are.
    Use ``list(stream_sync(...))`` for a list. The fetch runs on an event loop in a helper thread
    that ends with the iteration; when you may stop early, use ``contextlib.closing`` (or
    ``.close()``) so the fetchers are cancelled at once rather than when the iterator is collected.

    Settings and archive errors are raised from the iteration, as :func:`harvester.stream` does
    (a :class:`HarvesterError` at the end when every target of the source failed).

    :raises RuntimeError: at once, when called inside a running event loop; use
        ``async for record in harvester.stream(...)`` there instead.
    """
    _refuse_in_event_loop("stream_sync", "async for record in harvester.stream(...)")
    open_stream = functools.partial(
        api.stream, source, settings=settings, config=config, transport=transport, **overrides
    )
    return _iterate(open_stream)


def _handoff() -> tuple[MemoryObjectSendStream[BaseRecord], MemoryObjectReceiveStream[BaseRecord]]:
    return anyio.create_memory_object_stream[BaseRecord](_HANDOFF_BUFFER)


def _iterate(open_stream: Callable[[], AsyncIterator[BaseRecord]]) -> Generator[BaseRecord, None, None]:
    """Drive an async record stream on a portal thread; hand records over a bounded stream.

    The whole stream runs in one task (its task group and cancel scopes must enter and exit in
    the same task); this thread only receives. Leaving early (break + close, an exception,
    Ctrl-C) cancels that task and waits for it, so no fetcher outlives the iterator.
    """
    with start_blocking_portal() as portal:
        send, receive = portal.call(_handoff)

        async def pump() -> None:
            async with (
                send,
                contextlib.aclosing(cast(AsyncGenerator[BaseRecord, None], open_stream())) as records,
            ):
                async for record in records:
                    await send.send(record)

        pumping = portal.start_task_soon(pump)
        try:
            while True:
                try:
                    record = portal.call(receive.receive)
                except anyio.EndOfStream:
                    break
                yield record
            pumping.result()  # the stream's own error, if it ended with one
        finally:
            pumping.cancel()  # a no-op once it is done
            with contextlib.suppress(RuntimeError):  # the portal already wound down: nothing to close
                portal.call(receive.aclose)
