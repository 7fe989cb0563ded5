"""Settings pieces every archive shares: politeness budgets, timeouts, retries, cones, targets files.

An archive's ``data_sources.<name>`` block subclasses :class:`ArchiveSettings`, which gives it
``timeout`` and ``retries`` and asks it :meth:`~ArchiveSettings.names_targets`. This module imports
pydantic only, so the settings of every archive can be built without importing its fetch code.

Each archive's cones carry that archive's limits (``../shared/docs/upstream-apis.md``): IRSA's
light-curve API takes a radius in (0, 0.1667] degrees (section 1.2, ``CIRCLE``); MAST's
``Mast.Caom.Cone`` and ``Mast.Caom.Filtered.Position`` take a radius in degrees with no published
cap (section 2.4; astroquery's default is 0.2), MAST's limit being its ~500,000-row result ceiling
(section 2.1), so MAST cones (:class:`MastCone`, used by the TESS and MAST archives) get
harvester's own guard of 10 degrees.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    model_validator,
)
from pydantic_core import CoreSchema

from harvester.errors import ConfigError

__all__ = [
    "MAX_MAST_RADIUS_DEG",
    "ArchiveSettings",
    "Cone",
    "ConeSearch",
    "Dec",
    "HttpUrl",
    "MastCone",
    "MastConeField",
    "Model",
    "Ra",
    "RateLimit",
    "Retries",
    "S3Access",
    "Timeout",
    "ValidatedAs",
    "check_range",
    "check_url",
    "mast_rate",
    "read_targets_file",
    "s3_rate",
]

# MAST publishes no radius limit for Mast.Caom.Cone / Mast.Caom.Filtered.Position (radius in
# degrees, astroquery's default 0.2; upstream-apis.md section 2.4); what bounds a MAST query is its
# ~500,000-row result ceiling (section 2.1, reported through max_rows). 10 degrees is harvester's
# own guard against a radius given in the wrong unit (30 meaning 30 arcmin), not MAST's.
MAX_MAST_RADIUS_DEG = 10.0

Ra = Annotated[float, Field(ge=0.0, lt=360.0, description="Right ascension, ICRS degrees in [0, 360).")]
Dec = Annotated[float, Field(ge=-90.0, le=90.0, description="Declination, ICRS degrees in [-90, 90].")]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class RateLimit(Model):
    """Politeness budget for a source's host: request starts per second and requests in flight."""

    requests_per_second: float = Field(gt=0, le=1000, description="Maximum request starts per second.")
    max_concurrency: int = Field(ge=1, le=256, description="Maximum requests in flight at once.")


def mast_rate() -> RateLimit:
    """mast.stsci.edu's default budget, shared by the TESS and MAST archives (one host, one budget)."""
    return RateLimit(requests_per_second=10, max_concurrency=8)


def s3_rate() -> RateLimit:
    """The S3 host's default budget. S3 serves thousands of GETs per second per key prefix; this is
    harvester's own politeness toward a public bucket (and a mirror), well above MAST's."""
    return RateLimit(requests_per_second=50, max_concurrency=16)


class Timeout(Model):
    """Per-attempt timeouts, in seconds. A plain number in YAML sets ``read``."""

    connect: float = Field(default=10.0, gt=0, description="Seconds to open a connection.")
    read: float = Field(default=120.0, gt=0, description="Seconds of silence allowed while reading.")
    total: float = Field(default=600.0, gt=0, description="Seconds for one whole attempt, body included.")

    @model_validator(mode="before")
    @classmethod
    def _from_number(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"read": value}
        return value


class Retries(Model):
    """Retry policy for transient failures (timeouts, resets, 408, 429, 5xx)."""

    attempts: int = Field(default=4, ge=0, le=20, description="Retries after the first attempt.")
    backoff_base: float = Field(default=0.5, ge=0, description="Base of the exponential backoff, seconds.")
    backoff_cap: float = Field(default=30.0, ge=0, description="Largest backoff between attempts, seconds.")
    retry_after_cap: float = Field(default=120.0, ge=0, description="Longest Retry-After honoured, seconds.")

    @model_validator(mode="before")
    @classmethod
    def _from_number(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"attempts": value}
        return value


class ConeSearch(Model):
    """A cone on the sky: centre (ICRS) and radius in degrees.

    The shared base of each archive's cone (ZTF's ``IrsaCone``, :class:`MastCone`), which adds that
    archive's radius limit; on its own it only bounds the radius by geometry, (0, 180].
    """

    name: str | None = Field(default=None, description="Optional label for logs and reports.")
    ra: Ra
    dec: Dec
    radius: float = Field(gt=0.0, le=180.0, description="Radius in degrees, in (0, 180].")

    @property
    def label(self) -> str:
        return self.name or f"{self.ra:.5f}{self.dec:+.5f}"

    def __repr_name__(self) -> str:
        # Every archive's cone shows as ConeSearch: a watermark's key hashes repr(target)
        # (Source.watermark_key), so the subclasses keep the watermarks of earlier versions and
        # match the ConeSearch targets a work unit carries.
        return "ConeSearch"


