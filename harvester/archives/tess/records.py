"""The TESS record: one SPOC light curve.

Times: ``time`` is BTJD = BJD_TDB − 2457000 (barycentric, TDB); ``mjd`` = BTJD + 56999.5 is a
barycentric TDB MJD, *not* UTC.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from harvester.records import BaseRecord, unit

__all__ = ["TessRecord"]


class TessRecord(BaseRecord):
    """One TESS light curve (a SPOC `_lc.fits` product), cleaned as stated in its fields."""

    source: Literal["tess"] = Field(default="tess", description="Always 'tess'.")
    object_id: str = Field(description="TIC id as a decimal string, never zero-padded.")
    tic_id: int = Field(description="TESS Input Catalog id (TICID header card).")
    sector: int | None = Field(description="TESS sector (primary header SECTOR).")
    camera: int | None = Field(description="Camera 1..4 (primary header CAMERA).")
    ccd: int | None = Field(description="CCD 1..4 (primary header CCD).")
    obs_id: str = Field(description="MAST obs_id: the file stem without `_lc.fits`.")
    obsid: str | None = Field(description="MAST CAOM obsid (numeric product-group id) as a string.")
    product: str = Field(description="Product file name.")
    ra: float | None = Field(
        description="RA_OBJ from the primary header (ICRS).", json_schema_extra=unit("deg")
    )
    dec: float | None = Field(
        description="DEC_OBJ from the primary header (ICRS).", json_schema_extra=unit("deg")
    )
    tess_mag: float | None = Field(description="TESS magnitude (TESSMAG).", json_schema_extra=unit("mag"))
    cadence_s: float | None = Field(description="Cadence (TIMEDEL × 86400).", json_schema_extra=unit("s"))
    flux_column: str = Field(description="The flux column read (PDCSAP_FLUX or SAP_FLUX).")
    quality_bitmask: int = Field(
        description="Cadences whose QUALITY shares a bit with this mask were dropped."
    )
    time_system: Literal["BTJD"] = Field(default="BTJD", description="BTJD = BJD_TDB − 2457000.")
    time: list[float] = Field(
        description="Mid-cadence times, BTJD (barycentric, TDB).", json_schema_extra=unit("d")
    )
    flux: list[float] = Field(description="Flux from `flux_column`.", json_schema_extra=unit("e-/s"))
    flux_err: list[float | None] = Field(
        description="Flux uncertainty (`<flux_column>_ERR`); null where NaN.", json_schema_extra=unit("e-/s")
    )
    n_points_raw: int = Field(description="Cadences in the file before cleaning.")
    n_points: int = Field(description="Cadences in this record (length of time/flux/flux_err).")
    reduced: str | None = Field(
        default=None,
        description="How the cadences were reduced to lightcurve.max_points, or null if they were not.",
    )
    mjd: float | None = Field(
        description="First kept cadence as BTJD + 56999.5: a barycentric TDB MJD, not UTC.",
        json_schema_extra=unit("d"),
    )

    key_fields: ClassVar[tuple[str, ...]] = ("obs_id",)
