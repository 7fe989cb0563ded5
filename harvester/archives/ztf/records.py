"""The ZTF record: one epoch of the IRSA light-curve API.

Times: ``mjd`` is UTC, topocentric (observatory frame); ``hjd`` is a heliocentric full JD.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from harvester.records import BaseRecord, unit

__all__ = ["ZtfRecord"]


class ZtfRecord(BaseRecord):
    """One ZTF epoch (detection) from the IRSA light-curve API; NaN cells become null."""

    source: Literal["ztf"] = Field(default="ztf", description="Always 'ztf'.")
    object_id: str = Field(
        description="ZTF object id (IRSA `oid`, 15 digits) as a decimal string. One oid "
        "is one field/CCD-quadrant/filter, so one star has several."
    )
    mjd: float = Field(
        description="Modified Julian Date of the epoch: UTC, topocentric (observatory frame).",
        json_schema_extra=unit("d"),
    )
    filter: Literal["zg", "zr", "zi"] = Field(description="ZTF filter code (IRSA `filtercode`).")
    mag: float | None = Field(
        description="PSF-fit magnitude (AB, calibrated).", json_schema_extra=unit("mag")
    )
    magerr: float | None = Field(description="Uncertainty of `mag`.", json_schema_extra=unit("mag"))
    ra: float | None = Field(
        description="Right ascension of this epoch's detection (ICRS).", json_schema_extra=unit("deg")
    )
    dec: float | None = Field(
        description="Declination of this epoch's detection (ICRS).", json_schema_extra=unit("deg")
    )
    expid: int | None = Field(description="Exposure id.")
    hjd: float | None = Field(
        description="Heliocentric Julian Date (a full JD, not reduced).", json_schema_extra=unit("d")
    )
    catflags: int | None = Field(
        description="Photometric quality bitmask; 0 is good, 32768 (bit 15) is the flag most often masked."
    )
    chi: float | None = Field(description="PSF-fit chi.")
    sharp: float | None = Field(description="PSF-fit sharpness.")
    filefracday: int | None = Field(description="Observation date and fraction of day, YYYYMMDDdddddd.")
    field: int | None = Field(description="ZTF field id.")
    ccdid: int | None = Field(description="CCD id (1..16).")
    qid: int | None = Field(description="CCD quadrant id.")
    limitmag: float | None = Field(
        description="Limiting magnitude of the epoch.", json_schema_extra=unit("mag")
    )
    magzp: float | None = Field(description="Photometric zero point.", json_schema_extra=unit("mag"))
    magzprms: float | None = Field(description="RMS of the zero point.", json_schema_extra=unit("mag"))
    clrcoeff: float | None = Field(description="Colour coefficient of the calibration.")
    clrcounc: float | None = Field(description="Uncertainty of `clrcoeff`.")
    exptime: float | None = Field(description="Exposure time.", json_schema_extra=unit("s"))
    airmass: float | None = Field(description="Airmass.")
    programid: int | None = Field(description="1 = public MSIP, 2 = partnership, 3 = Caltech.")

    key_fields: ClassVar[tuple[str, ...]] = ("object_id", "mjd")
