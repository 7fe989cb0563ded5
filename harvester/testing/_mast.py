"""The fake MAST API: ``/api/v0/invoke`` (CAOM searches and product lists), downloads, helpers.

What it serves (upstream-apis.md §2):

- ``Mast.Caom.Filtered``, ``Mast.Caom.Filtered.Position`` and ``Mast.Caom.Cone`` over a fixed
  universe: TESS 2-minute observations (any TIC id named in a ``target_name`` or ``obs_id`` filter,
  plus the TIC grid of :mod:`~harvester.testing._tess` for positional queries) and, for positional
  queries, observations of other collections (HST, JWST, GALEX, SWIFT, IUE, Kepler, K2) placed on a
  0.1° grid per seed. Only rows with ``t_min <= now_mjd`` exist, so raising ``now_mjd`` adds rows.
  Filters really filter: discrete values (strings, compared as MAST does) and ``{min, max}``
  ranges; ``freeText`` wildcards; ``columns`` projects, ``COUNT_BIG(*)`` counts. A
  ``Mast.Caom.Filtered`` query that names no TIC id or TESS obs_id (and has no position) finds
  nothing: the fake cannot enumerate the whole sky.
- ``Mast.Caom.Products``: LC/TP/DVT (and FAST-LC) rows per TESS obsid, the LC ``size`` being the
  exact length of the file the download endpoint serves; a multi-sector DVT is listed under every
  obsid of its target, as MAST lists duplicates.
- The JSON envelope MAST sends (ids as JSON ints although ``fields`` declare ``"string"``,
  ``_selected_``, ``paging``), or the ``extjs`` shape when ``format`` is not ``json``; long polling
  (``EXECUTING`` for the first polls of each (service, params, cachebreaker)); ``status: ERROR``
  with HTTP 200 for anything MAST would refuse.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio.to_thread
import numpy as np
import orjson

from harvester.testing._asgi import FakeRequest, FakeRoute, Reply, json_reply, text_reply
from harvester.testing._sky import SkyGrid, angular_sep_deg, ecliptic_lat_deg, mjd_to_datetime, rng

if TYPE_CHECKING:
    from harvester.testing._archive import FakeArchive

from harvester.testing._tess import (
    TessProduct,
    decode_tess_obsid,
    fast_filename,
    fast_obs_id,
    grid_tics_in_cone,
    lc_filename,
    lc_obs_id,
    parse_product_filename,
    parse_tic,
    sector_t_max_mjd,
    sector_t_min_mjd,
    tess_obsid,
    tess_target,
)

__all__ = [
    "CAOM_FIELDS",
    "PRODUCT_FIELDS",
    "MastContext",
    "PollBook",
    "columns_config",
    "handle_download",
    "handle_invoke",
    "mast_error",
    "mast_executing",
]

CAOM_FIELDS: tuple[tuple[str, str], ...] = (
    ("dataproduct_type", "string"), ("calib_level", "int"), ("obs_collection", "string"),
    ("obs_id", "string"), ("target_name", "string"), ("s_ra", "float"), ("s_dec", "float"),
    ("t_min", "float"), ("t_max", "float"), ("t_exptime", "float"), ("wavelength_region", "string"),
    ("filters", "string"), ("em_min", "float"), ("em_max", "float"), ("target_classification", "string"),
    ("obs_title", "string"), ("t_obs_release", "float"), ("instrument_name", "string"),
    ("proposal_pi", "string"), ("proposal_id", "string"), ("project", "string"), ("s_region", "string"),
    ("jpegURL", "string"), ("dataURL", "string"), ("obsid", "string"), ("objID", "string"),
    ("sequence_number", "int"), ("provenance_name", "string"),
)  # fmt: skip
PRODUCT_FIELDS: tuple[tuple[str, str], ...] = (
    ("obsID", "string"), ("obs_collection", "string"), ("dataproduct_type", "string"), ("obs_id", "string"),
    ("description", "string"), ("type", "string"), ("dataURI", "string"), ("productType", "string"),
    ("productGroupDescription", "string"), ("productSubGroupDescription", "string"),
    ("productDocumentationURL", "string"), ("project", "string"), ("prvversion", "string"),
    ("productFilename", "string"), ("size", "int"), ("parent_obsid", "string"),
)  # fmt: skip
_SELECTED = ("_selected_", "boolean")
_DISTANCE = ("distance", "float")
_CAOM_NAMES = frozenset(name for name, _ in CAOM_FIELDS)
_NUMERIC = frozenset(name for name, kind in CAOM_FIELDS if kind in ("float", "int")) | {"obsid", "objID"}
_VOT_DATATYPE = {"string": "char", "float": "double", "int": "int", "boolean": "boolean"}
_SEPARATED = frozenset({"obs_collection", "project", "filters", "wavelength_region", "target_classification"})
_MAX_RADIUS_DEG = 10.0  # harvester's own guard on MAST cones (MAST documents no cap)
_DEFAULT_PAGESIZE = 1000
_SERVICES = ("Mast.Caom.Filtered", "Mast.Caom.Filtered.Position", "Mast.Caom.Cone", "Mast.Caom.Products")
_TESS_OBS_ID = re.compile(r"^tess\d{13}-s(\d{4})-(\d{16})-\d{4}-s$")
GEN_GRID = SkyGrid(0.1)
_OBS_PER_CELL = 16

Row = dict[str, Any]


class MastError(ValueError):
    """A request MAST answers with ``status: ERROR``; the message becomes ``msg``."""


def mast_error(message: str) -> Reply:
    return json_reply({"status": "ERROR", "msg": message})


def mast_executing() -> Reply:
    return json_reply({"status": "EXECUTING", "msg": "", "data": []})


# --------------------------------------------------------------------------- TESS rows


def _tess_row(tic_id: int, sector: int) -> Row:
    target = tess_target(tic_id)
    obs_id = lc_obs_id(tic_id, sector)
    obsid = tess_obsid(tic_id, sector)
    t_max = sector_t_max_mjd(sector)
    g = rng("tess-row", tic_id, sector)
    cycle = (sector - 1) // 13 + 1
    gi = f"G0{cycle}{int(g.integers(1, 300)):03d}"
    return {
        "dataproduct_type": "timeseries",
        "calib_level": 3,
        "obs_collection": "TESS",
        "obs_id": obs_id,
        "target_name": str(tic_id),
        "s_ra": target.ra,
        "s_dec": target.dec,
        "t_min": sector_t_min_mjd(sector),
        "t_max": t_max,
        "t_exptime": 120.0,
        "wavelength_region": "Optical",
        "filters": "TESS",
        "em_min": 600.0,
        "em_max": 1000.0,
        "target_classification": "",
        "obs_title": "",
        "t_obs_release": round(t_max + 42.0 + float(g.uniform(0.0, 14.0)), 5),
        "instrument_name": "Photometer",
        "proposal_pi": "Ricker, George" if g.random() < 0.5 else "Stassun, Keivan",
        "proposal_id": gi if g.random() < 0.7 else f"{gi}_G0{cycle}{int(g.integers(1, 300)):03d}",
        "project": "TESS",
        "s_region": f"CIRCLE ICRS {target.ra:.8f} {target.dec:.8f} 0.0125",
        "jpegURL": None,
        "dataURL": f"mast:TESS/product/{obs_id}_lc.fits",
        "obsid": obsid,
        "objID": 1_000_000_000 + (obsid * 7919) % 9_000_000_000,
        "sequence_number": sector,
        "provenance_name": "SPOC",
    }


def tess_rows(tic_id: int, now_mjd: float) -> list[Row]:
    return [_tess_row(tic_id, s) for s in tess_target(tic_id).sectors_until(now_mjd)]


# --------------------------------------------------------------------------- other collections

_PIS = (
    "Griffiths, Richard", "Osten, Rachel", "Riess, Adam", "Balogh, Michael", "Kalirai, Jason",
    "Smith, Linda", "Nugent, Peter", "Bell, Eric", "Dalcanton, Julianne", "Rix, Hans-Walter",
)  # fmt: skip
_TITLES = (
    "Stellar variability in crowded fields", "A UV census of nearby galaxies",
    "Time-domain monitoring of M dwarf flares", "Calibrating the Cepheid distance scale",
    "Deep imaging of an intermediate-redshift cluster", "The host galaxies of fast transients",
    "Spectroscopy of hot subdwarfs",
)  # fmt: skip
_CLASSES = ("STAR", "GALAXY", "CLUSTER OF GALAXIES", "WHITE DWARF", "M V-IV;STAR", None, None, None)
_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# instrument -> (prefix, dataproduct_type, wavelength_region, era start MJD, [(filter, em_min, em_max)])
_HST = {
    "WFC3/UVIS": ("I", "image", "OPTICAL", 55000.0,
                  [("F606W", 470.0, 720.0), ("F814W", 700.0, 960.0), ("F275W", 230.0, 310.0)]),
    "WFC3/IR": ("I", "image", "INFRARED", 55000.0, [("F160W", 1400.0, 1700.0), ("F125W", 1100.0, 1400.0)]),
    "ACS/WFC": ("J", "image", "OPTICAL", 52400.0, [("F606W", 470.0, 720.0), ("F475W", 390.0, 560.0)]),
    "STIS/CCD": ("O", "spectrum", "OPTICAL", 50500.0, [("G430L", 290.0, 570.0), ("G750L", 524.0, 1027.0)]),
    "COS/FUV": ("L", "spectrum", "UV", 55000.0, [("G130M", 90.0, 145.0), ("G160M", 136.0, 179.0)]),
}  # fmt: skip
_JWST = {
    "NIRCAM/IMAGE": ("nircam", "image", [("F200W", 1755.0, 2226.0), ("F444W", 3880.0, 4986.0)]),
    "MIRI/IMAGE": ("miri", "image", [("F770W", 6581.0, 8687.0), ("F1500W", 13527.0, 16640.0)]),
    "NIRSPEC/MSA": ("nirspec", "spectrum", [("CLEAR;PRISM", 600.0, 5300.0)]),
}  # fmt: skip
_SWIFT_FILTERS = (("UVW1", 220.0, 400.0), ("UVM2", 200.0, 280.0), ("UVW2", 160.0, 260.0), ("U", 300.0, 390.0))
_IUE = (("SWP", 115.0, 198.0), ("LWP", 185.0, 335.0), ("LWR", 185.0, 335.0))
_OBSID_BASES = {
    "JWST": 87_000_000, "GALEX": 1_000_000_000, "SWIFT": 1_200_000_000, "IUE": 1_400_000_000,
    "HST": 2_000_000_000, "Kepler": 9_000_000_000, "K2": 9_200_000_000,
}  # fmt: skip
_OBSID_SPAN = (GEN_GRID.n_rows * GEN_GRID.max_row_cells) * _OBS_PER_CELL


def _corners(ra: float, dec: float, half: float, angle: float) -> str:
    cos_d = max(1e-6, math.cos(math.radians(dec)))
    pts = []
    for dx, dy in ((-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1)):
        x = half * (dx * math.cos(angle) - dy * math.sin(angle))
        y = half * (dx * math.sin(angle) + dy * math.cos(angle))
        pts.append(f"{(ra + x / cos_d) % 360.0:.8f} {dec + y:.8f}")
    return "POLYGON ICRS " + " ".join(pts)


def _code(g: np.random.Generator, n: int) -> str:
    return "".join(_ALNUM[int(k)] for k in g.integers(0, len(_ALNUM), n))


def _pick_collection(g: np.random.Generator, ra: float, dec: float) -> str:
    options = ["HST", "GALEX", "SWIFT", "JWST", "IUE"]
    weights = [0.36, 0.22, 0.16, 0.12, 0.06]
    if angular_sep_deg(ra, dec, 290.67, 44.5) < 7.5:
        options.append("Kepler")
        weights.append(0.5)
    if abs(ecliptic_lat_deg(ra, dec)) < 6.0:
        options.append("K2")
        weights.append(0.3)
    p = np.array(weights) / sum(weights)
    return str(options[int(g.choice(len(options), p=p))])


def _base_row(collection: str, obsid: int) -> Row:
    return {name: None for name, _ in CAOM_FIELDS} | {
        "obs_collection": collection,
        "obsid": obsid,
        "objID": 1_000_000_000 + (obsid * 104729) % 9_000_000_000,
        "calib_level": 2,
        "project": collection,
        "target_classification": None,
        "sequence_number": None,
        "provenance_name": None,
    }


def _when(g: np.random.Generator, start: float, lo: float, hi: float) -> float:
    """An exposure start: the program's epoch within [lo, hi], plus up to 40 days."""
    return lo + (hi - lo - 40.0) * start + float(g.uniform(0.0, 40.0))