class MastCone(ConeSearch):
    """A cone for MAST CAOM searches (``Mast.Caom.Cone``, ``Mast.Caom.Filtered.Position``)."""

    radius: float = Field(
        gt=0.0,
        le=MAX_MAST_RADIUS_DEG,
        description="Radius in degrees, in (0, 10]. MAST publishes no radius limit (astroquery's "
        "default is 0.2; upstream-apis.md, section 2.4) but caps a result at ~500,000 rows "
        "(section 2.1); 10 is harvester's guard against a radius in the wrong unit.",
    )


Cone = TypeVar("Cone", bound=ConeSearch)


@dataclass(frozen=True)
class ValidatedAs:
    """Annotation metadata: validate the field as ``validated_as`` (a subclass of its type)."""

    validated_as: type[BaseModel]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return handler(self.validated_as)


# Fields typed ConeSearch for readers (any cone is a ConeSearch) but validated as the archive's
# cone, so a bad radius is reported at its own key (``...cone_search.radius``) with that archive's
# limit, and the values are instances of that archive's cone.
MastConeField = Annotated[ConeSearch, ValidatedAs(MastCone)]


class ArchiveSettings(Model):
    """The base of every ``data_sources.<name>`` block."""

    timeout: Timeout = Field(default_factory=Timeout, description="Per-attempt timeouts.")
    retries: Retries = Field(default_factory=Retries, description="Retry policy.")
    rate_limit: RateLimit = Field(
        default_factory=lambda: RateLimit(requests_per_second=1, max_concurrency=1),
        description="The archive host's budget (each archive sets its own default).",
    )

    def names_targets(self) -> bool:
        """Whether this block names any target. An archive whose block names none gets the
        packaged sample targets when no config file is in force (:func:`harvester.settings.load_settings`).
        """
        return True


def check_range(value: tuple[float, float] | None) -> tuple[float, float] | None:
    if value is not None:
        lo, hi = value
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise ValueError(f"must be two finite MJDs with start <= end, got [{lo}, {hi}]")
    return value


def check_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http(s) URL, got {value!r}")
    return value.rstrip("/") if value.count("/") > 2 else value


#: An archive endpoint: an http(s) URL, its trailing slash dropped (``base_url`` fields).
HttpUrl = Annotated[str, AfterValidator(check_url)]


class S3Access(Model):
    """Where and how a bucket is read: the endpoint, and anonymous or signed requests. Shared by
    every S3 route (``data_sources.tess.cloud``, ``data_sources.ztf.hats``)."""

    endpoint_url: HttpUrl | None = Field(
        default=None,
        description="S3 endpoint for a mirror or a test server, read path-style "
        "(`<endpoint>/<bucket>/<key>`); unset: `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` if set, "
        "else AWS (`https://<bucket>.s3.amazonaws.com/<key>`).",
    )
    credentials: Literal["anonymous", "aws"] = Field(
        default="anonymous",
        description="`anonymous`: unsigned requests (the archives' buckets are public). `aws`: every "
        "request signed (AWS Signature Version 4) with the standard AWS credential chain "
        "(`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, `AWS_PROFILE`, "
        "~/.aws/credentials, SSO, an instance role), for a private mirror; needs "
        "`pip install 'harvester[s3]'`. Keys are sent to this endpoint's host only, never logged.",
    )
    profile: str | None = Field(
        default=None,
        min_length=1,
        description="`credentials: aws`: the named profile to use; unset: `AWS_PROFILE` or the default.",
    )
    region: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9-]+$",
        description="`credentials: aws`: the region requests are signed for; unset: `AWS_REGION`, "
        "`AWS_DEFAULT_REGION` or the profile's, else us-east-1 (where both archives' buckets are).",
    )


def read_targets_file(path: Path, *, default_radius: float, cone: type[Cone]) -> list[Cone]:
    """Cone targets from a CSV with a header ``name,ra,dec[,radius]``; ConfigError on any bad row.

    ``cone`` is the archive's cone model, whose radius limit every row must meet (ZTF's
    ``IrsaCone``, :class:`MastCone`).
    """
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = {c.strip().lower() for c in (reader.fieldnames or [])}
            if not {"ra", "dec"} <= columns:
                raise ConfigError(
                    f"{path}: targets file needs a header with ra and dec columns "
                    f"(name, ra, dec[, radius]); got {sorted(columns) or 'no header'}"
                )
            targets: list[Cone] = []
            for lineno, row in enumerate(reader, start=2):
                clean = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
                if not any(clean.values()):
                    continue
                try:
                    targets.append(
                        cone(
                            name=clean.get("name") or None,
                            ra=float(clean["ra"]),
                            dec=float(clean["dec"]),
                            radius=float(clean["radius"]) if clean.get("radius") else default_radius,
                        )
                    )
                except (ValueError, ValidationError) as exc:
                    detail = exc.errors(include_url=False)[0] if isinstance(exc, ValidationError) else None
                    cause = f"{'.'.join(map(str, detail['loc']))}: {detail['msg']}" if detail else str(exc)
                    raise ConfigError(f"{path}: line {lineno}: {cause}") from None
            return targets
    except FileNotFoundError:
        raise ConfigError(f"targets file not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read targets file ({exc})") from None
