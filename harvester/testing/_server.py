"""Serving a :class:`~harvester.testing.FakeArchive` over real loopback HTTP with uvicorn.

- :func:`serve` is the blocking coroutine behind ``harvester archive serve``: it binds the socket
  itself (so a busy port raises ``OSError`` and port 0 is known before serving), reports the bound
  port through ``ready`` and serves until cancelled or signalled.
- :func:`running_server` runs one in a background thread with its own event loop for tests and
  benchmarks, and stops it on exit.

Only loopback addresses are accepted. The server uses uvicorn's h11 protocol with one addition:
each connection's transport is handed to the app as a scope extension, so the "truncate" and
"reset" faults can really cut the TCP connection (uvicorn alone would turn an exception raised
before the response into a 500).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import anyio
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from harvester.testing._archive import TRANSPORT_EXTENSION, FakeArchive

if TYPE_CHECKING:
    from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope

__all__ = ["running_server", "serve"]

_STOP_TIMEOUT_S = 10.0


class _TransportExposingH11(H11Protocol):
    """uvicorn's h11 protocol, plus the connection's transport in ``scope["extensions"]``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        inner = self.app

        async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
            mutable = cast("dict[str, Any]", scope)
            mutable["extensions"] = {**(mutable.get("extensions") or {}), TRANSPORT_EXTENSION: transport}
            await inner(scope, receive, send)

        self.app = app


def _loopback(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise ValueError(f"the fake archive only binds to loopback addresses, not {host!r}")


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _server(archive: FakeArchive) -> uvicorn.Server:
    config = uvicorn.Config(
        archive,
        http=_TransportExposingH11,
        ws="none",
        lifespan="off",
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=2,
    )
    return uvicorn.Server(config)


async def serve(
    archive: FakeArchive,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve ``archive`` on ``host:port`` (port 0: any free port) until cancelled or interrupted.

    ``ready`` is called with the bound port once connections are accepted (they queue until the
    server loop picks them up). Raises ``OSError`` when the address cannot be bound and
    ``ValueError`` for a non-loopback host.
    """
    sock = _bind(_loopback(host), port)
    try:
        server = _server(archive)
        if ready is not None:
            ready(int(sock.getsockname()[1]))
        await server.serve(sockets=[sock])
    finally:
        sock.close()


@contextmanager
def running_server(
    archive: FakeArchive, host: str = "127.0.0.1", *, timeout_s: float = 10.0
) -> Iterator[str]:
    """Run ``archive`` on a free loopback port in a background thread; yields its base URL.

    On exit the server is asked to stop and its thread is joined (bounded by ``timeout_s``).
    """
    bound = _loopback(host)
    sock = _bind(bound, 0)
    port = int(sock.getsockname()[1])
    server = _server(archive)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            anyio.run(lambda: server.serve(sockets=[sock]))
        except BaseException as exc:  # reported to the caller below
            failures.append(exc)

    thread = threading.Thread(target=run, name=f"fake-archive:{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if failures or not thread.is_alive():
                raise RuntimeError(f"fake archive server failed to start: {failures[:1]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"fake archive server not started after {timeout_s} s")
            time.sleep(0.005)
        with socket.create_connection((bound, port), timeout=timeout_s):
            pass
        yield f"http://[{bound}]:{port}" if ":" in bound else f"http://{bound}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=min(timeout_s, _STOP_TIMEOUT_S))
        sock.close()
