"""Beyond one machine: work units on Dask, one shared per-host budget, object-store output.

Needs the optional extra ``harvester[dask]``. See docs/scaling.md.
"""

from __future__ import annotations
