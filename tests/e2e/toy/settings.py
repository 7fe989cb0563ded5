"""``data_sources.toy``."""

from __future__ import annotations

from pydantic import Field, field_validator

from harvester.archives.common import ArchiveSettings, HttpUrl, RateLimit


class ToySettings(ArchiveSettings):
    """``data_sources.toy``: which stars to ask the toy service for."""

    base_url: HttpUrl = Field(default="https://toy.example.org", description="Toy service.")
    stars: list[int] = Field(default_factory=list, description="Star ids to harvest.")
    overlap_days: float = Field(default=0.0, ge=0, description="Overlap below the watermark, days.")
    rate_limit: RateLimit = Field(
        default_factory=lambda: RateLimit(requests_per_second=20, max_concurrency=2),
        description="toy.example.org budget.",
    )

    @field_validator("stars")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value):
            raise ValueError("star ids are positive integers")
        return value

    def names_targets(self) -> bool:
        return bool(self.stars)
