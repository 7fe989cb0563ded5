"""Tests for harvester.archives.spoc_fits: SPOC light-curve decoding, checked against astropy reads.

The real files live in tests/data/tess (see its README). Every corrupt input below is *derived at
test time* from those files (prefixes, flipped bytes) or synthesised with astropy's writer, and is
named as such.
"""

from __future__ import annotations

import functools
import io
import threading
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import numpy.typing as npt
import orjson
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harvester.archives import spoc_fits as _fits
from harvester.archives.spoc_fits import DecodedLightCurve, decode_lightcurve, decode_lightcurve_async
from harvester.archives.tess.records import TessRecord
from harvester.errors import ArchiveResponseError
from harvester.records import Provenance

pytestmark = pytest.mark.filterwarnings("error")

DATA = Path(__file__).resolve().parents[1] / "data" / "tess"
S58 = DATA / "tess2022302161335-s0058-0000000021132157-0247-s_lc.fits"
S70 = DATA / "tess2023263165758-s0070-0000000278892590-0265-s_lc.fits"  # TRAPPIST-1, empty TEFF card
REAL = [S58, S70]
REAL_IDS = ["s58", "s70-trappist1"]

F64 = npt.NDArray[np.float64]


@functools.cache
def _bytes(path: Path) -> bytes:
    return path.read_bytes()


def _decode(path: Path, **kw: Any) -> DecodedLightCurve:
    return decode_lightcurve(_bytes(path), product=path.name, **kw)


def _independent(path: Path, flux_column: str = "PDCSAP_FLUX", bitmask: int = 175) -> tuple[F64, F64, F64]:
    """TIME, flux, flux_err as astropy reads them, cleaned here with plain numpy."""
    table = fits.getdata(path, "LIGHTCURVE")
    time = np.asarray(table["TIME"], dtype=np.float64)
    flux = np.asarray(table[flux_column], dtype=np.float64)
    err = np.asarray(table[flux_column + "_ERR"], dtype=np.float64)
    quality = np.asarray(table["QUALITY"], dtype=np.int64)
    keep = np.isfinite(time) & np.isfinite(flux) & ((quality & bitmask) == 0)
    return time[keep], flux[keep], err[keep]


def _synthetic(
    time: list[float],
    flux: list[float],
    err: list[float],
    quality: list[int],
    *,
    lc_cards: dict[str, Any] | None = None,
    extname: str = "LIGHTCURVE",
    drop_column: str | None = None,
    checksum: bool = False,
) -> bytes:
    """A small SPOC-shaped file written by astropy (synthetic, not a real product)."""
    columns = [
        fits.Column(name="TIME", format="D", array=np.array(time, dtype=np.float64)),
        fits.Column(name="PDCSAP_FLUX", format="E", array=np.array(flux, dtype=np.float32)),
        fits.Column(name="PDCSAP_FLUX_ERR", format="E", array=np.array(err, dtype=np.float32)),
        fits.Column(name="QUALITY", format="J", array=np.array(quality, dtype=np.int32)),
    ]
    columns = [c for c in columns if c.name != drop_column]
    primary = fits.PrimaryHDU()
    for key, value in {
        "TICID": 123456,
        "SECTOR": 9,
        "CAMERA": 2,
        "CCD": 4,
        "RA_OBJ": 10.5,
        "DEC_OBJ": -3.25,
        "TESSMAG": 8.5,
    }.items():
        primary.header[key] = value
    table = fits.BinTableHDU.from_columns(columns, name=extname)
    cards: dict[str, Any] = {
        "TIMESYS": "TDB",
        "TIMEUNIT": "d",
        "BJDREFI": 2457000,
        "BJDREFF": 0.0,
        "TIMEDEL": 0.0013888888888889,
    }
    cards.update(lc_cards or {})
    for key, value in cards.items():
        if value is None:
            table.header.pop(key, None)
        else:
            table.header[key] = value
    buf = io.BytesIO()
    fits.HDUList([primary, table]).writeto(buf, checksum=checksum)
    return buf.getvalue()


def _simple(**kw: Any) -> bytes:
    return _synthetic([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 3.0, 4.0], [0] * 4, **kw)


# --- real files against an independent read ------------------------------------------------------


