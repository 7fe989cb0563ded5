"""The one door to FITS: every byte of a TESS SPOC light-curve file is decoded here, nowhere else.

:func:`decode_lightcurve` turns the body of a SPOC ``*_lc.fits`` download into a
:class:`DecodedLightCurve`: cleaned numpy arrays plus the primary-header facts a
:class:`~harvester.records.TessRecord` needs. :func:`decode_lightcurve_async` runs it in a worker
thread under an :class:`anyio.CapacityLimiter`.

Why not ``astropy.io.fits.open``? It is correct but slow for this job: 6–10 ms for a 2 MB 2-minute
file before any cleaning, when "decode + record + JSON" has about 6 ms in all if it is to be 10×
faster than ``lightkurve.read`` (see ``tests/tools/bench/bench_fits.py``; this decoder takes about
0.7 ms). astropy also only *warns* about many kinds of corruption, and it reads a truncated file up
to the cut. This module instead reads the file in two strict steps:

1. **Structure.** The body must start with ``SIMPLE  =`` (value ``T``). Each HDU header is parsed
   card by card (printable ASCII only, an ``END`` card required), its declared data size
   ``|BITPIX|/8 × GCOUNT × (PCOUNT + NAXIS1 × … × NAXISn)`` is padded to 2880 bytes and must fit in
   the body. After the last HDU only another ``XTENSION`` header may follow, and the length must be
   a multiple of 2880. When a header has a ``CHECKSUM`` card (every SPOC HDU has one), the HDU's
   32-bit ones'-complement sum must be −0, and a ``DATASUM`` card must match the data. This
   catches flipped bytes, which astropy reads without complaint by default. astropy 8's own
   ``checksum=True`` reports every sample SPOC file as failing, although each HDU does sum to −0.
   ``verify_checksum=False`` turns the sums off. Any failure raises
   :class:`~harvester.errors.ArchiveResponseError` with a one-line message that names the product
   and the cause.
2. **Columns.** From the ``LIGHTCURVE`` binary table (matched by EXTNAME, case-insensitively), the
   columns TIME, ``<flux_column>``, ``<flux_column>_ERR`` and QUALITY are read as strided big-endian
   views (``TFORMn`` gives each column's offset in the row) and copied to native float64/int64.
   ``TSCALn``/``TZEROn`` are applied when present, as astropy does. A missing HDU or column (the
   ``_ERR`` column included), or a column that is not a scalar E/D (I/J/K/B for QUALITY), raises.

Choices (each tested in ``tests/archives/test_fits.py``):

- **Cleaning.** A cadence is dropped when TIME or flux is not finite, or when
  ``QUALITY & quality_bitmask != 0``. The default 175 is lightkurve's "default" mask
  (AttitudeTweak|SafeMode|CoarsePoint|EarthPoint|Desat|ManualExclude), and 0 keeps every finite
  cadence. A NaN (or infinite) flux error keeps its cadence and becomes ``None`` in record lists.
- **Time system.** The output is always BTJD = BJD_TDB − 2457000. When the LIGHTCURVE header's
  BJDREFI/BJDREFF are present and not (2457000, 0.0), TIME is *converted*:
  ``TIME + ((BJDREFI − 2457000) + BJDREFF)`` (a Kepler file with BJDREFI=2454833 comes out in BTJD).
  When they are absent, TIME is taken as BTJD, the SPOC convention. TIMESYS other than TDB, or
  TIMEUNIT other than ``d``, raises, because no offset can turn those into BTJD.
- **Reduction** (``max_points``). When more cadences are kept than ``max_points``, the kept cadences
  (in file order) are split into ``max_points`` contiguous bins with ``np.array_split`` semantics
  (the first ``n % k`` bins hold one more cadence). Each bin gives the mean time, the mean flux and
  ``sqrt(sum(err²)) / n_bin``. That error is NaN, so ``None`` in the record, when any error in the
  bin is NaN: an unknown member error leaves the mean's error unknown, and it is not silently
  dropped. Otherwise the arrays are exactly the file's values after cleaning (float32 widened to
  float64, with no other rounding).
- **Header.** TICID, SECTOR, CAMERA, CCD, RA_OBJ, DEC_OBJ and TESSMAG come from the PRIMARY header;
  TICID falls back to the LIGHTCURVE header's copy, and a file with neither raises. A card that is
  missing or has an empty (undefined) value gives ``None``. A card whose value has the wrong type
  (a string where a number belongs) raises. ``cadence_s`` = TIMEDEL × 86400 from the LIGHTCURVE
  header, rounded to 0.001 s, or ``None``.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any, Final

import anyio
import anyio.to_thread
import numpy as np
import numpy.typing as npt

from harvester.errors import ArchiveResponseError

__all__ = [
    "BTJD_OFFSET_JD",
    "BTJD_TO_MJD",
    "DEFAULT_QUALITY_BITMASK",
    "DecodedLightCurve",
    "decode_lightcurve",
    "decode_lightcurve_async",
]

BLOCK: Final = 2880
CARD: Final = 80
BTJD_OFFSET_JD: Final = 2457000
"""BTJD = BJD_TDB − 2457000."""
BTJD_TO_MJD: Final = 56999.5
"""A barycentric TDB MJD is BTJD + 56999.5 (not a UTC MJD)."""
DEFAULT_QUALITY_BITMASK: Final = 175
"""lightkurve's "default" TESS mask: 1|2|4|8|32|128."""

