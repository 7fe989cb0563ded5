"""Work units: a source's targets split into deterministic groups, one Dask task each.

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
from typing import Any

from harvester.archives.tess.source import read_tic_file
from harvester.settings import ConeSearch, Settings

__all__ = ["Unit", "plan_units", "sky_cell", "tic_bucket", "unit_settings", "without_targets"]

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


def _cones(cones: list[ConeSearch], source: str, cell_deg: float) -> list[Unit]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for cone in cones:
        groups.setdefault(sky_cell(cone.ra, cone.dec, cell_deg), []).append(cone.model_dump(mode="json"))
    return [Unit(source, cell, tuple(groups[cell])) for cell in sorted(groups)]


def plan_units(
    source: str,
    settings: Settings,
    *,
    cell_deg: float = DEFAULT_CELL_DEG,
    tic_buckets: int = DEFAULT_TIC_BUCKETS,
) -> list[Unit]:
    """Split ``source``'s configured targets into units, sorted by id."""
    from harvester.settings import MastCone, read_targets_file

    if source == "ztf":
        irsa = settings.data_sources.ztf.irsa
        cones = ([irsa.cone_search] if irsa.cone_search else []) + list(irsa.targets)
        if irsa.targets_file is not None:
            cones.extend(read_targets_file(irsa.targets_file, default_radius=irsa.default_radius))
        return _cones(cones, source, cell_deg)
    if source == "mast":
        query = settings.data_sources.mast.query
        cones = ([query.cone_search] if query.cone_search else []) + list(query.targets)
        if query.targets_file is not None:
            from harvester.archives.mast.source import DEFAULT_TARGET_RADIUS

            cones.extend(
                read_targets_file(query.targets_file, default_radius=DEFAULT_TARGET_RADIUS, cone=MastCone)
            )
        return _cones(cones, source, cell_deg) if cones else [Unit(source, "all")]
    tess = settings.data_sources.tess.query
    tics = [int(tess.target_name)] if tess.target_name else []
    tics.extend(tess.tic_ids)
    if tess.targets_file is not None:
        tics.extend(int(t) for t in read_tic_file(tess.targets_file))
    if not tics:
        return [Unit(source, "all")]
    buckets: dict[int, list[int]] = {}
    for tic in dict.fromkeys(tics):
        buckets.setdefault(tic_bucket(tic, tic_buckets), []).append(tic)
    return [Unit(source, f"b{b:04d}", tuple(buckets[b])) for b in sorted(buckets)]


def without_targets(settings: Settings, units: dict[str, list[Unit]]) -> Settings:
    """``settings`` without the target lists of sources whose units carry their own targets.

    Every unit task carries its settings to a worker: with 10^5 inline cones, each task would
    otherwise carry (and each unit copy) the whole list.
    """
    copy = settings.model_copy(deep=False)
    data_sources = settings.data_sources.model_copy(deep=False)
    copy.data_sources = data_sources
    cones: dict[str, Any] = {"cone_search": None, "targets": [], "targets_file": None}
    for source, planned in units.items():
        if not planned or not all(u.targets for u in planned):
            continue  # a whole-query unit needs the configured query as it is
        if source == "ztf":
            ztf = data_sources.ztf.model_copy(deep=False)
            ztf.irsa = ztf.irsa.model_copy(update=cones)
            data_sources.ztf = ztf
        elif source == "mast":
            mast = data_sources.mast.model_copy(deep=False)
            mast.query = mast.query.model_copy(update=cones)
            data_sources.mast = mast
        else:
            tess = data_sources.tess.model_copy(deep=False)
            tics: dict[str, Any] = {"target_name": None, "tic_ids": [], "targets_file": None}
            tess.query = tess.query.model_copy(update=tics)
            data_sources.tess = tess
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
        if unit.source == "ztf":
            irsa = copy.data_sources.ztf.irsa
            irsa.cone_search, irsa.targets_file = None, None
            irsa.targets = [ConeSearch.model_validate(t) for t in unit.targets]
        elif unit.source == "mast":
            query = copy.data_sources.mast.query
            query.cone_search, query.targets_file = None, None
            query.targets = [ConeSearch.model_validate(t) for t in unit.targets]
        else:
            tess = copy.data_sources.tess.query
            tess.target_name, tess.targets_file = None, None
            tess.tic_ids = [int(t) for t in unit.targets]
    return copy
