"""What the fake MAST holds: the CAOM observations of its sky and the products of each.

- The CAOM columns (:data:`CAOM_FIELDS`) and product columns (:data:`PRODUCT_FIELDS`) MAST sends.
- A fixed universe of observations: TESS 2-minute observations (:func:`tess_rows`, for any TIC id,
  and the TIC grid of :mod:`~harvester.testing._tess` for positional queries) and observations of
  other collections (HST, JWST, GALEX, SWIFT, IUE, Kepler, K2) placed on a 0.1° grid per seed
  (:func:`caom_cell`); :func:`cone_rows` gathers both around a position. Only rows with
  ``t_min <= now_mjd`` exist, so raising ``now_mjd`` adds rows. Everything is a pure function of
  (seed, cell) or (TIC id, sector).
- The products of an observation (:func:`observation_products`): LC/TP/DVT (and FAST-LC) rows per
  TESS obsid, the LC ``size`` being the exact length of the file the download endpoint serves; a
  multi-sector DVT is listed under every obsid of its target, as MAST lists duplicates; a science
  file and a preview for the other collections.

How the API searches, pages and answers is :mod:`~harvester.testing._mast`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from harvester.testing._sky import SkyGrid, angular_sep_deg, ecliptic_lat_deg, mjd_to_datetime, rng
from harvester.testing._tess import (
    TessProduct,
    decode_tess_obsid,
    fast_filename,
    fast_obs_id,
    grid_tics_in_cone,
    lc_filename,
    lc_obs_id,
    sector_t_max_mjd,
    sector_t_min_mjd,
    tess_obsid,
    tess_target,
)

__all__ = [
    "CAOM_FIELDS",
    "PRODUCT_FIELDS",
    "MastContext",
    "Row",
    "caom_cell",
    "cone_rows",
    "observation_products",
    "tess_rows",
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
GEN_GRID = SkyGrid(0.1)
_OBS_PER_CELL = 16

Row = dict[str, Any]


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


def cone_rows(seed: int, ra: float, dec: float, radius: float, now_mjd: float) -> list[tuple[Row, float]]:
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
    """What the MAST handlers need from the archive for one request.

    The products of an observation read all but ``lie_rows`` (a fault the envelope tells).
    """

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


async def observation_products(obsid: int, ctx: MastContext) -> list[Row]:
    """The product rows MAST lists for one obsid: none for an unknown or not yet observed one."""
    tess = decode_tess_obsid(obsid)
    if tess is not None:
        return await _tess_products(obsid, *tess, ctx)
    row = _caom_by_obsid(ctx.seed, obsid)
    if row is not None and row["t_min"] <= ctx.now_mjd:
        return _other_products(row)
    return []
