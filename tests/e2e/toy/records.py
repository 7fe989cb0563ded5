"""The toy record: one epoch of one star."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from harvester.records import BaseRecord, unit


class ToyRecord(BaseRecord):
    """One epoch of a toy star."""

    source: Literal["toy"] = Field(default="toy", description="Always 'toy'.")
    object_id: str = Field(description="Star id as a decimal string.")
    mjd: float = Field(description="Epoch, MJD (UTC).", json_schema_extra=unit("d"))
    flux: float = Field(description="Flux density.", json_schema_extra=unit("mJy"))

    key_fields: ClassVar[tuple[str, ...]] = ("object_id", "mjd")
