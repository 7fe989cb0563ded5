"""The fake IRSA ZTF light-curve API (``GET .../nph_light_curves``, upstream-apis.md §1).

The sky holds one star per cell of a fixed 0.027° grid (85 % of cells, none south of Dec −31°, where
ZTF sees nothing). A star has 1–4 ZTF objects: one per filter it was seen in (zr, zg, rarely zi),
sometimes twice when an overlapping field also covers it. Each object (``oid``) has one filter and
20–300 epochs between MJD 58194 and 61200; only epochs up to the archive's ``now_mjd`` are served,
so raising ``now_mjd`` makes the archive gain data. Everything is a pure function of (seed, cell):
overlapping cones return the same oids with the same epochs, byte for byte.

``oid = field·10¹² + fid·10¹¹ + rcid·10⁸ + cell code``, so an ``ID=`` query finds its star again.

Parameters follow IRSA: names are case-insensitive; ``POS=CIRCLE ra dec r`` or ``CIRCLE=ra dec r``
(0 < r <= 0.1667°) or repeated ``ID``; ``BANDNAME`` (g/r/i or 1/2/3, never zg), ``BAND`` (metres),
``MAG``, ``NOBS_MIN``; ``TIME`` (inclusive, ±Inf allowed), ``BAD_CATFLAGS_MASK``, ``COLLECTION``,
``FORMAT``. ``FORMAT=CSV`` answers ``text/csv``; any other format (or none) answers a VOTable.
Errors are VOTables with ``QUERY_STATUS=ERROR`` and HTTP 200.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import anyio.to_thread
import numpy as np

from harvester.testing._asgi import FakeRequest, FakeRoute, Reply
from harvester.testing._sky import SkyGrid, angular_sep_deg, mjd_to_datetime, rng

if TYPE_CHECKING:
    from harvester.testing._archive import FakeArchive

__all__ = [
    "IRSA_COLUMNS",
    "ZtfObject",
    "handle_irsa",
    "irsa_error",
    "object_by_oid",
    "objects_in_cone",
]

IRSA_COLUMNS: tuple[str, ...] = (
    "oid", "expid", "hjd", "mjd", "mag", "magerr", "catflags", "filtercode", "ra", "dec", "chi", "sharp",
    "filefracday", "field", "ccdid", "qid", "limitmag", "magzp", "magzprms", "clrcoeff", "clrcounc",
    "exptime", "airmass", "programid",
)  # fmt: skip

_VOT_TYPES: tuple[str, ...] = (
    "long", "int", "double", "double", "float", "float", "int", "char", "double", "double", "float", "float",
    "long", "int", "short", "short", "float", "float", "float", "float", "float", "float", "float", "int",
)  # fmt: skip

ZTF_GRID = SkyGrid(0.027)
ZTF_DEC_LIMIT = -31.0
MJD_FIRST = 58194
MJD_LAST = 61200
MAX_RADIUS_DEG = 0.1667
STAR_OCCUPANCY = 0.85
FILTER_IDS = {"zg": 1, "zr": 2, "zi": 3}
_BANDNAMES = {"g": 1, "r": 2, "i": 3, "1": 1, "2": 2, "3": 3}
_BAND_RANGES_M = {1: (4.1e-7, 5.5e-7), 2: (5.6e-7, 7.3e-7), 3: (7.0e-7, 8.9e-7)}
_COLOR_TERMS = {"zg": (26.32, -0.045), "zr": (26.18, 0.095), "zi": (25.74, -0.021)}
_CATFLAG_BITS = np.array([1, 2, 4, 8, 16, 512, 2048], dtype=np.int64)
_KNOWN_PARAMS = frozenset(
    {"ID", "POS", "CIRCLE", "BAND", "BANDNAME", "MAG", "NOBS_MIN", "TIME", "BAD_CATFLAGS_MASK",
     "COLLECTION", "FORMAT"}
)  # fmt: skip
_ID_INCOMPATIBLE = ("BAND", "BANDNAME", "MAG", "NOBS_MIN")
_COLLECTION = re.compile(r"^ztf_dr(\d+)$")
SERVED_DRS = range(19, 24)  # IRSA keeps the five newest releases on line


# --------------------------------------------------------------------------- ZTF fields


def _field_bands() -> tuple[list[int], list[int]]:
    counts, offsets, total = [], [], 0
    for band in range(18):
        dec_c = ZTF_DEC_LIMIT + (band + 0.5) * 7.0
        n = max(1, int(360.0 * math.cos(math.radians(min(dec_c, 89.0))) / 7.0))
        counts.append(n)
        offsets.append(total)
        total += n
    return counts, offsets


_BAND_COUNTS, _BAND_OFFSETS = _field_bands()


def _field_of(ra: float, dec: float, shift: float) -> tuple[int, int, int]:
    """``(field, ccdid, qid)`` covering a position on a 7°×7° field grid (shifted by ``shift`` fields)."""
    y = (dec - ZTF_DEC_LIMIT) / 7.0
    band = min(17, max(0, int(y)))
    n = _BAND_COUNTS[band]
    x = ra / (360.0 / n) + shift
    field = 245 + _BAND_OFFSETS[band] + math.floor(x) % n
    col = min(7, int((x - math.floor(x)) * 8))
    row = min(7, int((y - math.floor(y)) * 8)) if y >= 0 else 0
    return field, 1 + (row // 2) * 4 + col // 2, 1 + (row % 2) * 2 + col % 2


# --------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class ZtfObject:
    """One ZTF object (oid): one star seen in one filter, in one field/CCD quadrant."""

    oid: int
    ra: float
    dec: float
    filtercode: str
    field: int
    ccdid: int
    qid: int
    mag: float

    @property
    def fid(self) -> int:
        return FILTER_IDS[self.filtercode]


@lru_cache(maxsize=65536)
def star_objects(seed: int, j: int, i: int) -> tuple[ZtfObject, ...]:
    """The objects of the star in cell ``(j, i)`` (empty when the cell holds no star)."""
    g = rng(seed, "ztf-star", j, i)
    present = g.random() < STAR_OCCUPANCY
    ra0, ra1, dec0, dec1 = ZTF_GRID.bounds(j, i)
    ra = ra0 + (ra1 - ra0) * float(g.uniform(0.05, 0.95))
    dec = dec0 + (dec1 - dec0) * float(g.uniform(0.05, 0.95))
    if not present or dec < ZTF_DEC_LIMIT:
        return ()
    mag_r = float(g.uniform(14.3, 20.6))
    color = float(g.uniform(0.15, 1.2))
    filters = [fc for fc, p in (("zg", 0.8), ("zr", 0.9), ("zi", 0.12)) if g.random() < p] or ["zr"]
    shifts = [0.0, 0.5] if g.random() < 0.2 else [0.0]
    code = ZTF_GRID.code(j, i)
    seen_fields: set[int] = set()
    out: list[ZtfObject] = []
    for k, shift in enumerate(shifts):
        field, ccdid, qid = _field_of(ra, dec, shift)
        if field in seen_fields:
            continue
        seen_fields.add(field)
        for fc in filters if k == 0 else [f for f in filters if f != "zi"]:
            fid = FILTER_IDS[fc]
            oid = field * 10**12 + fid * 10**11 + ((ccdid - 1) * 4 + qid - 1) * 10**8 + code
            mag = mag_r + {"zg": color, "zr": 0.0, "zi": -0.4 * color}[fc]
            out.append(ZtfObject(oid, ra, dec, fc, field, ccdid, qid, mag))
    return tuple(sorted(out, key=lambda o: o.oid))


def objects_in_cone(seed: int, ra: float, dec: float, radius: float) -> list[ZtfObject]:
    """The objects whose star lies within ``radius`` degrees of ``(ra, dec)``, sorted by oid."""
    found = [
        obj
        for j, i in ZTF_GRID.cells_in_cone(ra, dec, radius)
        for obj in star_objects(seed, j, i)
        if angular_sep_deg(ra, dec, obj.ra, obj.dec) <= radius
    ]
    return sorted(found, key=lambda o: o.oid)


def object_by_oid(seed: int, oid: int) -> ZtfObject | None:
    cell = ZTF_GRID.decode(oid % 10**8)
    if cell is None:
        return None
    return next((o for o in star_objects(seed, *cell) if o.oid == oid), None)


# --------------------------------------------------------------------------- epochs


@dataclass(frozen=True)
class Epochs:
    """All epochs of one object (up to MJD_LAST), sorted by mjd, with their CSV lines."""

    mjd: np.ndarray
    catflags: np.ndarray
    mag: np.ndarray
    lines: tuple[str, ...]


def _f32(x: float) -> str:
    return format(float(np.float32(x)), ".9g")


@lru_cache(maxsize=8192)
def epochs_of(seed: int, obj: ZtfObject) -> Epochs:
    g = rng(seed, "ztf-epochs", obj.oid)
    nights = np.arange(MJD_FIRST, MJD_LAST, dtype=np.float64)
    # Seasons: no nights while the Sun's RA is too close to the object's; from Palomar (latitude 33°)
    # the gap narrows with declination and vanishes for circumpolar objects.
    gap = 55.0 * min(1.0, max(0.0, (65.0 - obj.dec) / 45.0))
    sun = (280.46 + 0.9856474 * (nights - 51544.5)) % 360.0
    nights = nights[np.abs((obj.ra - sun + 180.0) % 360.0 - 180.0) >= gap]
    n = min(20 + int(280.0 * math.sqrt(float(g.random()))), nights.size)  # most objects are well sampled
    mjd = np.round(np.sort(g.choice(nights, size=n, replace=False)) + g.uniform(0.14, 0.48, n), 8)

    variable = g.random() < 0.3
    amp = float(g.uniform(0.05, 0.6)) if variable else 0.0
    period = math.exp(float(g.uniform(math.log(0.2), math.log(200.0))))
    phase = float(g.uniform(0.0, 2.0 * math.pi))
    true_mag = obj.mag + amp * np.sin(2.0 * np.pi * mjd / period + phase)
    magerr = np.minimum(0.3, 0.008 + 0.5 * 10.0 ** (0.4 * (true_mag - 21.5)))
    mag = true_mag + g.normal(0.0, 1.0, n) * magerr
    limitmag = np.clip(g.normal(20.6, 0.35, n), 19.0, 21.6)

    roll = g.random(n)
    catflags = np.zeros(n, dtype=np.int64)
    catflags[roll < 0.04] = 32768
    other = (roll >= 0.04) & (roll < 0.052)
    catflags[other] = g.choice(_CATFLAG_BITS, size=int(other.sum()))
    catflags[(roll >= 0.052) & (roll < 0.055)] = 32768 | 4

    jitter = np.clip(g.normal(0.0, 0.08 / 3600.0, (2, n)), -0.2 / 3600.0, 0.2 / 3600.0)
    ra = (obj.ra + jitter[0] / max(1e-6, math.cos(math.radians(obj.dec)))) % 360.0
    dec = obj.dec + jitter[1]
    chi = np.exp(g.normal(0.0, 0.3, n))
    chi[g.random(n) < 0.015] = np.nan
    sharp = g.normal(0.0, 0.03, n)
    sharp[g.random(n) < 0.015] = np.nan
    zp0, cc0 = _COLOR_TERMS[obj.filtercode]
    magzp = zp0 + g.normal(0.0, 0.08, n)
    magzprms = g.uniform(0.015, 0.06, n)
    clrcoeff = cc0 + g.normal(0.0, 0.02, n)
    clrcounc = g.uniform(5e-6, 5e-5, n)
    clrcounc[g.random(n) < 0.005] = np.nan
    min_airmass = 1.0 / max(0.3, math.cos(math.radians(obj.dec - 33.36)))
    airmass = np.minimum(3.0, min_airmass + g.exponential(0.15, n))
    programid = np.where(g.random(n) < 0.65, 1, 2) if obj.filtercode != "zi" else np.full(n, 2)
    # Heliocentric correction: at most ~8.3 min, with the season and the object's position.
    hjd = (
        mjd
        + 2400000.5
        + 0.0057755
        * math.cos(math.radians(obj.dec))
        * np.cos(2.0 * np.pi * (mjd - 58200.0) / 365.25 - math.radians(obj.ra))
    )

    lines = []
    for k in range(n):
        when = mjd_to_datetime(float(mjd[k]))
        frac = float(mjd[k]) % 1.0
        lines.append(
            ",".join(
                (
                    str(obj.oid),
                    str(int((mjd[k] - 57754.0) * 1e5)),
                    repr(float(hjd[k])),
                    repr(float(mjd[k])),
                    _f32(mag[k]),
                    _f32(magerr[k]),
                    str(int(catflags[k])),
                    obj.filtercode,
                    repr(round(float(ra[k]), 7)),
                    repr(round(float(dec[k]), 7)),
                    _f32(chi[k]),
                    _f32(sharp[k]),
                    f"{when:%Y%m%d}{int(frac * 1e6):06d}",
                    str(obj.field),
                    str(obj.ccdid),
                    str(obj.qid),
                    _f32(limitmag[k]),
                    _f32(magzp[k]),
                    _f32(magzprms[k]),
                    _f32(clrcoeff[k]),
                    _f32(clrcounc[k]),
                    "30.0",
                    _f32(airmass[k]),
                    str(int(programid[k])),
                )
            )
        )
    return Epochs(mjd=mjd, catflags=catflags, mag=mag, lines=tuple(lines))


# --------------------------------------------------------------------------- the request


class IrsaQueryError(ValueError):
    """A request IRSA would refuse; its message goes into the VOTable ERROR."""


def irsa_error(message: str) -> Reply:
    """IRSA's error answer: HTTP 200 with a VOTable whose QUERY_STATUS is ERROR."""
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
        '<RESOURCE type="results">\n'
        f'<INFO name="QUERY_STATUS" value="ERROR">{_xml_escape(message)}</INFO>\n'
        "</RESOURCE>\n</VOTABLE>\n"
    )
    return Reply(200, text.encode(), "text/xml")


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _floats(name: str, value: str, count: Iterable[int]) -> list[float]:
    tokens = value.split()
    if len(tokens) not in set(count):
        raise IrsaQueryError(f"{name}: wrong number of values in {value!r}")
    try:
        out = [float(t) for t in tokens]
    except ValueError:
        raise IrsaQueryError(f"{name}: not a number in {value!r}") from None
    if any(math.isnan(v) for v in out):
        raise IrsaQueryError(f"{name}: not a number in {value!r}")
    return out


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise IrsaQueryError(f"{name} may be given only once")
    return values[0]