@pytest.mark.parametrize("path", REAL, ids=REAL_IDS)
def test_arrays_equal_independent_astropy_read(path: Path) -> None:
    """TIME/PDCSAP_FLUX/ERR after cleaning equal astropy's values masked independently with numpy."""
    got = _decode(path)
    time, flux, err = _independent(path)
    assert got.time.dtype == np.float64
    assert np.array_equal(got.time, time)
    assert np.array_equal(got.flux, flux)
    assert np.array_equal(got.flux_err, err, equal_nan=True)
    assert got.reduced is None


@pytest.mark.parametrize("path", REAL, ids=REAL_IDS)
def test_n_points_raw_is_naxis2(path: Path) -> None:
    """n_points_raw counts every row of the LIGHTCURVE table, before cleaning."""
    assert _decode(path).n_points_raw == fits.getheader(path, "LIGHTCURVE")["NAXIS2"]


@pytest.mark.parametrize("path", REAL, ids=REAL_IDS)
def test_primary_header_fields_match(path: Path) -> None:
    """TICID, SECTOR, CAMERA, CCD, RA_OBJ, DEC_OBJ and TESSMAG equal the primary header's values."""
    got = _decode(path)
    header = fits.getheader(path, 0)
    assert (got.tic_id, got.sector, got.camera, got.ccd) == (
        header["TICID"],
        header["SECTOR"],
        header["CAMERA"],
        header["CCD"],
    )
    assert (got.ra, got.dec, got.tess_mag) == (header["RA_OBJ"], header["DEC_OBJ"], header["TESSMAG"])


@pytest.mark.parametrize("path", REAL, ids=REAL_IDS)
def test_cadence_s_is_timedel_in_seconds(path: Path) -> None:
    """cadence_s is TIMEDEL × 86400 rounded to 0.001 s (120 s for 2-minute files)."""
    assert _decode(path).cadence_s == 120.0


def test_empty_teff_card_does_not_crash() -> None:
    """The TRAPPIST-1 file's undefined TEFF card decodes without error."""
    assert fits.getheader(S70, 0)["TEFF"] is None  # the quirk this file is here for
    assert _decode(S70).tic_id == 278892590


def test_quality_bitmask_zero_keeps_all_finite_cadences() -> None:
    """quality_bitmask=0 keeps every cadence with finite TIME and flux, whatever its QUALITY."""
    # SAP_FLUX, because SPOC sets PDCSAP_FLUX to NaN on most flagged cadences.
    table = fits.getdata(S70, "LIGHTCURVE")
    finite = np.isfinite(table["TIME"]) & np.isfinite(table["SAP_FLUX"])
    got = _decode(S70, flux_column="SAP_FLUX", quality_bitmask=0)
    assert got.n_points == int(finite.sum())
    assert _decode(S70, flux_column="SAP_FLUX").n_points < got.n_points  # 175 drops some of them


def test_quality_bitmask_drops_only_matching_bits() -> None:
    """A cadence is dropped only when QUALITY shares a bit with the mask (synthetic file)."""
    data = _synthetic([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0] * 4, [0, 8, 4096, 16])
    assert decode_lightcurve(data, product="syn", quality_bitmask=175).time.tolist() == [1.0, 3.0, 4.0]
    assert decode_lightcurve(data, product="syn", quality_bitmask=0).n_points == 4


def test_sap_flux_column() -> None:
    """flux_column='SAP_FLUX' reads SAP_FLUX and SAP_FLUX_ERR."""
    got = _decode(S70, flux_column="SAP_FLUX")
    time, flux, err = _independent(S70, "SAP_FLUX")
    assert np.array_equal(got.time, time)
    assert np.array_equal(got.flux, flux)
    assert np.array_equal(got.flux_err, err, equal_nan=True)
    assert got.flux_column == "SAP_FLUX"


# --- max_points ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bins", [1, 7, 1000])
def test_max_points_bins_equal_independent_means(bins: int) -> None:
    """max_points bins in np.array_split order; means and quadrature errors equal a per-bin loop."""
    got = _decode(S58, max_points=bins)
    time, flux, err = _independent(S58)
    assert np.array_equal(got.time, [b.mean() for b in np.array_split(time, bins)])
    assert np.array_equal(got.flux, [b.mean() for b in np.array_split(flux, bins)])
    want_err = [np.sqrt(np.sum(b**2)) / len(b) for b in np.array_split(err, bins)]
    assert np.array_equal(got.flux_err, want_err, equal_nan=True)
    assert got.reduced == f"binned mean of {len(time)} cadences into {bins} bins (np.array_split order)"


