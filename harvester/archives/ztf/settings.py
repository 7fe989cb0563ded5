"""``data_sources.ztf``: the IRSA ZTF light-curve API query and its politeness budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from harvester.archives.common import (
    ArchiveSettings,
    ConeSearch,
    HttpUrl,
    Model,
    RateLimit,
    ValidatedAs,
    check_range,
)

__all__ = ["MAX_IRSA_RADIUS_DEG", "IrsaCone", "IrsaSettings", "ZtfSettings"]

# IRSA light-curve API: "the valid range of RADIUS is limited to (0, 0.1667] degrees"
# (../shared/docs/upstream-apis.md, section 1.2, CIRCLE).
MAX_IRSA_RADIUS_DEG = 0.1667


class IrsaCone(ConeSearch):
    """A cone for the IRSA ZTF light-curve API (``POS=CIRCLE ra dec radius``)."""

    radius: float = Field(
        gt=0.0,
        le=MAX_IRSA_RADIUS_DEG,
        description="Radius in degrees, in (0, 0.1667]: IRSA's limit for the light-curve API "
        "(upstream-apis.md, section 1.2).",
    )


# Typed ConeSearch for readers, validated as IrsaCone (a bad radius is reported at its own key).
IrsaConeField = Annotated[ConeSearch, ValidatedAs(IrsaCone)]


class IrsaSettings(Model):
    """The IRSA ZTF light-curve API query (``data_sources.ztf.irsa``)."""

    base_url: HttpUrl = Field(
        default="https://irsa.ipac.caltech.edu/cgi-bin/ZTF/nph_light_curves",
        description="Light-curve API endpoint.",
    )
    filters: list[Literal["zg", "zr", "zi"]] = Field(
        default_factory=list, description="ZTF filters to keep (zg, zr, zi); empty = all bands."
    )
    cone_search: IrsaConeField | None = Field(
        default=None, description="One cone-search target (radius at most 0.1667°, IRSA's limit)."
    )
    targets: list[IrsaConeField] = Field(
        default_factory=list, description="More cone-search targets, inline."
    )
    targets_file: Path | None = Field(
        default=None, description="CSV of targets with columns name, ra, dec[, radius]."
    )
    default_radius: float = Field(
        default=0.0014,
        gt=0.0,
        le=MAX_IRSA_RADIUS_DEG,
        description="Radius (deg) for targets-file rows without one (≈5 arcsec).",
    )
    mjd_range: tuple[float, float] | None = Field(
        default=None, description="Inclusive MJD range [start, end] (IRSA TIME)."
    )
    bad_catflags_mask: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="IRSA BAD_CATFLAGS_MASK: drop epochs with any of these catflags "
        "bits. 0 (IRSA's default) keeps all; 32768 is the common choice.",
    )
    collection: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_]+$",
        description="Data release, e.g. ztf_dr23; unset = IRSA's latest.",
    )
    max_response_bytes: int = Field(default=512 * 1024**2, gt=0, description="Cap on one response body.")

    @field_validator("mjd_range")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return check_range(value)

    def names_targets(self) -> bool:
        """Whether these settings name any target (the ZTF source refuses to run without one)."""
        return self.cone_search is not None or bool(self.targets) or self.targets_file is not None


class ZtfSettings(ArchiveSettings):
    """``data_sources.ztf``."""

    irsa: IrsaSettings = Field(default_factory=IrsaSettings)
    rate_limit: RateLimit = Field(
        default_factory=lambda: RateLimit(requests_per_second=2, max_concurrency=4),
        description="IRSA budget (2 req/s, 4 at once by default).",
    )
    overlap_days: float = Field(
        default=1.0,
        ge=0,
        description="Incremental runs ask IRSA for TIME after the last harvested mjd minus this "
        "overlap (late-arriving epochs).",
    )

    def names_targets(self) -> bool:
        return self.irsa.names_targets()
