"""``harvester compact``: committed work units into one Parquet table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harvester.cli.app import _fail, app, archive_argument
from harvester.errors import HarvesterError


@app.command(short_help="Merge a dask run's work units into one Parquet file.")
def compact(
    source: Annotated[str, archive_argument("Which archive's units to merge.")],
    input_root: Annotated[
        str, typer.Option("--input", "-i", help="The dask run's output: a folder or an fsspec URL.")
    ] = "data/raw",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Parquet file (default data/processed/<source>.parquet)."),
    ] = None,
) -> None:
    """Merge the committed work units of a dask run into one Parquet file, deduplicated across units."""
    target = output or Path("data/processed") / f"{source}.parquet"
    try:
        from harvester.executors.compact import compact as run_compact

        records, dropped = run_compact(source, input_root, target)
    except ImportError as exc:
        raise _fail(f"compact needs the dask extra: pip install 'harvester[dask]' ({exc.name})") from None
    except HarvesterError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot compact {input_root} into {target}: {exc.strerror or exc}", 1) from None
    typer.echo(f"wrote {target}: {records} records ({dropped} duplicates across units dropped)", err=True)
