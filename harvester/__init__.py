"""harvester: concurrent, polite, exact harvesting of time-domain data from IRSA and MAST.

Quick start (in a notebook, or any running event loop)::

    import harvester
    report = await harvester.harvest("ztf", offline=True, limit=50)
    async for record in harvester.stream("ztf", offline=True, limit=10):
        print(record.object_id, record.mjd, record.mag)

From a script without an event loop, use ``anyio.run(harvester.harvest, "ztf")``.
"""

from harvester._version import __version__
from harvester.api import harvest, stream
from harvester.errors import (
    ArchiveResponseError,
    ConfigError,
    HarvesterError,
    OutputError,
    SizeLimitError,
    TerminalError,
    TransientError,
)
from harvester.pipeline.report import RunReport, SourceReport, TargetFailure
from harvester.records import BaseRecord, MastRecord, Provenance, TessRecord, ZtfRecord
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
    "load_settings",
    "stream",
]
