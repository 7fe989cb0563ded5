"""MAST CAOM observation metadata.

- ``settings.py``: ``data_sources.mast`` (collections, instruments, cones, time ranges).
- ``records.py``: :class:`MastRecord`, one observation.
- ``source.py``: the fetcher (``Mast.Caom.Filtered`` / ``Cone`` paging, t_min watermarks, cone
  work units); the MAST protocol is ``../mast_invoke.py``.
"""

from __future__ import annotations

from harvester.archives import ArchiveSpec, Token

SPEC = ArchiveSpec(
    name="mast",
    title="MAST observation metadata",
    settings="harvester.archives.mast.settings:MastSettings",
    record="harvester.archives.mast.records:MastRecord",
    source="harvester.archives.mast.source:MastSource",
    tokens=(Token("MAST_API_TOKEN", "MAST token (also used by TESS when TESS_API_TOKEN is unset)."),),
    fake="harvester.testing._mast:ROUTES",
    order=30,
)
