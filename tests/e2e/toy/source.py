"""The toy source: one GET per star, JSON rows, MJD watermarks, two work units by id parity."""

from __future__ import annotations

from typing import Any, ClassVar, cast

import orjson
from pydantic import ValidationError

from harvester.archives.base import FetchContext, Source, utcnow
from harvester.errors import ArchiveResponseError, ConfigError
from harvester.records import Provenance
from tests.e2e.toy.records import ToyRecord
from tests.e2e.toy.settings import ToySettings


class ToySource(Source[int]):
    name: ClassVar[str] = "toy"
    watermark_field: ClassVar[str | None] = "mjd"

    @property
    def config(self) -> ToySettings:
        return cast(ToySettings, self.settings.data_sources.block("toy"))

    @property
    def base_url(self) -> str:
        return self.config.base_url

    def targets(self) -> list[int]:
        if not self.config.stars:
            raise ConfigError("toy: no stars configured (data_sources.toy.stars)")
        return list(self.config.stars)

    def label(self, target: int) -> str:
        return f"star {target}"

    def describe_query(self) -> dict[str, Any]:
        return {"targets": list(self.config.stars)}

    def unit_groups(self, *, cell_deg: float, tic_buckets: int) -> list[tuple[str, tuple[Any, ...]]]:
        stars = sorted(set(self.config.stars))
        groups = {f"parity-{p}": tuple(s for s in stars if s % 2 == p) for p in (0, 1)}
        return [(unit_id, targets) for unit_id, targets in sorted(groups.items()) if targets]

    def narrow(self, data_sources: Any, targets: tuple[Any, ...]) -> None:
        data_sources.toy.stars = [int(t) for t in targets]

    def clear_targets(self, data_sources: Any) -> None:
        data_sources.toy = data_sources.toy.model_copy(update={"stars": []})

    async def fetch(self, target: int, ctx: FetchContext) -> None:
        url = f"{self.base_url}/toy/lightcurve"
        params = [("id", str(target))]
        if ctx.watermark is not None:
            params.append(("since", repr(ctx.watermark - self.config.overlap_days)))
        response = await ctx.session.fetch("GET", url, target=self.label(target), params=params)
        provenance = Provenance(archive="toy", url=response.url, sample=self.sample)
        fetched_at = utcnow()
        try:  # a body that is not the documented shape is the archive's error, named with the target
            rows = orjson.loads(response.content)["rows"]
            records = [
                ToyRecord(
                    object_id=str(target),
                    mjd=row["mjd"],
                    flux=row["flux"],
                    fetched_at=fetched_at,
                    provenance=provenance,
                )
                for row in rows
            ]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValidationError) as exc:
            raise ArchiveResponseError(f"not a toy light curve ({exc})", target=self.label(target)) from None
        for record in records:
            await ctx.emit(record)
