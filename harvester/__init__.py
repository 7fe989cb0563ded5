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

from typing import TYPE_CHECKING, Any

from harvester._version import __version__
from harvester.errors import (
    ArchiveResponseError,
    ConfigError,
    HarvesterError,
    OutputError,
    SizeLimitError,
    TerminalError,
    TransientError,
)

if TYPE_CHECKING:
    from harvester.api import harvest, stream
    from harvester.archives.mast.records import MastRecord
    from harvester.archives.tess.records import TessRecord
    from harvester.archives.ztf.records import ZtfRecord
    from harvester.display.notebook import progress
    from harvester.display.tables import read_records, tess_arrays, to_dataframe, to_lightcurve, to_table
    from harvester.records import BaseRecord, Provenance
    from harvester.run.report import RunReport, SourceReport, TargetFailure
    from harvester.run.sync import harvest_sync, stream_sync
    from harvester.settings import Settings, load_settings

#: Where each public name lives: imported on first use, so ``import harvester`` (and every CLI
#: command that needs none of them) does not pay for httpx, pydantic, numpy or astropy.
_LAZY = {
    "harvest": "harvester.api",
    "stream": "harvester.api",
    "progress": "harvester.display.notebook",
    "read_records": "harvester.display.tables",
    "tess_arrays": "harvester.display.tables",
    "to_dataframe": "harvester.display.tables",
    "to_lightcurve": "harvester.display.tables",
    "to_table": "harvester.display.tables",
    "BaseRecord": "harvester.records",
    "MastRecord": "harvester.archives.mast.records",
    "Provenance": "harvester.records",
    "TessRecord": "harvester.archives.tess.records",
    "ZtfRecord": "harvester.archives.ztf.records",
    "RunReport": "harvester.run.report",
    "SourceReport": "harvester.run.report",
    "TargetFailure": "harvester.run.report",
    "harvest_sync": "harvester.run.sync",
    "stream_sync": "harvester.run.sync",
    "Settings": "harvester.settings",
    "load_settings": "harvester.settings",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harvester' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, "__version__"})


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
