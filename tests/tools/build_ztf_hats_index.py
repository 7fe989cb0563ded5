"""Add an object-id index to the HATS test fixture tests/data/ztf_hats, as hats-import would write it.

``uv run python -m tests.tools.build_ztf_hats_index tests/data/ztf_hats`` (also run by
:mod:`tests.tools.build_ztf_hats` after hats-import) writes ``ztf_dr5_sample_lc-hats_objectid/`` beside the
catalog and names it in ``collection.properties`` (``all_indexes=objectid ztf_dr5_sample_lc-hats_objectid``).

hats-import's own index pipeline (``CollectionArguments.add_index``) refuses Python 3.11 unless dask is
2025.3.x, so the same layout is written here with pyarrow (``harvester.testing._hats.id_index_files``, which
the fake archive's release uses too): hats-import's index columns (``objectid``, ``_healpix_29``, ``Norder``
uint8, ``Npix`` uint64; ``IndexArguments`` defaults), sorted by ``objectid`` (recorded as the row groups'
``sorting_columns``), in ``dataset/index/part.<i>.parquet`` with ``dataset/_metadata`` and
``dataset/_common_metadata``, and a ``hats.properties`` (and its copy ``properties``) of type ``index``
written by hats' ``TableProperties`` with ``hats_index_column=objectid`` and
``hats_primary_table_url=ztf_dr5_sample_lc-hats``. The 655 rows are cut into files of 400 rows and row
groups of 64 (2 files, 7 + 4 row groups) so that tests can see which ones a lookup reads; a real release's
index has far larger ones. Deterministic: the properties take the catalog's own ``hats_creation_date``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hats.catalog.catalog_collection import CatalogCollection
from hats.catalog.dataset.collection_properties import CollectionProperties
from hats.catalog.dataset.table_properties import TableProperties
from hats.catalog.index.index_catalog import IndexCatalog
from hats.loaders.read_hats import read_hats

from harvester.testing._hats import id_index_files

COLLECTION = "ztf_dr5_sample_lc-hats"
INDEX = f"{COLLECTION}_objectid"  # hats-import's name: <catalog>_<indexing column>
ROWS_PER_FILE = 400
ROW_GROUP_SIZE = 64
BUILDER = "tests/tools/build_ztf_hats_index.py"


def index_rows(catalog_dir: Path) -> pa.Table:
    """Every leaf's ``objectid`` and ``_healpix_29`` with the leaf's ``Norder`` and ``Npix``."""
    parts = []
    for line in (catalog_dir / "partition_info.csv").read_text().split()[1:]:
        order, pixel = (int(v) for v in line.split(","))
        folder = (
            catalog_dir / "dataset" / f"Norder={order}" / f"Dir={pixel // 10000 * 10000}" / f"Npix={pixel}"
        )
        for path in sorted(folder.glob("*.parquet")):
            table = pq.read_table(path, columns=["objectid", "_healpix_29"])
            parts.append(
                table.append_column("Norder", pa.array([order] * table.num_rows, pa.uint8())).append_column(
                    "Npix", pa.array([pixel] * table.num_rows, pa.uint64())
                )
            )
    return pa.concat_tables(parts)


def add_index(out_dir: Path) -> Path:
    """Write the index of ``out_dir/ztf_dr5_sample_lc-hats``'s catalog and name it in its collection."""
    collection_dir = out_dir / COLLECTION
    catalog_dir = collection_dir / COLLECTION
    index_dir = collection_dir / INDEX
    if index_dir.exists():
        raise SystemExit(f"{index_dir} exists; remove it first")
    catalog = TableProperties.read_from_dir(catalog_dir)
    rows = index_rows(catalog_dir)
    files = id_index_files(
        INDEX, COLLECTION, rows, rows_per_file=ROWS_PER_FILE, row_group_size=ROW_GROUP_SIZE
    )
    for name, data in files.items():
        if name == "hats.properties":
            continue  # hats writes its own, below
        path = index_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    info: dict[str, object] = {
        "catalog_name": INDEX,
        "catalog_type": "index",
        "total_rows": rows.num_rows,
        "primary_catalog": COLLECTION,
        "indexing_column": "objectid",
        **{key: getattr(catalog, key) for key in ("hats_creation_date", "hats_release_date", "hats_version")},
        "hats_builder": f"{BUILDER} (pyarrow {pa.__version__}), {getattr(catalog, 'hats_builder')}",  # noqa: B009
    }
    TableProperties(**info).to_properties_file(index_dir)
    collection = CollectionProperties.read_from_dir(collection_dir)
    collection.all_indexes = {**(collection.all_indexes or {}), "objectid": INDEX}
    collection.to_properties_file(collection_dir)
    check(collection_dir, rows)
    return index_dir


def check(collection_dir: Path, rows: pa.Table) -> None:
    """hats reads the collection's index and finds every object's leaf with it."""
    opened = read_hats(collection_dir)
    index_dir = opened.get_index_dir_for_field("objectid") if isinstance(opened, CatalogCollection) else None
    index = read_hats(index_dir) if index_dir is not None else None
    if not isinstance(index, IndexCatalog) or index_dir is None:
        raise RuntimeError(f"hats finds no object-id index in {collection_dir}")
    ids = rows.column("objectid").to_pylist()
    found = {(int(p.order), int(p.pixel)) for p in index.loc_partitions(ids)}
    expected = set(zip(rows.column("Norder").to_pylist(), rows.column("Npix").to_pylist(), strict=True))
    if found != expected:
        raise RuntimeError(f"hats' loc_partitions finds {sorted(found)}, the leaves are {sorted(expected)}")
    print(f"hats reads {index_dir.name}: {type(index).__name__}, {rows.num_rows} ids in {len(found)} pixels")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("out_dir", type=Path, help=f"the folder holding {COLLECTION}")
    args = parser.parse_args(argv)
    add_index(args.out_dir.resolve())


if __name__ == "__main__":
    main()
