"""Feature tables and quicklook plots built from harvested records.

- :mod:`harvester.features.ztf`: one row per (object_id, filter) of ZTF epochs (numpy group ops).
- :mod:`harvester.features.tess`: one row per TESS light curve, with a Lomb–Scargle period search.
- :mod:`harvester.features.plot`: quicklook PNGs (matplotlib, Agg).
- :mod:`harvester.cli.features`: the ``harvester features`` and ``harvester plot`` commands.
- :mod:`harvester.features._io`: record readers (both layouts) and atomic table writers.

Column definitions: docs/features.md.
"""

from __future__ import annotations