def _cone(params: dict[str, list[str]]) -> tuple[float, float, float] | None:
    pos, circle = _one(params, "POS"), _one(params, "CIRCLE")
    if pos is not None and circle is not None:
        raise IrsaQueryError("give POS or CIRCLE, not both")
    if pos is None and circle is None:
        return None
    if pos is not None:
        shape, _, rest = pos.strip().partition(" ")
        if shape.upper() != "CIRCLE":
            raise IrsaQueryError(f"POS: the only shape supported is CIRCLE, not {shape!r}")
        ra, dec, radius = _floats("POS", rest, [3])
    else:
        ra, dec, radius = _floats("CIRCLE", circle or "", [3])
    if not -90.0 <= dec <= 90.0 or math.isinf(ra):
        raise IrsaQueryError(f"position out of range: {ra} {dec}")
    if not 0.0 < radius <= MAX_RADIUS_DEG:
        raise IrsaQueryError(f"RADIUS {radius} is outside the valid range (0, {MAX_RADIUS_DEG}] degrees")
    return ra % 360.0, dec, radius


def _parse_query(query_string: str) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        name = key.strip().upper()
        if name not in _KNOWN_PARAMS:
            raise IrsaQueryError(f"unknown parameter {key!r}")
        params.setdefault(name, []).append(value)
    return params


