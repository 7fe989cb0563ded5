"""The MAST record: one CAOM observation's metadata.

Times: ``mjd``/``t_max``/``t_obs_release`` are MJD as MAST serves them (CAOM t_min, t_max).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from harvester.records import BaseRecord, unit

__all__ = ["MastRecord"]


class MastRecord(BaseRecord):
    """One CAOM observation's metadata from MAST; nulls stay null."""

    source: Literal["mast"] = Field(default="mast", description="Always 'mast'.")
    object_id: str = Field(description="CAOM target_name.")
    obsid: str = Field(description="CAOM obsid (numeric product-group id) as a string.")
    obs_id: str | None = Field(description="Mission observation id.")
    obs_collection: str | None = Field(description="Collection (HST, JWST, TESS, GALEX, ...).")
    instrument_name: str | None = Field(description="Instrument.")
    filters: str | None = Field(description="Filters/gratings used.")
    dataproduct_type: str | None = Field(description="image, spectrum, timeseries, cube, ...")
    ra: float | None = Field(description="CAOM s_ra (ICRS).", json_schema_extra=unit("deg"))
    dec: float | None = Field(description="CAOM s_dec (ICRS).", json_schema_extra=unit("deg"))
    mjd: float | None = Field(description="CAOM t_min: start time as MJD.", json_schema_extra=unit("d"))
    t_max: float | None = Field(description="CAOM t_max: end time as MJD.", json_schema_extra=unit("d"))
    t_exptime: float | None = Field(description="Exposure time.", json_schema_extra=unit("s"))
    em_min: float | None = Field(description="Minimum wavelength.", json_schema_extra=unit("nm"))
    em_max: float | None = Field(description="Maximum wavelength.", json_schema_extra=unit("nm"))
    proposal_id: str | None = Field(description="Proposal id.")
    data_url: str | None = Field(description="CAOM dataURL.")
    s_region: str | None = Field(description="STC-S footprint.")
    t_obs_release: float | None = Field(
        description="Public release date as MJD.", json_schema_extra=unit("d")
    )

    key_fields: ClassVar[tuple[str, ...]] = ("obsid",)
