"""Record models: the documented output contract, one pydantic model per source.

Every record is validated before it is written. Each field carries a description and, where it
has one, a unit (``json_schema_extra={"unit": ...}``); the generated README of every output
folder and ``docs/schema.md`` are built from these models, so they cannot drift.

Time systems differ between archives and are stated per field:

- ZTF ``mjd`` is UTC, topocentric (observatory frame); ``hjd`` is a heliocentric full JD.
- TESS ``time`` is BTJD = BJD_TDB − 2457000 (barycentric, TDB); ``mjd`` = BTJD + 56999.5 is a
  barycentric TDB MJD, *not* UTC.
- MAST ``mjd``/``t_max``/``t_obs_release`` are MJD as MAST serves them (CAOM t_min, t_max).

Each record has a *dedup key* (:meth:`BaseRecord.dedup_key`) from which its stable file name
is derived (:func:`stable_id`).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

__all__ = [
    "RECORD_MODELS",
    "BaseRecord",
    "MastRecord",
    "Provenance",
    "Record",
    "TessRecord",
    "ZtfRecord",
    "key_digest",
    "key_part",
    "key_text",
    "stable_id",
]


def _unit(unit: str) -> dict[str, Any]:
    return {"unit": unit}


class Provenance(BaseModel):
    """Where a record came from. Never carries a secret: tokens travel in headers only."""

    model_config = ConfigDict(extra="forbid")

    archive: Literal["irsa", "mast"] = Field(description="The archive that served the data.")
    url: str = Field(description="The request URL (query included) that returned this record.")
    service: str | None = Field(default=None, description="MAST service name, for MAST records.")
    sample: bool = Field(
        default=False,
        description="True when the record came from harvester's built-in sample archive "
        "(--offline, or the fallback_to_sample path), not from the real archive.",
    )


class BaseRecord(BaseModel):
    """Fields shared by every record."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="Which harvester source produced the record.")
    object_id: str = Field(description="The archive's identifier of the object, as a decimal string or name.")
    fetched_at: datetime = Field(
        description="When the harvester received the data: UTC, ISO 8601 with a +00:00 offset "
        "(2026-01-02T03:04:05.123456+00:00), the same form in record files, jsonl lines, "
        "dry-run summaries and manifests."
    )
    provenance: Provenance = Field(description="Where the record came from.")

    key_fields: ClassVar[tuple[str, ...]] = ("object_id",)

    @field_validator("fetched_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        """Any offset is converted to UTC; a naive time is taken as UTC (the field's time system)."""
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @field_serializer("fetched_at", when_used="json")
    def _iso_utc(self, value: datetime) -> str:
        # One form everywhere: JSON-mode dumps (dry-run summaries) print what orjson writes for the
        # record files and jsonl lines, datetime.isoformat(): "+00:00", never pydantic's "Z".
        return value.astimezone(UTC).isoformat()

    def dedup_key(self) -> tuple[str, ...]:
        """The fields that identify this record within its source, as strings."""
        return tuple(key_part(getattr(self, name)) for name in self.key_fields)


def key_digest(key: tuple[str, ...]) -> bytes:
    """A 128-bit digest of a dedup key, for sets of seen keys (~100 bytes per key with its set slot,
    against ~220 for the tuple of strings); a collision needs ~10^19 keys before it is likely."""
    return hashlib.blake2b("\x1f".join(key).encode(), digest_size=16).digest()


def key_text(key: tuple[str, ...]) -> str:
    """A dedup key as one text value (unit separator between parts), as the stores index it."""
    return "\x1f".join(key)


def key_part(value: object) -> str:
    """One dedup-key component as text; floats use repr, which round-trips exactly through JSON."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


class ZtfRecord(BaseRecord):
    """One ZTF epoch (detection) from the IRSA light-curve API; NaN cells become null."""

    source: Literal["ztf"] = Field(default="ztf", description="Always 'ztf'.")
    object_id: str = Field(
        description="ZTF object id (IRSA `oid`, 15 digits) as a decimal string. One oid "
        "is one field/CCD-quadrant/filter, so one star has several."
    )
    mjd: float = Field(
        description="Modified Julian Date of the epoch: UTC, topocentric (observatory frame).",
        json_schema_extra=_unit("d"),
    )
    filter: Literal["zg", "zr", "zi"] = Field(description="ZTF filter code (IRSA `filtercode`).")
    mag: float | None = Field(
        description="PSF-fit magnitude (AB, calibrated).", json_schema_extra=_unit("mag")
    )
    magerr: float | None = Field(description="Uncertainty of `mag`.", json_schema_extra=_unit("mag"))
    ra: float | None = Field(
        description="Right ascension of this epoch's detection (ICRS).", json_schema_extra=_unit("deg")
    )
    dec: float | None = Field(
        description="Declination of this epoch's detection (ICRS).", json_schema_extra=_unit("deg")
    )
    expid: int | None = Field(description="Exposure id.")
    hjd: float | None = Field(
        description="Heliocentric Julian Date (a full JD, not reduced).", json_schema_extra=_unit("d")
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
        description="Limiting magnitude of the epoch.", json_schema_extra=_unit("mag")
    )
    magzp: float | None = Field(description="Photometric zero point.", json_schema_extra=_unit("mag"))
    magzprms: float | None = Field(description="RMS of the zero point.", json_schema_extra=_unit("mag"))
    clrcoeff: float | None = Field(description="Colour coefficient of the calibration.")
    clrcounc: float | None = Field(description="Uncertainty of `clrcoeff`.")
    exptime: float | None = Field(description="Exposure time.", json_schema_extra=_unit("s"))
    airmass: float | None = Field(description="Airmass.")
    programid: int | None = Field(description="1 = public MSIP, 2 = partnership, 3 = Caltech.")

    key_fields: ClassVar[tuple[str, ...]] = ("object_id", "mjd")


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
        description="RA_OBJ from the primary header (ICRS).", json_schema_extra=_unit("deg")
    )
    dec: float | None = Field(
        description="DEC_OBJ from the primary header (ICRS).", json_schema_extra=_unit("deg")
    )
    tess_mag: float | None = Field(description="TESS magnitude (TESSMAG).", json_schema_extra=_unit("mag"))
    cadence_s: float | None = Field(description="Cadence (TIMEDEL × 86400).", json_schema_extra=_unit("s"))
    flux_column: str = Field(description="The flux column read (PDCSAP_FLUX or SAP_FLUX).")
    quality_bitmask: int = Field(
        description="Cadences whose QUALITY shares a bit with this mask were dropped."
    )
    time_system: Literal["BTJD"] = Field(default="BTJD", description="BTJD = BJD_TDB − 2457000.")
    time: list[float] = Field(
        description="Mid-cadence times, BTJD (barycentric, TDB).", json_schema_extra=_unit("d")
    )
    flux: list[float] = Field(description="Flux from `flux_column`.", json_schema_extra=_unit("e-/s"))
    flux_err: list[float | None] = Field(
        description="Flux uncertainty (`<flux_column>_ERR`); null where NaN.", json_schema_extra=_unit("e-/s")
    )
    n_points_raw: int = Field(description="Cadences in the file before cleaning.")
    n_points: int = Field(description="Cadences in this record (length of time/flux/flux_err).")
    reduced: str | None = Field(
        default=None,
        description="How the cadences were reduced to lightcurve.max_points, or null if they were not.",
    )
    mjd: float | None = Field(
        description="First kept cadence as BTJD + 56999.5: a barycentric TDB MJD, not UTC.",
        json_schema_extra=_unit("d"),
    )

    key_fields: ClassVar[tuple[str, ...]] = ("obs_id",)


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
    ra: float | None = Field(description="CAOM s_ra (ICRS).", json_schema_extra=_unit("deg"))
    dec: float | None = Field(description="CAOM s_dec (ICRS).", json_schema_extra=_unit("deg"))
    mjd: float | None = Field(description="CAOM t_min: start time as MJD.", json_schema_extra=_unit("d"))
    t_max: float | None = Field(description="CAOM t_max: end time as MJD.", json_schema_extra=_unit("d"))
    t_exptime: float | None = Field(description="Exposure time.", json_schema_extra=_unit("s"))
    em_min: float | None = Field(description="Minimum wavelength.", json_schema_extra=_unit("nm"))
    em_max: float | None = Field(description="Maximum wavelength.", json_schema_extra=_unit("nm"))
    proposal_id: str | None = Field(description="Proposal id.")
    data_url: str | None = Field(description="CAOM dataURL.")
    s_region: str | None = Field(description="STC-S footprint.")
    t_obs_release: float | None = Field(
        description="Public release date as MJD.", json_schema_extra=_unit("d")
    )

    key_fields: ClassVar[tuple[str, ...]] = ("obsid",)


Record = ZtfRecord | TessRecord | MastRecord
RECORD_MODELS: dict[str, type[BaseRecord]] = {"ztf": ZtfRecord, "tess": TessRecord, "mast": MastRecord}

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_READABLE = 100


def stable_id(key: tuple[str, ...]) -> str:
    """A file-name-safe, stable id for a dedup key.

    Readable when the key is plain (``675103300002930_58202.3531597``); when a key part holds a
    character that is unsafe in a file name (``/``, ``..``, NUL, spaces) or the key is very long,
    the readable part is sanitised and truncated and a hash of the exact key is appended, so two
    different keys never share a name and no name can leave its folder.
    """
    raw = "_".join(key)
    readable = _SAFE.sub("-", raw).strip(".-") or "x"
    if readable == raw and len(raw) <= _MAX_READABLE and ".." not in raw:
        return raw
    digest = hashlib.sha256("\x1f".join(key).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{readable[:_MAX_READABLE].replace('..', '-')}-{digest}"
