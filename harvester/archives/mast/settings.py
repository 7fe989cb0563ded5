"""``data_sources.mast``: which CAOM observations to list from MAST."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from harvester.archives.common import (
    ArchiveSettings,
    HttpUrl,
    MastConeField,
    Model,
    RateLimit,
    check_range,
    mast_rate,
)

__all__ = ["MastQuery", "MastSettings"]


class MastQuery(Model):
    """Which CAOM observations to list (``data_sources.mast.query``)."""

    collections: list[str] = Field(
        default_factory=list, description="obs_collection values (HST, JWST, ...)."
    )
    instruments: list[str] = Field(default_factory=list, description="instrument_name values.")
    dataproduct_types: list[str] = Field(default_factory=list, description="dataproduct_type values.")
    t_min: tuple[float, float] | None = Field(default=None, description="Range of t_min, MJD.")
    t_obs_release: tuple[float, float] | None = Field(
        default=None, description="Range of release dates, MJD."
    )
    filters: list[dict[str, Any]] = Field(default_factory=list, description="Extra MAST filters, as-is.")
    cone_search: MastConeField | None = Field(
        default=None, description="One cone (Mast.Caom.Cone); radius in degrees, at most 10."
    )
    targets: list[MastConeField] = Field(default_factory=list, description="More cones, inline.")
    targets_file: Path | None = Field(default=None, description="CSV of cones: name, ra, dec[, radius].")

    @field_validator("t_min", "t_obs_release")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return check_range(value)

    def names_targets(self) -> bool:
        """Whether this query names a cone or a constraint (the MAST source refuses to run without)."""
        return bool(
            self.cone_search is not None
            or self.targets
            or self.targets_file is not None
            or self.collections
            or self.instruments
            or self.dataproduct_types
            or self.t_min is not None
            or self.t_obs_release is not None
            or self.filters
        )


class MastSettings(ArchiveSettings):
    """``data_sources.mast``."""

    base_url: HttpUrl = Field(default="https://mast.stsci.edu", description="MAST server.")
    query: MastQuery = Field(default_factory=MastQuery)
    pagesize: int = Field(default=50000, ge=1, le=500000, description="MAST rows per page.")
    poll_budget_s: float = Field(default=600.0, gt=0, description="How long to poll EXECUTING.")
    max_rows: int = Field(
        default=500000, ge=1, description="MAST's result ceiling; larger results are reported."
    )
    rate_limit: RateLimit = Field(default_factory=mast_rate, description="mast.stsci.edu budget.")
    overlap_days: float = Field(
        default=1.0,
        ge=0,
        description="Incremental runs ask MAST for t_min after the last harvested t_min minus this overlap.",
    )

    def names_targets(self) -> bool:
        return self.query.names_targets()
