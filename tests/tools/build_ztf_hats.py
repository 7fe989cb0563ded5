"""Build the HATS test fixture tests/data/ztf_hats from IRSA's DR5 bulk light-curve sample.

``uv run python -m tests.tools.build_ztf_hats SOURCE_PARQUET OUT_DIR`` reads SOURCE_PARQUET (one row per
ZTF object, five parallel list columns, as IRSA's ``lc_dr5`` per-field files have) and writes the HATS
collection ``OUT_DIR/ztf_dr5_sample_lc-hats`` in the shape of IRSA's DR24 light-curve collection:

* the scalar columns unchanged in name and type, and one nested column ``lightcurve`` holding ``hmjd``,
  ``mag``, ``magerr``, ``clrcoeff`` and ``catflags`` per epoch. nested-pandas packs it
  (``NestedFrame.nest_lists`` then ``to_pyarrow``), which gives Arrow's struct-of-lists
  ``struct<hmjd: list<float>, ...>``, the layout ``NestedFrame.to_parquet`` and hats-import's pandas path
  write. The values are the source's, bit for bit;
* a catalog cut into HEALPix leaves by hats-import, the tool that writes HATS (the format of IRSA's
  collections), with IRSA's leaf layout ``dataset/Norder=k/Dir=d/Npix=n/part0.snappy.parquet``, and a
  10 arcsec margin cache;
* an object-id index in hats-import's layout, written by :mod:`tests.tools.build_ztf_hats_index`
  (hats-import's index pipeline refuses Python 3.11 with any dask other than 2025.3.x).

The run is in-process (one dask worker thread) and deterministic: two runs differ only in the
``hats_creation_date`` line (UTC, to the minute) of ``collection.properties`` and of each catalog's
``hats.properties`` and its copy ``properties``. A script, not a test: tests read the committed output and
never run this.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nested_pandas as npd
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dask.distributed import Client, LocalCluster
from hats.catalog.catalog_collection import CatalogCollection
from hats.loaders.read_hats import read_hats
from hats_import.catalog.file_readers.parquet import ParquetPyarrowReader
from hats_import.collection.arguments import CollectionArguments
from hats_import.pipeline import pipeline_with_client

from tests.tools.build_ztf_hats_index import add_index

COLLECTION = "ztf_dr5_sample_lc-hats"
SCALARS = ("objectid", "filterid", "fieldid", "rcid", "objra", "objdec", "nepochs")
EPOCHS = ("hmjd", "mag", "magerr", "clrcoeff", "catflags")
NESTED = "lightcurve"
# IRSA's DR24 leaves are folders holding one file of this name (hats: ``hats_npix_suffix=/``).
LEAF_FILE = "part0.snappy.parquet"
MARGIN_ARCSEC = 10.0
MARGIN = f"{COLLECTION}_10arcs"  # hats-import's name for it
# 655 rows over one CCD quadrant (~0.9 x 0.9 deg): at most 200 rows a leaf gives 7 leaves of orders 5 and 7
# (100 gives 16, 150 gives 14).
PIXEL_THRESHOLD = 200
HIGHEST_ORDER = 10
# The cone the README and the fixture's tests count (IRSA's field 202, rcid 61 lies around it).
CONE_RA, CONE_DEC, CONE_RADIUS_DEG = 20.25, -28.07, 0.1667


@dataclass(frozen=True)
class Leaf:
    order: int
    pixel: int
    path: Path
    rows: int


def nest(source: Path) -> pa.Table:
    """The source's rows with the five epoch lists packed by nested-pandas into one ``lightcurve`` column."""
    flat = pq.read_table(source, columns=[*SCALARS, *EPOCHS])  # leaves out pandas' __index_level_0__
    frame = npd.from_pyarrow(flat, use_pandas_metadata=False)
    nested = frame.nest_lists(columns=list(EPOCHS), name=NESTED).to_pyarrow()
    want = pa.struct([pa.field(name, pa.list_(flat.schema.field(name).type.value_type)) for name in EPOCHS])
    if nested.column_names != [*SCALARS, NESTED] or nested.schema.field(NESTED).type != want:
        raise RuntimeError(f"nested-pandas gave an unexpected schema:\n{nested.schema}")
    for name in SCALARS:
        if nested.schema.field(name).type != flat.schema.field(name).type:
            raise RuntimeError(f"{name} changed type")
    return nested


