"""MAST observation metadata (CAOM) through the shared MAST invoke protocol.

- A cone with no other constraint: ``Mast.Caom.Cone`` (ra, dec, radius).
- A cone with constraints (collections, instruments, product types, time ranges, extra filters):
  ``Mast.Caom.Filtered.Position``.
- Constraints without a cone: ``Mast.Caom.Filtered`` (one target, "filters").

Every page is fetched; a result short of ``rowsTotal`` or over MAST's ~500,000-row ceiling is
reported in the run report, never cut silently. One record per observation, deduplicated on
``obsid``; UI-only columns are dropped by the protocol module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import structlog

from harvester.archives.base import FetchContext, Source, utcnow
from harvester.archives.common import ConeSearch, MastCone, read_targets_file
from harvester.archives.mast.records import MastRecord
from harvester.archives.mast.settings import MastSettings
from harvester.archives.mast_invoke import MastClient, MastQueryStats, discrete, position, value_range
from harvester.errors import ArchiveResponseError, ConfigError
from harvester.records import Provenance

__all__ = ["MastSource", "MastTarget", "mast_record"]

log = structlog.get_logger("harvester.mast")

DEFAULT_TARGET_RADIUS = 0.05


@dataclass(frozen=True)
class MastTarget:
    cone: ConeSearch | None = None

    @property
    def label(self) -> str:
        return self.cone.label if self.cone is not None else "filters"


class MastSource(Source[MastTarget]):
    """CAOM observation metadata."""

    name = "mast"
    auth_scheme = "token"  # MAST: Authorization: token <MAST_API_TOKEN>
    watermark_field = "mjd"

    @property
    def config(self) -> MastSettings:
        """This archive's block, ``data_sources.mast``."""
        return cast(MastSettings, self.settings.data_sources.block("mast"))

    @property
    def base_url(self) -> str:
        return self.config.base_url

    def targets(self) -> list[MastTarget]:
        query = self.config.query
        cones: list[ConeSearch] = []
        if query.cone_search is not None:
            cones.append(query.cone_search)
        cones.extend(query.targets)
        if query.targets_file is not None:
            cones.extend(
                read_targets_file(query.targets_file, default_radius=DEFAULT_TARGET_RADIUS, cone=MastCone)
            )
        if cones:
            return [MastTarget(cone=c) for c in cones]
        if self.filters():
            return [MastTarget()]
        raise ConfigError(
            "data_sources.mast.query: no targets: set cone_search, targets, targets_file, "
            "or constraints (collections, instruments, t_min, filters)"
        )

    def label(self, target: MastTarget) -> str:
        return target.label

    def describe_query(self) -> dict[str, Any]:
        mast = self.config
        return {
            "base_url": mast.base_url,
            "query": mast.query.model_dump(mode="json"),
        }

    def unit_groups(self, *, cell_deg: float, tic_buckets: int) -> list[tuple[str, tuple[Any, ...]]]:
        from harvester.executors.units import cone_groups

        cones = [t.cone for t in self.resolved() if t.cone is not None]
        return cone_groups(cones, cell_deg) if cones else [("all", ())]

    def narrow(self, data_sources: Any, targets: tuple[Any, ...]) -> None:
        query = data_sources.mast.query
        query.cone_search, query.targets_file = None, None
        query.targets = [MastCone.model_validate(t) for t in targets]

    def clear_targets(self, data_sources: Any) -> None:
        mast = data_sources.mast.model_copy(deep=False)
        mast.query = mast.query.model_copy(update={"cone_search": None, "targets": [], "targets_file": None})
        data_sources.mast = mast

    def _since(self, watermark: float | None) -> float | None:
        return None if watermark is None else watermark - self.config.overlap_days

    def requested(self, target: MastTarget, watermark: float | None) -> dict[str, Any]:
        since = self._since(watermark)
        configured = self.config.query.t_min
        lo, hi = configured if configured is not None else (None, None)
        if since is not None:
            lo = since if lo is None else max(lo, since)
        return {"t_min_from": lo, "t_min_to": hi, "incremental": since is not None}

    def filters(self, since: float | None = None) -> list[dict[str, Any]]:
        """MAST filters from the query; ``since`` (MJD) keeps only observations starting later."""
        query = self.config.query
        built: list[dict[str, Any]] = []
        t_min = query.t_min
        if since is not None:
            t_min = (max(t_min[0], since), t_min[1]) if t_min is not None else (since, 1e6)
        if query.collections:
            built.append(discrete("obs_collection", query.collections))
        if query.instruments:
            built.append(discrete("instrument_name", query.instruments))
        if query.dataproduct_types:
            built.append(discrete("dataproduct_type", query.dataproduct_types))
        if t_min is not None:
            built.append(value_range("t_min", *t_min))
        if query.t_obs_release is not None:
            built.append(value_range("t_obs_release", *query.t_obs_release))
        return built + [dict(f) for f in query.filters]

    def request(self, target: MastTarget, since: float | None = None) -> tuple[str, dict[str, Any]]:
        """The MAST service and params for a target (a watermark turns a cone into a filtered query)."""
        filters = self.filters(since)
        cone = target.cone
        if cone is not None and not filters:
            return "Mast.Caom.Cone", {"ra": cone.ra, "dec": cone.dec, "radius": cone.radius}
        params: dict[str, Any] = {"columns": "*", "filters": filters}
        if cone is not None:
            params["position"] = position(cone.ra, cone.dec, cone.radius)
            return "Mast.Caom.Filtered.Position", params
        return "Mast.Caom.Filtered", params

    async def fetch(self, target: MastTarget, ctx: FetchContext) -> None:
        mast_settings = self.config
        client = MastClient(
            ctx.session,
            mast_settings.base_url,
            pagesize=mast_settings.pagesize,
            poll_budget_s=mast_settings.poll_budget_s,
            max_rows=mast_settings.max_rows,
        )
        since = self._since(ctx.watermark)
        service, params = self.request(target, since)
        label = target.label
        stats = MastQueryStats()
        url = f"{mast_settings.base_url}/api/v0/invoke"
        count = skipped = 0
        async for page in client.pages(service, params, target=label, stats=stats):
            provenance = Provenance(archive="mast", url=url, service=service, sample=self.sample)
            fetched_at = utcnow()
            for row in page.rows:
                try:
                    record = mast_record(row, provenance, fetched_at, label)
                except ArchiveResponseError:
                    skipped += 1  # one bad row must not cost the rest of the page
                    continue
                await ctx.emit(record)
                count += 1
        if stats.shortfall:
            self.notes.warnings.append(f"{label}: {stats.shortfall}")
        if skipped:
            self.notes.warnings.append(f"{label}: {skipped} MAST rows without obsid were skipped")
        log.info("fetched", source=self.name, target=label, records=count, pages=stats.pages_fetched)


