"""The hats route: ZTF light curves from the data release's HATS catalog on S3.

IRSA publishes each ZTF data release as a HATS collection on the anonymous bucket
``ipac-irsa-ztf`` (``../shared/docs/upstream-apis.md`` §4.1): HEALPix-partitioned Parquet, one
row per ZTF object (one filter, field and CCD quadrant) with its epochs in a nested ``lightcurve``
column (``hmjd``, ``mag``, ``magerr``, ``clrcoeff``, ``catflags``; earlier releases: five parallel
list columns of those names).

A harvest of a selection (cones, bands, an MJD range, a catflags mask):

1. reads ``collection.properties`` (when the URL is a collection), ``hats.properties`` and
   ``partition_info.csv``: three small GETs;
2. finds the pixels each cone touches: the ``hats`` library's catalog model (properties, pixel
   list) and mocpy's cone cells (a dependency of hats, vectorised over the cones): the HEALPix
   arithmetic is theirs, not ours;
3. per pixel, reads the leaf file's footer (one ranged GET of its tail), keeps the row groups whose
   ``_healpix_29`` and ``filterid`` statistics can hold a match, and fetches only the byte ranges
   of the needed columns of those row groups (neighbouring ranges merged): never a whole leaf,
   which IRSA warns can be several GB;
4. decodes them with pyarrow on a worker thread, keeps the objects inside a cone (angular
   distance to the cone's centre, on the object's ``objra``/``objdec``) and the wanted bands,
   explodes the epochs, keeps those in the MJD range (on ``hmjd``) without a masked catflags bit,
   and sends them on as one :class:`~harvester.io.batches.Batch` per leaf.

Every request goes through harvester's anonymous HTTP session (:mod:`harvester.io.s3`): the
bucket's own budget, retries, timeouts and size caps; no token is ever sent to S3.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import re
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harvester.archives.common import ConeSearch
from harvester.archives.ztf.records import ZtfRecord
from harvester.errors import ArchiveResponseError, ConfigError, HttpStatusError
from harvester.io.arrow import arrow_schema
from harvester.io.batches import Batch, batch_from_columns, constant
from harvester.io.limiter import AmountBudget
from harvester.io.s3 import ObjectReader, SparseFile, merge_ranges
from harvester.records import Provenance

__all__ = [
    "EPOCH_COLUMNS",
    "FILTER_IDS",
    "HatsCatalog",
    "Selection",
    "hats_available",
    "leaf_batch",
    "locate_ids",
    "open_catalog",
    "pixel_groups",
    "read_leaf",
]

#: ZTF filter ids of the data release (``filterid``) and the API's filter codes
FILTER_IDS = {1: "zg", 2: "zr", 3: "zi"}
#: the per-epoch columns of a light curve in the data release
EPOCH_COLUMNS = ("hmjd", "mag", "magerr", "clrcoeff", "catflags")
_OBJECT_COLUMNS = ("objectid", "filterid", "fieldid", "rcid")
#: the release's object id column, the one its id index covers
ID_COLUMN = "objectid"
#: bytes read from a leaf's end first: its footer, in one request for any ordinary leaf. Also what
#: pyarrow's reader reads first from a file's end (its default footer read size), so it must stay
#: at least 64 KiB: pyarrow then never asks for a byte before the fetched ranges.
TAIL_BYTES = 64 * 1024
#: byte ranges of one leaf closer than this are fetched in one GET
MERGE_GAP = 1024 * 1024
#: pyarrow's reader coalesces reads across holes up to this size (its CacheOptions' hole_size_limit):
#: the bytes of such holes are fetched too, so the reader never asks for a byte not fetched
ARROW_HOLE = 8192
#: cones planned per mocpy call
PLAN_CHUNK = 10_000
#: files of an object-id index read at once (each: a footer, then its needed row groups' ranges)
INDEX_FILES_AT_ONCE = 16
_RELEASE = re.compile(r"dr(\d+)", re.IGNORECASE)


def hats_available() -> bool:
    """Whether the hats library (the ``hats`` extra) can be imported, without importing it."""
    import importlib.util

    return importlib.util.find_spec("hats") is not None


def _hats() -> Any:
    """The ``hats`` library (the ``hats`` extra), imported when the route is used."""
    try:
        import hats.catalog
        import hats.pixel_math
    except ImportError:
        raise ConfigError(
            "data_sources.ztf.route: the hats route needs the hats library: pip install 'harvester[hats]'"
        ) from None
    return hats


@dataclass(frozen=True)
class Selection:
    """What a hats-route harvest asks for: the cones and the filters of the API route's query."""

    cones: tuple[ConeSearch, ...]
    bands: frozenset[int] = frozenset()  # filter ids; empty: all
    mjd_range: tuple[float | None, float | None] = (None, None)
    bad_catflags_mask: int = 0
    object_ids: tuple[int, ...] = ()  # sorted, found through the collection's object-id index

    @property
    def label(self) -> str:
        parts = [f"{len(self.cones)} cone{'s' if len(self.cones) != 1 else ''}"] if self.cones else []
        if self.object_ids:
            parts.append(f"{len(self.object_ids)} object id{'s' if len(self.object_ids) != 1 else ''}")
        return f"hats: {', '.join(parts) or '0 cones'}"