def _target(g: np.random.Generator, collection: str, ra: float, dec: float, obsids: list[int]) -> list[Row]:
    """The observations of one target by one collection (one program, 1–4 exposures)."""
    rows: list[Row] = []
    start = float(g.random())  # where in the collection's era this program ran
    pi = str(g.choice(_PIS))
    title = _TITLES[int(g.integers(0, len(_TITLES)))]
    klass = _CLASSES[int(g.integers(0, len(_CLASSES)))]
    name = f"{g.choice(['NGC', 'HD', 'UGC', 'GJ', 'WD', 'SDSS-J'])}-{int(g.integers(10, 99999))}"
    if collection == "HST":
        instrument = str(g.choice(sorted(_HST)))
        prefix, ptype, region, era, filters = _HST[instrument]
        program = _code(g, 3)
        proposal = str(int(g.integers(5000, 18000)))
        for k, obsid in enumerate(obsids):
            flt, lo, hi = filters[int(g.integers(0, len(filters)))]
            t_min = _when(g, start, era, 61500.0)
            exptime = float(np.round(g.uniform(10.0, 2600.0), 1))
            obs_id = f"{prefix}{program}{k + 1:02d}{_code(g, 2)}Q"
            row = _base_row("HST", obsid) | {
                "dataproduct_type": ptype, "instrument_name": instrument, "filters": flt,
                "wavelength_region": region, "em_min": lo, "em_max": hi, "obs_id": obs_id,
                "target_name": name, "target_classification": klass, "obs_title": title,
                "proposal_id": proposal, "proposal_pi": pi, "calib_level": int(g.choice([2, 3])),
                "s_region": _corners(ra, dec, 0.0225, float(g.uniform(0.0, math.pi))),
                "jpegURL": f"https://archive.stsci.edu/hst/previews/{obs_id[:4]}/{obs_id}.jpg",
                "dataURL": f"mast:HST/product/{obs_id.lower()}_drz.fits" if g.random() < 0.7 else None,
                "t_exptime": exptime, "t_min": t_min,
            }  # fmt: skip
            rows.append(row)
    elif collection == "JWST":
        instrument = str(g.choice(sorted(_JWST)))
        short, ptype, filters = _JWST[instrument]
        jw_program = int(g.integers(1000, 6000))
        for k, obsid in enumerate(obsids):
            flt, lo, hi = filters[int(g.integers(0, len(filters)))]
            obs_id = f"jw{jw_program:05d}-o{k + 1:03d}_t001_{short}_{flt.lower().replace(';', '-')}"
            rows.append(_base_row("JWST", obsid) | {
                "dataproduct_type": ptype, "instrument_name": instrument, "filters": flt,
                "wavelength_region": "INFRARED", "em_min": lo, "em_max": hi, "obs_id": obs_id,
                "target_name": name, "obs_title": title, "proposal_id": str(jw_program), "proposal_pi": pi,
                "calib_level": 3, "s_region": _corners(ra, dec, 0.03, float(g.uniform(0.0, math.pi))),
                "jpegURL": f"mast:JWST/product/{obs_id}_i2d.jpg",
                "dataURL": f"mast:JWST/product/{obs_id}_i2d.fits",
                "t_exptime": float(np.round(g.uniform(100.0, 5000.0), 3)),
                "t_min": _when(g, start, 59750.0, 61500.0),
            })  # fmt: skip
    elif collection == "GALEX":
        survey = str(g.choice(["AIS", "MIS", "GII"]))
        tile = int(g.integers(1, 900))
        for obsid in obsids:
            flt, lo, hi = (("NUV", 169.3, 300.7), ("FUV", 134.0, 180.6))[int(g.integers(0, 2))]
            rows.append(_base_row("GALEX", obsid) | {
                "dataproduct_type": "image", "instrument_name": "GALEX", "filters": flt,
                "wavelength_region": "UV", "em_min": lo, "em_max": hi,
                "obs_id": str(int(g.integers(10**18, 9 * 10**18))), "project": survey,
                "target_name": f"{survey}_{tile}_1_{int(g.integers(1, 99))}",
                "obs_title": None if survey == "AIS" else title,
                "proposal_id": None if survey == "AIS" else str(int(g.integers(1, 600))),
                "proposal_pi": None if survey == "AIS" else pi,
                "s_region": f"CIRCLE ICRS {ra:.8f} {dec:.8f} 0.625",
                "t_exptime": float(np.round(g.uniform(100.0, 1700.0), 2)),
                "t_min": _when(g, start, 52700.0, 56000.0),
            })  # fmt: skip
    elif collection == "SWIFT":
        target_id = int(g.integers(30000, 99999))
        for k, obsid in enumerate(obsids):
            flt, lo, hi = _SWIFT_FILTERS[int(g.integers(0, len(_SWIFT_FILTERS)))]
            rows.append(_base_row("SWIFT", obsid) | {
                "dataproduct_type": "image", "instrument_name": "UVOT", "filters": flt,
                "wavelength_region": "UV", "em_min": lo, "em_max": hi,
                "obs_id": f"{target_id:08d}{k + 1:03d}", "target_name": name,
                "s_region": f"CIRCLE ICRS {ra:.8f} {dec:.8f} 0.14",
                "t_exptime": float(np.round(g.uniform(100.0, 2000.0), 1)),
                "t_min": _when(g, start, 53400.0, 61500.0),
            })  # fmt: skip
    elif collection == "IUE":
        for obsid in obsids:
            camera, lo, hi = _IUE[int(g.integers(0, len(_IUE)))]
            rows.append(_base_row("IUE", obsid) | {
                "dataproduct_type": "spectrum", "instrument_name": camera,
                "filters": str(g.choice(["LOW DISP", "HIGH DISP"])), "wavelength_region": "UV",
                "em_min": lo, "em_max": hi, "obs_id": f"{camera.lower()}{int(g.integers(1, 56000)):05d}",
                "target_name": name, "proposal_id": _code(g, 5), "proposal_pi": pi,
                "s_region": f"CIRCLE ICRS {ra:.8f} {dec:.8f} 0.0028",
                "t_exptime": float(np.round(g.uniform(1.0, 20000.0), 1)),
                "t_min": _when(g, start, 43600.0, 50100.0),
            })  # fmt: skip
    else:  # Kepler / K2 light curves: one row per target and quarter or campaign
        for obsid in obsids:
            if collection == "Kepler":
                star = int(g.integers(1_000_000, 13_000_000))
                obs_id, tname = f"kplr{star:09d}_lc_Q111111111111111111", f"kplr{star:09d}"
                t_min, length, proposal = 54953.03815, 1470.5, f"GO{int(g.integers(10000, 99999))}"
            else:
                star, campaign = int(g.integers(201_000_000, 251_000_000)), int(g.integers(0, 20))
                obs_id, tname = f"ktwo{star:09d}-c{campaign:02d}_lc", f"ktwo{star:09d}"
                t_min, length = 56725.0 + 80.0 * campaign, 78.0
                proposal = f"GO{campaign}{int(g.integers(1000, 9999))}"
            rows.append(_base_row(collection, obsid) | {
                "dataproduct_type": "timeseries", "instrument_name": "Kepler", "filters": "Kepler",
                "wavelength_region": "Optical", "em_min": 420.0, "em_max": 900.0, "obs_id": obs_id,
                "target_name": tname, "proposal_id": proposal, "t_min": t_min, "t_max": t_min + length,
                "t_exptime": 1800.0 if g.random() < 0.85 else 60.0,
                "s_region": f"CIRCLE ICRS {ra:.8f} {dec:.8f} 0.00111",
                "dataURL": f"mast:{collection.upper()}/url/missions/{obs_id}.fits",
            })  # fmt: skip
    for row in rows:
        row["s_ra"], row["s_dec"] = ra, dec
        t_min = round(float(row["t_min"]), 5)
        row["t_min"] = t_min
        if row["t_max"] is None:
            row["t_max"] = round(t_min + float(row["t_exptime"]) / 86400.0 + 0.0004, 5)
        proprietary = 365.0 if collection in ("HST", "JWST") and g.random() < 0.6 else 0.0
        row["t_obs_release"] = round(float(row["t_max"]) + proprietary + float(g.uniform(0.5, 30.0)), 5)
    return rows