def _select(params: dict[str, list[str]], seed: int) -> list[ZtfObject]:
    cone = _cone(params)
    ids = params.get("ID", [])
    if cone is not None and ids:
        raise IrsaQueryError("give ID or POS/CIRCLE, not both")
    if cone is None and not ids:
        raise IrsaQueryError("no objects specified: give ID or POS/CIRCLE")
    if ids:
        bad = [p for p in _ID_INCOMPATIBLE if p in params]
        if bad:
            raise IrsaQueryError(f"{', '.join(bad)} cannot be combined with ID")
        found: dict[int, ZtfObject] = {}
        for value in ids:
            if not value.strip().isdigit():
                raise IrsaQueryError(f"ID: not an object id: {value!r}")
            obj = object_by_oid(seed, int(value))
            if obj is not None:
                found[obj.oid] = obj
        return sorted(found.values(), key=lambda o: o.oid)
    assert cone is not None
    objects = objects_in_cone(seed, *cone)
    bandname = _one(params, "BANDNAME")
    if bandname is not None:
        fids = set()
        for token in bandname.split(","):
            fid = _BANDNAMES.get(token.strip().lower())
            if fid is None:
                raise IrsaQueryError(f"BANDNAME: invalid value {token.strip()!r} (use g, r, i or 1, 2, 3)")
            fids.add(fid)
        objects = [o for o in objects if o.fid in fids]
    band = _one(params, "BAND")
    if band is not None:
        lo, *rest = _floats("BAND", band, [1, 2])
        hi = rest[0] if rest else lo
        objects = [o for o in objects if _BAND_RANGES_M[o.fid][0] <= hi and lo <= _BAND_RANGES_M[o.fid][1]]
    return objects