@pytest.mark.parametrize("extra", [0, 1, 10**9])
def test_max_points_at_or_above_count_gives_identical_arrays(extra: int) -> None:
    """max_points >= kept cadences leaves the arrays exactly as without it, and reduced None."""
    full = _decode(S58)
    got = _decode(S58, max_points=full.n_points + extra)
    assert np.array_equal(got.time, full.time)
    assert np.array_equal(got.flux, full.flux)
    assert np.array_equal(got.flux_err, full.flux_err, equal_nan=True)
    assert got.reduced is None


def test_nan_error_in_bin_makes_bin_error_nan() -> None:
    """A bin containing a NaN flux error gets a NaN error (None in the record); other bins do not."""
    data = _synthetic([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [3.0, 4.0, float("nan"), 1.0], [0] * 4)
    got = decode_lightcurve(data, product="syn", max_points=2)
    assert got.flux_err[0] == np.sqrt(25.0) / 2
    assert np.isnan(got.flux_err[1])
    assert got.to_record_fields()["flux_err"] == [2.5, None]


# --- record fields ---------------------------------------------------------------------------------


def test_to_record_fields_builds_a_valid_tess_record() -> None:
    """to_record_fields gives exactly the owned TessRecord fields, and a record built from them dumps."""
    got = _decode(S58)
    fields = got.to_record_fields()
    assert set(fields) == {
        "tic_id",
        "object_id",
        "sector",
        "camera",
        "ccd",
        "ra",
        "dec",
        "tess_mag",
        "cadence_s",
        "flux_column",
        "quality_bitmask",
        "time_system",
        "time",
        "flux",
        "flux_err",
        "n_points_raw",
        "n_points",
        "reduced",
        "mjd",
        "product",
    }
    record = TessRecord(
        **fields,
        obs_id=S58.name.removesuffix("_lc.fits"),
        obsid=None,
        fetched_at="2024-01-01T00:00:00Z",
        provenance=Provenance(archive="mast", url="https://example.invalid/x"),
    )
    assert record.object_id == "21132157"
    assert record.n_points == len(record.time) == got.n_points
    assert record.mjd == got.time[0] + 56999.5
    assert orjson.loads(orjson.dumps(record.model_dump(mode="json")))["time"] == got.time.tolist()


def test_to_record_fields_nan_error_becomes_none() -> None:
    """A NaN flux error stays NaN in the array and becomes None in the record list."""
    data = _synthetic([1.0, 2.0], [5.0, 6.0], [float("nan"), 0.5], [0, 0])
    got = decode_lightcurve(data, product="syn")
    assert np.isnan(got.flux_err[0])
    assert got.to_record_fields()["flux_err"] == [None, 0.5]


def test_no_cadence_left_gives_empty_lists_and_no_mjd() -> None:
    """When cleaning drops everything the record has empty lists and mjd None."""
    data = _synthetic([1.0, float("nan")], [float("nan"), 2.0], [1.0, 1.0], [0, 0])
    fields = decode_lightcurve(data, product="syn").to_record_fields()
    assert (fields["time"], fields["n_points"], fields["n_points_raw"], fields["mjd"]) == ([], 0, 2, None)


def test_undefined_header_cards_become_none() -> None:
    """Header cards with an empty value or absent from the file give None."""
    data = _synthetic([1.0], [1.0], [1.0], [0], lc_cards={"TIMEDEL": None})
    # Blank the SECTOR value in place: 'SECTOR  =                    9' -> an undefined value.
    card = data.index(b"SECTOR  =")
    data = data[: card + 10] + b" " * 70 + data[card + 80 :]
    got = decode_lightcurve(data, product="syn")
    assert (got.sector, got.cadence_s, got.camera) == (None, None, 2)


# --- time system -----------------------------------------------------------------------------------


def test_other_bjdref_is_converted_to_btjd() -> None:
    """BJDREFI/BJDREFF other than (2457000, 0) are folded into TIME so the output stays BTJD."""
    data = _synthetic(
        [2000.0, 2001.0], [1.0, 1.0], [1.0, 1.0], [0, 0], lc_cards={"BJDREFI": 2454833, "BJDREFF": 0.25}
    )
    got = decode_lightcurve(data, product="kepler-like")
    assert got.time.tolist() == [2000.0 - 2167 + 0.25, 2001.0 - 2167 + 0.25]


def test_missing_bjdref_means_btjd() -> None:
    """Without BJDREFI/BJDREFF the TIME column is taken as BTJD unchanged."""
    data = _synthetic([1.5], [1.0], [1.0], [0], lc_cards={"BJDREFI": None, "BJDREFF": None})
    assert decode_lightcurve(data, product="syn").time.tolist() == [1.5]


def test_timesys_other_than_tdb_raises() -> None:
    """A TIMESYS that is not TDB cannot be BTJD and is refused."""
    data = _simple(lc_cards={"TIMESYS": "UTC"})
    with pytest.raises(ArchiveResponseError, match="TIMESYS"):
        decode_lightcurve(data, product="syn")


# --- corrupt and wrong bodies ----------------------------------------------------------------------


def test_truncated_prefix_raises_with_product_and_sizes() -> None:
    """A real file cut mid-data (derived: its first 1,234,567 bytes) names the product and byte counts."""
    cut = _bytes(S58)[:1_234_567]
    with pytest.raises(ArchiveResponseError) as info:
        decode_lightcurve(cut, product=S58.name)
    message = str(info.value)
    assert message.startswith(f"{S58.name}: truncated FITS: 1,234,567 of at least ")
    assert "\n" not in message


def test_cut_at_block_boundary_mid_data_raises() -> None:
    """A real file cut at a 2880-byte boundary inside the LIGHTCURVE data (derived) is truncated."""
    data = _bytes(S58)
    cut = data[: 2880 * 300]  # the LIGHTCURVE data spans bytes 20,160 .. 2,018,880
    assert len(cut) % 2880 == 0
    with pytest.raises(ArchiveResponseError, match="truncated FITS"):
        decode_lightcurve(cut, product=S58.name)


def test_header_cut_raises() -> None:
    """A real file cut inside its primary header (derived: first 2,880 bytes) is truncated."""
    with pytest.raises(ArchiveResponseError, match="no END card"):
        decode_lightcurve(_bytes(S58)[:2880], product=S58.name)


def test_random_bytes_raise() -> None:
    """Random bytes are not FITS."""
    noise = np.random.default_rng(1).integers(0, 256, 2880 * 3, dtype=np.uint8).tobytes()
    with pytest.raises(ArchiveResponseError, match="not a FITS file"):
        decode_lightcurve(noise, product="noise")


def test_html_page_raises() -> None:
    """An HTML error page served instead of the file is refused, naming what it starts with."""
    html = b"<!DOCTYPE html>\n<html><body>503 Service Unavailable</body></html>\n"
    with pytest.raises(ArchiveResponseError, match=r"not a FITS file: starts with b'<!DOCTYPE html>"):
        decode_lightcurve(html, product="x_lc.fits")


def test_empty_body_raises() -> None:
    """Zero bytes are refused."""
    with pytest.raises(ArchiveResponseError, match="empty body"):
        decode_lightcurve(b"", product="x_lc.fits")


def test_length_not_multiple_of_2880_raises() -> None:
    """Bytes appended after the last HDU (derived: real file + 100 bytes) are refused."""
    with pytest.raises(ArchiveResponseError, match="not a multiple of 2880"):
        decode_lightcurve(_bytes(S58) + b"\0" * 100, product=S58.name)


def test_trailing_block_that_is_not_an_extension_raises() -> None:
    """A whole block of garbage after the last HDU (derived) is refused."""
    with pytest.raises(ArchiveResponseError, match="not an XTENSION"):
        decode_lightcurve(_bytes(S58) + b" " * 2880, product=S58.name)


def test_flipped_data_byte_fails_checksum() -> None:
    """One altered byte in the LIGHTCURVE data (derived) breaks its CHECKSUM and is refused."""
    data = bytearray(_bytes(S58))
    data[500_000] ^= 0x40
    with pytest.raises(ArchiveResponseError, match="CHECKSUM of HDU 1 \\(LIGHTCURVE\\)"):
        decode_lightcurve(bytes(data), product=S58.name)


def test_checksum_can_be_skipped() -> None:
    """verify_checksum=False decodes a file whose bytes were altered (derived) without the sum check."""
    data = bytearray(_bytes(S58))
    data[500_000] ^= 0x40
    assert decode_lightcurve(bytes(data), product=S58.name, verify_checksum=False).tic_id == 21132157


def test_astropy_written_checksums_verify() -> None:
    """CHECKSUM/DATASUM cards written by astropy (synthetic file) pass verification."""
    data = _simple(checksum=True)
    assert b"DATASUM =" in data
    assert decode_lightcurve(data, product="syn").n_points == 4


def test_missing_lightcurve_hdu_raises() -> None:
    """A file without a LIGHTCURVE extension is refused, listing the HDUs it has."""
    with pytest.raises(ArchiveResponseError, match="no LIGHTCURVE HDU"):
        decode_lightcurve(_simple(extname="TARGETTABLES"), product="syn")


@pytest.mark.parametrize("column", ["TIME", "PDCSAP_FLUX", "PDCSAP_FLUX_ERR", "QUALITY"])
def test_missing_column_raises(column: str) -> None:
    """A LIGHTCURVE table without one of the four needed columns is refused."""
    with pytest.raises(ArchiveResponseError, match=f"has no {column} column"):
        decode_lightcurve(_simple(drop_column=column), product="syn")


def test_unknown_flux_column_raises() -> None:
    """Asking for a flux column the file does not have is refused."""
    with pytest.raises(ArchiveResponseError, match="has no KSPSAP_FLUX column"):
        _decode(S58, flux_column="KSPSAP_FLUX")


def test_invalid_arguments_raise_value_error() -> None:
    """max_points < 1 and a negative bitmask are caller errors, not archive errors."""
    with pytest.raises(ValueError, match="max_points"):
        _decode(S58, max_points=0)
    with pytest.raises(ValueError, match="quality_bitmask"):
        _decode(S58, quality_bitmask=-1)


# --- async -----------------------------------------------------------------------------------------


async def test_async_wrapper_runs_in_worker_thread_under_limiter(monkeypatch: pytest.MonkeyPatch) -> None:
    """decode_lightcurve_async decodes in a worker thread holding a limiter token, with the same result."""
    limiter = anyio.CapacityLimiter(2)
    seen: list[tuple[bool, int]] = []
    real = _fits.decode_lightcurve

    def spy(data: bytes, **kw: Any) -> DecodedLightCurve:
        seen.append((threading.current_thread() is not threading.main_thread(), limiter.borrowed_tokens))
        return real(data, **kw)

    monkeypatch.setattr(_fits, "decode_lightcurve", spy)
    got = await decode_lightcurve_async(_bytes(S70), limiter=limiter, product=S70.name, max_points=500)
    want = real(_bytes(S70), product=S70.name, max_points=500)
    assert seen == [(True, 1)]
    assert limiter.borrowed_tokens == 0
    assert got.to_record_fields() == want.to_record_fields()


# --- properties ------------------------------------------------------------------------------------


def _decodes_or_refuses(data: bytes, verify_checksum: bool = True) -> None:
    message = None
    try:
        got = decode_lightcurve(data, product="prop", verify_checksum=verify_checksum)
    except ArchiveResponseError as exc:
        message = str(exc)
    if message is not None:
        assert message.startswith("prop: ")
        assert "\n" not in message
    else:
        assert isinstance(got, DecodedLightCurve)
        got.to_record_fields()


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=6000), st.binary(max_size=6000).map(lambda b: b"SIMPLE  =" + b)))
def test_arbitrary_bytes_decode_or_archive_error(data: bytes) -> None:
    """Arbitrary bytes give a DecodedLightCurve or ArchiveResponseError, never another exception."""
    _decodes_or_refuses(data)


_REAL_LEN = S70.stat().st_size
_HEADERS_END = 20160  # the three headers before the LIGHTCURVE data in both real files


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.one_of(st.just(_REAL_LEN), st.integers(0, _REAL_LEN)),
    flips=st.lists(
        st.tuples(
            st.one_of(st.integers(0, _HEADERS_END), st.integers(0, _REAL_LEN - 1)), st.integers(1, 255)
        ),
        max_size=4,
    ),
    verify_checksum=st.booleans(),
)
def test_real_prefix_with_flipped_bytes_decode_or_archive_error(
    cut: int, flips: list[tuple[int, int]], verify_checksum: bool
) -> None:
    """Prefixes of a real file with flipped bytes (derived) decode or raise ArchiveResponseError only."""
    data = bytearray(_bytes(S70)[:cut])
    for pos, mask in flips:
        if pos < len(data):
            data[pos] ^= mask
    _decodes_or_refuses(bytes(data), verify_checksum)
