"""``harvester docs``: regenerate the settings and schema references."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harvester.cli.app import app


@app.command("docs", short_help="Regenerate the configuration and schema references.")
def docs(
    folder: Annotated[Path, typer.Option("--folder", help="Where the generated references go.")] = Path(
        "docs"
    ),
) -> None:
    """Regenerate docs/configuration.md and docs/schema.md from the settings and record models."""
    from harvester.display.schema import configuration_document, schema_document

    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("configuration.md", configuration_document()), ("schema.md", schema_document())):
        (folder / name).write_text(text, encoding="utf-8")
        typer.echo(f"wrote {folder / name}", err=True)