def same_bits(a: pa.Array | pa.ChunkedArray, b: pa.Array | pa.ChunkedArray) -> bool:
    """Equal value for value, compared as raw bytes (a float's NaN payload and sign of zero count)."""
    x, y = np.asarray(a), np.asarray(b)
    return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def build(nested: Path, out_dir: Path, work: Path) -> None:
    """Run hats-import: the catalog from ``nested``, its margin cache, the collection around them."""
    args = (
        CollectionArguments(  # type: ignore[no-untyped-call]
            output_artifact_name=COLLECTION,
            output_path=out_dir,
            tmp_dir=work / "tmp",
            dask_tmp=work / "dask",
            resume=False,
            progress_bar=False,
            npix_suffix="/",
            npix_parquet_name=LEAF_FILE,
            write_table_kwargs={"compression": "snappy"},
        )
        .catalog(
            input_file_list=[nested],
            file_reader=ParquetPyarrowReader(),  # type: ignore[no-untyped-call]
            catalog_type="object",
            ra_column="objra",
            dec_column="objdec",
            sort_columns="objectid",
            pixel_threshold=PIXEL_THRESHOLD,
            highest_healpix_order=HIGHEST_ORDER,
        )
        .add_margin(margin_threshold=MARGIN_ARCSEC, is_default=True)
    )
    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=1,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
            local_directory=work / "dask",
        ) as cluster,
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        pipeline_with_client(args, client)


def relocate_margin(collection_dir: Path) -> None:
    """hats-import records the margin's primary catalog as the absolute path it was built at; name it instead.

    ``hats_primary_table_url`` then reads as in ``collection.properties`` (the catalog's folder in the
    collection), so the committed files say nothing about the machine that built them. hats only displays it.
    """
    built_at = f"hats_primary_table_url={collection_dir / COLLECTION}\n"
    for name in ("hats.properties", "properties"):
        path = collection_dir / MARGIN / name
        text = path.read_text()
        if built_at not in text:
            raise RuntimeError(f"{path} does not name the primary catalog by its absolute path")
        path.write_text(text.replace(built_at, f"hats_primary_table_url={COLLECTION}\n"))


def leaves(catalog_dir: Path) -> list[Leaf]:
    """The catalog's leaf files in (order, pixel) order, from its partition_info.csv."""
    lines = (catalog_dir / "partition_info.csv").read_text().split()
    found = []
    for line in lines[1:]:
        order, pixel = (int(v) for v in line.split(","))
        path = (
            catalog_dir
            / "dataset"
            / f"Norder={order}"
            / f"Dir={pixel // 10000 * 10000}"
            / f"Npix={pixel}"
            / LEAF_FILE
        )
        found.append(Leaf(order, pixel, path, pq.ParquetFile(path).metadata.num_rows))
    return sorted(found, key=lambda leaf: (leaf.order, leaf.pixel))


