"""``data_sources.tess``: which TESS light curves to find on MAST and how to clean them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from harvester.archives.common import (
    MAX_MAST_RADIUS_DEG,
    ArchiveSettings,
    Dec,
    HttpUrl,
    Model,
    Ra,
    RateLimit,
    S3Access,
    check_range,
    mast_rate,
    s3_rate,
)

__all__ = ["TessCloud", "TessLightcurve", "TessQuery", "TessSettings", "s3_rate"]


class TessLightcurve(Model):
    """How a TESS light curve is cleaned (``data_sources.tess.lightcurve``)."""

    flux_column: Literal["PDCSAP_FLUX", "SAP_FLUX"] = Field(
        default="PDCSAP_FLUX", description="Flux column to read."
    )
    quality_bitmask: int = Field(
        default=175,
        ge=0,
        le=2**31 - 1,
        description="Drop cadences whose QUALITY shares a bit with this mask. "
        "175 is lightkurve's 'default' mask; 0 keeps all.",
    )
    max_points: int | None = Field(
        default=None,
        ge=1,
        description="Reduce to at most this many cadences (binned means); unset keeps every cleaned cadence.",
    )


class TessCloud(S3Access):
    """Where TESS light curves are read from MAST's public S3 copy (``data_sources.tess.cloud``)."""

    enabled: bool = Field(
        default=True,
        description="Download SPOC light curves from the public S3 bucket when they have a cloud copy "
        "(MAST over HTTPS otherwise, and whenever the S3 copy fails).",
    )
    bucket: str = Field(default="stpubdata", description="Bucket holding MAST's public TESS data.")
    rate_limit: RateLimit = Field(default_factory=s3_rate, description="The S3 host's budget.")

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        from harvester.io.s3 import split_s3_url

        try:  # one rule for a bucket's name, the one s3:// URLs are checked by
            bucket, prefix = split_s3_url(f"s3://{value}")
        except ValueError:
            bucket, prefix = "", ""
        if bucket != value or prefix:
            raise ValueError(f"must be an S3 bucket name (3-63 of a-z, 0-9, '.', '-'), got {value!r}")
        return value


class TessQuery(Model):
    """Which TESS light curves to find (``data_sources.tess.query``)."""

    filters: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Extra MAST filters passed through as-is, e.g. {paramName: ..., values: [...]}.",
    )
    target_name: str | None = Field(default=None, description="One TIC id (digits, not zero-padded).")
    tic_ids: list[int] = Field(default_factory=list, description="TIC ids.")
    tic_batch_size: int = Field(
        default=100,
        ge=1,
        le=500,
        description="TIC ids named in one MAST query (a batch is one target in reports).",
    )
    targets_file: Path | None = Field(default=None, description="CSV with a tic_id column.")
    sectors: list[int] = Field(default_factory=list, description="Sectors to keep (MAST sequence_number).")
    t_min: tuple[float, float] | None = Field(default=None, description="Range of observation start, MJD.")
    t_max: tuple[float, float] | None = Field(default=None, description="Range of observation end, MJD.")
    ra: Ra | None = Field(default=None, description="Cone centre, ICRS degrees; with dec and radius.")
    dec: Dec | None = Field(default=None, description="Cone centre, ICRS degrees; with ra and radius.")
    radius: float | None = Field(
        default=None,
        gt=0,
        le=MAX_MAST_RADIUS_DEG,
        description="Cone radius, degrees, in (0, 10] (harvester's guard; MAST publishes no limit).",
    )

    @field_validator("t_min", "t_max")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return check_range(value)

    @field_validator("tic_ids", "sectors")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        bad = [v for v in value if v < 1]
        if bad:
            raise ValueError(f"must be positive integers, got {bad[:3]}")
        return value

    @field_validator("target_name")
    @classmethod
    def _tic(cls, value: str | None) -> str | None:
        if value is not None:
            value = value.strip()
            if value.upper().startswith("TIC"):
                value = value[3:].strip()
            if not value.isdigit():
                raise ValueError(f"must be a TIC id (digits), got {value!r}")
            value = str(int(value))  # never zero-padded (lightkurve#1073)
        return value

    @model_validator(mode="after")
    def _position(self) -> TessQuery:
        given = [v is not None for v in (self.ra, self.dec, self.radius)]
        if any(given) and not all(given):
            raise ValueError("ra, dec and radius must be given together")
        return self

    def names_targets(self) -> bool:
        """Whether this query names any target (the TESS source refuses to run without one)."""
        return bool(
            self.target_name
            or self.tic_ids
            or self.targets_file is not None
            or self.ra is not None
            or self.filters
            or self.sectors
        )


class TessSettings(ArchiveSettings):
    """``data_sources.tess``."""

    base_url: HttpUrl = Field(default="https://mast.stsci.edu", description="MAST server.")
    query: TessQuery = Field(default_factory=TessQuery)
    cadence: Literal["2min", "20s"] = Field(
        default="2min", description="2-minute `lc` or 20-second `fast-lc`."
    )
    lightcurve: TessLightcurve = Field(default_factory=TessLightcurve)
    max_download_bytes: int = Field(default=64 * 1024**2, gt=0, description="Cap on one FITS download.")
    products_batch_size: int = Field(default=500, ge=1, le=500, description="obsids per Products request.")
    pagesize: int = Field(default=50000, ge=1, le=500000, description="MAST rows per page.")
    poll_budget_s: float = Field(default=600.0, gt=0, description="How long to poll EXECUTING.")
    decode_workers: int = Field(default=2, ge=1, le=64, description="Threads decoding FITS.")
    rate_limit: RateLimit = Field(default_factory=mast_rate, description="mast.stsci.edu budget.")
    cloud: TessCloud = Field(default_factory=TessCloud, description="MAST's public S3 copy of TESS files.")

    def names_targets(self) -> bool:
        return self.query.names_targets()
