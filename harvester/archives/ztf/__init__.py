"""ZTF light curves from the IRSA light-curve API.

- ``settings.py``: ``data_sources.ztf`` (the IRSA query, its cones and budget).
- ``records.py``: :class:`ZtfRecord`, one epoch.
- ``source.py``: the fetcher (VOTable/CSV parsing, MJD watermarks, cone work units).
"""

from __future__ import annotations

from harvester.archives import ArchiveSpec, Token

SPEC = ArchiveSpec(
    name="ztf",
    title="ZTF light curves (IRSA)",
    settings="harvester.archives.ztf.settings:ZtfSettings",
    record="harvester.archives.ztf.records:ZtfRecord",
    source="harvester.archives.ztf.source:ZtfSource",
    tokens=(Token("ZTF_API_TOKEN", "IRSA token (optional; public data needs none)."),),
    fake="harvester.testing._hats:ZTF_ROUTES",
    features="harvester.features.ztf:build",
    plot="harvester.features.plot:plot_ztf_objects",
    order=10,
)
