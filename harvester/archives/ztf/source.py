"""ZTF light curves from the IRSA light-curve API (``nph_light_curves``).

One GET per cone-search target, and one per batch of up to ``ID_CHUNK`` object ids::

    GET {base_url}?POS=CIRCLE ra dec radius&BANDNAME=g,r&TIME=a b&BAD_CATFLAGS_MASK=m
                   [&COLLECTION=ztf_drN]&FORMAT=CSV
    GET {base_url}?ID=oid1&ID=oid2&…&TIME=a b&BAD_CATFLAGS_MASK=m[&COLLECTION=ztf_drN]&FORMAT=CSV

Facts this module relies on (../shared/docs/upstream-apis.md §1, kept in docs/sources.md):

- ``BANDNAME`` takes ``g``, ``r``, ``i``; IRSA does not accept the ``zg``/``zr``/``zi`` filter
  codes that appear in its output, so they are translated.
- ``FORMAT`` is always sent: IRSA's default output format has changed over time.
- Errors may come back with HTTP 200 as a VOTable with ``QUERY_STATUS=ERROR``, or as an HTML page.
  The body is therefore validated (a CSV whose header holds the IRSA column set) before any row
  is parsed; anything else is an :class:`~harvester.errors.ArchiveResponseError` for the target.
- A header-only CSV is an empty result: zero records, not an error.
- ``ID`` is repeated for several objects, and IRSA takes no ``BAND``, ``BANDNAME``, ``NOBS_MIN``
  or ``MAG`` with it: an id batch's answer is filtered to the wanted bands here.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

import anyio
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import structlog

from harvester.archives.base import FetchContext, Source, utcnow
from harvester.archives.common import ConeSearch, RateLimit, read_targets_file
from harvester.archives.ztf.hats import (
    FILTER_IDS,
    Selection,
    hats_available,
    leaf_batch,
    locate_ids,
    open_catalog,
    pixel_groups,
    read_leaf,
)
from harvester.archives.ztf.records import ZtfRecord
from harvester.archives.ztf.settings import IrsaCone, ZtfSettings, read_object_ids_file
from harvester.errors import ArchiveResponseError, ConfigError, HarvesterError
from harvester.io.arrow import arrow_schema
from harvester.io.batches import Batch, batch_from_columns, constant, keep_ctrl_c_from_polars
from harvester.io.http import snippet
from harvester.io.limiter import AmountBudget, on_cpu
from harvester.io.s3 import CloudRoute, ObjectReader, S3Sessions, endpoint_from_env, split_s3_url
from harvester.records import Provenance
from harvester.settings import Settings

__all__ = [
    "ID_CHUNK",
    "IRSA_COLUMNS",
    "ObjectIds",
    "ZtfSource",
    "id_chunks",
    "irsa_params",
    "parse_irsa_batch",
    "parse_irsa_csv",
]

log = structlog.get_logger("harvester.ztf")

IRSA_COLUMNS = (
    "oid",
    "expid",
    "hjd",
    "mjd",
    "mag",
    "magerr",
    "catflags",
    "filtercode",
    "ra",
    "dec",
    "chi",
    "sharp",
    "filefracday",
    "field",
    "ccdid",
    "qid",
    "limitmag",
    "magzp",
    "magzprms",
    "clrcoeff",
    "clrcounc",
    "exptime",
    "airmass",
    "programid",
)
BANDNAME = {"zg": "g", "zr": "r", "zi": "i"}
_FLOAT_COLUMNS = (
    "hjd",
    "mag",
    "magerr",
    "ra",
    "dec",
    "chi",
    "sharp",
    "limitmag",
    "magzp",
    "magzprms",
    "clrcoeff",
    "clrcounc",
    "exptime",
    "airmass",
)
_INT_COLUMNS = ("expid", "catflags", "filefracday", "field", "programid")
_HEXISH_COLUMNS = ("ccdid", "qid")
_QUERY_STATUS = re.compile(
    rb'<INFO[^>]*name="QUERY_STATUS"[^>]*value="([A-Za-z]+)"[^>]*>(.*?)</INFO>', re.IGNORECASE | re.DOTALL
)
_TITLE = re.compile(rb"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


#: object ids per API request. A bulk client found about 350 repeated ``ID`` the most a request
#: takes (upstream-apis.md §1.2); 200 stays well below it, keeps the URL near 4 KB (each
#: ``ID=<15 digits>&`` is 19 bytes) under the common 8 KB request-line limit, and a batch's answer
#: (200 light curves) far under ``max_response_bytes``.
ID_CHUNK = 200


@dataclass(frozen=True)
class ObjectIds:
    """One API request's object ids (sorted): a target of its own, with its own watermark."""

    ids: tuple[int, ...]

    @property
    def label(self) -> str:
        if len(self.ids) == 1:
            return f"oid {self.ids[0]}"
        return f"oids {self.ids[0]}..{self.ids[-1]} ({len(self.ids)})"


