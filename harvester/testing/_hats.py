"""IRSA's public ZTF bucket (``ipac-irsa-ztf``), as the fake archive answers it.

Two kinds of objects, answered by anonymous ``GET``/``HEAD`` (``Range: bytes=a-b``, ``bytes=-n``
and ``bytes=a-`` give 206 with ``Content-Range``) and by ``ListObjectsV2`` on the bucket's root
(``?list-type=2&prefix=…``), path-style (``/ipac-irsa-ztf/<key>``) or virtual-hosted:

- **The fake sky's data release** under ``ztf/enhanced/dr24/lc/hats`` (the real DR24 path): a HATS
  collection in DR24's layout (``collection.properties``; a catalog ``ztf_dr24_lc-hats`` with
  ``hats.properties``, ``partition_info.csv`` and leaf folders ``dataset/Norder=8/Dir=…/Npix=…/
  part0.snappy.parquet`` with a nested ``lightcurve`` column). It holds the same objects and
  epochs as the fake light-curve API (:mod:`._irsa`), so both routes of one offline harvest see
  one sky: ``hmjd`` is the float32 of the API's ``hjd - 2400000.5``, ``mag``, ``magerr`` and
  ``clrcoeff`` the API's float32 values. It covers the order-8 pixels within
  :data:`SKY_RADIUS_DEG` of the packaged sample cone and of any centre in
  ``FakeArchive.hats_regions``; leaves are built on first read. Beside the catalog, its object-id
  index ``ztf_dr24_lc-hats_objectid`` (named by ``all_indexes`` in ``collection.properties``), in
  the layout hats-import writes (:func:`id_index_files`), built on first read of any of its files.
- **Files put in** ``FakeArchive.bucket_files`` (key → bytes): a real catalog for tests
  (:func:`load_folder`).
"""

from __future__ import annotations

import io
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import numpy as np

from harvester.testing._asgi import FakeRequest, FakeRoute, Reply
from harvester.testing._irsa import FILTER_IDS, epochs_of, objects_in_cone
from harvester.testing._irsa import ROUTES as IRSA_ROUTES

if TYPE_CHECKING:
    from harvester.testing._archive import FakeArchive

__all__ = ["BUCKET", "ROUTES", "SKY_PREFIX", "SKY_RADIUS_DEG", "ZTF_ROUTES", "id_index_files", "load_folder"]

