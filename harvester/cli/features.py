"""The ``harvester features`` and ``harvester plot`` commands (registered on the main typer app).

Exit codes as for ``harvester run``: 0 done; 1 the output cannot be written; 2 bad usage or input
(missing folder, no records, a file that is not a record), with one line on stderr.
Heavy imports (astropy, matplotlib) happen inside the commands, so ``harvester --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harvester.cli.app import archive_argument
from harvester.errors import ConfigError, HarvesterError

__all__ = ["register"]

_EXIT_USAGE = 2


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"harvester: error: {message}", err=True)
    return typer.Exit(code)


def features(
    source: Annotated[str, archive_argument("Which records to reduce.", need="features")],
    input_root: Annotated[
        Path, typer.Option("--input", "-i", help="Root of the record folders (reads INPUT/SOURCE).")
    ] = Path("data/raw"),
    output_root: Annotated[
        Path, typer.Option("--output", "-o", help="Root of the tables (writes OUTPUT/SOURCE/features.csv).")
    ] = Path("data/processed"),
    chunk_records: Annotated[
        int, typer.Option("--chunk-records", min=1, help="ZTF: records parsed per chunk.")
    ] = 100_000,
    ls_oversample: Annotated[
        float, typer.Option("--ls-oversample", min=1.0, help="TESS: periodogram samples per peak.")
    ] = 5.0,
    ls_max_frequencies: Annotated[
        int, typer.Option("--ls-max-frequencies", min=2, help="TESS: most frequencies searched.")
    ] = 200_000,
) -> None:
    """Compute the feature table of a source's records (docs/features.md), written atomically."""
    from harvester import archives
    from harvester.features._io import FeatureOptions, FeatureSummary

    options = FeatureOptions(chunk_records, ls_oversample, ls_max_frequencies)
    try:
        build = archives.load(archives.spec(source).features or "")
        summary: FeatureSummary = build(input_root, output_root, options)
    except ConfigError as exc:
        raise _fail(str(exc), _EXIT_USAGE) from None
    except HarvesterError as exc:
        raise _fail(str(exc), 1) from None
    typer.echo(
        f"harvester: wrote {summary.table} ({summary.rows} rows from {summary.records} records)", err=True
    )


def plot(
    source: Annotated[str, archive_argument("Which records to plot.", need="plot")],
    object_id: Annotated[
        list[str] | None, typer.Option("--object-id", help="Object to plot (repeatable).")
    ] = None,
    first: Annotated[
        int | None,
        typer.Option("--first", min=1, help="Without --object-id: plot the first N objects found."),
    ] = None,
    input_root: Annotated[
        Path, typer.Option("--input", "-i", help="Root of the record folders (reads INPUT/SOURCE).")
    ] = Path("data/raw"),
    output_root: Annotated[
        Path, typer.Option("--output", "-o", help="Where the PNGs go (OUTPUT/SOURCE/*.png).")
    ] = Path("data/processed/plots"),
    ls_oversample: Annotated[
        float, typer.Option("--ls-oversample", min=1.0, help="TESS: periodogram samples per peak.")
    ] = 5.0,
    ls_max_frequencies: Annotated[
        int, typer.Option("--ls-max-frequencies", min=2, help="TESS: most frequencies searched.")
    ] = 200_000,
) -> None:
    """Write quicklook PNGs: ZTF light curves per filter; TESS flux and periodogram per light curve."""
    from harvester import archives
    from harvester.features._io import FeatureOptions

    options = FeatureOptions(ls_oversample=ls_oversample, ls_max_frequencies=ls_max_frequencies)
    try:
        draw = archives.load(archives.spec(source).plot or "")
        paths: list[Path] = draw(input_root, output_root, object_id or [], first, options)
    except ConfigError as exc:
        raise _fail(str(exc), _EXIT_USAGE) from None
    except HarvesterError as exc:
        raise _fail(str(exc), 1) from None
    for path in paths:
        typer.echo(f"harvester: wrote {path}", err=True)


def register(app: typer.Typer) -> None:
    """Add ``features`` and ``plot`` to the ``harvester`` app."""
    app.command("features", short_help="Compute a source's feature table.")(features)
    app.command("plot", short_help="Write quicklook PNGs of a source's records.")(plot)