def id_chunks(ids: list[int]) -> list[ObjectIds]:
    """The ids, sorted and without repeats, in requests of ``ID_CHUNK``: the same ids always make
    the same requests (their labels and watermarks), in a local run and in work units alike."""
    unique = sorted(set(ids))
    return [ObjectIds(tuple(unique[i : i + ID_CHUNK])) for i in range(0, len(unique), ID_CHUNK)]


def time_window(irsa: Any, since: float | None) -> tuple[float | None, float | None]:
    """The MJD window asked of IRSA: the configured ``mjd_range``, narrowed to ``since``."""
    lo, hi = irsa.mjd_range if irsa.mjd_range is not None else (None, None)
    if since is not None:
        lo = since if lo is None else max(lo, since)
    return lo, hi


def irsa_params(
    target: ConeSearch | ObjectIds, irsa: Any, *, since: float | None = None
) -> list[tuple[str, str]]:
    """The IRSA query parameters for one cone or id batch, in a stable order.

    ``since`` (an MJD, from the watermark minus the overlap) narrows TIME to newer epochs. An id
    batch sends no BANDNAME (IRSA refuses it with ID): :meth:`ZtfSource.fetch` keeps the bands.
    """
    if isinstance(target, ObjectIds):
        params = [("ID", str(oid)) for oid in target.ids]
    else:
        params = [("POS", f"CIRCLE {target.ra!r} {target.dec!r} {target.radius!r}")]
        if irsa.filters:
            params.append(("BANDNAME", ",".join(BANDNAME[f] for f in irsa.filters)))
    lo, hi = time_window(irsa, since)
    if lo is not None or hi is not None:
        params.append(("TIME", f"{'-Inf' if lo is None else repr(lo)} {'Inf' if hi is None else repr(hi)}"))
    params.append(("BAD_CATFLAGS_MASK", str(irsa.bad_catflags_mask)))
    if irsa.collection:
        params.append(("COLLECTION", irsa.collection))
    params.append(("FORMAT", "CSV"))
    return params


#: a ZTF target: a cone or an id batch on the API route, the whole selection on the hats route
Target = ConeSearch | ObjectIds | Selection


