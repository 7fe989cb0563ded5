"""Settings: the only place that reads YAML, ``.env`` and the environment.

Precedence, lowest first::

    built-in defaults < config/base.yaml (or --config PATH) < .env (working directory)
                      < environment (HARVESTER_ prefix, "__" nesting) < CLI flags / keyword arguments

Tokens use the unprefixed names of the original guide (``ZTF_API_TOKEN``, ``TESS_API_TOKEN``,
``MAST_API_TOKEN``) and are held as :class:`~pydantic.SecretStr`: their value is never shown by
``repr``, logs or dumps.

With no config file (no ``--config`` and no ``config/base.yaml`` in the working directory), a
source whose settings name no target takes the sample targets shipped with the package
(``harvester/defaults/targets.yaml``, the targets of the repository's ``config/base.yaml``) as its
lowest layer, so ``harvester run --source all --offline`` works from any folder.

Every model forbids unknown keys, so a typo in the YAML is an error naming the key rather than a
silently ignored setting. :func:`load_settings` turns any validation failure into a one-line
:class:`~harvester.errors.ConfigError`.

Each archive's cones carry that archive's limits (``../shared/docs/upstream-apis.md``): IRSA's
light-curve API takes a radius in (0, 0.1667] degrees (section 1.2, ``CIRCLE``); MAST's
``Mast.Caom.Cone`` and ``Mast.Caom.Filtered.Position`` take a radius in degrees with no published
cap (section 2.4; astroquery's default is 0.2), MAST's limit being its ~500,000-row result ceiling
(section 2.1), so MAST cones get harvester's own guard of 10 degrees.
"""

from __future__ import annotations

import contextvars
import copy
import csv
import functools
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, overload

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from harvester.errors import ConfigError

__all__ = [
    "MAX_IRSA_RADIUS_DEG",
    "MAX_MAST_RADIUS_DEG",
    "ConeSearch",
    "DaskSettings",
    "IrsaCone",
    "IrsaSettings",
    "MastCone",
    "MastQuery",
    "MastSettings",
    "RateLimit",
    "Settings",
    "TessQuery",
    "TessSettings",
    "Timeout",
    "ZtfSettings",
    "load_settings",
    "packaged_targets",
    "read_targets_file",
]

DEFAULT_CONFIG = Path("config/base.yaml")
PACKAGED_TARGETS = ("defaults", "targets.yaml")  # inside the harvester package
# IRSA light-curve API: "the valid range of RADIUS is limited to (0, 0.1667] degrees"
# (../shared/docs/upstream-apis.md, section 1.2, CIRCLE).
MAX_IRSA_RADIUS_DEG = 0.1667
# MAST publishes no radius limit for Mast.Caom.Cone / Mast.Caom.Filtered.Position (radius in
# degrees, astroquery's default 0.2; upstream-apis.md section 2.4); what bounds a MAST query is its
# ~500,000-row result ceiling (section 2.1, reported through max_rows). 10 degrees is harvester's
# own guard against a radius given in the wrong unit (30 meaning 30 arcmin), not MAST's.
MAX_MAST_RADIUS_DEG = 10.0

