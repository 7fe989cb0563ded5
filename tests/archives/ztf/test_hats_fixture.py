"""The committed HATS fixture tests/data/ztf_hats: IRSA's DR5 sample in DR24's light-curve layout.

These tests read only tests/data (tests/data/ztf_hats/README.md says how the fixture was built and where its
figures come from). The cone is counted here with plain pyarrow and numpy, independently of hats.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hats.catalog.catalog_collection import CatalogCollection
from hats.catalog.index.index_catalog import IndexCatalog
from hats.catalog.margin_cache.margin_catalog import MarginCatalog
from hats.loaders.read_hats import read_hats

from tests.conftest import REPO

COLLECTION = REPO / "tests" / "data" / "ztf_hats" / "ztf_dr5_sample_lc-hats"
CATALOG = COLLECTION / "ztf_dr5_sample_lc-hats"
MARGIN = COLLECTION / "ztf_dr5_sample_lc-hats_10arcs"
LEAF = re.compile(r"Norder=(\d+)/Dir=(\d+)/Npix=(\d+)/part0\.snappy\.parquet")
EPOCHS = ("hmjd", "mag", "magerr", "clrcoeff", "catflags")

ROWS, ALL_EPOCHS = 655, 20_756
CONE_RA, CONE_DEC, CONE_RADIUS_DEG = 20.25, -28.07, 0.1667
CONE_OBJECTS, CONE_EPOCHS = 78, 2_438
PIXELS = [(5, 8946), (7, 142965), (7, 142966), (7, 142967), (7, 142972), (7, 142973), (7, 142975)]


def leaves(catalog: Path) -> dict[tuple[int, int], Path]:
    """(Norder, Npix) → the leaf file, found by listing dataset/ (IRSA's leaves are folders with one file)."""
    found = {}
    for path in (catalog / "dataset").rglob("part0.snappy.parquet"):
        match = LEAF.fullmatch(path.relative_to(catalog / "dataset").as_posix())
        assert match, path
        order, folder, pixel = (int(g) for g in match.groups())
        assert folder == pixel // 10_000 * 10_000
        found[order, pixel] = path
    return dict(sorted(found.items()))


def read_all(catalog: Path, columns: list[str] | None = None) -> pa.Table:
    return pa.concat_tables(pq.read_table(path, columns=columns) for path in leaves(catalog).values())


def collection() -> CatalogCollection:
    opened = read_hats(COLLECTION)
    assert isinstance(opened, CatalogCollection)
    return opened


def in_cone(table: pa.Table) -> np.ndarray:
    """Rows within the cone: haversine distance from objra/objdec (float32 widened to float64)."""
    ra = np.radians(table["objra"].to_numpy().astype(np.float64))
    dec = np.radians(table["objdec"].to_numpy().astype(np.float64))
    ra0, dec0 = np.radians(CONE_RA), np.radians(CONE_DEC)
    h = np.sin((dec - dec0) / 2) ** 2 + np.cos(dec) * np.cos(dec0) * np.sin((ra - ra0) / 2) ** 2
    inside: np.ndarray = np.degrees(2 * np.arcsin(np.sqrt(h))) <= CONE_RADIUS_DEG
    return inside


def test_hats_opens_the_collection_with_its_catalog_and_default_margin() -> None:
    opened = collection()
    main = opened.main_catalog
    assert main.catalog_name == "ztf_dr5_sample_lc-hats"
    assert main.catalog_info.total_rows == ROWS
    assert (main.catalog_info.ra_column, main.catalog_info.dec_column) == ("objra", "objdec")
    assert main.catalog_info.npix_suffix == "/"
    assert sorted((int(p.order), int(p.pixel)) for p in main.get_healpix_pixels()) == PIXELS
    assert opened.default_margin == "ztf_dr5_sample_lc-hats_10arcs"
    margin = read_hats(MARGIN)
    assert isinstance(margin, MarginCatalog)
    assert margin.catalog_info.margin_threshold == 10.0
    assert margin.catalog_info.total_rows == read_all(MARGIN).num_rows
    assert opened.all_indexes == {"objectid": "ztf_dr5_sample_lc-hats_objectid"}


def test_hats_finds_every_objects_leaf_with_the_object_id_index() -> None:
    """The index (written by tests/tools/build_ztf_hats_index.py, see the README) is hats' own
    IndexCatalog: loc_partitions gives each object's leaf, and its files are sorted by objectid."""
    index_dir = collection().get_index_dir_for_field("objectid")
    assert index_dir is not None
    index = read_hats(index_dir)
    assert isinstance(index, IndexCatalog) and index.catalog_info.indexing_column == "objectid"
    for (order, pixel), path in leaves(CATALOG).items():
        ids = pq.read_table(path, columns=["objectid"]).column("objectid").to_pylist()
        assert [(int(p.order), int(p.pixel)) for p in index.loc_partitions(ids)] == [(order, pixel)]
    rows = pa.concat_tables(
        pq.read_table(p) for p in sorted((Path(str(index_dir)) / "dataset").rglob("*.parquet"))
    )
    assert rows.num_rows == ROWS and rows.column("objectid").to_pylist() == sorted(
        rows.column("objectid").to_pylist()
    )


def test_the_catalog_holds_every_row_once_in_the_leaf_of_its_healpix_29() -> None:
    found = leaves(CATALOG)
    assert list(found) == PIXELS
    total = 0
    ids = []
    for (order, pixel), path in found.items():
        table = pq.read_table(path, columns=["_healpix_29", "objectid"])
        spatial = table["_healpix_29"].to_numpy()
        assert (spatial >> (2 * (29 - order)) == pixel).all()
        assert (np.diff(spatial) >= 0).all()  # hats-import sorts a leaf by _healpix_29
        total += table.num_rows
        ids.append(table["objectid"].to_numpy())
    assert total == ROWS
    assert len(np.unique(np.concatenate(ids))) == ROWS


def test_every_lightcurve_has_nepochs_epochs_in_each_field() -> None:
    table = read_all(CATALOG, ["nepochs", "lightcurve"])
    nepochs = table["nepochs"].to_numpy()
    lightcurve = table["lightcurve"].combine_chunks()
    for name in EPOCHS:
        assert (pc.list_value_length(pc.struct_field(lightcurve, name)).to_numpy() == nepochs).all(), name
    assert int(nepochs.sum()) == ALL_EPOCHS


def test_types_are_dr24s_scalars_and_a_nested_lightcurve() -> None:
    schema = pq.read_schema(leaves(CATALOG)[PIXELS[0]])
    assert schema.names == [
        "_healpix_29",
        "objectid",
        "filterid",
        "fieldid",
        "rcid",
        "objra",
        "objdec",
        "nepochs",
        "lightcurve",
    ]
    scalars = {
        "_healpix_29": pa.int64(),
        "objectid": pa.int64(),
        "filterid": pa.uint8(),
        "fieldid": pa.int16(),
        "rcid": pa.uint8(),
        "objra": pa.float32(),
        "objdec": pa.float32(),
        "nepochs": pa.int64(),
    }
    for name, kind in scalars.items():
        assert schema.field(name).type == kind, name
    lightcurve = schema.field("lightcurve").type
    assert pa.types.is_struct(lightcurve)  # struct of lists, as nested-pandas writes a nested column
    inner = {lightcurve.field(i).name: lightcurve.field(i).type for i in range(lightcurve.num_fields)}
    assert list(inner) == list(EPOCHS)
    for name, kind in inner.items():
        assert pa.types.is_list(kind), name
        assert kind.value_type == (pa.uint16() if name == "catflags" else pa.float32()), name
    assert pq.read_schema(leaves(MARGIN)[PIXELS[0]]) == schema


@pytest.mark.parametrize("only_the_leaves_hats_keeps", [False, True])
def test_the_cone_holds_the_readmes_objects_and_epochs(only_the_leaves_hats_keeps: bool) -> None:
    found = leaves(CATALOG)
    if only_the_leaves_hats_keeps:
        cone = collection().main_catalog.filter_by_cone(CONE_RA, CONE_DEC, CONE_RADIUS_DEG * 3600)
        kept = {(int(p.order), int(p.pixel)) for p in cone.get_healpix_pixels()}
        assert kept == {(7, 142967), (7, 142973)}
        found = {key: path for key, path in found.items() if key in kept}
    table = pa.concat_tables(
        pq.read_table(path, columns=["objra", "objdec", "nepochs"]) for path in found.values()
    )
    inside = in_cone(table)
    assert int(inside.sum()) == CONE_OBJECTS
    assert int(table["nepochs"].to_numpy()[inside].sum()) == CONE_EPOCHS