class ZtfSource(Source[Target]):
    """Cone searches and object ids against the IRSA ZTF light-curve API (``route: api``), or the
    same selection read from the data release's HATS catalog on S3 (``route: hats``, :mod:`.hats`)."""

    name = "ztf"
    watermark_field = "mjd"

    def __init__(self, settings: Settings, *, sample: bool = False) -> None:
        super().__init__(settings, sample=sample)
        configured = self.config.route
        #: the route this run takes; ``auto`` is decided in :meth:`plan`, once the output is known
        self.route: Literal["api", "hats"] | None = None if configured == "auto" else configured
        self.auto_reason: str | None = None
        self._s3: S3Sessions | None = None

    @property
    def hats_route(self) -> CloudRoute:
        """The bucket and endpoint of the hats route's catalog."""
        hats = self.config.hats
        bucket, _prefix = split_s3_url(hats.catalog_url)
        return CloudRoute(
            bucket,
            hats.endpoint_url or endpoint_from_env(self.settings.aws_environ()),
            signed=hats.credentials == "aws",
        )

    def budgets(self) -> list[tuple[str, RateLimit]]:
        """IRSA's budget, and the S3 host's own when the hats route may be taken."""
        out = super().budgets()
        if self.config.route != "api":
            out.append((self.hats_route.host, self.config.hats.rate_limit))
        return out

    @property
    def config(self) -> ZtfSettings:
        """This archive's block, ``data_sources.ztf``."""
        return cast(ZtfSettings, self.settings.data_sources.block("ztf"))

    @property
    def base_url(self) -> str:
        return self.config.irsa.base_url

    def targets(self) -> list[Target]:
        cones, ids = self.selected()
        if self.route == "hats" and not hats_available():
            raise ConfigError(
                "data_sources.ztf.route: the hats route needs the hats library: pip install 'harvester[hats]'"
            )
        if self.route == "hats":
            return [self.selection(cones, ids)]
        return [*cones, *id_chunks(ids)]

    def selection(self, cones: list[ConeSearch], ids: list[int] | None = None) -> Selection:
        irsa = self.config.irsa
        lo, hi = time_window(irsa, None)
        bands = frozenset(k for k, code in FILTER_IDS.items() if code in irsa.filters)
        unique = tuple(sorted(set(ids or ())))
        return Selection(tuple(cones), bands, (lo, hi), irsa.bad_catflags_mask, unique)

    async def plan(self, targets: list[Target], *, held: list[tuple[str, ...]]) -> list[Target]:
        """``route: auto``, decided (docs/sources.md, "ZTF routes"): the route of the records the
        output already holds (a release epoch's key is ``(object_id, "hmjd…")``, an API epoch's
        ``(object_id, mjd)``), so a folder never mixes the two; for an empty output, hats for a
        selection of at least ``hats.auto_min_targets`` cones and the API below."""
        if self.route is not None:
            return targets
        route: Literal["api", "hats"]
        if any(len(key) > 1 and key[1].startswith("hmjd") for key in held):
            route, why = "hats", "the output holds data-release records"
        elif held:
            route, why = "api", "the output holds API records"
        else:
            route, why = self._by_size(*self.selected())
        if route == "hats" and not hats_available():
            route, why = "api", "the hats library is not installed (pip install 'harvester[hats]')"
        self.route, self.auto_reason = route, why
        log.info("route_chosen", source=self.name, route=route, reason=why)
        self._resolved = self.targets()
        return self._resolved

    def _by_size(self, cones: list[ConeSearch], ids: list[int]) -> tuple[Literal["api", "hats"], str]:
        """``auto``'s rule for an empty output: hats from ``hats.auto_min_targets`` API requests
        (a cone is one, a batch of ``ID_CHUNK`` ids another)."""
        threshold = self.config.hats.auto_min_targets
        asked = f"{len(cones)} cone{'s' if len(cones) != 1 else ''}"
        requests = len(cones)
        if ids:
            batches = len(id_chunks(ids))
            asked += f" and {batches} id batch{'es' if batches != 1 else ''}"
            requests += batches
        if requests >= threshold:
            return "hats", f"{asked}, at least {threshold}"
        return "api", f"{asked}, fewer than {threshold}"

    def selected(self) -> tuple[list[ConeSearch], list[int]]:
        """The configured cones and object ids; ConfigError when there are neither."""
        cones, ids = self.cones(), self.object_ids()
        if not cones and not ids:
            raise ConfigError(
                "data_sources.ztf.irsa: no targets: set cone_search, targets, targets_file, object_ids "
                "or object_ids_file"
            )
        return cones, ids

    def cones(self) -> list[ConeSearch]:
        """The configured cone-search targets (cone_search, targets, targets_file)."""
        irsa = self.config.irsa
        found: list[ConeSearch] = []
        if irsa.cone_search is not None:
            found.append(irsa.cone_search)
        found.extend(irsa.targets)
        if irsa.targets_file is not None:
            found.extend(
                read_targets_file(irsa.targets_file, default_radius=irsa.default_radius, cone=IrsaCone)
            )
        return found

    def object_ids(self) -> list[int]:
        """The configured object ids (object_ids, object_ids_file), in the order given."""
        irsa = self.config.irsa
        ids = list(irsa.object_ids)
        if irsa.object_ids_file is not None:
            ids.extend(read_object_ids_file(irsa.object_ids_file))
        return ids

    def label(self, target: Target) -> str:
        return target.label

    def describe_query(self) -> dict[str, Any]:
        irsa = self.config.irsa
        route: dict[str, Any] = {}
        if self.route == "hats":  # an API query keeps the form (and watermark keys) it always had
            route = {"route": "hats", "hats_catalog": self.config.hats.catalog_url}
        return {
            **route,
            "base_url": irsa.base_url,
            "filters": list(irsa.filters) or "all",
            "mjd_range": list(irsa.mjd_range) if irsa.mjd_range else None,
            "bad_catflags_mask": irsa.bad_catflags_mask,
            "collection": irsa.collection or "latest public release",
            # "targets" is not part of a target's watermark key: the pipeline adds the list
            "targets": {
                "targets_file": str(irsa.targets_file) if irsa.targets_file else None,
                **({"object_ids_file": str(irsa.object_ids_file)} if irsa.object_ids_file else {}),
            },
        }

    def unit_groups(self, *, cell_deg: float, tic_buckets: int) -> list[tuple[str, tuple[Any, ...]]]:
        """API route: cones by sky cell of ``cell_deg``. Hats route: cones by the HEALPix pixel
        of their centre at the order whose pixels are nearest ``cell_deg`` (HATS' own tiling, so a
        unit's cones share leaves), ids ``hpx<order>-<pixel>``. Object ids, on either route: one
        unit per request's batch (:func:`id_chunks`), id ``oids-<first id>``, so a unit asks what
        a local run asks. ``auto`` is decided here for a distributed run, by the size rule alone
        (the units' outputs are not known yet)."""
        from harvester.executors.units import cone_groups

        cones, ids = self.selected()
        if self.route is None:
            self.route, self.auto_reason = self._by_size(cones, ids)
            if self.route == "hats" and not hats_available():
                self.route, self.auto_reason = "api", "the hats library is not installed"
        groups = cone_groups(cones, cell_deg) if self.route == "api" else pixel_groups(cones, cell_deg)
        groups += [(f"oids-{chunk.ids[0]}", chunk.ids) for chunk in id_chunks(ids)]
        return sorted(groups)

    def narrow(self, data_sources: Any, targets: tuple[Any, ...]) -> None:
        """A unit's targets: cones as plain dicts, object ids as integers."""
        irsa = data_sources.ztf.irsa
        irsa.cone_search, irsa.targets_file, irsa.object_ids_file = None, None, None
        irsa.targets = [IrsaCone.model_validate(t) for t in targets if isinstance(t, dict)]
        irsa.object_ids = [int(t) for t in targets if not isinstance(t, dict)]
        if self.route is not None:  # every unit takes the route the plan decided
            data_sources.ztf.route = self.route

    def clear_targets(self, data_sources: Any) -> None:
        ztf = data_sources.ztf.model_copy(deep=False)
        cleared: dict[str, Any] = {"cone_search": None, "targets": [], "targets_file": None}
        ztf.irsa = ztf.irsa.model_copy(update=cleared | {"object_ids": [], "object_ids_file": None})
        data_sources.ztf = ztf

    def requested(self, target: Target, watermark: float | None) -> dict[str, Any]:
        if isinstance(target, Selection):
            lo, hi = target.mjd_range
            asked = {"route": "hats", "hmjd_from": lo, "hmjd_to": hi, "cones": len(target.cones)}
            asked |= {"object_ids": len(target.object_ids)} if target.object_ids else {}
            return asked | ({"route_chosen_because": self.auto_reason} if self.auto_reason else {})
        since = None if watermark is None else watermark - self.config.overlap_days
        lo, hi = time_window(self.config.irsa, since)
        return {"mjd_from": lo, "mjd_to": hi, "incremental": since is not None}

    async def fetch(self, target: Target, ctx: FetchContext) -> None:
        if isinstance(target, Selection):
            await self._fetch_hats(target, ctx)
            return
        irsa = self.config.irsa
        label = self.label(target)
        since = None
        if ctx.watermark is not None:
            since = ctx.watermark - self.config.overlap_days
        response = await ctx.session.fetch(
            "GET",
            irsa.base_url,
            params=irsa_params(target, irsa, since=since),
            target=label,
            max_bytes=irsa.max_response_bytes,
        )
        provenance = Provenance(archive="irsa", url=response.url, sample=self.sample)
        fetched_at = utcnow()
        size = len(response.content)
        batch = await on_cpu(
            functools.partial(
                _with_keys,
                parse_irsa_batch,
                response.content,
                label,
                provenance,
                fetched_at,
                data_release=irsa.collection,
                bands=irsa.filters if isinstance(target, ObjectIds) else None,
            )
        )
        del response  # parsed: the body is not needed while the records travel
        log.info("fetched", source=self.name, target=label, records=len(batch), bytes=size)
        # Sent in slices: a large cone streams to the writer instead of arriving all at once.
        for start in range(0, len(batch), BATCH_ROWS):
            await ctx.emit_batch(batch.slice(start, min(start + BATCH_ROWS, len(batch))))

    async def _fetch_hats(self, selection: Selection, ctx: FetchContext) -> None:
        """The selection from the HATS catalog: its metadata, the pixels of the object ids (from
        the collection's id index; when it cannot be read, the ids fail as one part and the cones
        are still read), then every pixel a cone touches or an id lives in, as many leaves in
        flight as the bucket's budget lets requests be (``hats.rate_limit.max_concurrency``: a
        leaf's listing, footer and row groups are one request after the other, so fewer would
        leave the budget idle; each is small until its data) and at most
        ``BYTES_AT_ONCE`` of fetched row groups between their GET and the moment their rows are
        sent on (many small pieces at once, a few large ones; each at most ``hats.max_read_bytes``)."""
        hats = self.config.hats
        label = selection.label
        route = self.hats_route
        if self._s3 is None:
            self._s3 = S3Sessions(route, hats, self.settings.aws_environ(), key="data_sources.ztf.hats")
        reader = ObjectReader(await self._s3.session(ctx.session), route, max_bytes=hats.max_read_bytes)
        _bucket, prefix = split_s3_url(hats.catalog_url)
        catalog = await open_catalog(reader, prefix, data_release=hats.data_release, target=label)
        plan: dict[tuple[int, int], list[int]] = {}
        if selection.cones:
            plan = await anyio.to_thread.run_sync(catalog.plan, list(selection.cones), abandon_on_cancel=True)
        slots = anyio.Semaphore(hats.rate_limit.max_concurrency)
        in_flight = AmountBudget(max(BYTES_AT_ONCE, hats.max_read_bytes))
        located: dict[tuple[int, int], list[int]] = {}
        if selection.object_ids:
            try:
                located = await locate_ids(
                    reader, catalog, selection.object_ids, target=label, in_flight=in_flight
                )
            except HarvesterError as exc:
                ctx.fail("object ids", exc.message, exc.transient)
        pixels = sorted(plan.keys() | located.keys())
        log.info(
            "hats_plan",
            source=self.name,
            catalog=catalog.name,
            cones=len(selection.cones),
            object_ids=len(selection.object_ids),
            pixels=len(pixels),
        )

        async def pixel(order: int, npix: int) -> None:
            cones = [selection.cones[i] for i in plan.get((order, npix), [])]
            ids = located.get((order, npix), [])
            part = f"Norder={order}/Npix={npix}"
            async with slots:
                try:
                    await leaf(catalog.leaf_key(order, npix), cones, ids)
                except HarvesterError as exc:
                    ctx.fail(part, exc.message, exc.transient)

        async def leaf(key: str, cones: list[ConeSearch], ids: list[int]) -> None:
            leaves = [key]
            if key.endswith("/"):  # DR24's layout: a folder of Parquet files
                leaves = [k for k in await reader.list(key, target=label) if k.endswith(".parquet")]
                if not leaves:
                    raise ArchiveResponseError(
                        f"no Parquet file under {route.url(key)} (a pixel partition_info.csv lists)",
                        target=label,
                    )
            for name in leaves:
                provenance = Provenance(archive="irsa", url=route.url(name), service="s3", sample=self.sample)
                try:
                    tables = read_leaf(
                        reader, name, catalog, cones, selection, ids=ids, target=label, in_flight=in_flight
                    )
                    async with contextlib.aclosing(tables):  # a failure frees the piece's slot at once
                        async for table in tables:
                            batch = await on_cpu(
                                functools.partial(
                                    _with_keys,
                                    leaf_batch,
                                    table,
                                    catalog,
                                    cones,
                                    selection,
                                    provenance,
                                    utcnow(),
                                    target=label,
                                    ids=ids,
                                )
                            )
                            del table
                            for start in range(0, len(batch), BATCH_ROWS):
                                await ctx.emit_batch(batch.slice(start, min(start + BATCH_ROWS, len(batch))))
                except (pa.ArrowException, ValueError, TypeError, KeyError, IndexError) as exc:
                    # a leaf whose columns are not the release's types: that pixel fails, not the run
                    raise ArchiveResponseError(
                        f"{route.url(name)}: not a ZTF light-curve leaf ({type(exc).__name__}: {exc})",
                        target=label,
                    ) from None

        async with anyio.create_task_group() as tg:
            for order, npix in pixels:
                tg.start_soon(pixel, order, npix)