def handle_irsa(query_string: str, *, seed: int, now_mjd: float) -> Reply:
    """Answer one ``nph_light_curves`` request."""
    try:
        params = _parse_query(query_string)
        fmt = (_one(params, "FORMAT") or "VOTABLE").strip().upper()
        collection = _one(params, "COLLECTION")
        if collection is not None:
            m = _COLLECTION.match(collection.strip().lower())
            if m is None or int(m.group(1)) not in SERVED_DRS:
                raise IrsaQueryError(
                    f"COLLECTION {collection!r} is not available (served: ztf_dr{SERVED_DRS[0]}"
                    f"..ztf_dr{SERVED_DRS[-1]})"
                )
        t_lo, t_hi = -math.inf, math.inf
        time_param = _one(params, "TIME")
        if time_param is not None:
            values = _floats("TIME", time_param, [1, 2])
            t_lo, t_hi = values[0], values[1] if len(values) == 2 else math.inf
            if t_lo > t_hi:
                raise IrsaQueryError(f"TIME: empty range {time_param!r}")
        mask = 0
        mask_param = _one(params, "BAD_CATFLAGS_MASK")
        if mask_param is not None:
            if not mask_param.strip().isdigit():
                raise IrsaQueryError(f"BAD_CATFLAGS_MASK: not a non-negative integer: {mask_param!r}")
            mask = int(mask_param)
        mag_range = _floats("MAG", _one(params, "MAG") or "-inf inf", [1, 2])
        nobs_min = _one(params, "NOBS_MIN")
        if nobs_min is not None and not nobs_min.strip().isdigit():
            raise IrsaQueryError(f"NOBS_MIN: not a non-negative integer: {nobs_min!r}")
        objects = _select(params, seed)
    except IrsaQueryError as exc:
        return irsa_error(str(exc))

    lines: list[str] = []
    for obj in objects:
        ep = epochs_of(seed, obj)
        served = ep.mjd <= now_mjd
        if nobs_min is not None and int(served.sum()) < int(nobs_min):
            continue
        if mag_range != [-math.inf, math.inf]:
            median = float(np.median(ep.mag[served])) if served.any() else math.nan
            hi = mag_range[1] if len(mag_range) == 2 else math.inf
            if not mag_range[0] <= median <= hi:
                continue
        keep = served & (ep.mjd >= t_lo) & (ep.mjd <= t_hi) & ((ep.catflags & mask) == 0)
        lines.extend(ep.lines[k] for k in np.flatnonzero(keep))

    if fmt == "CSV":
        body = ",".join(IRSA_COLUMNS) + "\n" + "".join(line + "\n" for line in lines)
        return Reply(200, body.encode(), "text/csv")
    return Reply(200, _votable(lines).encode(), "text/xml")


