"""``data_sources.ztf``: the IRSA ZTF light-curve API query and its politeness budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from harvester.archives.common import (
    ArchiveSettings,
    ConeSearch,
    HttpUrl,
    Model,
    RateLimit,
    S3Access,
    ValidatedAs,
    check_range,
)

__all__ = ["DR24_LC_HATS", "MAX_IRSA_RADIUS_DEG", "IrsaCone", "IrsaSettings", "ZtfHats", "ZtfSettings"]

#: IRSA's ZTF DR24 light curves as a HATS collection (upstream-apis.md §4.1), anonymous.
DR24_LC_HATS = "s3://ipac-irsa-ztf/ztf/enhanced/dr24/lc/hats"

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


def _s3_url(value: str) -> str:
    from harvester.io.s3 import split_s3_url

    bucket, prefix = split_s3_url(value)
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


class ZtfHats(S3Access):
    """The ZTF data release as a HATS catalog on S3 (``data_sources.ztf.hats``): the hats route."""

    catalog_url: Annotated[str, AfterValidator(_s3_url)] = Field(
        default=DR24_LC_HATS,
        description="The light-curve HATS collection (a folder with collection.properties) or catalog "
        "(a folder with hats.properties), as s3://bucket/prefix. Default: IRSA's DR24.",
    )
    data_release: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The records' `data_release`; unset: read from the catalog's name (ztf_dr24_lc-hats "
        "gives ztf_dr24).",
    )
    auto_min_targets: int = Field(
        default=50,
        ge=1,
        description="`route: auto` takes the hats route for a first harvest of at least this many "
        "cones (at IRSA's 2 requests/s, 50 cones are 25 s of API time; the catalog costs a few reads).",
    )
    max_read_bytes: int = Field(
        default=256 * 1024**2,
        gt=0,
        description="Bytes of a leaf fetched and decoded at once (row groups are read in pieces within "
        "it; a single row group larger fails its pixel). At most 4 leaves are read at once.",
    )
    rate_limit: RateLimit = Field(
        default_factory=lambda: RateLimit(requests_per_second=100, max_concurrency=32),
        description="The bucket's budget: 100 requests/s, 32 at once (S3 serves 5,500 GETs/s per "
        "prefix; a hats harvest is mostly small ranged reads, many leaves at once).",
    )


class ZtfSettings(ArchiveSettings):
    """``data_sources.ztf``."""

    route: Literal["api", "hats", "auto"] = Field(
        default="api",
        description="Where light curves come from: `api`, IRSA's light-curve API (exact `mjd`, every "
        "column, incremental); `hats`, the data release's HATS Parquet on S3 (bulk, `hmjd`); "
        "`auto`, the route the output folder already holds, else hats for at least "
        "`hats.auto_min_targets` cones and the API below (docs/sources.md).",
    )
    irsa: IrsaSettings = Field(default_factory=IrsaSettings)
    hats: ZtfHats = Field(default_factory=ZtfHats, description="The hats route's catalog and budget.")
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