#: bytes of fetched row groups (Parquet, compressed) held at once, from their GET until their rows
#: are sent on: the hats route's memory bound (decoded, they take a few times more)
BYTES_AT_ONCE = 512 * 1024**2
#: rows per batch sent downstream
BATCH_ROWS = 8192
#: the filter codes IRSA serves, as an Arrow value set. Built when the module is imported, that is
#: when a run builds its sources, before any request: pyarrow's first array from Python objects
#: imports pandas when it is installed (0.3-1 s holding the GIL), which must not stall fetching.
_BANDS = pa.array(list(BANDNAME))
# polars writes the batches' JSON: imported with the source too (when a run builds its sources,
# before any request), and kept from taking Ctrl-C away from the run
keep_ctrl_c_from_polars()
_NULLS = ["", "nan", "NaN", "NAN", "null", "NULL", "Null", "none", "None", "NONE"]


def _with_keys(build: Callable[..., Batch], *args: Any, **kwargs: Any) -> Batch:
    """``build(...)``'s batch with its dedup keys worked out on the same worker thread: the
    dedup stage (one task for the whole source) then only looks them up."""
    batch = build(*args, **kwargs)
    batch.key_texts  # noqa: B018 (computed and kept by the property)
    return batch


def parse_irsa_batch(
    content: bytes,
    target: str,
    provenance: Provenance,
    fetched_at: datetime,
    *,
    data_release: str | None = None,
    bands: Sequence[str] | None = None,
) -> Batch:
    """An IRSA body as one :class:`Batch` of :class:`ZtfRecord` rows (of ``bands`` only, when
    given: an id query's, which IRSA cannot filter by band).

    The CSV is parsed by pyarrow's vectorised reader with an explicit type per column and checked
    column by column (oid all digits, mjd present and finite, filtercode zg/zr/zi, non-finite
    floats to null). Anything that reader does not take exactly as :func:`parse_irsa_csv` would
    (markup, a missing column, a malformed or odd cell, hex ids) goes through
    :func:`parse_irsa_csv` instead, so values and error messages (the first bad line, with the
    target) are the same on both paths.
    """
    table = _fast_table(content)
    if table is None:
        rows = parse_irsa_csv(content, target)
        batch = _rows_batch(rows, provenance, fetched_at)
    else:
        batch = _columns_batch(table, provenance, fetched_at)
    if bands:
        wanted = pc.is_in(batch.table.column("filter"), pa.array(list(bands)))
        batch = Batch(ZtfRecord, batch.table.filter(wanted))
    if data_release is None:
        return batch
    column = constant(data_release, len(batch), arrow_schema(ZtfRecord).field("data_release").type)
    index = batch.table.schema.get_field_index("data_release")
    return Batch(ZtfRecord, batch.table.set_column(index, "data_release", column))


