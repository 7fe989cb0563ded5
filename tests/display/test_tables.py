"""Records as astropy tables, pandas frames, Time/Quantity arrays and lightkurve light curves."""

from __future__ import annotations

import sys
import types
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import astropy.units as u
import httpx
import numpy as np
import pytest

import harvester
from harvester.archives.mast.records import MastRecord
from harvester.archives.tess.records import TessRecord
from harvester.archives.ztf.records import ZtfRecord
from harvester.display.tables import BTJD_OFFSET
from harvester.records import Provenance
from harvester.testing import FakeArchive

FETCHED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def ztf(mjd: float, mag: float | None = 18.5, service: str | None = None) -> ZtfRecord:
    """A ZTF epoch with every optional cell null except mag."""
    nulls: dict[str, Any] = dict.fromkeys(
        name
        for name, info in ZtfRecord.model_fields.items()
        if info.is_required() and name not in {"object_id", "fetched_at", "provenance", "mjd", "filter"}
    )
    return ZtfRecord(
        object_id="675103300002930",
        fetched_at=FETCHED,
        provenance=Provenance(archive="irsa", url="https://irsa.example/q", service=service),
        mjd=mjd,
        filter="zg",
        **{**nulls, "mag": mag, "expid": 7},
    )


def tess(tic: int, n: int, sector: int = 58) -> TessRecord:
    """A TESS light curve of n cadences, the second flux_err null."""
    time = [2887.0 + 0.0013889 * k for k in range(n)]
    return TessRecord(
        object_id=str(tic),
        fetched_at=FETCHED,
        provenance=Provenance(archive="mast", url="https://mast.example/file", service="Download"),
        tic_id=tic,
        sector=sector,
        camera=1,
        ccd=2,
        obs_id=f"tess-s{sector:04d}-{tic:016d}",
        obsid="123",
        product=f"tess-s{sector:04d}-{tic:016d}_lc.fits",
        ra=10.0,
        dec=-20.0,
        tess_mag=9.5,
        cadence_s=120.0,
        flux_column="PDCSAP_FLUX",
        quality_bitmask=175,
        time=time,
        flux=[1000.0 + k for k in range(n)],
        flux_err=[None if k == 1 else 2.0 for k in range(n)],
        n_points_raw=n,
        n_points=n,
        mjd=time[0] + 56999.5,
    )


def test_ztf_table_has_a_row_per_record_with_schema_units_and_descriptions() -> None:
    """Columns follow the model with provenance flattened, and carry the schema's unit and meaning."""
    table = harvester.to_table([ztf(58000.1), ztf(58000.2)])
    assert len(table) == 2
    assert table.colnames[:8] == [
        "source",
        "object_id",
        "fetched_at",
        "provenance_archive",
        "provenance_url",
        "provenance_service",
        "provenance_sample",
        "mjd",
    ]
    assert table["mjd"].unit == u.d and table["mag"].unit == u.mag and table["ra"].unit == u.deg
    assert "UTC, topocentric" in table["mjd"].description
    assert table["fetched_at"].scale == "utc" and table.meta["source"] == "ztf"


def test_nulls_are_masked_and_typed_from_the_schema() -> None:
    """A null is a masked value, and an all-null column keeps its field's type (strings stay strings)."""
    table = harvester.to_table([ztf(58000.1), ztf(58000.2, mag=None)])
    assert list(table["mag"].mask) == [False, True]
    assert table["provenance_service"].dtype.kind == "U" and all(table["provenance_service"].mask)
    assert table["expid"].dtype.kind == "i"


def test_records_of_two_sources_are_refused() -> None:
    """One table holds one source: mixing ZTF and TESS records is a ValueError naming both."""
    with pytest.raises(ValueError, match="several sources"):
        harvester.to_table([ztf(58000.1), tess(1, 3)])


def test_no_records_give_an_empty_table() -> None:
    """An empty harvest becomes an empty table rather than an error."""
    assert len(harvester.to_table([]).colnames) == 0


def test_tess_table_has_one_row_per_light_curve_without_the_cadence_arrays() -> None:
    """By default a TESS row is a light curve's metadata: time, flux and flux_err are left out."""
    table = harvester.to_table([tess(1, 3), tess(2, 5)])
    assert len(table) == 2 and list(table["tic_id"]) == [1, 2]
    assert not {"time", "flux", "flux_err"} & set(table.colnames)


def test_tess_cadence_table_has_one_row_per_cadence() -> None:
    """cadences=True repeats each light curve's metadata once per cadence, beside time and flux."""
    table = harvester.to_table([tess(1, 3), tess(2, 5)], cadences=True)
    assert len(table) == 8 and list(table["tic_id"]) == [1, 1, 1, 2, 2, 2, 2, 2]
    assert table["time"].unit == u.d and table["flux"].unit == u.electron / u.s
    assert list(table["flux_err"].mask) == [False, True, False, False, True, False, False, False]


