"""TESS light curves from MAST: query observations, list products, download and decode FITS.

For each target (a TIC id, a cone, or the configured filters alone):

1. ``Mast.Caom.Filtered`` (``Mast.Caom.Filtered.Position`` for a cone) with obs_collection TESS,
   dataproduct_type timeseries, the target's ``target_name`` (a TIC id, never zero-padded:
   lightkurve#1073), sectors (``sequence_number``), t_min/t_max ranges and any extra filters.
2. For the 2-minute cadence over HTTPS, an observation whose ``dataURL`` is a SPOC light curve
   (``mast:TESS/product/<obs_id>_lc.fits``) is downloaded from that URI straight away. Every other
   observation (20 s, a row without such a dataURL, and all of them when the S3 route needs the
   product list's ``size``) goes to ``Mast.Caom.Products``, in batches of ≤ 500.
3. From a product list, keep light-curve products: ``productSubGroupDescription`` LC with a
   ``_lc.fits`` name for the 2-minute cadence, FAST-LC with ``_fast-lc.fits`` for 20 s.
4. Download each (concurrently, under the host's limits, with a size cap), verify it is a
   complete FITS file, retry a corrupt download once, then report it. A SPOC light curve with a
   cloud copy is read from MAST's public S3 bucket first (:mod:`.cloud`: the key from the
   documented layout, an anonymous GET with the S3 host's own budget, its size checked against the
   product list's ``size`` and its CHECKSUM/DATASUM by the decoder); a missing key, an S3 failure
   or a truncated or corrupt object sends it to MAST over HTTPS, and the run report counts it.
5. Decode on a worker thread (:mod:`harvester.archives.spoc_fits` is the only place FITS is touched).

Products already in the output (same ``obs_id``) are not downloaded again.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio
import structlog

from harvester.archives.base import FetchContext, Source, utcnow
from harvester.archives.common import RateLimit
from harvester.archives.mast_invoke import MastClient, discrete, position, value_range
from harvester.archives.spoc_fits import DecodedLightCurve, decode_lightcurve_async
from harvester.archives.tess.cloud import PRODUCT_PREFIX, SPOC_NAME, CloudRoute, cloud_route, product_key
from harvester.archives.tess.records import TessRecord
from harvester.archives.tess.settings import TessSettings
from harvester.errors import (
    ArchiveResponseError,
    BudgetUnavailable,
    ConfigError,
    HarvesterError,
    HttpStatusError,
)
from harvester.io.http import HttpSession
from harvester.io.s3 import S3Sessions
from harvester.records import Provenance

__all__ = [
    "TessSource",
    "TessTarget",
    "is_lightcurve_product",
    "lightcurve_from_observation",
    "read_tic_file",
]

log = structlog.get_logger("harvester.tess")

SERVICE_FILTERED = "Mast.Caom.Filtered"
SERVICE_POSITION = "Mast.Caom.Filtered.Position"


@dataclass(frozen=True)
class TessTarget:
    """One query: a batch of TIC ids, a cone, or neither (the configured filters alone)."""

    tic_ids: tuple[str, ...] = ()
    cone: tuple[float, float, float] | None = None

    @property
    def label(self) -> str:
        if len(self.tic_ids) == 1:
            return f"TIC {self.tic_ids[0]}"
        if self.tic_ids:
            return f"TIC {self.tic_ids[0]}…{self.tic_ids[-1]} ({len(self.tic_ids)} ids)"
        if self.cone is not None:
            return "cone {:.5f}{:+.5f} r={:g}".format(*self.cone)
        return "filters"


def is_lightcurve_product(row: dict[str, Any], cadence: str) -> bool:
    """A SPOC light-curve product of the wanted cadence (subgroup and file name must both agree)."""
    name = str(row.get("productFilename") or "")
    group = str(row.get("productSubGroupDescription") or "").upper()
    if cadence == "20s":
        return group == "FAST-LC" and name.endswith("fast-lc.fits")
    return group == "LC" and name.endswith("_lc.fits")


def lightcurve_from_observation(row: dict[str, Any]) -> dict[str, Any] | None:
    """The 2-minute SPOC light curve an observation row names in ``dataURL``, shaped as the product
    list's row for it (``productFilename``, ``dataURI``, ``obsID``); None when the row names no
    such file (no dataURL, another collection's URI, a 20-s or HLSP file) or no ``obsid``.

    MAST's CAOM ``dataURL`` of a TESS SPOC timeseries observation is its light curve,
    ``mast:TESS/product/<obs_id>_lc.fits``: the same URI the product list gives as ``dataURI``.
    """
    uri, obsid = str(row.get("dataURL") or ""), row.get("obsid")
    name = uri.removeprefix(PRODUCT_PREFIX)
    if obsid is None or name == uri or SPOC_NAME.fullmatch(name) is None or name.endswith("fast-lc.fits"):
        return None
    return {"productFilename": name, "dataURI": uri, "obsID": obsid}


def read_tic_file(path: Path) -> list[str]:
    """TIC ids from a CSV with a ``tic_id`` (or ``target_name``) column; ConfigError on a bad row."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            column = next((c for c in ("tic_id", "tic", "target_name") if c in columns), None)
            if column is None:
                raise ConfigError(f"{path}: targets file needs a tic_id column; got {columns or 'no header'}")
            ids = []
            for lineno, row in enumerate(reader, start=2):
                clean = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
                value = clean.get(column, "").upper().removeprefix("TIC").strip()
                if not value:
                    continue
                if not value.isdigit():
                    raise ConfigError(f"{path}: line {lineno}: {value!r} is not a TIC id")
                ids.append(str(int(value)))
            return ids
    except FileNotFoundError:
        raise ConfigError(f"targets file not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read targets file ({exc})") from None


class TessSource(Source[TessTarget]):
    """SPOC light curves through the MAST API."""

    name = "tess"
    auth_scheme = "token"  # MAST: Authorization: token <MAST_API_TOKEN>

    def __init__(self, settings: Any, *, sample: bool = False) -> None:
        super().__init__(settings, sample=sample)
        self._claimed: set[str] = set()  # dataURIs taken by some target in this run
        self._decoders = anyio.CapacityLimiter(self.config.decode_workers)
        #: The S3 route (None: MAST over HTTPS only); dropped for the run when its bucket is missing.
        self.cloud: CloudRoute | None = cloud_route(self.config, self.settings.aws_environ())
        self._s3 = None
        if self.cloud is not None:
            self._s3 = S3Sessions(
                self.cloud, self.config.cloud, self.settings.aws_environ(), key="data_sources.tess.cloud"
            )
        self._first_fallback: dict[str, str] = {}  # per kind of S3 fallback: its first product and cause

    @property
    def config(self) -> TessSettings:
        """This archive's block, ``data_sources.tess``."""
        return cast(TessSettings, self.settings.data_sources.block("tess"))

    @property
    def base_url(self) -> str:
        return self.config.base_url

    def budgets(self) -> list[tuple[str, RateLimit]]:
        """MAST's budget, and the S3 host's own when the cloud route is on."""
        out = super().budgets()
        if self.cloud is not None:
            out.append((self.cloud.host, self.config.cloud.rate_limit))
        return out

    def targets(self) -> list[TessTarget]:
        query = self.config.query
        tics: list[str] = []
        if query.target_name:
            tics.append(query.target_name)
        tics.extend(str(t) for t in query.tic_ids)
        if query.targets_file is not None:
            tics.extend(read_tic_file(query.targets_file))
        cone = (query.ra, query.dec, query.radius) if query.ra is not None else None
        if tics:
            # One MAST query names up to tic_batch_size TIC ids (MAST takes a list of values), so
            # metadata costs one or two requests per batch (two when some row's light curve must
            # come from the product list) rather than per star, within MAST's budget.
            unique = list(dict.fromkeys(tics))
            size = query.tic_batch_size
            return [
                TessTarget(tic_ids=tuple(unique[i : i + size]), cone=cone)  # type: ignore[arg-type]
                for i in range(0, len(unique), size)
            ]
        if cone is not None:
            return [TessTarget(cone=cone)]  # type: ignore[arg-type]
        if query.filters or query.sectors:
            return [TessTarget()]
        raise ConfigError(
            "data_sources.tess.query: no targets: set target_name, tic_ids, targets_file, "
            "ra/dec/radius, sectors or filters"
        )

    def label(self, target: TessTarget) -> str:
        return target.label

    def unit_groups(self, *, cell_deg: float, tic_buckets: int) -> list[tuple[str, tuple[Any, ...]]]:
        """TIC ids in stable hash buckets (``executors.units.tic_bucket``); a query without TIC
        ids (a cone, sectors, filters) is one unit."""
        from harvester.executors.units import tic_bucket

        tics = [int(t) for target in self.resolved() for t in target.tic_ids]
        if not tics:
            return [("all", ())]
        buckets: dict[int, list[int]] = {}
        for tic in dict.fromkeys(tics):
            buckets.setdefault(tic_bucket(tic, tic_buckets), []).append(tic)
        return [(f"b{b:04d}", tuple(buckets[b])) for b in sorted(buckets)]

    def narrow(self, data_sources: Any, targets: tuple[Any, ...]) -> None:
        query = data_sources.tess.query
        query.target_name, query.targets_file = None, None
        query.tic_ids = [int(t) for t in targets]

    def clear_targets(self, data_sources: Any) -> None:
        tess = data_sources.tess.model_copy(deep=False)
        update: dict[str, Any] = {"target_name": None, "tic_ids": [], "targets_file": None}
        tess.query = tess.query.model_copy(update=update)
        data_sources.tess = tess

    def describe_query(self) -> dict[str, Any]:
        tess = self.config
        return {
            "base_url": tess.base_url,
            "query": tess.query.model_dump(mode="json"),
            "cadence": tess.cadence,
            "lightcurve": tess.lightcurve.model_dump(mode="json"),
        }

    def filters(self, target: TessTarget) -> list[dict[str, Any]]:
        query = self.config.query
        built = [discrete("obs_collection", ["TESS"]), discrete("dataproduct_type", ["timeseries"])]
        if target.tic_ids:
            built.append(discrete("target_name", target.tic_ids))
        if query.sectors:
            built.append(discrete("sequence_number", query.sectors))
        if query.t_min is not None:
            built.append(value_range("t_min", *query.t_min))
        if query.t_max is not None:
            built.append(value_range("t_max", *query.t_max))
        return built + [dict(f) for f in query.filters]

    async def fetch(self, target: TessTarget, ctx: FetchContext) -> None:
        tess = self.config
        mast = MastClient(
            ctx.session, tess.base_url, pagesize=tess.pagesize, poll_budget_s=tess.poll_budget_s
        )
        label = target.label
        # Only the obsids (and, where the light curve can be taken from it, dataURL) are used:
        # asking for those columns keeps the answer far smaller than every CAOM column (MAST
        # projects "columns").
        direct_ok = tess.cadence == "2min" and self.cloud is None
        columns = "obsid,dataURL" if direct_ok else "obsid"
        params: dict[str, Any] = {"columns": columns, "filters": self.filters(target)}
        service = SERVICE_FILTERED
        if target.cone is not None:
            service = SERVICE_POSITION
            params["position"] = position(*target.cone)
        result = await mast.query(service, params, target=label)
        if result.shortfall:
            self.notes.warnings.append(f"{label}: {result.shortfall}")
        rows = [r for r in result.rows if r.get("obsid") is not None]
        if not rows:
            log.info("fetched", source=self.name, target=label, observations=0, records=0)
            return
        # A 2-minute SPOC observation names its light curve in dataURL: those skip the product
        # list (one round trip less before the first download). The rest, every row for 20 s,
        # and every row when the S3 route needs the listed size, go through Mast.Caom.Products.
        wanted: list[dict[str, Any]] = []
        listed: list[str] = []
        for row in rows:
            product = lightcurve_from_observation(row) if direct_ok else None
            if product is None:
                listed.append(str(row["obsid"]))
            else:
                wanted.append(product)
        if listed:
            products = await mast.products(listed, target=label, batch_size=tess.products_batch_size)
            wanted.extend(p for p in products if is_lightcurve_product(p, tess.cadence))
        claimed = []
        for product in wanted:
            uri = str(product.get("dataURI") or "")
            if not uri or uri in self._claimed:
                continue
            self._claimed.add(uri)
            claimed.append((product, _obs_id(product), uri))
        # one lookup for the whole product list (one per product cost a worker-thread round trip
        # each before the first download could start)
        held = await ctx.present([(obs_id,) for _, obs_id, _ in claimed])
        todo = [item for item in claimed if (item[1],) not in held]
        log.info(
            "products_selected",
            source=self.name,
            target=label,
            observations=len(rows),
            listed=len(listed),
            light_curves=len(wanted),
            to_download=len(todo),
        )
        s3 = None if self._s3 is None or not todo else await self._s3.session(ctx.session)
        async with anyio.create_task_group() as tg:
            for product, obs_id, uri in todo:
                tg.start_soon(self._one_product, mast, s3, ctx, label, product, obs_id, uri)

    async def _one_product(
        self,
        mast: MastClient,
        s3: HttpSession | None,
        ctx: FetchContext,
        label: str,
        product: dict[str, Any],
        obs_id: str,
        uri: str,
    ) -> None:
        name = str(product.get("productFilename") or uri.rsplit("/", 1)[-1])
        try:
            decoded: DecodedLightCurve | None = None
            # s3 is None when the run has no S3 route; self.cloud turns None if the bucket is gone
            if s3 is not None and self.cloud is not None and (key := product_key(product)) is not None:
                decoded, url = await self._from_cloud(s3, label, name, key, product)
                service = "s3"
            if decoded is None:
                decoded = await self._from_mast(mast, label, name, uri)
                url, service = mast.download_url(uri), "Download/file"
            record = TessRecord(
                **decoded.to_record_fields(),
                obs_id=obs_id,
                obsid=_str_or_none(product.get("obsID") or product.get("parent_obsid")),
                fetched_at=utcnow(),
                provenance=Provenance(archive="mast", url=url, service=service, sample=self.sample),
            )
        except BudgetUnavailable:
            raise  # not this light curve's failure: the whole unit stops and is retried
        except HarvesterError as exc:
            ctx.fail(name, exc.message, exc.transient)
            return
        await ctx.emit(record)

    async def _decode(self, data: bytes, name: str) -> DecodedLightCurve:
        lightcurve = self.config.lightcurve
        return await decode_lightcurve_async(
            data,
            limiter=self._decoders,
            flux_column=lightcurve.flux_column,
            quality_bitmask=lightcurve.quality_bitmask,
            max_points=lightcurve.max_points,
            product=name,
        )

    async def _from_mast(self, mast: MastClient, label: str, name: str, uri: str) -> DecodedLightCurve:
        """The light curve downloaded from MAST over HTTPS; a corrupt download is retried once."""
        for attempt in (1, 2):
            data = await mast.download(
                uri, target=f"{label}/{name}", max_bytes=self.config.max_download_bytes
            )
            try:
                return await self._decode(data, name)
            except ArchiveResponseError as exc:
                if attempt == 2:
                    raise
                log.info(
                    "download_corrupt_retrying",
                    source=self.name,
                    target=label,
                    product=name,
                    cause=exc.message,
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _from_cloud(
        self, s3: HttpSession, label: str, name: str, key: str, product: dict[str, Any]
    ) -> tuple[DecodedLightCurve | None, str]:
        """The light curve read from the bucket, and its URL; None (after counting why in the
        report) when it must come from MAST instead: no such key, the bucket gone, an S3 failure
        that outlived the session's retries (503 SlowDown, throttling, resets), or an object whose
        size or FITS checksums differ from MAST's file."""
        route = self.cloud
        assert route is not None
        url = route.url(key)
        target = f"{label}/{name}"
        try:
            response = await s3.fetch("GET", url, target=target, max_bytes=self.config.max_download_bytes)
            size = _int_or_none(product.get("size"))
            if size is not None and len(response.content) != size:
                raise ArchiveResponseError(
                    f"S3 object is {len(response.content):,} bytes, MAST lists {size:,}", target=name
                )
            return await self._decode(response.content, name), url
        except BudgetUnavailable:
            raise
        except HttpStatusError as exc:
            if exc.status == 404 and b"<Code>NoSuchBucket</Code>" in exc.body:
                self.cloud = None  # every later product would meet the same answer
                self._fell_back("no_bucket", route, name, f"bucket {route.bucket} does not exist")
            elif exc.status in (403, 404):
                self._fell_back("missing", route, name, f"HTTP {exc.status}")
            else:
                self._fell_back("failed", route, name, exc.message)
        except ArchiveResponseError as exc:
            self._fell_back("corrupt", route, name, exc.message)
        except HarvesterError as exc:
            self._fell_back("failed", route, name, exc.message)
        return None, url

    def _fell_back(self, kind: str, route: CloudRoute, name: str, cause: str) -> None:
        """Count one product sent from S3 to MAST over HTTPS, as one report line per kind."""
        log.info("s3_fallback", source=self.name, product=name, reason=kind, cause=cause)
        first = self._first_fallback.setdefault(kind, f"{name}: {cause}")
        what = {
            "missing": "had no object in the bucket",
            "corrupt": "came back truncated or corrupt (size or CHECKSUM/DATASUM)",
            "failed": "could not be read (retries exhausted or refused)",
            "no_bucket": "met a missing bucket (S3 route off for the rest of the run)",
        }[kind]

        def line(count: int, first: str = first) -> str:
            plural = "light curve" if count == 1 else "light curves"
            return (
                f"{route.describe()}: {count} {plural} {what}; downloaded from MAST over HTTPS "
                f"(first: {first})"
            )

        self.notes.tally(f"s3_{kind}", line)


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _obs_id(product: dict[str, Any]) -> str:
    """The observation id of a light-curve product: its file stem without the ``_lc.fits`` suffix."""
    name = str(product.get("productFilename") or "")
    for suffix in ("_fast-lc.fits", "_lc.fits"):
        if name.endswith(suffix):
            return name[: -len(suffix)] + ("_fast" if suffix == "_fast-lc.fits" else "")
    return str(product.get("obs_id") or name)


def _str_or_none(value: object) -> str | None:
    return None if value is None or value == "" else str(value)