def _fast_table(content: bytes) -> Any:
    """The body's IRSA columns parsed and checked by pyarrow, or None when the row parser must
    decide (anything unusual: it gives the exact value or the exact error)."""
    end = content.find(b"\n")  # not partition(): that would copy the whole body
    head = content[: max(end, 0)]
    if end < 0 or b'"' in head or head.lstrip()[:1] == b"<":
        return None
    # nan(...) and 0x.. numbers: pyarrow takes cells the row parser refuses. One-byte searches
    # first (memchr: ~20x faster than looking for "0x" in a body of digits); the header has x's.
    start = len(head)
    if b"(" in content or (
        (content.find(b"x", start) >= 0 or content.find(b"X", start) >= 0)
        and (b"0x" in content or b"0X" in content)
    ):
        return None
    try:
        header = [h.strip().lower() for h in head.decode("utf-8").rstrip("\r").split(",")]
    except UnicodeDecodeError:
        return None
    if len(set(header)) != len(header) or any(c not in header for c in IRSA_COLUMNS):
        return None
    types = {name: pa.float64() for name in (*_FLOAT_COLUMNS, "mjd")}
    types.update({name: pa.int64() for name in (*_INT_COLUMNS, *_HEXISH_COLUMNS)})
    types.update(oid=pa.string(), filtercode=pa.string())
    try:
        table = pacsv.read_csv(
            pa.py_buffer(content),
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1, use_threads=False),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=list(IRSA_COLUMNS), null_values=_NULLS
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    oid, mjd, band = table.column("oid"), table.column("mjd"), table.column("filtercode")
    if table.num_rows and not (
        pc.all(pc.match_substring_regex(oid, "^[0-9]+$")).as_py()
        and mjd.null_count == 0
        and pc.all(pc.is_finite(mjd)).as_py()
        and pc.all(pc.is_in(band, value_set=_BANDS)).as_py()
    ):
        return None
    try:
        object_id = pc.cast(pc.cast(oid, pa.int64()), pa.string())
    except (pa.ArrowInvalid, OverflowError):
        return None  # more digits than an int64 holds: the row parser keeps them exactly
    return table.set_column(table.schema.get_field_index("oid"), "oid", object_id)