BUCKET = "ipac-irsa-ztf"
SKY_PREFIX = "ztf/enhanced/dr24/lc/hats"
SKY_CATALOG = "ztf_dr24_lc-hats"
SKY_INDEX = f"{SKY_CATALOG}_objectid"  # hats-import's name for an index of objectid
#: the packaged sample cone (harvester/defaults/targets.yaml), where the fake release always has data
SAMPLE_CENTRE = (210.8023, 54.3489)
SKY_RADIUS_DEG = 1.0
ORDER = 8
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def load_folder(folder: Path, prefix: str) -> dict[str, bytes]:
    """Every file under ``folder`` as bucket objects under ``prefix`` (for ``bucket_files``)."""
    return {
        f"{prefix.strip('/')}/{path.relative_to(folder).as_posix()}": path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def id_index_files(
    name: str,
    primary: str,
    table: Any,
    *,
    rows_per_file: int,
    row_group_size: int,
    builder: str = "harvester fake archive",
) -> dict[str, bytes]:
    """An object-id index catalog's files (paths under its folder), in the layout hats-import's
    index pipeline writes (``hats_import/index``): ``table``'s rows (``objectid``,
    ``_healpix_29``, ``Norder``, ``Npix``) sorted by ``objectid`` in ``dataset/index/part.<i>.parquet``
    (recorded as sorted, data pages of 16 KiB), ``dataset/_metadata`` listing every file's row
    groups, ``dataset/_common_metadata`` and a ``hats.properties`` of type ``index``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = table.select(["objectid", "_healpix_29", "Norder", "Npix"]).sort_by("objectid")
    table = table.cast(
        pa.schema(
            [
                ("objectid", pa.int64()),
                ("_healpix_29", pa.int64()),
                ("Norder", pa.uint8()),
                ("Npix", pa.uint64()),
            ]
        )
    )
    files: dict[str, bytes] = {}
    collected: list[Any] = []
    sorting = pq.SortingColumn.from_ordering(table.schema, [("objectid", "ascending")])
    for i, start in enumerate(range(0, max(table.num_rows, 1), rows_per_file)):
        part = f"index/part.{i}.parquet"
        sink = io.BytesIO()
        pq.write_table(
            table.slice(start, rows_per_file),
            sink,
            row_group_size=row_group_size,
            data_page_size=16 * 1024,
            sorting_columns=sorting,
            metadata_collector=collected,
        )
        collected[-1].set_file_path(part)
        files[f"dataset/{part}"] = sink.getvalue()
    for meta_name, collector in (("_metadata", collected), ("_common_metadata", None)):
        sink = io.BytesIO()
        pq.write_metadata(table.schema, sink, metadata_collector=collector)
        files[f"dataset/{meta_name}"] = sink.getvalue()
    properties = (
        f"#HATS catalog\nobs_collection={name}\ndataproduct_type=index\nhats_nrows={table.num_rows}\n"
        f"hats_primary_table_url={primary}\nhats_index_column=objectid\nhats_builder={builder}\n"
        "hats_version=v1.0\n"
    )
    files["hats.properties"] = properties.encode()
    return files


def _key(req: FakeRequest) -> str:
    path = req.path.lstrip("/")
    if path.startswith(BUCKET + "/") or path == BUCKET:
        path = path[len(BUCKET) :].lstrip("/")
    return path


def _error(status: int, code: str, resource: str) -> Reply:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Resource>{escape(resource)}</Resource></Error>"
    )
    return Reply(status, body.encode(), "application/xml")


async def _object(req: FakeRequest, archive: FakeArchive) -> Reply:
    key = _key(req)
    if key == "" or req.query:
        return _list(req, archive)
    data = _lookup(archive, key)
    if data is None:
        return _error(404, "NoSuchKey", key)
    wanted = req.headers.get("range", "").strip()
    headers = [("Accept-Ranges", "bytes")]
    if not wanted:
        return Reply(200, data, "binary/octet-stream", headers)
    match = _RANGE.fullmatch(wanted)
    size = len(data)
    if match is None or (not match.group(1) and not match.group(2)):
        return _error(416, "InvalidRange", key)
    if not match.group(1):
        start, stop = max(0, size - int(match.group(2))), size
    else:
        start = int(match.group(1))
        stop = min(size, int(match.group(2)) + 1) if match.group(2) else size
    if start >= size or start >= stop:
        return _error(416, "InvalidRange", key)
    headers.append(("Content-Range", f"bytes {start}-{stop - 1}/{size}"))
    return Reply(206, data[start:stop], "binary/octet-stream", headers)


def _list(req: FakeRequest, archive: FakeArchive) -> Reply:
    params = parse_qs(req.query)
    if (params.get("list-type") or [""])[0] != "2":
        return _error(400, "InvalidArgument", "only ListObjectsV2 (list-type=2) is answered")
    prefix = (params.get("prefix") or [""])[0]
    keys = sorted(k for k in _keys(archive, prefix) if k.startswith(prefix))
    body = "".join(f"<Contents><Key>{escape(k)}</Key></Contents>" for k in keys)
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult>'
        f"<Name>{BUCKET}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(keys)}</KeyCount>"
        f"<IsTruncated>false</IsTruncated>{body}</ListBucketResult>"
    )
    return Reply(200, text.encode(), "application/xml")


def _lookup(archive: FakeArchive, key: str) -> bytes | None:
    if key in archive.bucket_files:
        return archive.bucket_files[key]
    if not key.startswith(SKY_PREFIX + "/"):
        return None
    sky = _sky(archive.seed, archive.now_mjd, tuple(archive.hats_regions))
    rest = key[len(SKY_PREFIX) + 1 :]
    if rest in sky.meta:
        return sky.meta[rest]
    if rest.startswith(SKY_INDEX + "/"):
        return _index(archive.seed, tuple(archive.hats_regions)).get(rest[len(SKY_INDEX) + 1 :])
    for pixel in sky.pixels & {_pixel_of(rest)}:
        return _leaf(archive.seed, archive.now_mjd, pixel)
    return None


def _pixel_of(rest: str) -> int:
    """The pixel a leaf key names (-1 for any other key)."""
    found = re.fullmatch(r".*/Npix=(\d+)/part0\.snappy\.parquet", rest)
    pixel = int(found.group(1)) if found else -1
    return pixel if rest == _leaf_key(pixel) else -1


def _leaf_key(pixel: int) -> str:
    folder = (pixel // 10_000) * 10_000
    return f"{SKY_CATALOG}/dataset/Norder={ORDER}/Dir={folder}/Npix={pixel}/part0.snappy.parquet"


def _keys(archive: FakeArchive, prefix: str) -> list[str]:
    keys = list(archive.bucket_files)
    if (SKY_PREFIX + "/").startswith(prefix) or prefix.startswith(SKY_PREFIX + "/"):
        sky = _sky(archive.seed, archive.now_mjd, tuple(archive.hats_regions))
        keys += [f"{SKY_PREFIX}/{k}" for k in sky.meta]
        keys += [f"{SKY_PREFIX}/{SKY_INDEX}/{k}" for k in _index(archive.seed, tuple(archive.hats_regions))]
        keys += [f"{SKY_PREFIX}/{_leaf_key(p)}" for p in sorted(sky.pixels)]
    return keys


class _Sky:
    def __init__(self, pixels: set[int], meta: dict[str, bytes]) -> None:
        self.pixels = pixels
        self.meta = meta


@lru_cache(maxsize=8)
def _sky(seed: int, now_mjd: float, regions: tuple[tuple[float, float], ...]) -> _Sky:
    from astropy import units
    from mocpy import MOC

    centres = [SAMPLE_CENTRE, *regions]
    moc = MOC.from_cones(
        lon=np.array([c[0] for c in centres]) * units.deg,
        lat=np.array([c[1] for c in centres]) * units.deg,
        radius=np.full(len(centres), SKY_RADIUS_DEG) * units.deg,
        max_depth=ORDER,
        union_strategy="small_cones",
    )
    pixels = {int(p) for p in moc.flatten()}
    info = "Norder,Npix\n" + "".join(f"{ORDER},{p}\n" for p in sorted(pixels))
    collection = (
        f"#HATS Collection\nobs_collection={SKY_CATALOG}\nhats_primary_table_url={SKY_CATALOG}\n"
        f"all_indexes=objectid {SKY_INDEX}\n"
        "hats_builder=harvester fake archive\nhats_version=v1.0\n"
    )
    properties = (
        f"#HATS catalog\nobs_collection={SKY_CATALOG}\ndataproduct_type=object\nhats_nrows=0\n"
        "hats_col_ra=objra\nhats_col_dec=objdec\nhats_col_healpix=_healpix_29\nhats_col_healpix_order=29\n"
        f"hats_npix_suffix=/\nhats_order={ORDER}\nhats_version=v1.0\n"
    )
    meta = {
        "collection.properties": collection.encode(),
        f"{SKY_CATALOG}/hats.properties": properties.encode(),
        f"{SKY_CATALOG}/partition_info.csv": info.encode(),
    }
    return _Sky(pixels, meta)


@lru_cache(maxsize=8)
def _index(seed: int, regions: tuple[tuple[float, float], ...]) -> dict[str, bytes]:
    """The fake release's object-id index: every object of every pixel (the epochs do not matter)."""
    import pyarrow as pa
    from hats.pixel_math.healpix_shim import order2resol
    from hats.pixel_math.spatial_index import compute_spatial_index

    # every pixel lies within its region's radius plus two pixel widths of the region's centre
    reach = SKY_RADIUS_DEG + 2 * float(order2resol(ORDER, arcmin=True)) / 60.0
    found = {o.oid: o for c in (SAMPLE_CENTRE, *regions) for o in objects_in_cone(seed, c[0], c[1], reach)}
    objects = [found[oid] for oid in sorted(found)]
    pixels = _pixels_of(objects)
    keep = np.isin(pixels, np.array(sorted(_sky(seed, 0.0, regions).pixels), dtype=np.int64))
    objects = [o for o, kept in zip(objects, keep, strict=True) if kept]
    ra = np.array([o.ra for o in objects], dtype=np.float32).astype(np.float64)  # as the leaves store them
    dec = np.array([o.dec for o in objects], dtype=np.float32).astype(np.float64)
    table = pa.table(
        {
            "objectid": [o.oid for o in objects],
            "_healpix_29": compute_spatial_index(ra, dec),
            "Norder": np.full(len(objects), ORDER),
            "Npix": pixels[keep],
        }
    )
    return id_index_files(SKY_INDEX, SKY_CATALOG, table, rows_per_file=4096, row_group_size=256)


def _pixel_objects(seed: int, pixel: int) -> list[Any]:
    """The fake sky's objects whose position lies in an order-8 pixel."""
    from hats.pixel_math.healpix_shim import order2resol

    lon, lat = _pixel_centre(pixel)
    reach = float(order2resol(ORDER, arcmin=True)) / 60.0 * 1.5  # degrees: all of the pixel
    near = objects_in_cone(seed, lon, lat, reach)
    return [o for o, p in zip(near, _pixels_of(near), strict=True) if p == pixel]


def _pixels_of(objects: list[Any]) -> np.ndarray[Any, Any]:
    """Each object's order-8 pixel (NESTED), from its position."""
    from hats.pixel_math.healpix_shim import radec2pix

    if not objects:
        return np.zeros(0, dtype=np.int64)
    ra, dec = np.array([o.ra for o in objects]), np.array([o.dec for o in objects])
    return np.asarray(radec2pix(ORDER, ra, dec), dtype=np.int64)


@lru_cache(maxsize=256)
def _leaf(seed: int, now_mjd: float, pixel: int) -> bytes:
    """One order-8 pixel of the fake release, as DR24 writes a leaf."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from hats.pixel_math.spatial_index import compute_spatial_index

    objects = _pixel_objects(seed, pixel)
    rows: dict[str, list[Any]] = {
        k: [] for k in ("objectid", "filterid", "fieldid", "rcid", "objra", "objdec", "nepochs")
    }
    curves: dict[str, list[Any]] = {k: [] for k in ("hmjd", "mag", "magerr", "clrcoeff", "catflags")}
    for obj in sorted(objects, key=lambda o: o.oid):
        epochs = epochs_of(seed, obj)
        cells = [
            line.split(",") for line, mjd in zip(epochs.lines, epochs.mjd, strict=True) if mjd <= now_mjd
        ]
        rows["objectid"].append(obj.oid)
        rows["filterid"].append(FILTER_IDS[obj.filtercode])
        rows["fieldid"].append(obj.field)
        rows["rcid"].append((obj.ccdid - 1) * 4 + obj.qid - 1)
        rows["objra"].append(obj.ra)
        rows["objdec"].append(obj.dec)
        rows["nepochs"].append(len(cells))
        curves["hmjd"].append([np.float32(float(c[2]) - 2400000.5) for c in cells])
        curves["mag"].append([np.float32(c[4]) for c in cells])
        curves["magerr"].append([np.float32(c[5]) for c in cells])
        curves["clrcoeff"].append([np.float32(c[19]) for c in cells])
        curves["catflags"].append([int(c[6]) for c in cells])
    f32 = pa.list_(pa.float32())
    lightcurve = pa.StructArray.from_arrays(
        [
            pa.array(curves["hmjd"], f32),
            pa.array(curves["mag"], f32),
            pa.array(curves["magerr"], f32),
            pa.array(curves["clrcoeff"], f32),
            pa.array(curves["catflags"], pa.list_(pa.uint16())),
        ],
        names=list(curves),
    )
    ra = np.array(rows["objra"], dtype=np.float32)
    dec = np.array(rows["objdec"], dtype=np.float32)
    table = pa.table(
        {
            "_healpix_29": pa.array(
                compute_spatial_index(ra.astype(np.float64), dec.astype(np.float64)), pa.int64()
            ),
            "objectid": pa.array(rows["objectid"], pa.int64()),
            "filterid": pa.array(rows["filterid"], pa.uint8()),
            "fieldid": pa.array(rows["fieldid"], pa.int16()),
            "rcid": pa.array(rows["rcid"], pa.uint8()),
            "objra": pa.array(ra, pa.float32()),
            "objdec": pa.array(dec, pa.float32()),
            "nepochs": pa.array(rows["nepochs"], pa.int64()),
            "lightcurve": lightcurve,
        }
    )
    table = table.sort_by("_healpix_29")  # HATS' own order: a row group covers a patch of the pixel
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy", row_group_size=16)
    return sink.getvalue()


def _pixel_centre(pixel: int) -> tuple[float, float]:
    import cdshealpix  # a dependency of hats

    lon, lat = cdshealpix.nested.healpix_to_lonlat(np.array([pixel], dtype=np.uint64), ORDER)
    return float(lon.deg[0]), float(lat.deg[0])


#: IRSA's public bucket: objects (GET, HEAD) and listings (GET on the root, ``list-type=2``)
ROUTES = (FakeRoute("", ("GET", "HEAD"), _object, pattern=re.compile(rf"^/(?:{BUCKET}/?)?(?:ztf/.*)?$")),)
#: the ztf archive's fake: IRSA's light-curve API and its public bucket
ZTF_ROUTES = (*IRSA_ROUTES, *ROUTES)