@lru_cache(maxsize=65536)
def caom_cell(seed: int, j: int, i: int) -> tuple[Mapping[str, Any], ...]:
    """The non-TESS observations whose pointing lies in cell ``(j, i)`` of the 0.1° grid."""
    g = rng(seed, "caom-cell", j, i)
    n_targets = min(3, int(g.poisson(0.8)))
    ra0, ra1, dec0, dec1 = GEN_GRID.bounds(j, i)
    code = GEN_GRID.code(j, i)
    rows: list[Row] = []
    used = 0
    for _ in range(n_targets):
        ra = ra0 + (ra1 - ra0) * float(g.uniform(0.02, 0.98))
        dec = dec0 + (dec1 - dec0) * float(g.uniform(0.02, 0.98))
        collection = _pick_collection(g, ra, dec)
        n_obs = int(g.integers(1, 5)) if collection not in ("Kepler", "K2") else 1
        base = _OBSID_BASES[collection] + code * _OBS_PER_CELL
        rows.extend(_target(g, collection, ra, dec, [base + used + k for k in range(n_obs)]))
        used += n_obs
    return tuple(rows)


def _caom_by_obsid(seed: int, obsid: int) -> Mapping[str, Any] | None:
    for base in _OBSID_BASES.values():
        if base <= obsid < base + _OBSID_SPAN:
            cell = GEN_GRID.decode((obsid - base) // _OBS_PER_CELL)
            if cell is None:
                return None
            return next((r for r in caom_cell(seed, *cell) if r["obsid"] == obsid), None)
    return None


def _cone_rows(seed: int, ra: float, dec: float, radius: float, now_mjd: float) -> list[tuple[Row, float]]:
    """Every row (any collection) whose pointing lies within ``radius`` degrees, with its distance."""
    out: list[tuple[Row, float]] = []
    for j, i in GEN_GRID.cells_in_cone(ra, dec, radius):
        for row in caom_cell(seed, j, i):
            dist = angular_sep_deg(ra, dec, row["s_ra"], row["s_dec"])
            if dist <= radius and row["t_min"] <= now_mjd:
                out.append((dict(row), dist))
    for tic_id, dist in grid_tics_in_cone(ra, dec, radius):
        out.extend((row, dist) for row in tess_rows(tic_id, now_mjd))
    return out


# --------------------------------------------------------------------------- filters


def _matches_value(row_value: Any, wanted: Any, column: str) -> bool:
    if row_value is None:
        return False
    if isinstance(wanted, Mapping):
        if column not in _NUMERIC:
            raise MastError(f"Range filter on non-numeric column: {column}")
        try:
            lo = float(wanted.get("min", -math.inf))
            hi = float(wanted.get("max", math.inf))
        except (TypeError, ValueError):
            raise MastError(f"Invalid range for {column}: {wanted!r}") from None
        return lo <= float(row_value) <= hi
    if isinstance(wanted, (str, int, float)) and not isinstance(wanted, bool):
        if column in _NUMERIC and not isinstance(row_value, str):
            try:
                return float(wanted) == float(row_value)
            except ValueError:
                return False
        if column in _SEPARATED and isinstance(row_value, str):
            return str(wanted) in row_value.split(";")
        return str(row_value) == str(wanted)
    raise MastError(f"Invalid filter value for {column}: {wanted!r}")


def _like(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"[%*]", pattern)
    return re.compile(".*".join(re.escape(p) for p in parts), re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class _Filter:
    column: str
    values: tuple[Any, ...]
    free_text: re.Pattern[str] | None

    def __call__(self, row: Mapping[str, Any]) -> bool:
        if not self.values and self.free_text is None:
            return True
        value = row.get(self.column)
        if self.free_text is not None and value is not None and self.free_text.fullmatch(str(value)):
            return True
        return any(_matches_value(value, wanted, self.column) for wanted in self.values)


def _parse_filters(raw: Any) -> list[_Filter]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise MastError("filters must be a list")
    out = []
    for item in raw:
        if not isinstance(item, Mapping) or not isinstance(item.get("paramName"), str):
            raise MastError(f"Invalid filter: {item!r}")
        column = item["paramName"]
        if column not in _CAOM_NAMES:
            raise MastError(f"Invalid column name: {column}")
        values = item.get("values", [])
        if not isinstance(values, list):
            raise MastError(f"Invalid values for {column}: must be a list")
        free = item.get("freeText")
        if free is not None and not isinstance(free, str):
            raise MastError(f"Invalid freeText for {column}")
        out.append(_Filter(column, tuple(values), _like(free) if free else None))
    return out


def _named_tess_rows(filters: list[_Filter], now_mjd: float) -> list[Row]:
    """TESS rows for the TIC ids and obs_ids that discrete filters name."""
    keys: dict[tuple[int, int | None], None] = {}
    for f in filters:
        for value in f.values:
            if not isinstance(value, str):
                continue
            if f.column == "target_name" and (tic := parse_tic(value)) is not None:
                keys[(tic, None)] = None
            elif f.column == "obs_id" and (m := _TESS_OBS_ID.match(value)) is not None:
                keys[(int(m.group(2)), int(m.group(1)))] = None
    rows: list[Row] = []
    for tic, sector in keys:
        rows.extend(r for r in tess_rows(tic, now_mjd) if sector is None or r["sequence_number"] == sector)
    return rows


def _parse_position(value: Any) -> tuple[float, float, float]:
    if not isinstance(value, str):
        raise MastError("position must be a string 'ra, dec, radius'")
    try:
        ra, dec, radius = (float(t) for t in value.replace(",", " ").split())
    except ValueError:
        raise MastError(f"Invalid position: {value!r}") from None
    return _check_cone(ra, dec, radius)


def _check_cone(ra: float, dec: float, radius: float) -> tuple[float, float, float]:
    if not all(math.isfinite(v) for v in (ra, dec, radius)) or not -90.0 <= dec <= 90.0:
        raise MastError(f"Invalid position: {ra}, {dec}")
    if not 0.0 < radius <= _MAX_RADIUS_DEG:
        raise MastError(f"Invalid radius {radius}: must be in (0, {_MAX_RADIUS_DEG}] degrees")
    return ra % 360.0, dec, radius


def _number(params: Mapping[str, Any], key: str) -> float:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise MastError(f"Missing or invalid parameter: {key}")
    try:
        return float(value)
    except ValueError:
        raise MastError(f"Missing or invalid parameter: {key}") from None


# --------------------------------------------------------------------------- envelope and paging


@dataclass
class _Table:
    fields: list[tuple[str, str]]
    rows: list[Row]


def _paging(page: int, pagesize: int, total: int, shown: int, lie: int) -> dict[str, int]:
    return {
        "page": page,
        "pageSize": pagesize,
        "pagesFiltered": math.ceil(total / pagesize),
        "rows": shown,
        "rowsFiltered": total + lie,
        "rowsTotal": total + lie,
    }


def _render(table: _Table, request: Mapping[str, Any], lie: int) -> Reply:
    pagesize = request.get("pagesize", _DEFAULT_PAGESIZE)
    page = request.get("page", 1)
    if isinstance(pagesize, bool) or not isinstance(pagesize, int) or pagesize < 1:
        raise MastError(f"Invalid pagesize: {pagesize!r}")
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise MastError(f"Invalid page: {page!r}")
    chunk = table.rows[(page - 1) * pagesize : page * pagesize]
    paging = _paging(page, pagesize, len(table.rows), len(chunk), lie)
    if request.get("format") == "json":
        return json_reply(
            {
                "status": "COMPLETE",
                "msg": "",
                "data": chunk,
                "fields": [{"name": n, "type": t} for n, t in table.fields],
                "paging": paging,
            }
        )
    names = [n for n, _ in table.fields]
    extjs = {
        "status": "COMPLETE",
        "msg": "",
        "data": {
            "name": "NewDataSet",
            "Tables": [
                {
                    "name": "Table",
                    "ExtendedProperties": {"Paging": paging},
                    "Columns": [
                        {"text": n, "dataIndex": n, "ExtendedProperties": {"vot.datatype": _VOT_DATATYPE[t]}}
                        for n, t in table.fields
                    ],
                    "Fields": [{"name": n, "type": t} for n, t in table.fields],
                    "Rows": [[row.get(n) for n in names] for row in chunk],
                }
            ],
            "ExtendedProperties": {},
        },
    }
    return json_reply(extjs)


def _project(columns: Any, fields: list[tuple[str, str]], rows: list[Row]) -> _Table:
    if columns is None or (isinstance(columns, str) and columns.strip() in ("", "*")):
        return _Table(fields, [{n: r.get(n) for n, _ in fields} for r in rows])
    if not isinstance(columns, str):
        raise MastError("columns must be a string")
    if columns.replace(" ", "").upper() == "COUNT_BIG(*)":
        return _Table([("Column1", "string")], [{"Column1": len(rows)}])
    wanted = [c.strip() for c in columns.split(",") if c.strip()]
    known = dict(fields)
    for c in wanted:
        if c not in known:
            raise MastError(f"Invalid column name: {c}")
    chosen = [(c, known[c]) for c in wanted]
    return _Table(chosen, [{n: r.get(n) for n, _ in chosen} for r in rows])


# --------------------------------------------------------------------------- products


def _tp_size(n_cadences: int) -> int:
    return 2880 * math.ceil((n_cadences * 2512 + 40_320) / 2880)


def _dvt_size(n_cadences: int) -> int:
    return 2880 * math.ceil((n_cadences * 172 + 28_800) / 2880)


def _product(obsid: int, obs_id: str, filename: str, size: int, parent: int, **kw: Any) -> Row:
    collection = kw.pop("collection", "TESS")
    return {
        "obsID": obsid,
        "obs_collection": collection,
        "dataproduct_type": kw.pop("dataproduct_type", "timeseries"),
        "obs_id": obs_id,
        "description": kw.pop("description"),
        "type": "S",
        "dataURI": f"mast:{collection}/product/{filename}",
        "productType": kw.pop("productType", "SCIENCE"),
        "productGroupDescription": kw.pop("group", None),
        "productSubGroupDescription": kw.pop("subgroup"),
        "productDocumentationURL": None,
        "project": kw.pop("project", collection),
        "prvversion": kw.pop("prvversion", None),
        "productFilename": filename,
        "size": size,
        "parent_obsid": parent,
    }


def _dv_timestamp(sector: int) -> str:
    return mjd_to_datetime(sector_t_max_mjd(sector) + 8.3).strftime("%Y%j%H%M%S")


def _dvt_name(tic_id: int, first: int, last: int) -> str:
    return f"tess{_dv_timestamp(last)}-s{first:04d}-s{last:04d}-{tic_id:016d}-{100 + last % 50:05d}_dvt.fits"


@dataclass
class MastContext:
    """What the MAST handlers need from the archive for one request."""

    seed: int
    now_mjd: float
    tess_cadences: int
    lightcurve: Callable[[TessProduct], Awaitable[bytes]]
    lie_rows: int = 0


async def _tess_products(obsid: int, tic_id: int, sector: int, ctx: MastContext) -> list[Row]:
    target = tess_target(tic_id)
    visible = target.sectors_until(ctx.now_mjd)
    if sector not in visible:
        return []
    obs_id = lc_obs_id(tic_id, sector)
    lc = await ctx.lightcurve(TessProduct(tic_id, sector, 120))
    minimum = "Minimum Recommended Products"
    version = "5.0" if sector >= 40 else "4.0"
    out = [
        _product(obsid, obs_id, lc_filename(tic_id, sector), len(lc), obsid, description="Light curves",
                 group=minimum, subgroup="LC", prvversion=version),
        _product(obsid, obs_id, f"{obs_id}_tp.fits", _tp_size(ctx.tess_cadences), obsid,
                 description="Target pixel files", group=minimum, subgroup="TP", prvversion=version),
        _product(obsid, obs_id, _dvt_name(tic_id, sector, sector), _dvt_size(ctx.tess_cadences), obsid,
                 description="Data validation time series", subgroup="DVT", prvversion=version),
    ]  # fmt: skip
    if target.has_fast(sector):
        fast = await ctx.lightcurve(TessProduct(tic_id, sector, 20))
        out.append(
            _product(obsid, fast_obs_id(tic_id, sector), fast_filename(tic_id, sector), len(fast), obsid,
                     description="Fast-cadence light curves", group=minimum, subgroup="FAST-LC",
                     prvversion=version)
        )  # fmt: skip
    if len(visible) > 1:  # one multi-sector DV product, listed under every sector's obsid
        first, last = visible[0], visible[-1]
        out.append(
            _product(obsid, obs_id, _dvt_name(tic_id, first, last),
                     _dvt_size(ctx.tess_cadences * len(visible)), tess_obsid(tic_id, first),
                     description="Data validation time series (multi-sector)", subgroup="DVT",
                     prvversion=version)
        )  # fmt: skip
    return out


_SCIENCE_SUFFIX = {"HST": "_drz.fits", "JWST": "_i2d.fits", "GALEX": "-nd-int.fits.gz"}


def _other_products(row: Mapping[str, Any]) -> list[Row]:
    obsid, obs_id, collection = row["obsid"], row["obs_id"], row["obs_collection"]
    stem = str(obs_id).lower()
    g = rng("products", obsid)
    kind = row["dataproduct_type"]
    science = _SCIENCE_SUFFIX.get(collection, "_sci.fits")
    subgroup = science.split(".")[0].strip("_-").upper()
    common = {"collection": collection, "dataproduct_type": kind, "project": row["project"]}
    return [
        _product(obsid, obs_id, f"{stem}{science}", int(g.integers(200_000, 180_000_000)), obsid,
                 description=f"{collection} calibrated science product", subgroup=subgroup,
                 group="Minimum Recommended Products", **common),
        _product(obsid, obs_id, f"{stem}_preview.jpg", int(g.integers(20_000, 400_000)), obsid,
                 description="Preview image", subgroup="PREVIEW", productType="PREVIEW", **common),
    ]  # fmt: skip


def _obsids(value: Any) -> list[int]:
    items: Iterable[Any]
    if isinstance(value, str):
        items = [v for v in value.split(",") if v.strip()]
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise MastError("Missing or invalid parameter: obsid")
    out = []
    for item in items:
        try:
            out.append(int(str(item).strip()))
        except ValueError:
            raise MastError(f"Invalid obsid: {item!r}") from None
    if not out:
        raise MastError("Missing or invalid parameter: obsid")
    return out


# --------------------------------------------------------------------------- long polling


class PollBook:
    """Counts polls per (service, params, cachebreaker): the first ``polls`` answers are EXECUTING."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def executing(self, request: Mapping[str, Any], polls: int) -> bool:
        breaker = request.get("cachebreaker", request.get("cacheBreaker"))
        key = orjson.dumps(
            [request.get("service"), request.get("params"), breaker], option=orjson.OPT_SORT_KEYS
        ).decode()
        with self._lock:
            if request.get("clearcache") is True:
                self._seen.pop(key, None)
            count = self._seen.get(key, 0) + 1
            self._seen[key] = count
        return count <= polls


# --------------------------------------------------------------------------- the handlers


def parse_invoke_request(text: str | None) -> Mapping[str, Any]:
    """The ``request`` JSON object, or MastError."""
    if text is None:
        raise MastError("No request given: POST a form field 'request' holding a JSON object")
    try:
        request = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MastError(f"Could not parse request: {exc}") from None
    if not isinstance(request, dict):
        raise MastError("request must be a JSON object")
    return request


async def handle_invoke(request: Mapping[str, Any], ctx: MastContext) -> Reply:
    """Answer one COMPLETE invoke request (long polling is the caller's business)."""
    service = request.get("service")
    params = request.get("params", {})
    try:
        if service not in _SERVICES:
            raise MastError(f"Unknown service: {service!r}")
        if not isinstance(params, Mapping):
            raise MastError("params must be a JSON object")
        if service == "Mast.Caom.Products":
            rows: list[Row] = []
            for obsid in _obsids(params.get("obsid")):
                tess = decode_tess_obsid(obsid)
                if tess is not None:
                    rows.extend(await _tess_products(obsid, *tess, ctx))
                elif (row := _caom_by_obsid(ctx.seed, obsid)) is not None and row["t_min"] <= ctx.now_mjd:
                    rows.extend(_other_products(row))
            fields = [*PRODUCT_FIELDS, _SELECTED]
            return _render(_Table(fields, [r | {"_selected_": None} for r in rows]), request, ctx.lie_rows)
        table = await anyio.to_thread.run_sync(_caom_table, str(service), params, ctx)
        return _render(table, request, ctx.lie_rows)
    except MastError as exc:
        return mast_error(str(exc))


def _caom_table(service: str, params: Mapping[str, Any], ctx: MastContext) -> _Table:
    filters = _parse_filters(params.get("filters"))
    cone: tuple[float, float, float] | None = None
    if service == "Mast.Caom.Cone":
        cone = _check_cone(_number(params, "ra"), _number(params, "dec"), _number(params, "radius"))
        filters = []
    elif service == "Mast.Caom.Filtered.Position":
        cone = _parse_position(params.get("position"))
    elif not filters:
        raise MastError("Mast.Caom.Filtered needs at least one filter")

    found: dict[int, tuple[Row, float | None]] = {}
    if cone is not None:
        for row, away in _cone_rows(ctx.seed, *cone, ctx.now_mjd):
            found[row["obsid"]] = (row, away)
    for row in _named_tess_rows(filters, ctx.now_mjd):
        if row["obsid"] in found:
            continue
        if cone is None:
            found[row["obsid"]] = (row, None)
        else:
            sep = angular_sep_deg(cone[0], cone[1], row["s_ra"], row["s_dec"])
            if sep <= cone[2]:
                found[row["obsid"]] = (row, sep)
    kept = [(row, dist) for row, dist in found.values() if all(f(row) for f in filters)]
    kept.sort(key=lambda rd: (rd[1] or 0.0, rd[0]["obsid"]))
    fields = list(CAOM_FIELDS)
    if cone is not None:
        fields.append(_DISTANCE)
        for row, dist in kept:
            row["distance"] = (dist or 0.0) * 3600.0
    fields.append(_SELECTED)
    rows = [row | {"_selected_": None} for row, _ in kept]
    return _project(params.get("columns"), fields, rows)


def handle_download(uri: str | None, ctx: MastContext) -> TessProduct | Reply:
    """The product a download URI names, or the 404 reply for anything the fake does not serve."""
    prefix = "mast:TESS/product/"
    if uri and uri.startswith(prefix):
        product = parse_product_filename(uri[len(prefix) :], ctx.now_mjd)
        if product is not None:
            return product
    return text_reply(404, f"File not found: {uri}")


# --------------------------------------------------------------------------- columnsconfig

_COLUMN_TEXT = {
    "dataproduct_type": "Product Type", "calib_level": "Calibration Level", "obs_collection": "Mission",
    "obs_id": "Observation ID", "target_name": "Target Name", "s_ra": "RA", "s_dec": "Dec",
    "t_min": "Start Time", "t_max": "End Time", "t_exptime": "Exposure Length",
    "wavelength_region": "Waveband", "filters": "Filters", "em_min": "Min. Wavelength",
    "em_max": "Max. Wavelength", "target_classification": "Target Classification",
    "obs_title": "Observation Title", "t_obs_release": "Release Date", "instrument_name": "Instrument",
    "proposal_pi": "Principal Investigator", "proposal_id": "Proposal ID", "project": "Project",
    "s_region": "s_region", "jpegURL": "jpegURL", "dataURL": "Data URL", "obsid": "Product Group ID",
    "objID": "Object ID", "sequence_number": "Sequence Number", "provenance_name": "Provenance Name",
    "distance": "Distance (\")",
}  # fmt: skip
_DATATYPES = {"obsid": "long", "objID": "long", "distance": "float"}


_PRODUCT_TEXT = {
    "obsID": "Product Group ID", "obs_collection": "Mission", "dataproduct_type": "Product Type",
    "obs_id": "Observation ID", "description": "Description", "type": "Type", "dataURI": "Data URI",
    "productType": "Product Type", "productGroupDescription": "Product Group",
    "productSubGroupDescription": "Product Subgroup", "productDocumentationURL": "Documentation",
    "project": "Project", "prvversion": "Pipeline Version", "productFilename": "Filename",
    "size": "Size", "parent_obsid": "Parent Product Group ID",
}  # fmt: skip
_PRODUCT_DATATYPES = {"obsID": "long", "size": "long", "parent_obsid": "long"}
PRODUCTS_CONFIG_ID = "Mast.Caom.Products"


def columns_config(config_id: str | None = None) -> dict[str, Any]:
    """A columnsconfig answer shaped like MAST's (``vot.datatype`` decides discrete or range filters).

    ``colConfigId=Mast.Caom.Products`` (astroquery asks for it before its first product list) gets
    the product columns; any other id (``Mast.Caom.Cone``, the ``Filtered`` services) the CAOM
    observation columns.
    """
    out: dict[str, Any] = {"_selected_": {"text": "selected", "add": True, "type": "boolean", "hidden": True}}
    if config_id == PRODUCTS_CONFIG_ID:
        for name, kind in PRODUCT_FIELDS:
            entry: dict[str, Any] = {
                "text": _PRODUCT_TEXT[name],
                "vot.datatype": _PRODUCT_DATATYPES.get(name, _VOT_DATATYPE[kind]),
                "vot.ID": name,
                "vot.name": name,
            }
            if kind == "string":
                entry["vot.arraysize"] = "*"
            out[name] = entry
        return out
    for name, kind in [*CAOM_FIELDS, _DISTANCE]:
        entry = {
            "text": _COLUMN_TEXT[name],
            "vot.datatype": _DATATYPES.get(name, _VOT_DATATYPE[kind]),
            "vot.ID": name,
            "vot.name": name,
        }
        if kind == "string":
            entry["vot.arraysize"] = "*"
        if name in _SEPARATED:
            entry["separator"] = ";"
        out[name] = entry
    return out


# --------------------------------------------------------------------------- the routes


def _context(archive: FakeArchive, req: FakeRequest) -> MastContext:
    return MastContext(archive.seed, archive.now_mjd, archive.tess_cadences, archive.lightcurve, req.lie_rows)


def _parse_invoke(req: FakeRequest) -> None:
    form = parse_qs(req.body.decode("utf-8", "replace"), keep_blank_values=True) if req.body else {}
    text = (form.get("request") or req.params.get("request") or [None])[0]
    try:
        req.parsed = parse_invoke_request(text)
        req.params = dict(req.parsed)
        req.subjects += (str(req.parsed.get("service", "")),)
    except MastError as exc:
        req.error = str(exc)
        req.params = {"request": text}


async def _invoke(req: FakeRequest, archive: FakeArchive) -> Reply:
    if req.parsed is None:
        return mast_error(req.error or "No request given")
    if archive.polls.executing(req.parsed, archive.executing_polls):
        return mast_executing()
    return await handle_invoke(req.parsed, _context(archive, req))


def _parse_download(req: FakeRequest) -> None:
    uri = (req.params.get("uri") or [""])[0]
    req.subjects += (uri, uri.rsplit("/", 1)[-1])


async def _download(req: FakeRequest, archive: FakeArchive) -> Reply:
    found = handle_download((parse_qs(req.query).get("uri") or [""])[0], _context(archive, req))
    if isinstance(found, Reply):
        return found
    data = await archive.lightcurve(found)
    disposition = f'attachment; filename="{req.subjects[-1]}"'
    return Reply(200, data, "application/octet-stream", [("Content-Disposition", disposition)])


def _parse_columnsconfig(req: FakeRequest) -> None:
    if req.body:  # astroquery POSTs colConfigId=<service> as a form body
        req.params = dict(parse_qs(req.body.decode("utf-8", "replace"), keep_blank_values=True))


async def _columnsconfig(req: FakeRequest, archive: FakeArchive) -> Reply:
    config_id = (req.params.get("colConfigId") or req.params.get("colconfigid") or [None])[0]
    return json_reply(columns_config(config_id))


async def _whoami(req: FakeRequest, archive: FakeArchive) -> Reply:
    scheme, _, token = req.headers.get("authorization", "").partition(" ")
    cookie = req.headers.get("cookie", "")
    signed_in = (scheme.lower() == "token" and bool(token.strip())) or "mast_token=" in cookie
    return json_reply({"anon": not signed_in})


#: The MAST API (CAOM searches, products, TESS files, column metadata, token check), as the
#: ``fake`` of the tess and mast archives' registry entries (one server, shared).
ROUTES = (
    FakeRoute("/api/v0/invoke", ("GET", "POST"), _invoke, _parse_invoke),
    FakeRoute("/api/v0.1/Download/file", ("GET", "HEAD"), _download, _parse_download),
    FakeRoute("/columnsconfig", ("GET", "POST"), _columnsconfig, _parse_columnsconfig),
    FakeRoute("/whoami", ("GET", "HEAD"), _whoami),
)