def _columns_batch(table: Any, provenance: Provenance, fetched_at: datetime) -> Batch:
    n = table.num_rows
    columns: dict[str, Any] = {"object_id": table.column("oid"), "filter": table.column("filtercode")}
    for name in ("mjd", *_INT_COLUMNS, *_HEXISH_COLUMNS):
        columns[name] = table.column(name)
    for name in _FLOAT_COLUMNS:
        values = table.column(name)
        columns[name] = pc.if_else(pc.is_finite(values), values, None)  # NaN and ±inf: null
    return batch_from_columns(ZtfRecord, {**columns, **_constants(provenance, fetched_at, n)}, n)


def _rows_batch(rows: list[dict[str, Any]], provenance: Provenance, fetched_at: datetime) -> Batch:
    schema = arrow_schema(ZtfRecord)
    n = len(rows)
    given = {name for name in rows[0]} if rows else set(IRSA_FIELDS)
    columns = {name: pa.array([row[name] for row in rows], schema.field(name).type) for name in given}
    return batch_from_columns(ZtfRecord, {**columns, **_constants(provenance, fetched_at, n)}, n)


def _constants(provenance: Provenance, fetched_at: datetime, n: int) -> dict[str, Any]:
    """The columns every row of one response shares."""
    schema = arrow_schema(ZtfRecord)
    values = {
        "source": "ztf",
        "fetched_at": fetched_at,
        **{f"provenance_{k}": v for k, v in provenance.model_dump().items()},
    }
    return {name: constant(value, n, schema.field(name).type) for name, value in values.items()}


