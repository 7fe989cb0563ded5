"""The ``harvester`` command: a thin typer shell over the async API, one module per command group.

Exit codes: 0 everything succeeded; 1 a source or a target failed (the summary says which);
2 bad usage, settings or input files (one line on stderr, nothing fetched or written);
130 interrupted (Ctrl-C, SIGINT); 143 terminated (SIGTERM). An interrupted run is cancelled
like a notebook cell: what was written is kept and a ``cancelled`` manifest is written.

Each module registers its commands on :data:`harvester.cli.app.app` when imported; the order of
the imports below is the order of ``harvester --help``.
"""

from __future__ import annotations

import importlib

from harvester.cli.app import app, cli_overrides
from harvester.cli.features import register as _register_features

# The order of ``harvester --help``: each module registers its commands when imported.
for _module in ("run", "status", "docs"):
    importlib.import_module(f"harvester.cli.{_module}")
_register_features(app)  # features, plot
for _module in ("compact", "archive", "prefect"):
    importlib.import_module(f"harvester.cli.{_module}")

__all__ = ["app", "cli_overrides", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