def _num(row: dict[str, Any], key: str) -> float | None:
    value = row.get(key)
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(row: dict[str, Any], key: str) -> str | None:
    value = row.get(key)
    return None if value is None or value == "" else str(value)


def mast_record(row: dict[str, Any], provenance: Provenance, fetched_at: Any, label: str) -> MastRecord:
    """A CAOM row as a MastRecord; a row without obsid is an archive error (it cannot be deduplicated)."""
    obsid = _text(row, "obsid")
    if obsid is None:
        raise ArchiveResponseError("MAST row without obsid", target=label)
    return MastRecord(
        object_id=_text(row, "target_name") or "",
        obsid=obsid,
        obs_id=_text(row, "obs_id"),
        obs_collection=_text(row, "obs_collection"),
        instrument_name=_text(row, "instrument_name"),
        filters=_text(row, "filters"),
        dataproduct_type=_text(row, "dataproduct_type"),
        ra=_num(row, "s_ra"),
        dec=_num(row, "s_dec"),
        mjd=_num(row, "t_min"),
        t_max=_num(row, "t_max"),
        t_exptime=_num(row, "t_exptime"),
        em_min=_num(row, "em_min"),
        em_max=_num(row, "em_max"),
        proposal_id=_text(row, "proposal_id"),
        data_url=_text(row, "dataURL"),
        s_region=_text(row, "s_region"),
        t_obs_release=_num(row, "t_obs_release"),
        fetched_at=fetched_at,
        provenance=provenance,
    )
