"""The ZTF record: one epoch of a ZTF light curve, from IRSA's light-curve API or a data release.

Times: ``mjd`` is UTC, topocentric (observatory frame); ``hjd`` is a heliocentric full JD; ``hmjd``
is the data release's heliocentric MJD. An API record has ``mjd`` (and ``hjd``), a data-release
record has ``hmjd``: the release stores no ``mjd`` and its float32 ``hmjd`` cannot be matched to one
exactly (docs/sources.md, "ZTF routes"), so neither is made up from the other.
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
    mjd: float | None = Field(
        description="Modified Julian Date of the epoch: UTC, topocentric (observatory frame). "
        "From the API route; null from the data-release (hats) route, which stores `hmjd` instead.",
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
    route: Literal["api", "hats"] = Field(
        default="api",
        description="How the epoch was harvested: `api`, IRSA's light-curve API (one cone per request); "
        "`hats`, the data release's HATS Parquet catalog on S3.",
    )
    data_release: str | None = Field(
        default=None,
        description="The data release the epoch comes from (`ztf_dr24`): the catalog's release for "
        "the hats route; the configured `collection` for the API route, null when IRSA's latest.",
    )
    hmjd: float | None = Field(
        default=None,
        description="Heliocentric Modified Julian Date (HJD - 2400000.5) as the data release stores it "
        "(float32: about 5.6 min of resolution), exactly. Hats route only; null from the API.",
        json_schema_extra=unit("d"),
    )
    hmjd_seq: int | None = Field(
        default=None,
        description="0 for a light curve's first epoch at this `hmjd`, 1 for a second one, …: two "
        "exposures less than `hmjd`'s resolution apart share an `hmjd` (high-cadence fields). "
        "With `hmjd`, it identifies a release epoch. Hats route only; null from the API.",
    )
    objra: float | None = Field(
        default=None,
        description="Right ascension of the ZTF object (the release's mean position, ICRS; `ra` is a "
        "detection's). Hats route only; null from the API.",
        json_schema_extra=unit("deg"),
    )
    objdec: float | None = Field(
        default=None,
        description="Declination of the ZTF object (ICRS). Hats route only; null from the API.",
        json_schema_extra=unit("deg"),
    )

    key_fields: ClassVar[tuple[str, ...]] = ("object_id", "mjd")
    key_alternates: ClassVar[dict[str, tuple[str, ...]]] = {"mjd": ("hmjd", "hmjd_seq")}