#: the ZtfRecord fields a parsed IRSA row fills
IRSA_FIELDS = ("object_id", "mjd", "filter", *_FLOAT_COLUMNS, *_INT_COLUMNS, *_HEXISH_COLUMNS)


def parse_irsa_csv(content: bytes, target: str) -> list[dict[str, Any]]:
    """Validate an IRSA body and parse its CSV rows into ZtfRecord fields.

    Raises :class:`ArchiveResponseError` for anything that is not the IRSA CSV: a VOTable with
    ``QUERY_STATUS=ERROR``, an HTML page, non-UTF-8 bytes, a wrong header or a malformed row.
    """
    head = content[:4096].lstrip()
    if head.startswith(b"<"):
        raise ArchiveResponseError(_describe_markup(content), target=target)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArchiveResponseError(f"IRSA body is not UTF-8 text (byte {exc.start})", target=target) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ArchiveResponseError(
            "IRSA returned an empty body (expected a CSV header)", target=target
        ) from None
    except csv.Error as exc:
        raise ArchiveResponseError(f"IRSA body is not CSV ({exc})", target=target) from None
    header = [h.strip().lower() for h in header]
    missing = [c for c in IRSA_COLUMNS if c not in header]
    if missing:
        raise ArchiveResponseError(
            f"IRSA body is not the light-curve CSV (missing columns {', '.join(missing[:5])}"
            f"{'…' if len(missing) > 5 else ''}): {snippet(content)}",
            target=target,
        )
    index = {name: header.index(name) for name in IRSA_COLUMNS}
    rows: list[dict[str, Any]] = []
    try:
        for line_no, cells in enumerate(reader, start=2):
            if not cells or cells == [""]:
                continue
            if len(cells) != len(header):
                raise ArchiveResponseError(
                    f"IRSA CSV line {line_no} has {len(cells)} cells, header has {len(header)} "
                    "(truncated or corrupt body)",
                    target=target,
                )
            rows.append(_row(cells, index, line_no, target))
    except csv.Error as exc:
        raise ArchiveResponseError(f"IRSA CSV is malformed ({exc})", target=target) from None
    return rows