def check(source: Path, collection_dir: Path) -> None:
    """The leaves hold every source row once, bit for bit, the margin copies of them, and hats opens the
    collection and cones it."""
    collection = read_hats(collection_dir)
    if not isinstance(collection, CatalogCollection):
        raise RuntimeError(f"hats reads {collection_dir} as a {type(collection).__name__}, not a collection")
    catalog_dir = collection_dir / COLLECTION
    found = leaves(catalog_dir)
    table = pa.concat_tables(pq.read_table(leaf.path) for leaf in found)
    flat = pq.read_table(source, columns=[*SCALARS, *EPOCHS])
    order = np.argsort(table["objectid"].to_numpy())
    expected_order = np.argsort(flat["objectid"].to_numpy())
    table, flat = table.take(order), flat.take(expected_order)
    if table.num_rows != flat.num_rows or collection.main_catalog.catalog_info.total_rows != flat.num_rows:
        raise RuntimeError(f"{table.num_rows} rows in the leaves, {flat.num_rows} in the source")
    for name in SCALARS:
        if not same_bits(table[name], flat[name]):
            raise RuntimeError(f"column {name} differs from the source")
    lightcurve = table[NESTED].combine_chunks()
    for name in EPOCHS:
        got, want = pc.struct_field(lightcurve, name), flat[name].combine_chunks()
        lengths = pc.list_value_length(got), pc.list_value_length(want)
        if got.type != want.type or not same_bits(*lengths):
            raise RuntimeError(f"{NESTED}.{name} has other types or lengths than {name}")
        if not same_bits(pc.list_flatten(got), pc.list_flatten(want)):
            raise RuntimeError(f"{NESTED}.{name} differs from the source's {name}")
    margin = pa.concat_tables(
        pq.read_table(path) for path in sorted((collection_dir / MARGIN / "dataset").rglob(LEAF_FILE))
    )
    rows = {row["objectid"]: row for row in table.to_pylist()}
    if not margin.num_rows or any(rows[row["objectid"]] != row for row in margin.to_pylist()):
        raise RuntimeError("the margin holds rows that are not copies of catalog rows")
    cone = collection.main_catalog.filter_by_cone(CONE_RA, CONE_DEC, CONE_RADIUS_DEG * 3600)
    kept = {(int(pixel.order), int(pixel.pixel)) for pixel in cone.get_healpix_pixels()}
    in_kept = pa.concat_tables(
        pq.read_table(leaf.path, columns=["objra", "objdec", "nepochs"])
        for leaf in found
        if (leaf.order, leaf.pixel) in kept
    )
    if cone_counts(in_kept) != cone_counts(flat):
        raise RuntimeError("the leaves filter_by_cone keeps miss objects inside the cone")
    print(f"hats opens {collection_dir.name}: {type(collection).__name__}, {len(found)} leaves")
    print(f"filter_by_cone keeps {sorted(kept)}, which hold all {cone_counts(in_kept)} (objects, epochs)")


def cone_counts(flat: pa.Table) -> tuple[int, int]:
    """Objects and epochs within the cone: haversine distance in float64 from objra/objdec, sum of nepochs."""
    ra = np.radians(flat["objra"].to_numpy().astype(np.float64))
    dec = np.radians(flat["objdec"].to_numpy().astype(np.float64))
    ra0, dec0 = np.radians(CONE_RA), np.radians(CONE_DEC)
    h = np.sin((dec - dec0) / 2) ** 2 + np.cos(dec) * np.cos(dec0) * np.sin((ra - ra0) / 2) ** 2
    inside = np.degrees(2 * np.arcsin(np.sqrt(h))) <= CONE_RADIUS_DEG
    return int(inside.sum()), int(flat["nepochs"].to_numpy()[inside].sum())


def report(source: Path, collection_dir: Path) -> None:
    catalog_dir = collection_dir / COLLECTION
    found = leaves(catalog_dir)
    print("\nleaves (Norder, Npix, rows, bytes, path):")
    for leaf in found:
        size = leaf.path.stat().st_size
        print(f"  {leaf.order} {leaf.pixel} {leaf.rows} {size} {leaf.path.relative_to(collection_dir)}")
    print(f"\nschema of a leaf:\n{pq.read_schema(found[0].path).remove_metadata()}")
    source_table = pq.read_table(source, columns=["nepochs"])
    objects, epochs = cone_counts(pq.read_table(source, columns=["objra", "objdec", "nepochs"]))
    print(f"\nsource: {source_table.num_rows} rows, {pc.sum(source_table['nepochs']).as_py()} epochs")
    print(f"cone ({CONE_RA}, {CONE_DEC}, {CONE_RADIUS_DEG} deg): {objects} objects, {epochs} epochs")
    files = sorted(p for p in collection_dir.rglob("*") if p.is_file())
    print(f"\n{len(files)} files, {sum(p.stat().st_size for p in files)} bytes in all")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("source", type=Path, help="IRSA bulk light-curve parquet (the DR5 sample)")
    parser.add_argument("out_dir", type=Path, help=f"folder to write {COLLECTION} into")
    args = parser.parse_args(argv)
    source, out_dir = args.source.resolve(), args.out_dir.resolve()
    if (out_dir / COLLECTION).exists():
        parser.error(f"{out_dir / COLLECTION} exists; remove it first")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        nested = work / "input" / "ztf_dr5_nested.parquet"
        nested.parent.mkdir()
        pq.write_table(nest(source), nested)
        build(nested, out_dir, work)
    relocate_margin(out_dir / COLLECTION)
    add_index(out_dir)
    check(source, out_dir / COLLECTION)
    report(source, out_dir / COLLECTION)


if __name__ == "__main__":
    main()
