"""Records: the documented output contract. This module holds what every record shares
(:class:`BaseRecord`, :class:`Provenance`, dedup keys, file names); each archive's model lives in
its package (``harvester/archives/<name>/records.py``) and is named by its registry entry.

Every record is validated before it is written. Each field carries a description and, where it
has one, a unit (``json_schema_extra={"unit": ...}``); the generated README of every output
folder and ``docs/schema.md`` are built from these models, so they cannot drift.

Time systems differ between archives and are stated per field of each model (ZTF ``mjd`` is UTC,
topocentric; TESS ``time`` is BTJD, barycentric TDB; MAST times are CAOM MJDs).

Each record has a *dedup key* (:meth:`BaseRecord.dedup_key`) from which its stable file name
is derived (:func:`stable_id`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

__all__ = [
    "BaseRecord",
    "Provenance",
    "alternate_part",
    "key_columns",
    "key_digest",
    "key_from_text",
    "key_of",
    "key_part",
    "key_text",
    "record_name",
    "record_names",
    "stable_id",
    "unit",
]


def unit(name: str) -> dict[str, Any]:
    """A field's unit, for ``json_schema_extra`` (shown in the generated schema docs)."""
    return {"unit": name}


class Provenance(BaseModel):
    """Where a record came from. Never carries a secret: tokens travel in headers only."""

    model_config = ConfigDict(extra="forbid")

    archive: str = Field(description="The archive that served the data (irsa, mast, ...).")
    url: str = Field(description="The request URL (query included) that returned this record.")
    service: str | None = Field(
        default=None,
        description="MAST service name, for MAST records; 's3' for a file read from a public S3 bucket.",
    )
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
    #: A key field that may be null, and the fields standing in for it then: its key part is the
    #: first one's name and value, then ``-<value>`` for each further one that is set and not 0
    #: (ZTF: ``mjd`` from the API; ``hmjd`` and ``hmjd_seq`` from a data release, so the two kinds
    #: never share a key).
    key_alternates: ClassVar[dict[str, tuple[str, ...]]] = {}

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
        return key_of(type(self), self.__dict__)  # a model's field values, by name


def key_columns(model: type[BaseRecord]) -> list[str]:
    """The fields a key is made of: ``key_fields`` and their alternates."""
    return [
        *model.key_fields,
        *(a for n in model.key_fields for a in model.key_alternates.get(n, ())),
    ]


def alternate_part(names: tuple[str, ...], values: Sequence[object]) -> str:
    """The key part of a null key field stood in for by fields ``names`` holding ``values``: the
    first name and value, then ``-<value>`` for each further value that is set and not 0."""
    if values[0] is None:
        raise ValueError(f"key field {names[0]} is null")
    return names[0] + key_part(values[0]) + "".join(f"-{key_part(v)}" for v in values[1:] if v)


def key_of(model: type[BaseRecord], data: Mapping[str, Any]) -> tuple[str, ...]:
    """The dedup key of a record already written and read back as JSON (``data``), without
    validating it again: the same value :meth:`BaseRecord.dedup_key` gave before it was written."""
    parts = []
    for name in model.key_fields:
        value = data[name] if name not in model.key_alternates else data.get(name)
        if value is None and name in model.key_alternates:
            alternate = model.key_alternates[name]
            parts.append(alternate_part(alternate, [data.get(a) for a in alternate]))
        else:
            parts.append(key_part(value))
    return tuple(parts)


def key_digest(key: tuple[str, ...]) -> bytes:
    """A 128-bit digest of a dedup key, for sets of seen keys (~100 bytes per key with its set slot,
    against ~220 for the tuple of strings); a collision needs ~10^19 keys before it is likely."""
    return text_digest(key_text(key))


def text_digest(text: str) -> bytes:
    """:func:`key_digest` of the key whose :func:`key_text` is ``text``."""
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


KEY_SEPARATOR = "\x1f"  # the unit separator: never part of a key part's text


def key_text(key: tuple[str, ...]) -> str:
    """A dedup key as one text value (unit separator between parts), as the stores index it."""
    return KEY_SEPARATOR.join(key)


def key_from_text(text: str) -> tuple[str, ...]:
    """The dedup key :func:`key_text` made ``text`` of."""
    return tuple(text.split(KEY_SEPARATOR))


def key_part(value: object) -> str:
    """One dedup-key component as text; floats use repr, which round-trips exactly through JSON."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


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
    digest = hashlib.sha256(key_text(key).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{readable[:_MAX_READABLE].replace('..', '-')}-{digest}"


def record_name(key: tuple[str, ...]) -> str:
    """The name of the file holding the record whose dedup key is ``key``."""
    return f"record_{stable_id(key)}.json"


#: a character that keeps a key text from being its own readable id (:func:`stable_id`) (texts
#: are one a line here, parts joined by the separator)
_UNSAFE_IN_TEXT = re.compile(r"[^A-Za-z0-9._\n\x1f-]")


def record_names(texts: Sequence[str], parts: int) -> list[str] | None:
    """Each key's record file name (:func:`record_name`), from the
    keys' texts (:func:`key_text`) of ``parts`` parts each, made in one pass over all the
    texts when every key is its own readable id (the usual case); else None (the names are
    then made key by key, from the keys)."""
    if not texts or min(map(len, texts)) == 0 or max(map(len, texts)) > _MAX_READABLE:
        return None
    joined = "\n".join(texts)
    if (
        joined.count("\n") != len(texts) - 1  # a text holds a newline
        or joined.count(KEY_SEPARATOR) != len(texts) * (parts - 1)  # a part holds a separator
        or _UNSAFE_IN_TEXT.search(joined) is not None
        or any(bad in joined for bad in ("..", "\n.", "\n-", ".\n", "-\n"))
        or joined[0] in ".-"
        or joined[-1] in ".-"
    ):
        return None
    return [f"record_{stem}.json" for stem in joined.replace(KEY_SEPARATOR, "_").split("\n")]
