"""Settings: the only place that reads YAML, ``.env`` and the environment.

Precedence, lowest first::

    built-in defaults < config/base.yaml (or --config PATH) < .env (working directory)
                      < environment (HARVESTER_ prefix, "__" nesting) < CLI flags / keyword arguments

``data_sources`` holds one block per registered archive (:mod:`harvester.archives`): each
archive's package declares its block's model, and :class:`Settings` is rebuilt whenever the
registry changes, so a new archive's keys, environment variables and token are validated like
every other setting. The models shared by the archives (rate limits, timeouts, cones) are in
:mod:`harvester.archives.common`.

Tokens use the unprefixed names each archive declares (``ZTF_API_TOKEN``, ``TESS_API_TOKEN``,
``MAST_API_TOKEN``) and are held as :class:`~pydantic.SecretStr`: their value is never shown by
``repr``, logs or dumps, and :meth:`Settings.token` hands an archive only its own.

With no config file (no ``--config`` and no ``config/base.yaml`` in the working directory), a
source whose settings name no target takes the sample targets shipped with the package
(``harvester/defaults/targets.yaml``, the targets of the repository's ``config/base.yaml``) as its
lowest layer, so ``harvester run --source all --offline`` works from any folder.

Every model forbids unknown keys, so a typo in the YAML is an error naming the key rather than a
silently ignored setting. :func:`load_settings` turns any validation failure into a one-line
:class:`~harvester.errors.ConfigError`.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import yaml
from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from harvester import archives
from harvester.archives.common import ArchiveSettings, Model
from harvester.errors import ConfigError

__all__ = [
    "DaemonSettings",
    "DaskSettings",
    "DataSources",
    "Settings",
    "StateSettings",
    "load_settings",
    "packaged_targets",
]

DEFAULT_CONFIG = Path("config/base.yaml")
PACKAGED_TARGETS = ("defaults", "targets.yaml")  # inside the harvester package


class StateSettings(Model):
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


class DaemonSettings(Model):
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


class DaskSettings(Model):
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


class DataSources(Model):
    """``data_sources``: one block per registered archive, named after it (``data_sources.ztf``).

    The fields are added from the archives' registry (:func:`_rebuild`); read a block with
    ``data_sources.ztf`` or :meth:`block`.
    """

    if TYPE_CHECKING:  # the blocks are added at run time, one per archive

        def __getattr__(self, name: str) -> Any: ...

    def block(self, name: str) -> ArchiveSettings:
        """The settings block of archive ``name``."""
        return cast(ArchiveSettings, getattr(self, name))

    def without_targets(self) -> list[str]:
        """The archives whose block names no target, in order."""
        return [name for name in type(self).model_fields if not self.block(name).names_targets()]


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
    format: Literal["json", "jsonl", "parquet"] = Field(
        default="json",
        description="json = one file per record; jsonl = sharded part files; parquet = typed, "
        "compressed Parquet shards (one row per record).",
    )
    jsonl_shard_records: int = Field(default=10000, ge=1, description="Records per jsonl or Parquet shard.")
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

    # One SecretStr field per archive token (``ztf_api_token`` read from ZTF_API_TOKEN, ...), added
    # from the registry by _rebuild.

    #: the ``AWS_*`` variables of the .env file (load_settings fills it): S3 routes read the
    #: standard AWS variables from the environment over these, like every AWS tool
    _aws_dotenv: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        """``state.<archive>_overlap_days`` (before 0.6) is now ``data_sources.<archive>.overlap_days``."""
        if not isinstance(data, dict) or not isinstance(data.get("state"), dict):
            return data
        state = dict(data["state"])
        sources = dict(data.get("data_sources") or {})
        for name in archives.names():
            old = f"{name}_overlap_days"
            if old in state:
                block = dict(sources.get(name) or {})
                block.setdefault("overlap_days", state.pop(old))
                sources[name] = block
                warnings.warn(
                    f"state.{old} is deprecated: use data_sources.{name}.overlap_days",
                    FutureWarning,
                    stacklevel=2,
                )
        return {**data, "state": state, "data_sources": sources}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, _NoAws(dotenv_settings)]
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

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (to a Dask worker, a Prefect task) as its values plus the archives' entries:
        # the receiving process registers any archive it lacks, then validates the values, so the
        # per-archive blocks come back as the same models.
        # The .env file's AWS variables travel too: a worker has no such file, and its S3 routes
        # must read the mirror (and sign for it) as the driver does.
        return (_unpickle, (self.model_dump(round_trip=True), archives.specs(), dict(self._aws_dotenv)))

    def token(self, archive: str) -> SecretStr | None:
        """The token archive ``archive`` sends: the first of its variables that is set (TESS:
        TESS_API_TOKEN, else MAST_API_TOKEN), or None."""
        for entry in archives.spec(archive).tokens:
            value: SecretStr | None = getattr(self, _token_field(entry.env), None)
            if value is not None and value.get_secret_value():
                return value
        return None

    def secrets(self) -> list[str]:
        """The token values in force, for redaction and for scanning output in tests."""
        values = (getattr(self, field, None) for field in _token_fields())
        tokens = [t.get_secret_value() for t in values if isinstance(t, SecretStr) and t.get_secret_value()]
        aws = self.aws_environ()
        return tokens + [aws[name] for name in AWS_SECRET_VARIABLES if name in aws]

    def aws_environ(self) -> dict[str, str]:
        """The standard AWS variables in force (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
        ``AWS_PROFILE``, ...): the environment's, over the .env file's."""
        environ = {k: v for k, v in os.environ.items() if k.startswith("AWS_") and v}
        return {**self._aws_dotenv, **environ}

    def digest_dict(self) -> dict[str, Any]:
        """Settings as plain data without any secret, for manifests and READMEs."""
        return self.model_dump(mode="json", exclude=set(_token_fields()))


def _unpickle(
    data: dict[str, Any], specs: tuple[archives.ArchiveSpec, ...], aws_dotenv: dict[str, str] | None = None
) -> Settings:
    known = set(archives.names())
    for spec in specs:
        if spec.name not in known:
            archives.register(spec)
    settings = Settings.model_validate(data)
    settings._aws_dotenv = dict(aws_dotenv or {})
    return settings


def _token_field(env: str) -> str:
    return env.lower()


def _token_fields() -> list[str]:
    return list(dict.fromkeys(_token_field(t.env) for spec in archives.specs() for t in spec.tokens))


_BUILT_FIELDS: set[str] = set()


def _rebuild() -> None:
    """Give :class:`DataSources` one block per registered archive and :class:`Settings` one
    secret field per token variable, then rebuild their validators (called at import and after
    every change to the registry)."""
    blocks: dict[str, Any] = {}
    for spec in archives.specs():
        model = archives.settings_model(spec.name)
        blocks[spec.name] = (model, Field(default_factory=model, description=f"{spec.title}."))
    sources = create_model("DataSources", __base__=DataSources, __module__=__name__, **blocks)
    fields = Settings.__pydantic_fields__
    fields["data_sources"] = FieldInfo(
        annotation=sources, default_factory=sources, description="One block per archive."
    )
    for name in _BUILT_FIELDS - set(_token_fields()):
        fields.pop(name, None)
    _BUILT_FIELDS.clear()
    for spec in archives.specs():
        for entry in spec.tokens:
            name = _token_field(entry.env)
            if name not in _BUILT_FIELDS:
                fields[name] = FieldInfo(
                    annotation=SecretStr | None,
                    default=None,
                    validation_alias=AliasChoices(entry.env),
                    description=entry.description,
                )
                _BUILT_FIELDS.add(name)
    Settings.model_rebuild(force=True)


_rebuild()
archives.on_change(_rebuild)


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


class _NoAws(PydanticBaseSettingsSource):
    """The .env layer without its ``AWS_*`` variables: they belong to the S3 routes
    (:meth:`Settings.aws_environ`), not to a setting, and would be refused as unknown keys."""

    def __init__(self, inner: PydanticBaseSettingsSource) -> None:
        super().__init__(inner.settings_cls)
        self._inner = inner

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._inner().items() if not k.lower().startswith("aws_")}


#: AWS variables that hold secrets: redacted from logs like the archive tokens
AWS_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def _aws_dotenv(env_file: str | Path | None) -> dict[str, str]:
    """The ``AWS_*`` variables set in ``env_file`` (when it exists)."""
    if env_file is None or not Path(env_file).is_file():
        return {}
    from dotenv import dotenv_values  # pydantic-settings' own .env reader

    values = dotenv_values(env_file, encoding="utf-8")
    return {k: v for k, v in values.items() if k.startswith("AWS_") and v}


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
            with _layering(None, {"data_sources": {n: sample[n] for n in missing if n in sample}}):
                settings = Settings(_env_file=env_file, **overrides)
        settings._aws_dotenv = _aws_dotenv(env_file)
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
