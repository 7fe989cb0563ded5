"""harvester: concurrent, polite, exact harvesting of time-domain data from IRSA and MAST.

Quick start (in a notebook, or any running event loop)::

    import harvester
    report = await harvester.harvest("ztf", offline=True, limit=50)
    async for record in harvester.stream("ztf", offline=True, limit=10):
        print(record.object_id, record.mjd, record.mag)

From a script (no event loop running), use the blocking twins::

    report = harvester.harvest_sync("ztf", offline=True, limit=50, progress=True)
    records = list(harvester.stream_sync("tess", offline=True, limit=3))

Records become tables and arrays with :func:`to_table`, :func:`to_dataframe`, :func:`tess_arrays`
and :func:`to_lightcurve`; :func:`progress` shows a live table of a run in Jupyter or a terminal.
See docs/getting-started.md.
"""

from __future__ import annotations

from harvester._version import __version__
from harvester.api import harvest, stream
from harvester.display.notebook import progress
from harvester.display.tables import read_records, tess_arrays, to_dataframe, to_lightcurve, to_table
from harvester.errors import (
    ArchiveResponseError,
    ConfigError,
    HarvesterError,
    OutputError,
    SizeLimitError,
    TerminalError,
    TransientError,
)
from harvester.records import BaseRecord, MastRecord, Provenance, TessRecord, ZtfRecord
from harvester.run.report import RunReport, SourceReport, TargetFailure
from harvester.run.sync import harvest_sync, stream_sync
from harvester.settings import Settings, load_settings

__all__ = [
    "ArchiveResponseError",
    "BaseRecord",
    "ConfigError",
    "HarvesterError",
    "MastRecord",
    "OutputError",
    "Provenance",
    "RunReport",
    "Settings",
    "SizeLimitError",
    "SourceReport",
    "TargetFailure",
    "TerminalError",
    "TessRecord",
    "TransientError",
    "ZtfRecord",
    "__version__",
    "harvest",
    "harvest_sync",
    "load_settings",
    "progress",
    "read_records",
    "stream",
    "stream_sync",
    "tess_arrays",
    "to_dataframe",
    "to_lightcurve",
    "to_table",
]
