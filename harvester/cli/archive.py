"""``harvester archive serve``: the built-in sample archive on loopback."""

from __future__ import annotations

from typing import Annotated

import anyio
import typer

from harvester.cli.app import _fail, archive_app


@archive_app.command("serve")
def archive_serve(
    port: Annotated[
        int, typer.Option("--port", "-p", min=0, max=65535, help="TCP port (0 = any free port).")
    ] = 8765,
    host: Annotated[str, typer.Option("--host", help="Loopback address to bind.")] = "127.0.0.1",
    latency: Annotated[
        float, typer.Option("--latency", min=0.0, help="Seconds added to every answer.")
    ] = 0.0,
    bandwidth: Annotated[
        float | None, typer.Option("--bandwidth", min=1.0, help="Bytes/s per connection for bodies.")
    ] = None,
    rate_limit: Annotated[
        float | None, typer.Option("--rate-limit", min=0.1, help="Server-side req/s per host (429 past it).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the deterministic sample sky.")] = 0,
) -> None:
    """Serve the sample archive over HTTP on loopback (IRSA and MAST endpoints on one port)."""
    from harvester.testing import FakeArchive, serve

    if host not in ("127.0.0.1", "localhost", "::1"):
        raise _fail(f"--host {host!r}: the sample archive only binds to loopback addresses")
    archive = FakeArchive(
        seed=seed,
        latency_s=latency,
        bandwidth_bps=bandwidth,
        rate_limit_rps=rate_limit,
        rate_limit_mode="enforce" if rate_limit else "count",
    )

    def ready(bound: int) -> None:
        typer.echo(
            f"sample archive on http://{host}:{bound} (IRSA: /cgi-bin/ZTF/nph_light_curves, "
            f"MAST: /api/v0/invoke); Ctrl-C stops it",
            err=True,
        )

    try:
        anyio.run(lambda: serve(archive, host, port, ready=ready))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise _fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