Ra = Annotated[float, Field(ge=0.0, lt=360.0, description="Right ascension, ICRS degrees in [0, 360).")]
Dec = Annotated[float, Field(ge=-90.0, le=90.0, description="Declination, ICRS degrees in [-90, 90].")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class RateLimit(_Model):
    """Politeness budget for a source's host: request starts per second and requests in flight."""

    requests_per_second: float = Field(gt=0, le=1000, description="Maximum request starts per second.")
    max_concurrency: int = Field(ge=1, le=256, description="Maximum requests in flight at once.")


class Timeout(_Model):
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


class Retries(_Model):
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


class ConeSearch(_Model):
    """A cone on the sky: centre (ICRS) and radius in degrees.

    The shared base of each archive's cone (:class:`IrsaCone`, :class:`MastCone`), which adds that
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


class IrsaCone(ConeSearch):
    """A cone for the IRSA ZTF light-curve API (``POS=CIRCLE ra dec radius``)."""

    radius: float = Field(
        gt=0.0,
        le=MAX_IRSA_RADIUS_DEG,
        description="Radius in degrees, in (0, 0.1667]: IRSA's limit for the light-curve API "
        "(upstream-apis.md, section 1.2).",
    )


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
class _ValidatedAs:
    """Annotation metadata: validate the field as ``validated_as`` (a subclass of its type)."""

    validated_as: type[BaseModel]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return handler(self.validated_as)


# Fields typed ConeSearch for readers (any cone is a ConeSearch) but validated as the archive's
# cone, so a bad radius is reported at its own key (``...cone_search.radius``) with that archive's
# limit, and the values are IrsaCone / MastCone instances.
IrsaConeField = Annotated[ConeSearch, _ValidatedAs(IrsaCone)]
MastConeField = Annotated[ConeSearch, _ValidatedAs(MastCone)]


class _SourceBase(_Model):
    timeout: Timeout = Field(default_factory=Timeout, description="Per-attempt timeouts.")
    retries: Retries = Field(default_factory=Retries, description="Retry policy.")


class IrsaSettings(_Model):
    """The IRSA ZTF light-curve API query (``data_sources.ztf.irsa``)."""

    base_url: str = Field(
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

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_url(value)

    @field_validator("mjd_range")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return _check_range(value)

    def names_targets(self) -> bool:
        """Whether these settings name any target (the ZTF source refuses to run without one)."""
        return self.cone_search is not None or bool(self.targets) or self.targets_file is not None


class ZtfSettings(_SourceBase):
    """``data_sources.ztf``."""

    irsa: IrsaSettings = Field(default_factory=IrsaSettings)
    rate_limit: RateLimit = Field(
        default_factory=lambda: RateLimit(requests_per_second=2, max_concurrency=4),
        description="IRSA budget (2 req/s, 4 at once by default).",
    )


def _mast_rate() -> RateLimit:
    return RateLimit(requests_per_second=10, max_concurrency=8)


class TessLightcurve(_Model):
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


class TessQuery(_Model):
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
        return _check_range(value)

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


class TessSettings(_SourceBase):
    """``data_sources.tess``."""

    base_url: str = Field(default="https://mast.stsci.edu", description="MAST server.")
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
    rate_limit: RateLimit = Field(default_factory=_mast_rate, description="mast.stsci.edu budget.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_url(value)


class MastQuery(_Model):
    """Which CAOM observations to list (``data_sources.mast.query``)."""

    collections: list[str] = Field(
        default_factory=list, description="obs_collection values (HST, JWST, ...)."
    )
    instruments: list[str] = Field(default_factory=list, description="instrument_name values.")
    dataproduct_types: list[str] = Field(default_factory=list, description="dataproduct_type values.")
    t_min: tuple[float, float] | None = Field(default=None, description="Range of t_min, MJD.")
    t_obs_release: tuple[float, float] | None = Field(
        default=None, description="Range of release dates, MJD."
    )
    filters: list[dict[str, Any]] = Field(default_factory=list, description="Extra MAST filters, as-is.")
    cone_search: MastConeField | None = Field(
        default=None, description="One cone (Mast.Caom.Cone); radius in degrees, at most 10."
    )
    targets: list[MastConeField] = Field(default_factory=list, description="More cones, inline.")
    targets_file: Path | None = Field(default=None, description="CSV of cones: name, ra, dec[, radius].")

    @field_validator("t_min", "t_obs_release")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return _check_range(value)

    def names_targets(self) -> bool:
        """Whether this query names a cone or a constraint (the MAST source refuses to run without)."""
        return bool(
            self.cone_search is not None
            or self.targets
            or self.targets_file is not None
            or self.collections
            or self.instruments
            or self.dataproduct_types
            or self.t_min is not None
            or self.t_obs_release is not None
            or self.filters
        )


class MastSettings(_SourceBase):
    """``data_sources.mast``."""

    base_url: str = Field(default="https://mast.stsci.edu", description="MAST server.")
    query: MastQuery = Field(default_factory=MastQuery)
    pagesize: int = Field(default=50000, ge=1, le=500000, description="MAST rows per page.")
    poll_budget_s: float = Field(default=600.0, gt=0, description="How long to poll EXECUTING.")
    max_rows: int = Field(
        default=500000, ge=1, description="MAST's result ceiling; larger results are reported."
    )
    rate_limit: RateLimit = Field(default_factory=_mast_rate, description="mast.stsci.edu budget.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_url(value)


class StateSettings(_Model):
    """State (``state``): the machine's SQLite database of runs and outcomes, and whether runs are
    incremental. What an output holds, and its watermarks, live in the output folder's own ledger
    (``<output>/<source>/.harvester/ledger.sqlite``)."""

    enabled: bool = Field(
        default=True,
        description="Keep run history and use watermarks (incremental sweeps). Off: every run asks "
        "for everything; the output's ledger still prevents duplicates.",
    )
    path: Path = Field(
        default=Path("data/state/harvester.db"),
        description="The machine's SQLite database (WAL mode): runs and per-target outcomes.",
    )
    ztf_overlap_days: float = Field(
        default=1.0,
        ge=0,
        description="ZTF asks IRSA for TIME after the last "
        "harvested mjd minus this overlap (late-arriving epochs).",
    )
    mast_overlap_days: float = Field(
        default=1.0,
        ge=0,
        description="MAST asks for t_min after the last harvested t_min minus this overlap.",
    )


def _duration(value: Any) -> Any:
    """'6h', '5m', '30s', '1d', '1h30m' or a number of seconds -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        parts = re.fullmatch(
            r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?"
            r"(?:(\d+(?:\.\d+)?)s?)?",
            text,
        )
        if text and parts is not None and any(parts.groups()):
            d, h, m, sec = (float(g) if g else 0.0 for g in parts.groups())
            return d * 86400 + h * 3600 + m * 60 + sec
        raise ValueError(f"{value!r} is not a duration like 6h, 5m, 30s or 1h30m")
    return value


Duration = Annotated[float, BeforeValidator(_duration), Field(ge=0)]


class DaemonSettings(_Model):
    """The daemon's schedule and resilience (``daemon``). Durations accept 6h, 5m, 30s or seconds."""

    interval: Duration = Field(default=6 * 3600.0, description="Time between sweeps.")
    jitter: Duration = Field(default=300.0, description="Random delay added to each sweep (0..jitter).")
    grace: Duration = Field(default=30.0, description="On SIGTERM/SIGINT, time given to in-flight work.")
    failure_threshold: int = Field(
        default=2, ge=1, description="Consecutive failed sweeps that open a source's circuit breaker."
    )
    max_pause: Duration = Field(default=24 * 3600.0, description="Longest pause of an open breaker.")
    health_max_age: Duration = Field(
        default=2 * 6 * 3600.0 + 600, description="Health check fails when no sweep succeeded for this long."
    )


class DaskSettings(_Model):
    """Where ``executor: dask`` runs its work units (``dask``); needs the ``harvester[dask]`` extra."""

    address: str | None = Field(
        default=None,
        description="Scheduler address (tcp://host:8786); unset = a LocalCluster sized to this machine.",
    )
    workers: int | None = Field(
        default=None, ge=1, le=1024, description="LocalCluster worker processes; unset = CPU cores."
    )
    shared_filesystem: bool = Field(
        default=False,
        description="With an address: the local output folder is a mount every worker shares "
        "(otherwise a remote cluster needs a URL output such as s3://…).",
    )


class DataSources(_Model):
    ztf: ZtfSettings = Field(default_factory=ZtfSettings)
    tess: TessSettings = Field(default_factory=TessSettings)
    mast: MastSettings = Field(default_factory=MastSettings)

    def without_targets(self) -> list[str]:
        """The sources whose settings name no target, in order."""
        named = {
            "ztf": self.ztf.irsa.names_targets(),
            "tess": self.tess.query.names_targets(),
            "mast": self.mast.query.names_targets(),
        }
        return [name for name, has in named.items() if not has]


def _check_range(value: tuple[float, float] | None) -> tuple[float, float] | None:
    if value is not None:
        lo, hi = value
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise ValueError(f"must be two finite MJDs with start <= end, got [{lo}, {hi}]")
    return value


def _check_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http(s) URL, got {value!r}")
    return value.rstrip("/") if value.count("/") > 2 else value


_config_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("harvester_config", default=None)
_sample_layer: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "harvester_sample_targets", default=None
)