_ARRAYSIZE = ' arraysize="*"'


def _votable(lines: list[str]) -> str:
    fields = "".join(
        f'<FIELD name="{name}" datatype="{vt}"{_ARRAYSIZE if vt == "char" else ""}/>\n'
        for name, vt in zip(IRSA_COLUMNS, _VOT_TYPES, strict=True)
    )
    rows = "".join("<TR>" + "".join(f"<TD>{c}</TD>" for c in line.split(",")) + "</TR>\n" for line in lines)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
        '<RESOURCE type="results">\n<INFO name="QUERY_STATUS" value="OK"/>\n<TABLE>\n'
        f"{fields}<DATA><TABLEDATA>\n{rows}</TABLEDATA></DATA>\n</TABLE>\n</RESOURCE>\n</VOTABLE>\n"
    )


# --------------------------------------------------------------------------- the route


async def _answer(req: FakeRequest, archive: FakeArchive) -> Reply:
    seed, now = archive.seed, archive.now_mjd  # big cones take ~0.5 s: keep the event loop free
    return await anyio.to_thread.run_sync(lambda: handle_irsa(req.query, seed=seed, now_mjd=now))


#: The IRSA ZTF light-curve API, as the ``fake`` of the ztf archive's registry entry.
ROUTES = (FakeRoute("/nph_light_curves", ("GET", "HEAD"), _answer),)