@dataclass
class HatsCatalog:
    """A HATS catalog's metadata, as the route needs it."""

    prefix: str  # the catalog folder's key prefix in the bucket
    name: str
    ra_column: str
    dec_column: str
    healpix_column: str
    npix_suffix: str
    data_release: str
    catalog: Any = field(repr=False)  # hats.catalog.Catalog (in memory: its pixel tree)
    #: the object-id index catalog's key prefix (a collection's ``all_indexes`` entry for
    #: ``objectid``), or why there is none: one line for the error of an id selection
    id_index: str | None = None
    no_index: str = ""

    def leaf_key(self, order: int, pixel: int) -> str:
        """The key of a pixel's leaf (a file, or a folder of files when ``npix_suffix`` is ``/``)."""
        folder = (pixel // 10_000) * 10_000
        return f"{self.prefix}/dataset/Norder={order}/Dir={folder}/Npix={pixel}{self.npix_suffix}"

    def plan(self, cones: Sequence[ConeSearch]) -> dict[tuple[int, int], list[int]]:
        """The catalog's pixels that any cone touches, each with the indices of those cones.

        Each cone's HEALPix cells at the catalog's deepest order (mocpy, vectorised over the
        cones) are mapped up to every order the catalog has and looked up in its pixel list (the
        ``hats`` pixel tree's pixels): about 10 µs a cone, where hats' ``filter_by_cone`` takes
        milliseconds a cone.
        """
        from astropy import units
        from mocpy import MOC  # a dependency of hats

        pixels = self.catalog.get_healpix_pixels()
        by_order: dict[int, set[int]] = defaultdict(set)
        for pixel in pixels:
            by_order[int(pixel.order)].add(int(pixel.pixel))
        deepest = max(by_order)
        found: dict[tuple[int, int], list[int]] = defaultdict(list)
        for first in range(0, len(cones), PLAN_CHUNK):
            chunk = cones[first : first + PLAN_CHUNK]
            mocs = MOC.from_cones(
                lon=np.array([c.ra for c in chunk]) * units.deg,
                lat=np.array([c.dec for c in chunk]) * units.deg,
                radius=np.array([c.radius for c in chunk]) * units.deg,
                max_depth=deepest,
            )
            for i, moc in enumerate(mocs, start=first):
                cells = np.asarray(moc.flatten(), dtype=np.int64)  # at depth ``deepest``
                for order, members in by_order.items():
                    for pixel in set((cells >> (2 * (deepest - order))).tolist()) & members:
                        found[(order, pixel)].append(i)
        return dict(sorted(found.items()))


def _properties(data: bytes, what: str, target: str) -> dict[str, str]:
    from jproperties import Properties  # a dependency of hats, which reads the same files with it

    parsed = Properties()
    try:
        parsed.load(data, "utf-8")
    except Exception as exc:  # jproperties raises its own ParseError and UnicodeDecodeError
        raise ArchiveResponseError(f"{what} is not a properties file ({exc})", target=target) from None
    return {k: v for k, (v, _meta) in parsed.items()}


async def _optional(reader: ObjectReader, key: str, target: str) -> bytes | int:
    """The object, or the HTTP status (403 or 404) that says it cannot be read."""
    try:
        return await reader.get(key, target=target)
    except HttpStatusError as exc:
        if exc.status in (403, 404):  # a public bucket that hides its listing answers 403
            return exc.status
        raise


async def open_catalog(
    reader: ObjectReader, prefix: str, *, data_release: str | None, target: str
) -> HatsCatalog:
    """The catalog at ``prefix`` (a collection's primary catalog, or a catalog itself)."""
    hats = await anyio.to_thread.run_sync(_hats)  # its first import takes seconds (numba): off the loop
    where = f"s3://{reader.route.bucket}/{prefix}"
    collection = await _optional(reader, f"{prefix}/collection.properties", target)
    id_index, no_index = None, f"{where} is a catalog, not a collection: it has no object-id index"
    if not isinstance(collection, int):
        found = _properties(collection, f"{where}/collection.properties", target)
        primary = found.get("hats_primary_table_url")
        if not primary:
            raise ArchiveResponseError(
                f"{where}: collection.properties names no hats_primary_table_url", target=target
            )
        index, no_index = _id_index(hats, found, f"{where}/collection.properties")
        id_index = f"{prefix}/{index.strip('/')}" if index else None
        prefix = f"{prefix}/{primary.strip('/')}"
        where = f"s3://{reader.route.bucket}/{prefix}"
    info = await _table_properties(reader, hats, prefix, "catalog", target, collection=collection)
    listing = await reader.get(f"{prefix}/partition_info.csv", target=target)

    def build() -> Any:  # a release lists tens of thousands of pixels: parsed off the loop
        pixels = _partition_info(listing, f"{where}/partition_info.csv", target)
        try:
            return hats.catalog.Catalog(info, pixels)
        except ValueError as exc:
            raise ArchiveResponseError(f"{where}: {exc}", target=target) from None

    catalog = await anyio.to_thread.run_sync(build)
    name = str(info.catalog_name)
    release = data_release
    if release is None:
        match = _RELEASE.search(name)
        release = f"ztf_dr{int(match.group(1))}" if match else name
    return HatsCatalog(
        prefix=prefix,
        name=name,
        ra_column=str(info.ra_column or "objra"),
        dec_column=str(info.dec_column or "objdec"),
        healpix_column=str(getattr(info, "healpix_column", None) or "_healpix_29"),
        npix_suffix=str(getattr(info, "npix_suffix", None) or ".parquet"),
        data_release=release,
        catalog=catalog,
        id_index=id_index,
        no_index=no_index,
    )


async def _table_properties(
    reader: ObjectReader, hats: Any, prefix: str, kind: str, target: str, *, collection: bytes | int = b""
) -> Any:
    """The ``hats.properties`` of the catalog (or index catalog) at ``prefix``, in hats' model;
    ``collection`` is its collection's ``collection.properties`` or the status that refused it."""
    where = f"s3://{reader.route.bucket}/{prefix}"
    text = await _optional(reader, f"{prefix}/hats.properties", target)
    if isinstance(text, int):
        forbidden = (
            "hats.properties" if text == 403 else "collection.properties" if collection == 403 else None
        )
        if forbidden is None:
            raise ArchiveResponseError(f"no HATS {kind} at {where} (no hats.properties)", target=target)
        # S3's answer for a missing key of a bucket that hides its listing, and for a private bucket
        how = "with these credentials" if reader.route.signed else "anonymously (credentials: anonymous)"
        raise ArchiveResponseError(
            f"no readable HATS {kind} at {where}: {forbidden} is forbidden (HTTP 403: missing, or not "
            f"readable {how})",
            target=target,
        )
    props = _properties(text, f"{where}/hats.properties", target)
    try:
        return hats.catalog.TableProperties(**props)
    except Exception as exc:  # pydantic's ValidationError, as hats raises it
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise ArchiveResponseError(f"{where}/hats.properties: {first[0].strip()}", target=target) from None


def _id_index(hats: Any, props: dict[str, str], where: str) -> tuple[str | None, str]:
    """The folder of a collection's object-id index (its ``all_indexes`` entry for ``objectid``,
    else its ``default_index``'s), read with hats' own rules; or None and why there is none."""
    from hats.catalog.dataset.collection_properties import CollectionProperties

    keys = ("all_indexes", "default_index")
    given = {k: props[k] for k in keys if props.get(k)}
    if "all_indexes" not in given:
        return None, f"{where} lists no object-id index (no all_indexes)"
    try:
        parsed = CollectionProperties(obs_collection="-", hats_primary_table_url="-", **given)
    except Exception as exc:  # pydantic's ValidationError, as hats raises it
        first = str(exc).splitlines()[1:2] or [str(exc)]
        return None, f"{where}: {first[0].strip()}"
    indexes = parsed.all_indexes or {}
    folder = indexes.get(ID_COLUMN) or (indexes.get(parsed.default_index) if parsed.default_index else None)
    if not folder:
        return None, f"{where} lists no index of {ID_COLUMN} (all_indexes: {', '.join(indexes)})"
    return folder, ""


def _partition_info(data: bytes, what: str, target: str) -> list[Any]:
    hats = _hats()
    try:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
        pixels = [hats.pixel_math.HealpixPixel(int(r["Norder"]), int(r["Npix"])) for r in rows]
    except (UnicodeDecodeError, KeyError, ValueError, TypeError, csv.Error) as exc:
        raise ArchiveResponseError(f"{what} is not a Norder,Npix list ({exc})", target=target) from None
    if not pixels:
        raise ArchiveResponseError(f"{what} lists no pixels", target=target)
    return pixels


def pixel_groups(cones: Sequence[ConeSearch], cell_deg: float) -> list[tuple[str, tuple[Any, ...]]]:
    """Cones grouped by the HEALPix pixel (NESTED) of their centre at the order whose pixels are
    nearest ``cell_deg`` across, as ``("hpx<order>-<pixel>", cones as plain dicts)``, sorted."""
    shim = _hats().pixel_math.healpix_shim
    order = int(np.clip(shim.avgsize2order(cell_deg * 60.0), 0, 29))
    if not cones:
        return []
    pixels = shim.radec2pix(order, np.array([c.ra for c in cones]), np.array([c.dec for c in cones]))
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for cone, pixel in zip(cones, pixels, strict=True):
        groups[f"hpx{order}-{int(pixel)}"].append(cone.model_dump(mode="json"))
    return [(unit, tuple(groups[unit])) for unit in sorted(groups)]


# -- object ids -------------------------------------------------------------------------------------


async def locate_ids(
    reader: ObjectReader,
    catalog: HatsCatalog,
    ids: Sequence[int],
    *,
    target: str,
    in_flight: AmountBudget | None = None,
) -> dict[tuple[int, int], list[int]]:
    """The catalog's pixels holding ``ids`` (sorted), each with its ids, from the collection's
    object-id index: the index's ``hats.properties`` (its id column), the footer of its
    ``dataset/_metadata`` (every index file's row groups with their id min/max: the index is
    sorted by id), then only the id, ``Norder`` and ``Npix`` columns of the row groups whose
    range can hold a wanted id (hats' ``IndexCatalog.loc_partitions``, by ranged reads). Ids the
    index lacks are not in the release: they find no pixel."""
    if catalog.id_index is None:
        raise ArchiveResponseError(
            f"object ids need the release's object-id index: {catalog.no_index}; select by cone, "
            "or take route: api",
            target=target,
        )
    prefix = catalog.id_index
    where = f"s3://{reader.route.bucket}/{prefix}"
    hats = _hats()
    info = await _table_properties(reader, hats, prefix, "index catalog", target)
    column = str(info.indexing_column or "")
    if column != ID_COLUMN:
        raise ArchiveResponseError(
            f"{where}/hats.properties: an index of {column or 'no column'} (hats_index_column), not "
            f"of {ID_COLUMN}",
            target=target,
        )
    wanted = np.asarray(sorted(set(ids)), dtype=np.int64)
    try:
        *_, meta = await _footer(reader, f"{prefix}/dataset/_metadata", target=target)
    except HttpStatusError as exc:
        if exc.status not in (403, 404):
            raise
        raise ArchiveResponseError(
            f"{where}: no dataset/_metadata (the index's list of row groups)", target=target
        ) from None
    files = await anyio.to_thread.run_sync(_index_files, meta, column, wanted)

    def columns(schema: pa.Schema) -> list[str]:
        missing = [c for c in (column, "Norder", "Npix") if c not in schema.names]
        if missing:
            raise ArchiveResponseError(f"{where}: an index file lacks {', '.join(missing)}", target=target)
        return [column, "Norder", "Npix"]

    def groups(meta: Any) -> list[int]:
        found = [meta.schema.column(i).path for i in range(meta.num_columns)]
        at = found.index(column) if column in found else None
        return [
            g
            for g in range(meta.num_row_groups)
            if meta.row_group(g).num_rows
            and (at is None or _holds(meta.row_group(g).column(at).statistics, wanted))
        ]

    located: dict[tuple[int, int], set[int]] = defaultdict(set)
    value_set = pa.array(wanted, pa.int64())

    slots = anyio.Semaphore(INDEX_FILES_AT_ONCE)

    async def read(path: str) -> None:
        async with slots:
            await read_file(path)

    async def read_file(path: str) -> None:
        tables = read_parquet(
            reader,
            f"{prefix}/dataset/{path}",
            columns=columns,
            groups=groups,
            target=target,
            in_flight=in_flight,
        )
        async with contextlib.aclosing(tables):
            async for table in tables:
                try:  # an index row group can hold a million rows: off the loop
                    hits = await anyio.to_thread.run_sync(_index_hits, table, column, value_set)
                except (pa.ArrowException, ValueError, TypeError) as exc:
                    raise ArchiveResponseError(
                        f"{where}/dataset/{path}: not an object-id index ({exc})", target=target
                    ) from None
                for oid, order, npix in hits:
                    located[(order, npix)].add(oid)

    async with anyio.create_task_group() as tg:
        for path in files:
            tg.start_soon(read, path)
    return {pixel: sorted(found) for pixel, found in sorted(located.items())}


def _index_hits(table: pa.Table, column: str, value_set: pa.Array) -> list[tuple[int, int, int]]:
    """The rows of an index table whose id is wanted, as ``(id, Norder, Npix)``."""
    hits = table.filter(pc.is_in(pc.cast(table.column(column), pa.int64()), value_set=value_set))
    found = (hits.column(c).to_pylist() for c in (column, "Norder", "Npix"))
    return [(int(oid), int(order), int(npix)) for oid, order, npix in zip(*found, strict=True)]


def _index_files(meta: Any, column: str, wanted: np.ndarray[Any, Any]) -> list[str]:
    """The index files (paths under ``dataset/``) with a row group that can hold a wanted id,
    from ``_metadata``'s row groups and their statistics."""
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    at = names.index(column) if column in names else None
    files: dict[str, None] = {}
    for g in range(meta.num_row_groups):
        chunk = meta.row_group(g).column(at or 0)
        if chunk.file_path and (at is None or _holds(chunk.statistics, wanted)):
            files[chunk.file_path] = None
    return list(files)


# -- one leaf ---------------------------------------------------------------------------------------


def read_leaf(
    reader: ObjectReader,
    key: str,
    catalog: HatsCatalog,
    cones: Sequence[ConeSearch],
    selection: Selection,
    *,
    ids: Sequence[int] = (),
    target: str,
    in_flight: AmountBudget | None = None,
) -> AsyncGenerator[pa.Table, None]:
    """The rows of one leaf file that can match a cone or one of ``ids`` (sorted), in pieces of
    at most ``reader.max_bytes`` of Parquet: the footer first, then only the needed row groups'
    needed column chunks, fetched a piece at a time and decoded on a worker thread. The rows
    still need :func:`leaf_batch`."""
    name = f"s3://{reader.route.bucket}/{key}"
    return read_parquet(
        reader,
        key,
        columns=lambda schema: _columns(schema, catalog, name, target),
        groups=functools.partial(_row_groups, catalog=catalog, cones=cones, selection=selection, ids=ids),
        target=target,
        in_flight=in_flight,
    )


async def _footer(reader: ObjectReader, key: str, *, target: str) -> tuple[int, int, bytes, Any]:
    """A Parquet object's size, its fetched tail (offset, bytes: the whole footer) and its
    metadata: one ranged GET of its last ``TAIL_BYTES``, a second for a larger footer."""
    name = f"s3://{reader.route.bucket}/{key}"
    try:
        size, first, tail = await reader.tail(key, TAIL_BYTES, target=target)
    except HttpStatusError as exc:
        if exc.status == 416:  # no byte to give: an empty object
            raise ArchiveResponseError(
                f"{name} is empty (0 bytes), not a Parquet file", target=target
            ) from None
        raise
    if size < 12 or tail[-4:] != b"PAR1":
        raise ArchiveResponseError(f"{name} is not a Parquet file", target=target)
    footer = int.from_bytes(tail[-8:-4], "little") + 8
    if footer > size - 4:
        raise ArchiveResponseError(f"{name}: footer larger than the file", target=target)
    if footer > len(tail):
        tail = await reader.range(key, size - footer, first, target=target) + tail
        first = size - footer
    try:
        meta = await anyio.to_thread.run_sync(pq.read_metadata, SparseFile(name, size, {first: tail}))
    except (pa.ArrowException, OSError) as exc:
        raise ArchiveResponseError(f"{name}: unreadable Parquet footer ({exc})", target=target) from None
    return size, first, tail, meta


async def read_parquet(
    reader: ObjectReader,
    key: str,
    *,
    columns: Callable[[pa.Schema], list[str]],
    groups: Callable[[Any], list[int]],
    target: str,
    in_flight: AmountBudget | None = None,
) -> AsyncGenerator[pa.Table, None]:
    """The ``columns`` (chosen from the file's schema) of the row groups ``groups`` chooses from
    its footer (on a worker thread), in pieces of at most ``reader.max_bytes``, each held within
    ``in_flight`` until the caller has taken its rows."""
    name = f"s3://{reader.route.bucket}/{key}"
    size, first, tail, meta = await _footer(reader, key, target=target)
    wanted = columns(meta.schema.to_arrow_schema())
    chosen = await anyio.to_thread.run_sync(groups, meta)
    budget = in_flight or AmountBudget(reader.max_bytes)
    for piece, spans in _pieces(meta, chosen, wanted, reader.max_bytes, name, target):
        ranges = merge_ranges(spans, gap=_gap(reader.max_bytes))
        amount = sum(stop - start for start, stop in ranges)
        await budget.acquire(amount)  # given back once the caller has taken the piece's rows
        try:
            sparse = SparseFile(name, size, {first: tail})

            async def fetch(start: int, stop: int, sparse: SparseFile = sparse) -> None:
                sparse.add(start, await reader.range(key, start, stop, target=target))

            async with anyio.create_task_group() as tg:
                for start, stop in ranges:
                    tg.start_soon(fetch, start, stop)

            def decode(sparse: SparseFile = sparse, piece: list[int] = piece) -> pa.Table:
                return pq.ParquetFile(sparse).read_row_groups(piece, columns=wanted)

            try:
                table = await anyio.to_thread.run_sync(decode)
            except (pa.ArrowException, OSError) as exc:
                raise ArchiveResponseError(f"{name}: unreadable row groups ({exc})", target=target) from None
            del sparse
            yield table
        finally:
            with anyio.CancelScope(shield=True):
                await budget.release(amount)


def _pieces(
    meta: Any, groups: list[int], columns: list[str], cap: int, name: str, target: str
) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """The row groups to read, in runs whose fetched bytes (their needed ranges, merged as
    :func:`read_leaf` merges them) stay within ``cap``, with those ranges; ArchiveResponseError
    for a row group that alone needs more."""
    gap = _gap(cap)
    pieces: list[tuple[list[int], list[tuple[int, int]]]] = []
    for g in groups:
        spans = _spans(meta.row_group(g), columns)
        alone = _fetched(spans, gap)
        if alone > cap:
            raise ArchiveResponseError(
                f"{name}: row group {g} needs {alone:,} bytes, over hats.max_read_bytes ({cap:,})",
                target=target,
            )
        if pieces and _fetched(pieces[-1][1] + spans, gap) <= cap:
            pieces[-1][0].append(g)
            pieces[-1][1].extend(spans)
        else:
            pieces.append(([g], list(spans)))
    return pieces


def _gap(cap: int) -> int:
    """Ranges closer than this are fetched in one GET: MERGE_GAP, at least pyarrow's hole size,
    and small beside the read cap."""
    return max(ARROW_HOLE, min(MERGE_GAP, cap // 16))


def _fetched(spans: list[tuple[int, int]], gap: int) -> int:
    return sum(stop - start for start, stop in merge_ranges(spans, gap=gap))


def _spans(group: Any, columns: list[str]) -> list[tuple[int, int]]:
    """The byte ranges of a row group's column chunks under ``columns``."""
    spans = []
    for c in range(group.num_columns):
        chunk = group.column(c)
        if chunk.path_in_schema.split(".")[0] in columns:
            offsets = [o for o in (chunk.data_page_offset, chunk.dictionary_page_offset) if o]
            start = min(offsets) if offsets else 4
            spans.append((start, start + chunk.total_compressed_size))
    return spans


def _columns(schema: pa.Schema, catalog: HatsCatalog, name: str, target: str) -> list[str]:
    """The top-level columns a leaf is read with; ArchiveResponseError when it lacks one."""
    wanted = [*_OBJECT_COLUMNS, catalog.ra_column, catalog.dec_column]
    wanted += ["lightcurve"] if "lightcurve" in schema.names else list(EPOCH_COLUMNS)
    missing = [c for c in wanted if c not in schema.names]
    if missing:
        raise ArchiveResponseError(
            f"{name} is not a ZTF light-curve leaf (missing {', '.join(missing)})", target=target
        )
    return wanted


def _row_groups(
    meta: Any,
    *,
    catalog: HatsCatalog,
    cones: Sequence[ConeSearch],
    selection: Selection,
    ids: Sequence[int] = (),
) -> list[int]:
    """The row groups whose statistics allow a row in a cone or of a wanted id (``_healpix_29``,
    ``objectid``), and of a wanted band (all of them when a leaf has no statistics)."""
    from astropy import units
    from mocpy import MOC  # a dependency of hats: HEALPix ranges of the cones at order 29

    ranges = np.zeros((0, 2), dtype=np.uint64)
    if cones:
        moc = MOC.from_cones(
            lon=np.array([c.ra for c in cones]) * units.deg,
            lat=np.array([c.dec for c in cones]) * units.deg,
            radius=np.array([c.radius for c in cones]) * units.deg,
            max_depth=14,
            union_strategy="small_cones",
        )
        ranges = np.asarray(moc.to_depth29_ranges, dtype=np.uint64)
    wanted = np.asarray(ids, dtype=np.int64)
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    hp = names.index(catalog.healpix_column) if catalog.healpix_column in names else None
    oid = names.index(ID_COLUMN) if ID_COLUMN in names else None
    band = names.index("filterid") if "filterid" in names else None
    keep = []
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        if group.num_rows == 0:
            continue
        in_cone = bool(cones) and (hp is None or _overlaps(group.column(hp).statistics, ranges))
        if not in_cone and not (
            len(wanted) and (oid is None or _holds(group.column(oid).statistics, wanted))
        ):
            continue
        if band is not None and selection.bands:
            stats = group.column(band).statistics
            if (
                stats is not None
                and stats.has_min_max
                and not any(stats.min <= b <= stats.max for b in selection.bands)
            ):
                continue
        keep.append(g)
    return keep


def _holds(stats: Any, ids: np.ndarray[Any, Any]) -> bool:
    """Whether a column chunk's min/max statistics allow one of ``ids`` (sorted)."""
    if stats is None or not stats.has_min_max:
        return True
    i = int(np.searchsorted(ids, int(stats.min), side="left"))  # first id at or above the minimum
    return i < len(ids) and int(ids[i]) <= int(stats.max)


def _overlaps(stats: Any, ranges: np.ndarray[Any, Any]) -> bool:
    if stats is None or not stats.has_min_max or not len(ranges):
        return stats is None or not stats.has_min_max
    lo, hi = int(stats.min), int(stats.max)
    i = int(np.searchsorted(ranges[:, 1], lo, side="right"))  # first range ending after lo
    return i < len(ranges) and int(ranges[i, 0]) <= hi


def leaf_batch(
    table: pa.Table,
    catalog: HatsCatalog,
    cones: Sequence[ConeSearch],
    selection: Selection,
    provenance: Provenance,
    fetched_at: datetime,
    *,
    target: str,
    ids: Sequence[int] = (),
) -> Batch:
    """One leaf's matching epochs as ZtfRecord rows: objects inside a cone or of a wanted id, and
    of a wanted band; epochs inside the MJD range (on ``hmjd``) with no masked catflags bit, in
    the leaf's order."""
    name = provenance.url
    if table.num_rows:
        ra = table.column(catalog.ra_column).to_numpy(zero_copy_only=False).astype(np.float64)
        dec = table.column(catalog.dec_column).to_numpy(zero_copy_only=False).astype(np.float64)
        inside = _in_cones(ra, dec, cones)
        if ids:
            inside |= np.isin(table.column(ID_COLUMN).to_numpy(zero_copy_only=False), np.asarray(ids))
        if selection.bands:
            inside &= np.isin(table.column("filterid").to_numpy(zero_copy_only=False), list(selection.bands))
        table = table.filter(pa.array(inside))
    epochs, parents = _epochs(table, name, target)
    hmjd = pc.cast(epochs.column("hmjd"), pa.float64())
    if epochs.num_rows and (hmjd.null_count or not pc.all(pc.is_finite(hmjd)).as_py()):
        raise ArchiveResponseError(f"{name}: an epoch has no finite hmjd", target=target)
    epochs = epochs.append_column("hmjd_seq", pa.array(_seq(parents, hmjd), pa.int64()))
    objects = table.select([*_OBJECT_COLUMNS, catalog.ra_column, catalog.dec_column]).take(parents)
    keep = _epoch_mask(epochs, selection)
    if keep is not None:
        epochs, objects = epochs.filter(keep), objects.filter(keep)
    n = epochs.num_rows
    schema = arrow_schema(ZtfRecord)
    filterid = objects.column("filterid")
    codes = pc.cast(filterid, pa.int64())
    known = pc.is_in(codes, value_set=pa.array(list(FILTER_IDS), pa.int64()))
    if n and not pc.all(known).as_py():
        bad = pc.filter(codes, pc.invert(known))
        raise ArchiveResponseError(
            f"{name}: filterid {bad[0].as_py()} is not 1, 2 or 3 (zg, zr, zi)", target=target
        )
    hmjd = pc.cast(epochs.column("hmjd"), pa.float64())
    rcid = pc.cast(objects.column("rcid"), pa.int64())
    columns: dict[str, Any] = {
        "object_id": pc.cast(pc.cast(objects.column("objectid"), pa.int64()), pa.string()),
        "filter": pc.take(pa.array([None, "zg", "zr", "zi"]), codes) if n else pa.array([], pa.string()),
        "field": pc.cast(objects.column("fieldid"), pa.int64()),
        "ccdid": pc.add(pc.divide(rcid, 4), 1),
        "qid": pc.add(pc.bit_wise_and(rcid, 3), 1),
        "hmjd": hmjd,
        "hmjd_seq": epochs.column("hmjd_seq"),
        "objra": pc.cast(objects.column(catalog.ra_column), pa.float64()),
        "objdec": pc.cast(objects.column(catalog.dec_column), pa.float64()),
        "catflags": pc.cast(epochs.column("catflags"), pa.int64()),
    }
    for column in ("mag", "magerr", "clrcoeff"):
        values = pc.cast(epochs.column(column), pa.float64())
        columns[column] = pc.if_else(pc.is_finite(values), values, None)  # NaN: null, as the API route
    constants = {
        "source": "ztf",
        "route": "hats",
        "data_release": catalog.data_release,
        "fetched_at": fetched_at,
        **{f"provenance_{k}": v for k, v in provenance.model_dump().items()},
    }
    for key, value in constants.items():
        columns[key] = constant(value, n, schema.field(key).type)
    return batch_from_columns(ZtfRecord, columns, n)


def _seq(parents: pa.Array, hmjd: pa.Array) -> np.ndarray[Any, Any]:
    """Per epoch: how many earlier epochs of its light curve (same parent row) have its ``hmjd``,
    in stored order (0 for nearly all)."""
    p = np.asarray(parents.to_numpy(zero_copy_only=False), dtype=np.int64)
    h = np.asarray(hmjd.to_numpy(zero_copy_only=False), dtype=np.float64)
    seq = np.zeros(len(p), dtype=np.int64)
    if len(p) < 2:
        return seq
    order = np.lexsort((np.arange(len(p)), h, p))
    ps, hs = p[order], h[order]
    new = np.ones(len(p), dtype=bool)
    new[1:] = (ps[1:] != ps[:-1]) | (hs[1:] != hs[:-1])
    starts = np.maximum.accumulate(np.where(new, np.arange(len(p)), 0))
    seq[order] = np.arange(len(p)) - starts
    return seq


def _in_cones(
    ra: np.ndarray[Any, Any], dec: np.ndarray[Any, Any], cones: Sequence[ConeSearch]
) -> np.ndarray[Any, Any]:
    """Whether each position lies within any cone (great-circle distance ≤ radius): candidates
    from a KD-tree of the positions' unit vectors (chord ≤ the largest radius's chord), then the
    haversine distance to each candidate's cone."""
    from scipy.spatial import cKDTree  # a dependency of hats

    inside = np.zeros(len(ra), dtype=bool)
    if not len(ra) or not cones:
        return inside
    r, d = np.radians(ra), np.radians(dec)
    tree = cKDTree(np.column_stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)]))
    for cone in cones:
        r0, d0 = np.radians(cone.ra), np.radians(cone.dec)
        centre = [np.cos(d0) * np.cos(r0), np.cos(d0) * np.sin(r0), np.sin(d0)]
        chord = 2 * np.sin(min(np.radians(cone.radius) * 1.0001, np.pi) / 2) + 1e-12
        near = np.asarray(tree.query_ball_point(centre, chord), dtype=np.int64)
        if not len(near):
            continue
        # haversine: exact for small angles, where the cones live
        h = np.sin((d[near] - d0) / 2) ** 2 + np.cos(d[near]) * np.cos(d0) * np.sin((r[near] - r0) / 2) ** 2
        inside[near[2 * np.arcsin(np.sqrt(np.clip(h, 0, 1))) <= np.radians(cone.radius)]] = True
    return inside


