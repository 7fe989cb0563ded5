"""Work units: a source's targets split into deterministic groups, each run by an engine.

- **TESS** (TIC ids): a stable hash bucket, ``sha256(str(tic)) mod buckets``; the same id is
  always in the same unit, whatever the order or the other ids.
- **ZTF and MAST cones**: a sky cell of about ``cell_deg`` (1°) on a side: declination bands of
  ``cell_deg``, each cut into ``floor(360·cos(dec_centre)/cell_deg)`` equal RA bins (at least one),
  so cells keep roughly equal area up to the poles. A cone goes to the cell of its centre, so
  nearby and overlapping cones share a unit and their common epochs are deduplicated in memory;
  cones straddling a cell edge may land in two units, and ``harvester compact`` removes those
  cross-unit duplicates.
- A query without a target list (a TESS cone or sector query, a MAST collection query) is one unit.

A unit's id names the cell or bucket; its key adds a digest of the unit's targets and query, so
the same unit of the same run always maps to the same object keys.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harvester import archives
from harvester.archives.common import ConeSearch
from harvester.settings import Settings

if TYPE_CHECKING:
    from harvester.archives.base import Source

__all__ = ["Unit", "cone_groups", "plan_units", "sky_cell", "tic_bucket", "unit_settings", "without_targets"]

DEFAULT_CELL_DEG = 1.0
DEFAULT_TIC_BUCKETS = 64


@dataclass(frozen=True)
class Unit:
    """One work unit: a source and the part of its targets that this unit harvests."""

    source: str
    unit_id: str
    #: ZTF/MAST: cones as plain dicts; TESS: TIC ids; empty = the source's whole query.
    targets: tuple[Any, ...] = field(default_factory=tuple)

    @property
    def digest(self) -> str:
        text = json.dumps([self.source, self.unit_id, list(self.targets)], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def key(self) -> str:
        """``<unit id>-<digest>``: stable for the same targets."""
        return f"{self.unit_id}-{self.digest}"


def sky_cell(ra: float, dec: float, cell_deg: float = DEFAULT_CELL_DEG) -> str:
    """The id of the ~``cell_deg`` sky cell holding (ra, dec): ``d<band>r<ra bin>``."""
    bands = max(1, round(180.0 / cell_deg))
    band = min(bands - 1, max(0, math.floor((dec + 90.0) / 180.0 * bands)))
    centre = -90.0 + (band + 0.5) * 180.0 / bands
    bins = max(1, math.floor(360.0 * math.cos(math.radians(centre)) / cell_deg))
    ra_bin = math.floor((ra % 360.0) / 360.0 * bins) % bins
    return f"d{band:03d}r{ra_bin:03d}"


def tic_bucket(tic: int | str, buckets: int = DEFAULT_TIC_BUCKETS) -> int:
    """A stable bucket for a TIC id (independent of process, order and hash seed)."""
    return int(hashlib.sha256(str(int(tic)).encode()).hexdigest()[:8], 16) % buckets


def cone_groups(cones: list[ConeSearch], cell_deg: float) -> list[tuple[str, tuple[Any, ...]]]:
    """Cones grouped by the sky cell of their centre, as (cell id, cones as plain dicts), sorted."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for cone in cones:
        groups.setdefault(sky_cell(cone.ra, cone.dec, cell_deg), []).append(cone.model_dump(mode="json"))
    return [(cell, tuple(groups[cell])) for cell in sorted(groups)]


def _source(name: str, settings: Settings) -> Source[Any]:
    return archives.source_class(name)(settings, sample=settings.offline)


def plan_units(
    source: str,
    settings: Settings,
    *,
    cell_deg: float = DEFAULT_CELL_DEG,
    tic_buckets: int = DEFAULT_TIC_BUCKETS,
) -> list[Unit]:
    """Split ``source``'s configured targets into units, sorted by id (the source says how:
    :meth:`~harvester.archives.base.Source.unit_groups`)."""
    groups = _source(source, settings).unit_groups(cell_deg=cell_deg, tic_buckets=tic_buckets)
    return [Unit(source, unit_id, targets) for unit_id, targets in groups]


def without_targets(settings: Settings, units: dict[str, list[Unit]]) -> Settings:
    """``settings`` without the target lists of sources whose units carry their own targets.

    Every unit task carries its settings to a worker: with 10^5 inline cones, each task would
    otherwise carry (and each unit copy) the whole list.
    """
    copy = settings.model_copy(deep=False)
    data_sources = settings.data_sources.model_copy(deep=False)
    copy.data_sources = data_sources
    for source, planned in units.items():
        if not planned or not all(u.targets for u in planned):
            continue  # a whole-query unit needs the configured query as it is
        _source(source, settings).clear_targets(data_sources)
    return copy


def unit_settings(unit: Unit, settings: Settings, staging: Path) -> Settings:
    """``settings`` narrowed to the unit's targets, writing jsonl into ``staging`` with scratch state."""
    copy = settings.model_copy(deep=True)
    copy.executor = "local"
    copy.output = staging / "out"
    copy.format = "jsonl"
    copy.limit = None
    copy.fallback_to_sample = False  # a failing unit is retried and reported, never filled with samples
    copy.state.enabled = True  # a throwaway store in the staging folder: carries watermarks only
    copy.state.path = staging / "scratch-state.db"
    if unit.targets:
        _source(unit.source, settings).narrow(copy.data_sources, unit.targets)
    return copy