_URL_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


def _output_target(value: Any) -> Any:
    """A local folder as a Path (``file://`` stripped); any other ``scheme://`` URL kept as text."""
    if isinstance(value, Path) or not isinstance(value, str):
        return value
    if value.startswith("file://"):
        return Path(value[len("file://") :])
    if "://" in value:
        scheme = value.split("://", 1)[0]
        if not _URL_SCHEME.fullmatch(scheme):
            raise ValueError(f"{value!r} is neither a folder nor a URL")
        return value.rstrip("/")
    return Path(value)


class Settings(BaseSettings):
    """Every setting of a harvest run. Build it with :func:`load_settings` to get the layering."""

    model_config = SettingsConfigDict(
        env_prefix="HARVESTER_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        populate_by_name=True,
        validate_default=True,
    )

    data_sources: DataSources = Field(default_factory=DataSources)
    state: StateSettings = Field(default_factory=StateSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    executor: Literal["local", "dask"] = Field(
        default="local", description="local = one process; dask = work units on a Dask cluster."
    )
    dask: DaskSettings = Field(default_factory=DaskSettings)
    output: Annotated[Path | str, BeforeValidator(_output_target)] = Field(
        default=Path("data/raw"),
        description="Output folder, one sub-folder per source; or an fsspec URL (s3://bucket/prefix), "
        "written as create-only work units (docs/scaling.md).",
    )
    format: Literal["json", "jsonl"] = Field(
        default="json", description="json = one file per record; jsonl = sharded part files."
    )
    jsonl_shard_records: int = Field(default=10000, ge=1, description="Records per jsonl shard.")
    limit: int | None = Field(default=None, ge=1, description="Maximum records written per source.")
    offline: bool = Field(
        default=False, description="Use the built-in sample archive instead of the network."
    )
    fallback_to_sample: bool = Field(
        default=False,
        description="When a source fails, warn and harvest the sample archive "
        "instead (records are marked sample). Off by default.",
    )
    log_format: Literal["auto", "console", "json"] = Field(
        default="auto", description="auto = console on a TTY, JSON otherwise."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log level.")
    stream_buffer: int = Field(default=1000, ge=1, description="Records buffered between pipeline stages.")

    ztf_api_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("ZTF_API_TOKEN"),
        description="IRSA token (optional; public data needs none).",
    )
    tess_api_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TESS_API_TOKEN"),
        description="MAST token used by the TESS source.",
    )
    mast_api_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MAST_API_TOKEN"),
        description="MAST token (also used by TESS when TESS_API_TOKEN is unset).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        config = _config_path.get()
        if config is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config))
        sample = _sample_layer.get()
        if sample is not None:  # the lowest layer: sample targets for sources that name none
            sources.append(InitSettingsSource(settings_cls, init_kwargs=sample))
        return tuple(sources)

    @property
    def output_url(self) -> str | None:
        """The output when it is an object-store URL (``s3://…``), else None (a local folder)."""
        return self.output if isinstance(self.output, str) else None

    def secrets(self) -> list[str]:
        """The token values in force, for redaction and for scanning output in tests."""
        return [
            t.get_secret_value()
            for t in (self.ztf_api_token, self.tess_api_token, self.mast_api_token)
            if t is not None and t.get_secret_value()
        ]

    def digest_dict(self) -> dict[str, Any]:
        """Settings as plain data without any secret, for manifests and READMEs."""
        return self.model_dump(mode="json", exclude={"ztf_api_token", "tess_api_token", "mast_api_token"})


