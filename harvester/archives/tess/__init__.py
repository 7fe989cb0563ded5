"""TESS SPOC light curves from MAST.

- ``settings.py``: ``data_sources.tess`` (the MAST query, cadence, cleaning).
- ``records.py``: :class:`TessRecord`, one light curve.
- ``source.py``: the fetcher (MAST searches, product lists, FITS downloads decoded on threads,
  TIC-bucket work units); the MAST protocol is ``../mast_invoke.py``, the FITS reader ``../spoc_fits.py``.
"""

from __future__ import annotations

from harvester.archives import ArchiveSpec, Token

SPEC = ArchiveSpec(
    name="tess",
    title="TESS light curves (MAST)",
    settings="harvester.archives.tess.settings:TessSettings",
    record="harvester.archives.tess.records:TessRecord",
    source="harvester.archives.tess.source:TessSource",
    tokens=(
        Token("TESS_API_TOKEN", "MAST token used by the TESS source."),
        Token("MAST_API_TOKEN", "MAST token (also used by TESS when TESS_API_TOKEN is unset)."),
    ),
    fake="harvester.testing._mast:ROUTES",
    features="harvester.features.tess:build",
    plot="harvester.features.plot:plot_tess_objects",
    order=20,
)