def test_cadences_are_refused_for_other_sources() -> None:
    """Only TESS records have cadences."""
    with pytest.raises(ValueError, match="cadences=True is for TESS"):
        harvester.to_table([ztf(58000.1)], cadences=True)


def test_tess_arrays_are_tdb_julian_dates_and_electron_rates() -> None:
    """BTJD becomes Time(btjd + 2457000, jd, tdb); flux is in electron/s; a null flux_err is NaN."""
    record = tess(1, 4)
    time, flux, flux_err = harvester.tess_arrays(record)
    assert time.scale == "tdb" and time.format == "jd"
    np.testing.assert_allclose(time.jd - BTJD_OFFSET, record.time, rtol=0, atol=1e-8)
    assert flux.unit == u.electron / u.s and flux[0].value == 1000.0
    assert np.isnan(flux_err[1].value) and flux_err[0] == 2.0 * u.electron / u.s


def test_tess_arrays_refuse_other_records() -> None:
    """A ZTF epoch has no light curve to unpack."""
    with pytest.raises(TypeError, match="TessRecord"):
        harvester.tess_arrays(ztf(58000.1))  # type: ignore[arg-type]


def test_to_dataframe_gives_one_row_per_record_with_nulls_as_missing() -> None:
    """pandas is installed in the dev group: records become a DataFrame with the schema's columns."""
    frame = harvester.to_dataframe([ztf(58000.1), ztf(58001.2)])
    assert len(frame) == 2 and list(frame["mjd"]) == [58000.1, 58001.2]
    assert {"object_id", "filter", "mag", "magerr"} <= set(frame.columns)
    assert frame["magerr"].isna().all() and frame["catflags"].isna().all()
    assert str(frame["fetched_at"].dt.tz) == "UTC"


def test_to_dataframe_without_pandas_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """pandas is optional: without it, to_dataframe raises an ImportError naming the fix."""
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"to_dataframe\(\) needs pandas.*pip install pandas"):
        harvester.to_dataframe([ztf(58000.1)])


def test_to_lightcurve_without_lightkurve_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """lightkurve is optional: without it, to_lightcurve raises an ImportError naming the fix."""
    monkeypatch.setitem(sys.modules, "lightkurve", None)
    with pytest.raises(ImportError, match=r"to_lightcurve\(\) needs lightkurve.*uv sync --group bench"):
        harvester.to_lightcurve(tess(1, 3))


def test_to_lightcurve_passes_times_fluxes_and_header_facts(monkeypatch: pytest.MonkeyPatch) -> None:
    """LightCurve gets the TDB times, electron/s fluxes and the header facts lightkurve reads from meta."""
    calls: list[dict[str, Any]] = []

    def light_curve(**kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return kwargs

    fake = types.ModuleType("lightkurve")
    fake.LightCurve = light_curve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lightkurve", fake)
    record = tess(21132157, 3, sector=58)
    harvester.to_lightcurve(record)
    (kwargs,) = calls
    assert kwargs["time"].scale == "tdb"
    np.testing.assert_allclose(kwargs["time"].jd - BTJD_OFFSET, record.time, rtol=0, atol=1e-8)
    assert kwargs["flux"].unit == u.electron / u.s and np.isnan(kwargs["flux_err"][1].value)
    meta = kwargs["meta"]
    assert (meta["TICID"], meta["SECTOR"], meta["MISSION"], meta["FLUX_ORIGIN"]) == (
        21132157,
        58,
        "TESS",
        "pdcsap_flux",
    )


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
async def test_read_records_reads_what_a_harvest_wrote(tmp_path: Path, fmt: str) -> None:
    """read_records returns the validated records of a source folder, in either output layout."""
    overrides = {"ztf": {"irsa": {"cone_search": {"ra": 13.0, "dec": 20.0, "radius": 0.01}}}}
    report = await harvester.harvest(
        "ztf",
        transport=httpx.ASGITransport(app=FakeArchive()),
        output=tmp_path,
        limit=25,
        format=fmt,
        jsonl_shard_records=10,
        data_sources=overrides,
    )
    records = harvester.read_records(tmp_path / "ztf")
    assert report.sources["ztf"].written == 25 and len(records) == 25
    assert all(isinstance(r, ZtfRecord) for r in records)
    assert len({r.dedup_key() for r in records}) == 25


def test_read_records_skips_hidden_temporary_files(tmp_path: Path) -> None:
    """A leftover temporary file of a killed run is never read as a record."""
    record = MastRecord.model_validate(
        {
            **dict.fromkeys(MastRecord.model_fields.keys() - {"source"}),
            "object_id": "M 101",
            "obsid": "42",
            "fetched_at": FETCHED,
            "provenance": {"archive": "mast", "url": "https://mast.example"},
        }
    )
    (tmp_path / "record_42.json").write_text(record.model_dump_json())
    (tmp_path / ".record_43.json.0123456789ab.tmp").write_text('{"source": "mast", "obj')
    assert harvester.read_records(tmp_path) == [record]