def _epochs(table: pa.Table, name: str, target: str) -> tuple[pa.Table, pa.Array]:
    """The epochs of every row as one flat table, and each epoch's row index."""
    if "lightcurve" in table.schema.names:
        column = table.column("lightcurve").combine_chunks()
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):  # list<struct<…>>
            flat = pc.list_flatten(column)
            parents = pc.list_parent_indices(column)
            fields = {f: flat.field(f) for f in EPOCH_COLUMNS if flat.type.get_field_index(f) >= 0}
            lists = None
        else:  # struct<list<…>>: one list per epoch column
            lists = {f: column.field(f) for f in EPOCH_COLUMNS if column.type.get_field_index(f) >= 0}
            fields = None
    else:
        lists = {f: table.column(f).combine_chunks() for f in EPOCH_COLUMNS}
        fields = None
    if lists is not None:
        missing = [f for f in EPOCH_COLUMNS if f not in lists]
        if missing:
            raise ArchiveResponseError(f"{name}: the light curves lack {', '.join(missing)}", target=target)
        lengths = {f: pc.list_value_length(v) for f, v in lists.items()}
        first = lengths["hmjd"]
        for f, length in lengths.items():
            if not length.equals(first):
                raise ArchiveResponseError(
                    f"{name}: {f} and hmjd hold different numbers of epochs", target=target
                )
        parents = pc.list_parent_indices(lists["hmjd"])
        fields = {f: pc.list_flatten(v) for f, v in lists.items()}
    assert fields is not None
    missing = [f for f in EPOCH_COLUMNS if f not in fields]
    if missing:
        raise ArchiveResponseError(f"{name}: the light curves lack {', '.join(missing)}", target=target)
    return pa.table(fields), parents


def _epoch_mask(epochs: pa.Table, selection: Selection) -> pa.Array | None:
    conditions = []
    lo, hi = selection.mjd_range
    hmjd = epochs.column("hmjd")
    if lo is not None:
        conditions.append(pc.greater_equal(hmjd, lo))
    if hi is not None:
        conditions.append(pc.less_equal(hmjd, hi))
    if selection.bad_catflags_mask:
        flags = pc.cast(epochs.column("catflags"), pa.int64())
        conditions.append(pc.equal(pc.fill_null(pc.bit_wise_and(flags, selection.bad_catflags_mask), 0), 0))
    if not conditions:
        return None
    mask = conditions[0]
    for condition in conditions[1:]:
        mask = pc.and_(mask, condition)
    return pc.fill_null(mask, False)