@contextmanager
def _layering(config: Path | None, sample: dict[str, Any] | None = None) -> Iterator[None]:
    token = _config_path.set(config)
    sample_token = _sample_layer.set(sample)
    try:
        yield
    finally:
        _sample_layer.reset(sample_token)
        _config_path.reset(token)


@functools.cache
def _packaged_targets_text() -> str:
    return resources.files("harvester").joinpath(*PACKAGED_TARGETS).read_text(encoding="utf-8")


def packaged_targets() -> dict[str, Any]:
    """The sample targets shipped in the package, per source: ``{"ztf": {"irsa": {...}}, ...}``.

    They are the targets of the repository's ``config/base.yaml``. :func:`load_settings` uses a
    source's block only when no config file is in force and that source's settings name no target.
    """
    loaded = yaml.safe_load(_packaged_targets_text())
    blocks = loaded["data_sources"]
    if not isinstance(blocks, dict):  # pragma: no cover - the file ships with the package
        raise TypeError("harvester/defaults/targets.yaml: data_sources must be a mapping")
    return copy.deepcopy(blocks)


def load_settings(
    config: str | Path | None = None,
    *,
    env_file: str | Path | None = ".env",
    **overrides: Any,
) -> Settings:
    """Build :class:`Settings` from every layer; raise :class:`ConfigError` with one clear line.

    ``config`` defaults to ``config/base.yaml`` when that file exists. ``overrides`` are the
    highest layer (the CLI's flags); nested dicts merge into the layers below. With no config file
    at all, a source whose settings name no target gets the packaged sample targets
    (:func:`packaged_targets`) as its lowest layer; a source given any target of its own, or any
    config file, never sees them.
    """
    if config is None:
        path: Path | None = DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None
    else:
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
    if path is not None:
        _check_yaml(path)
    try:
        with _layering(path):
            settings = Settings(_env_file=env_file, **overrides)
        missing = settings.data_sources.without_targets() if path is None else []
        if missing:
            sample = packaged_targets()
            with _layering(None, {"data_sources": {name: sample[name] for name in missing}}):
                settings = Settings(_env_file=env_file, **overrides)
        return settings
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    except SettingsError as exc:  # e.g. a list-valued variable that is not JSON
        cause = exc.__cause__ or exc
        raise ConfigError(
            f"invalid setting from the environment or .env: {exc} ({cause}); lists and "
            "mappings are written as JSON, e.g. HARVESTER_DATA_SOURCES__ZTF__IRSA__FILTERS='[\"zg\"]'"
        ) from None


