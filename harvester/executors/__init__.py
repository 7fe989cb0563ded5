"""How a planned run's work units execute beyond the in-process pipeline: Dask, Prefect,
the unit driver, and compaction. Needs the optional extra ``harvester[dask]``. See
docs/scaling.md."""

from __future__ import annotations
