"""``data_sources.ztf``: the IRSA ZTF light-curve API query and its politeness budget."""

from __future__ import annotations

import csv
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
from harvester.errors import ConfigError

__all__ = [
    "DR24_LC_HATS",
    "MAX_IRSA_RADIUS_DEG",
    "IrsaCone",
    "IrsaSettings",
    "ObjectId",
    "ZtfHats",
    "ZtfSettings",
    "read_object_ids_file",
]

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

#: a ZTF object id: the API's ``oid``, the release's ``objectid`` (int64 there), 15 or 16 digits
ObjectId = Annotated[int, Field(gt=0, le=2**63 - 1)]
#: the header names a CSV of object ids may give its id column (ztfquery's and IRSA's ``oid``, the
#: data release's ``objectid``, harvester's own records' ``object_id``)
OBJECT_ID_COLUMNS = ("oid", "objectid", "object_id")


def _digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes ``²`` and other scripts' digits)."""
    return text.isascii() and text.isdigit()


def read_object_ids_file(path: Path) -> list[int]:
    """The ids of an object-ids file: one id a line (blank lines and ``#`` comments skipped), or a
    CSV whose header names an ``oid``, ``objectid`` or ``object_id`` column; ConfigError naming
    the line of any bad id."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # a spreadsheet's CSV starts with a BOM
            lines = [(n, line.strip()) for n, line in enumerate(fh.read().splitlines(), start=1)]
    except FileNotFoundError:
        raise ConfigError(f"object ids file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read object ids file ({exc})") from None
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    if lines and not _digits(lines[0][1]):  # a header: the file is a CSV
        header = [h.strip().lower() for h in next(csv.reader([lines[0][1]]))]
        column = next((header.index(c) for c in OBJECT_ID_COLUMNS if c in header), None)
        if column is None:
            raise ConfigError(
                f"{path}: line {lines[0][0]}: an object ids file is one id a line, or a CSV with an "
                f"oid or objectid column; got {lines[0][1][:80]!r}"
            )
        try:
            rows = [(n, next(csv.reader([line]))) for n, line in lines[1:]]
        except csv.Error as exc:
            raise ConfigError(f"{path}: not CSV ({exc})") from None
        lines = [(n, cells[column].strip() if column < len(cells) else "") for n, cells in rows]
    ids = []
    for n, text in lines:
        if not _digits(text) or not 0 < int(text) <= 2**63 - 1:
            raise ConfigError(f"{path}: line {n}: {text[:40]!r} is not a ZTF object id (a positive integer)")
        ids.append(int(text))
    return ids


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
    object_ids: list[ObjectId] = Field(
        default_factory=list,
        description="ZTF object ids (IRSA's `oid`, the release's `objectid`), inline; one object is "
        "one filter, field and CCD quadrant. Asked 200 to a request (IRSA `ID`); `filters` are "
        "applied to the answer, as IRSA takes no band with `ID`.",
    )
    object_ids_file: Path | None = Field(
        default=None,
        description="More object ids: a file of one id a line (`#` comments), or a CSV with an "
        "`oid`, `objectid` or `object_id` column (e.g. a ztfquery or IRSA objects table).",
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
        return (
            self.cone_search is not None
            or bool(self.targets)
            or self.targets_file is not None
            or bool(self.object_ids)
            or self.object_ids_file is not None
        )


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
        "API requests, a cone or a batch of 200 object ids each (at IRSA's 2 requests/s, 50 are 25 s "
        "of API time; the catalog costs a few reads).",
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
        "`hats.auto_min_targets` API requests and the API below (docs/sources.md).",
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