def _row(cells: list[str], index: dict[str, int], line_no: int, target: str) -> dict[str, Any]:
    def cell(name: str) -> str:
        return cells[index[name]].strip()

    try:
        oid = cell("oid")
        if not oid.isdigit():
            raise ValueError(f"oid {oid!r} is not an integer id")
        mjd = _float(cell("mjd"))
        if mjd is None:
            raise ValueError("mjd is missing or not finite")
        filtercode = cell("filtercode")
        if filtercode not in BANDNAME:
            raise ValueError(f"filtercode {filtercode!r} is not zg, zr or zi")
        row: dict[str, Any] = {"object_id": str(int(oid)), "mjd": mjd, "filter": filtercode}
        for name in _FLOAT_COLUMNS:
            row[name] = _float(cell(name))
        for name in _INT_COLUMNS:
            row[name] = _int(cell(name))
        for name in _HEXISH_COLUMNS:
            row[name] = _int(cell(name), allow_hex=True)
    except ValueError as exc:
        raise ArchiveResponseError(f"IRSA CSV line {line_no}: {exc}", target=target) from None
    return row


def _float(text: str) -> float | None:
    """A finite float, or None for empty, nan, inf and null cells."""
    if not text or text.lower() in ("nan", "null", "none", "-nan", "inf", "-inf", "+inf", "infinity"):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _int(text: str, *, allow_hex: bool = False) -> int | None:
    if not text or text.lower() in ("nan", "null", "none"):
        return None
    if allow_hex and text.lower().startswith("0x"):
        return int(text, 16)
    try:
        return int(text)
    except ValueError:
        value = float(text)  # IRSA sometimes prints integral columns as 1.0
        if not value.is_integer():
            raise ValueError(f"{text!r} is not an integer") from None
        return int(value)


def _describe_markup(content: bytes) -> str:
    status = _QUERY_STATUS.search(content)
    if status is not None:
        value = status.group(1).decode("ascii", "replace").upper()
        message = " ".join(status.group(2).decode("utf-8", "replace").split()) or "no message"
        return f"IRSA answered QUERY_STATUS={value}: {message[:200]}"
    if b"<votable" in content[:2048].lower():
        return "IRSA answered a VOTable instead of CSV"
    title = _TITLE.search(content[:8192])
    if title is not None:
        name = " ".join(title.group(1).decode("utf-8", "replace").split())
        return f"IRSA answered an HTML page instead of CSV: {name[:120]!r}"
    return f"IRSA answered markup instead of CSV: {snippet(content)}"