FloatArray = npt.NDArray[np.float64]

_PRINTABLE: Final = bytes(range(0x20, 0x7F))
_INT_RE: Final = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[EeDd][+-]?[0-9]+)?")
_TFORM_RE: Final = re.compile(r"\s*([0-9]*)([LXBIJKAEDCMPQ])(.*)")
_FORM_BYTES: Final = {
    "L": 1,
    "B": 1,
    "A": 1,
    "I": 2,
    "J": 4,
    "E": 4,
    "K": 8,
    "D": 8,
    "C": 8,
    "M": 16,
    "P": 8,
    "Q": 16,
}
_FORM_DTYPE: Final = {"B": ">u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}
_FLOAT_FORMS: Final = frozenset("ED")
_INT_FORMS: Final = frozenset("BIJK")
_MAX_NAXIS: Final = 999
_UNDEFINED: Final = object()


class _Corrupt(Exception):
    """Internal: the cause of an ArchiveResponseError; the product name is added by the caller."""


# --------------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, slots=True)
class DecodedLightCurve:
    """A decoded, cleaned (and perhaps reduced) SPOC light curve. Time is BTJD."""

    product: str
    tic_id: int
    sector: int | None
    camera: int | None
    ccd: int | None
    ra: float | None
    dec: float | None
    tess_mag: float | None
    cadence_s: float | None
    flux_column: str
    quality_bitmask: int
    time: FloatArray
    flux: FloatArray
    flux_err: FloatArray
    n_points_raw: int
    reduced: str | None

    @property
    def n_points(self) -> int:
        """Cadences in the arrays (after cleaning and reduction)."""
        return int(self.time.shape[0])

    def to_record_fields(self) -> dict[str, Any]:
        """The TessRecord fields this light curve owns, with plain lists and NaN errors as None."""
        err = self.flux_err
        err_list: list[float | None] = err.tolist()
        bad = np.flatnonzero(~np.isfinite(err))
        for i in bad.tolist():
            err_list[i] = None
        n = self.n_points
        return {
            "tic_id": self.tic_id,
            "object_id": str(self.tic_id),
            "sector": self.sector,
            "camera": self.camera,
            "ccd": self.ccd,
            "ra": self.ra,
            "dec": self.dec,
            "tess_mag": self.tess_mag,
            "cadence_s": self.cadence_s,
            "flux_column": self.flux_column,
            "quality_bitmask": self.quality_bitmask,
            "time_system": "BTJD",
            "time": self.time.tolist(),
            "flux": self.flux.tolist(),
            "flux_err": err_list,
            "n_points_raw": self.n_points_raw,
            "n_points": n,
            "reduced": self.reduced,
            "mjd": float(self.time[0]) + BTJD_TO_MJD if n else None,
            "product": self.product,
        }


# --------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------


def decode_lightcurve(
    data: bytes,
    *,
    flux_column: str = "PDCSAP_FLUX",
    quality_bitmask: int = DEFAULT_QUALITY_BITMASK,
    max_points: int | None = None,
    product: str,
    verify_checksum: bool = True,
) -> DecodedLightCurve:
    """Decode a SPOC light-curve FITS body; corrupt or unusable bodies raise ArchiveResponseError.

    Pure and synchronous (no I/O, no global state), so it is safe to run in a worker thread.
    ``ValueError`` is raised only for invalid *arguments* (negative bitmask, ``max_points < 1``).
    """
    if not 0 <= quality_bitmask < 2**63:
        raise ValueError(f"quality_bitmask must be in [0, 2**63), got {quality_bitmask}")
    if max_points is not None and max_points < 1:
        raise ValueError(f"max_points must be >= 1 or None, got {max_points}")
    try:
        return _decode(data, flux_column, quality_bitmask, max_points, product, verify_checksum)
    except _Corrupt as exc:
        raise ArchiveResponseError(str(exc), target=product) from None


async def decode_lightcurve_async(
    data: bytes,
    *,
    limiter: anyio.CapacityLimiter,
    flux_column: str = "PDCSAP_FLUX",
    quality_bitmask: int = DEFAULT_QUALITY_BITMASK,
    max_points: int | None = None,
    product: str,
    verify_checksum: bool = True,
) -> DecodedLightCurve:
    """:func:`decode_lightcurve` in a worker thread, holding one token of ``limiter``."""
    call = functools.partial(
        decode_lightcurve,
        data,
        flux_column=flux_column,
        quality_bitmask=quality_bitmask,
        max_points=max_points,
        product=product,
        verify_checksum=verify_checksum,
    )
    return await anyio.to_thread.run_sync(call, limiter=limiter)


# --------------------------------------------------------------------------------------------------
# Structure: headers and HDU sizes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Hdu:
    index: int
    name: str
    cards: dict[str, str]  # keyword -> raw value field (columns 11-80); first occurrence wins
    header_start: int
    data_start: int
    data_size: int  # declared, unpadded
    end: int  # padded end of the data


def _describe_start(data: bytes) -> str:
    head = data[:24]
    return repr(head) + ("…" if len(data) > len(head) else "")


def _read_header(data: bytes, start: int, index: int) -> tuple[dict[str, str], int]:
    """Parse the header at ``start``; return its value cards and where its data starts."""
    cards: dict[str, str] = {}
    n = len(data)
    pos = start
    while True:
        if pos + BLOCK > n:
            raise _Corrupt(f"truncated FITS: header of HDU {index} has no END card within {n:,} bytes")
        block = data[pos : pos + BLOCK]
        if block.translate(None, _PRINTABLE):
            raise _Corrupt(f"corrupt FITS: non-ASCII byte in header of HDU {index} (block at byte {pos:,})")
        text = block.decode("ascii")
        pos += BLOCK
        for i in range(0, BLOCK, CARD):
            keyword = text[i : i + 8].rstrip()
            if keyword == "END":
                return cards, pos
            if text[i + 8 : i + 10] == "= " and keyword and keyword not in cards:
                cards[keyword] = text[i + 10 : i + CARD]


def _value(raw: str) -> object:
    """A card's value: str, bool, int, float, or _UNDEFINED for an empty value."""
    s = raw.lstrip()
    if s.startswith("'"):
        out: list[str] = []
        i = 1
        while True:
            j = s.find("'", i)
            if j < 0:
                raise ValueError("unterminated string")
            out.append(s[i:j])
            if s[j + 1 : j + 2] == "'":
                out.append("'")
                i = j + 2
            else:
                return "".join(out).rstrip()
    literal = s.split("/", 1)[0].strip()
    if not literal:
        return _UNDEFINED
    if literal in ("T", "F"):
        return literal == "T"
    if _INT_RE.fullmatch(literal):
        return int(literal)
    if _FLOAT_RE.fullmatch(literal):
        return float(literal.replace("D", "E").replace("d", "e"))
    raise ValueError(f"unparseable value {literal[:20]!r}")


def _get(cards: dict[str, str], key: str, where: str) -> object:
    raw = cards.get(key)
    if raw is None:
        return _UNDEFINED
    try:
        return _value(raw)
    except ValueError as exc:
        raise _Corrupt(f"corrupt FITS: {where} card {key}: {exc}") from None


def _get_int(cards: dict[str, str], key: str, where: str) -> int | None:
    v = _get(cards, key, where)
    if v is _UNDEFINED:
        return None
    if isinstance(v, bool):
        raise _Corrupt(f"corrupt FITS: {where} card {key} is a logical, expected an integer")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    raise _Corrupt(f"corrupt FITS: {where} card {key}={v!r} is not an integer")


def _get_float(cards: dict[str, str], key: str, where: str) -> float | None:
    v = _get(cards, key, where)
    if v is _UNDEFINED:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _Corrupt(f"corrupt FITS: {where} card {key}={v!r} is not a number")
    f = float(v)
    return f if math.isfinite(f) else None


def _get_str(cards: dict[str, str], key: str, where: str) -> str | None:
    v = _get(cards, key, where)
    if v is _UNDEFINED:
        return None
    if not isinstance(v, str):
        raise _Corrupt(f"corrupt FITS: {where} card {key}={v!r} is not a string")
    return v


def _required_int(cards: dict[str, str], key: str, where: str) -> int:
    v = _get_int(cards, key, where)
    if v is None:
        raise _Corrupt(f"corrupt FITS: {where} has no {key} card")
    return v


def _data_size(cards: dict[str, str], where: str, *, primary: bool) -> int:
    bitpix = _required_int(cards, "BITPIX", where)
    if bitpix not in (8, 16, 32, 64, -32, -64):
        raise _Corrupt(f"corrupt FITS: {where} BITPIX={bitpix}")
    naxis = _required_int(cards, "NAXIS", where)
    if not 0 <= naxis <= _MAX_NAXIS:
        raise _Corrupt(f"corrupt FITS: {where} NAXIS={naxis}")
    if naxis == 0:
        return 0
    axes = []
    for k in range(1, naxis + 1):
        ax = _required_int(cards, f"NAXIS{k}", where)
        if ax < 0:
            raise _Corrupt(f"corrupt FITS: {where} NAXIS{k}={ax}")
        axes.append(ax)
    pcount = _get_int(cards, "PCOUNT", where) or 0
    gcount = _get_int(cards, "GCOUNT", where)
    gcount = 1 if gcount is None else gcount
    if pcount < 0 or gcount < 0:
        raise _Corrupt(f"corrupt FITS: {where} PCOUNT={pcount} GCOUNT={gcount}")
    if primary and axes[0] == 0 and _get(cards, "GROUPS", where) is True:
        axes = axes[1:]  # random groups: NAXIS1 = 0 is a placeholder
    return abs(bitpix) // 8 * gcount * (pcount + math.prod(axes))


def _ones_complement_sum(data: bytes, start: int, end: int) -> int:
    words = np.frombuffer(data, dtype=">u4", count=(end - start) // 4, offset=start)
    total = int(words.sum(dtype=np.uint64))
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def _check_sums(data: bytes, hdu: _Hdu) -> None:
    where = f"HDU {hdu.index} ({hdu.name})"
    checksum = _get_str(hdu.cards, "CHECKSUM", where)
    # A correct CHECKSUM card makes the whole HDU (header + padded data) sum to -0.
    if checksum and checksum.strip() and _ones_complement_sum(data, hdu.header_start, hdu.end) != 0xFFFFFFFF:
        raise _Corrupt(f"corrupt FITS: CHECKSUM of {where} does not match (bytes altered)")
    datasum = _get_str(hdu.cards, "DATASUM", where)
    if datasum and datasum.strip():
        try:
            expected = int(datasum)
        except ValueError:
            raise _Corrupt(f"corrupt FITS: {where} DATASUM={datasum!r} is not an integer") from None
        if _ones_complement_sum(data, hdu.data_start, hdu.end) != expected:
            raise _Corrupt(f"corrupt FITS: DATASUM of {where} does not match (data altered)")


def _walk(data: bytes, verify_checksum: bool) -> list[_Hdu]:
    n = len(data)
    if n == 0:
        raise _Corrupt("not a FITS file: empty body (0 bytes)")
    if not data.startswith(b"SIMPLE  ="):
        raise _Corrupt(f"not a FITS file: starts with {_describe_start(data)}")
    hdus: list[_Hdu] = []
    pos = 0
    while pos < n:
        index = len(hdus)
        if index and not data.startswith(b"XTENSION=", pos):
            if (n - pos) % BLOCK:
                raise _Corrupt(
                    f"corrupt FITS: length {n:,} is not a multiple of {BLOCK} "
                    f"({n - pos:,} stray bytes after HDU {index - 1})"
                )
            raise _Corrupt(f"corrupt FITS: {n - pos:,} bytes after HDU {index - 1} are not an XTENSION")
        cards, data_start = _read_header(data, pos, index)
        where = f"HDU {index}"
        if index == 0:
            if _get(cards, "SIMPLE", where) is not True:
                raise _Corrupt("not a standard FITS file: SIMPLE is not T")
            name = _get_str(cards, "EXTNAME", where) or "PRIMARY"
        else:
            xtension = _get_str(cards, "XTENSION", where)
            if not xtension:
                raise _Corrupt(f"corrupt FITS: {where} has an empty XTENSION")
            name = _get_str(cards, "EXTNAME", where) or ""
        size = _data_size(cards, f"{where} ({name})", primary=index == 0)
        end = data_start + -(-size // BLOCK) * BLOCK
        if end > n:
            raise _Corrupt(
                f"truncated FITS: {n:,} of at least {end:,} bytes (data of HDU {index} ({name}) does not fit)"
            )
        hdu = _Hdu(index, name, cards, pos, data_start, size, end)
        if verify_checksum:
            _check_sums(data, hdu)
        hdus.append(hdu)
        pos = end
    return hdus


# --------------------------------------------------------------------------------------------------
# Columns
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    offset: int
    code: str
    repeat: int
    index: int  # 1-based TFORMn index


def _columns(hdu: _Hdu) -> tuple[dict[str, _Column], int, int]:
    where = f"HDU {hdu.index} ({hdu.name})"
    cards = hdu.cards
    if _get_str(cards, "XTENSION", where) != "BINTABLE":
        raise _Corrupt(f"{where} is not a binary table")
    if _get_int(cards, "BITPIX", where) != 8 or _get_int(cards, "NAXIS", where) != 2:
        raise _Corrupt(f"corrupt FITS: {where} is not a BITPIX=8, NAXIS=2 table")
    row_bytes = _required_int(cards, "NAXIS1", where)
    nrows = _required_int(cards, "NAXIS2", where)
    tfields = _required_int(cards, "TFIELDS", where)
    if not 0 <= tfields <= _MAX_NAXIS:
        raise _Corrupt(f"corrupt FITS: {where} TFIELDS={tfields}")
    cols: dict[str, _Column] = {}
    offset = 0
    for k in range(1, tfields + 1):
        tform = _get_str(cards, f"TFORM{k}", where)
        m = _TFORM_RE.fullmatch(tform or "")
        if m is None:
            raise _Corrupt(f"corrupt FITS: {where} TFORM{k}={tform!r}")
        repeat = int(m.group(1)) if m.group(1) else 1
        code = m.group(2)
        width = -(-repeat // 8) if code == "X" else repeat * _FORM_BYTES[code]
        name = (_get_str(cards, f"TTYPE{k}", where) or "").upper()
        if name and name not in cols:
            cols[name] = _Column(name, offset, code, repeat, k)
        offset += width
    if offset != row_bytes:
        raise _Corrupt(f"corrupt FITS: {where} columns take {offset} bytes but NAXIS1={row_bytes}")
    return cols, row_bytes, nrows


def _read_column(
    data: bytes, hdu: _Hdu, cols: dict[str, _Column], name: str, row_bytes: int, nrows: int, *, numeric: str
) -> npt.NDArray[Any]:
    """One scalar column as a native float64 (numeric='float') or int64 (numeric='int') array."""
    where = f"{hdu.name} column {name}"
    col = cols.get(name.upper())
    if col is None:
        raise _Corrupt(f"{hdu.name} HDU has no {name} column")
    allowed = _FLOAT_FORMS if numeric == "float" else _INT_FORMS
    if col.code not in allowed or col.repeat != 1:
        expected = "".join(sorted(allowed))
        raise _Corrupt(f"{where} has format {col.repeat}{col.code}, expected one of {expected}")
    dtype = np.dtype(_FORM_DTYPE[col.code])
    if nrows == 0:
        raw: npt.NDArray[Any] = np.empty(0, dtype=dtype)
    else:
        raw = np.ndarray(
            shape=(nrows,), dtype=dtype, buffer=data, offset=hdu.data_start + col.offset, strides=(row_bytes,)
        )
    scale = _get_float(hdu.cards, f"TSCAL{col.index}", where)
    zero = _get_float(hdu.cards, f"TZERO{col.index}", where)
    if numeric == "float":
        out = raw.astype(np.float64)
        if scale is not None and scale != 1.0:
            out *= scale
        if zero:
            out += zero
        return out
    ints = raw.astype(np.int64)
    if (scale is not None and scale != 1.0) or (zero is not None and not zero.is_integer()):
        raise _Corrupt(f"{where} has non-integer scaling (TSCAL={scale}, TZERO={zero})")
    if zero:
        ints += int(zero)
    return ints


# --------------------------------------------------------------------------------------------------
# Decode
# --------------------------------------------------------------------------------------------------


def _bin_means(
    time: FloatArray, flux: FloatArray, err: FloatArray, bins: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-bin means in np.array_split layout: the first n % bins bins hold one extra cadence.

    Bins of equal size are reshaped into rows and reduced along the row, which sums each bin
    exactly as ``np.mean(bin)`` does (same pairwise order), so the result equals a per-bin loop.
    """
    n = time.shape[0]
    base, extra = divmod(n, bins)
    cut = extra * (base + 1)

    def per_bin(values: FloatArray, how: str) -> FloatArray:
        parts = []
        for chunk, size in ((values[:cut], base + 1), (values[cut:], base)):
            rows = chunk.reshape(-1, size)
            if how == "mean":
                parts.append(rows.mean(axis=1))
            else:  # quadrature sum / n; one NaN error in a bin makes the bin's error NaN
                parts.append(np.sqrt(np.sum(rows * rows, axis=1)) / size)
        return np.concatenate(parts)

    return per_bin(time, "mean"), per_bin(flux, "mean"), per_bin(err, "err")


def _decode(
    data: bytes,
    flux_column: str,
    quality_bitmask: int,
    max_points: int | None,
    product: str,
    verify_checksum: bool,
) -> DecodedLightCurve:
    data = bytes(data)  # no copy for bytes; a bytearray/memoryview is frozen first
    hdus = _walk(data, verify_checksum)
    lc = next((h for h in hdus if h.name.strip().upper() == "LIGHTCURVE"), None)
    if lc is None:
        names = ", ".join(h.name or f"#{h.index}" for h in hdus)
        raise _Corrupt(f"no LIGHTCURVE HDU (HDUs: {names})")
    primary = hdus[0].cards
    lch = lc.cards
    where = "LIGHTCURVE header"

    timesys = _get_str(lch, "TIMESYS", where)
    if timesys is not None and timesys.strip().upper() != "TDB":
        raise _Corrupt(f"TIMESYS={timesys!r}: only TDB can be expressed as BTJD")
    timeunit = _get_str(lch, "TIMEUNIT", where)
    if timeunit is not None and timeunit.strip().lower() != "d":
        raise _Corrupt(f"TIMEUNIT={timeunit!r}: expected 'd'")
    bjdrefi = _get_int(lch, "BJDREFI", where)
    bjdreff = _get_float(lch, "BJDREFF", where)
    shift = 0.0
    if bjdrefi is not None or bjdreff is not None:
        refi = bjdrefi if bjdrefi is not None else BTJD_OFFSET_JD
        shift = float(refi - BTJD_OFFSET_JD) + (bjdreff or 0.0)

    cols, row_bytes, nrows = _columns(lc)
    col = functools.partial(_read_column, data, lc, cols, row_bytes=row_bytes, nrows=nrows)
    with np.errstate(all="ignore"):
        time = col("TIME", numeric="float")
        flux = col(flux_column, numeric="float")
        err = col(f"{flux_column}_ERR", numeric="float")
        quality = col("QUALITY", numeric="int")
        if shift:
            time += shift
        keep = np.isfinite(time) & np.isfinite(flux)
        if quality_bitmask:
            keep &= (quality & quality_bitmask) == 0
        if not keep.all():
            time, flux, err = time[keep], flux[keep], err[keep]
        reduced = None
        kept = int(time.shape[0])
        if max_points is not None and kept > max_points:
            time, flux, err = _bin_means(time, flux, err, max_points)
            reduced = f"binned mean of {kept} cadences into {max_points} bins (np.array_split order)"

    tic_id = _get_int(primary, "TICID", "PRIMARY header")
    if tic_id is None:
        tic_id = _get_int(lch, "TICID", where)
    if tic_id is None:
        raise _Corrupt("no TICID in the PRIMARY or LIGHTCURVE header")
    timedel = _get_float(lch, "TIMEDEL", where)
    cadence_s = round(timedel * 86400.0, 3) if timedel is not None else None
    if cadence_s is not None and not math.isfinite(cadence_s):
        cadence_s = None
    ph = "PRIMARY header"
    return DecodedLightCurve(
        product=product,
        tic_id=tic_id,
        sector=_get_int(primary, "SECTOR", ph),
        camera=_get_int(primary, "CAMERA", ph),
        ccd=_get_int(primary, "CCD", ph),
        ra=_get_float(primary, "RA_OBJ", ph),
        dec=_get_float(primary, "DEC_OBJ", ph),
        tess_mag=_get_float(primary, "TESSMAG", ph),
        cadence_s=cadence_s,
        flux_column=flux_column,
        quality_bitmask=quality_bitmask,
        time=time,
        flux=flux,
        flux_err=err,
        n_points_raw=nrows,
        reduced=reduced,
    )