def _check_yaml(path: Path) -> None:
    """Fail early and clearly on unreadable or malformed YAML (pydantic-settings would raise raw)."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping of settings, got {type(loaded).__name__}")


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming the first bad key, what is wrong and the value given."""
    first = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(settings)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    value = first.get("input")
    shown = (
        ""
        if first["type"] in ("missing", "extra_forbidden") or isinstance(value, dict)
        else f" (got {value!r})"
    )
    more = len(exc.errors()) - 1
    tail = f"; and {more} more problem{'s' if more > 1 else ''}" if more else ""
    return f"invalid setting {loc}: {msg}{shown}{tail}"


@overload
def read_targets_file(path: Path, *, default_radius: float) -> list[IrsaCone]: ...


@overload
def read_targets_file(path: Path, *, default_radius: float, cone: type[Cone]) -> list[Cone]: ...


def read_targets_file(path: Path, *, default_radius: float, cone: type[ConeSearch] = IrsaCone) -> list[Any]:
    """Cone targets from a CSV with a header ``name,ra,dec[,radius]``; ConfigError on any bad row.

    ``cone`` is the archive's cone model, whose radius limit every row must meet: :class:`IrsaCone`
    (the default, for ZTF) or :class:`MastCone` (for MAST).
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
            targets: list[ConeSearch] = []
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
