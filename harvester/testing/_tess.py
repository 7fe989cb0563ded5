"""The fake TESS universe: TIC targets, their SPOC 2-minute sectors, and MAST names and ids.

Every TIC id exists. Its position, magnitudes, variability and sectors are pure functions of the id
(not of the archive seed), so MAST rows, product lists and FITS headers always agree:

- TIC ids in ``[TIC_GRID_BASE, TIC_GRID_BASE + cells)`` sit on a fixed 0.1° sky grid (one id per cell;
  half of the cells hold a 2-minute target), and positional MAST queries find them. Any other id is
  placed by a digest of the id and is found by name (``target_name``) only. A few real ids from the
  recorded samples keep their real positions and sectors.
- A target has 1–3 sectors. Sector ``s`` starts near BTJD ``1325.29 + 27.4 (s - 1)`` (its CAOM
  ``t_min`` is the same instant as an MJD); all targets in a sector share its file timestamp and
  spacecraft configuration id, as in the real naming scheme (upstream-apis.md §3.5).
- Some targets also have 20-second ("fast") light curves, for sectors from 27 on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

from harvester.testing._sky import SkyGrid, angular_sep_deg, mjd_to_datetime, rng

__all__ = [
    "FAST_FIRST_SECTOR",
    "TIC_GRID",
    "TIC_GRID_BASE",
    "TessProduct",
    "TessTarget",
    "camera_ccd",
    "decode_tess_obsid",
    "fast_filename",
    "fast_obs_id",
    "grid_tics_in_cone",
    "lc_filename",
    "lc_obs_id",
    "parse_product_filename",
    "parse_tic",
    "sector_scid",
    "sector_start_btjd",
    "sector_t_max_mjd",
    "sector_t_min_mjd",
    "sector_timestamp",
    "tess_obsid",
    "tess_target",
]

TIC_GRID = SkyGrid(0.1)
TIC_GRID_BASE = 300_000_000
TIC_GRID_OCCUPANCY = 0.5
SECTOR_LEN_D = 27.4
SECTOR1_START_BTJD = 1325.293
BTJD_TO_MJD = 56999.5
TT_MINUS_UTC_D = 69.184 / 86400.0
FAST_FIRST_SECTOR = 27
LAST_SECTOR = 96
TESS_OBSID_BASE = 17_000_000_000
MAX_TIC = 9_999_999_999

# Real ids from the recorded samples: (ra, dec, tessmag, teff or None, sectors, fast).
_KNOWN: dict[int, tuple[float, float, float, float | None, tuple[int, ...], bool]] = {
    261136679: (84.291188, -80.469119, 5.105, 6037.0, (1, 4, 8), False),  # pi Men
    21132157: (36.5197199571005, 26.0918369271856, 11.04179955, 6080.29003906, (58,), False),
    278892590: (346.6223687, -5.0413976, 14.0262, None, (70,), True),  # TRAPPIST-1: empty TEFF card
}


def sector_start_btjd(sector: int) -> float:
    return SECTOR1_START_BTJD + SECTOR_LEN_D * (sector - 1)


def sector_t_min_mjd(sector: int) -> float:
    """CAOM ``t_min`` of a sector: its start as a (UTC) MJD."""
    return round(sector_start_btjd(sector) + BTJD_TO_MJD - TT_MINUS_UTC_D, 8)


def sector_t_max_mjd(sector: int) -> float:
    return round(sector_t_min_mjd(sector) + SECTOR_LEN_D - 0.55, 8)


def sector_timestamp(sector: int) -> str:
    """``yyyydddhhmmss`` of the sector's pointing start, shared by every file of the sector."""
    return mjd_to_datetime(sector_t_min_mjd(sector) - 0.47).strftime("%Y%j%H%M%S")


def sector_scid(sector: int) -> int:
    """Spacecraft configuration map id of a sector (0120 in sector 1, ~0265 by sector 70)."""
    return 120 + round(2.12 * (sector - 1))


@dataclass(frozen=True)
class TessTarget:
    """What the fake knows about one TIC target (the "truth" tests can check against)."""

    tic_id: int
    ra: float
    dec: float
    tessmag: float
    teff: float | None
    logg: float
    mh: float
    radius: float
    pmra: float
    pmdec: float
    period_d: float
    amplitude: float
    phase: float
    sectors: tuple[int, ...]
    fast: bool

    def sectors_until(self, now_mjd: float) -> tuple[int, ...]:
        """The sectors whose data exist by ``now_mjd`` (CAOM ``t_min <= now``)."""
        return tuple(s for s in self.sectors if sector_t_min_mjd(s) <= now_mjd)

    def has_fast(self, sector: int) -> bool:
        return self.fast and sector >= FAST_FIRST_SECTOR and sector in self.sectors


def _grid_position(tic_id: int) -> tuple[float, float] | None:
    cell = TIC_GRID.decode(tic_id - TIC_GRID_BASE) if tic_id >= TIC_GRID_BASE else None
    if cell is None:
        return None
    ra0, ra1, dec0, dec1 = TIC_GRID.bounds(*cell)
    g = rng("tic-grid-pos", tic_id)
    u, v = (float(x) for x in g.uniform(0.05, 0.95, 2))
    return ra0 + (ra1 - ra0) * u, dec0 + (dec1 - dec0) * v


@lru_cache(maxsize=65536)
def tess_target(tic_id: int) -> TessTarget:
    """The deterministic properties of TIC ``tic_id`` (any positive id)."""
    g = rng("tic", tic_id)
    ra = float(g.uniform(0.0, 360.0))
    dec = math.degrees(math.asin(float(g.uniform(-1.0, 1.0))))
    tessmag = float(g.uniform(6.0, 15.5))
    teff: float | None = float(g.uniform(3100.0, 7800.0))
    if g.random() < 0.15:
        teff = None
    logg = float(g.uniform(3.5, 5.1))
    mh = float(g.uniform(-0.6, 0.4))
    radius = float(g.uniform(0.2, 3.0))
    pmra, pmdec = float(g.normal(0.0, 15.0)), float(g.normal(0.0, 15.0))
    period = math.exp(float(g.uniform(math.log(0.5), math.log(10.0))))
    amplitude = float(g.uniform(0.002, 0.03))
    phase = float(g.uniform(0.0, 2.0 * math.pi))
    n_sectors = int(g.choice([1, 2, 3], p=[0.45, 0.35, 0.20]))
    first = int(g.integers(1, 70))
    extra = g.choice([1, 2, 13, 26, 27, 40], size=n_sectors - 1, replace=False)
    sectors = tuple(sorted({first, *(first + int(x) for x in extra if first + int(x) <= LAST_SECTOR)}))
    fast = bool(g.random() < 0.2)
    grid = _grid_position(tic_id)
    if grid is not None:
        ra, dec = grid
    if tic_id in _KNOWN:
        ra, dec, tessmag, teff, sectors, fast = _KNOWN[tic_id]
    return TessTarget(
        tic_id=tic_id,
        ra=ra,
        dec=dec,
        tessmag=tessmag,
        teff=teff,
        logg=logg,
        mh=mh,
        radius=radius,
        pmra=pmra,
        pmdec=pmdec,
        period_d=period,
        amplitude=amplitude,
        phase=phase,
        sectors=sectors,
        fast=fast,
    )


def parse_tic(value: str) -> int | None:
    """The TIC id a CAOM ``target_name`` names, or None. Zero-padded names name nothing (as at MAST)."""
    if not value.isascii() or not value.isdigit() or value.startswith("0"):
        return None
    tic = int(value)
    return tic if 1 <= tic <= MAX_TIC else None


def grid_tics_in_cone(ra: float, dec: float, radius: float) -> list[tuple[int, float]]:
    """``(tic_id, distance_deg)`` of the grid targets within ``radius`` degrees."""
    out: list[tuple[int, float]] = []
    for j, i in TIC_GRID.cells_in_cone(ra, dec, radius):
        code = TIC_GRID.code(j, i)
        if rng("tic-grid-occupied", code).random() >= TIC_GRID_OCCUPANCY:
            continue
        target = tess_target(TIC_GRID_BASE + code)
        dist = angular_sep_deg(ra, dec, target.ra, target.dec)
        if dist <= radius:
            out.append((target.tic_id, dist))
    return out


def camera_ccd(tic_id: int, sector: int) -> tuple[int, int]:
    g = rng("tic-camera", tic_id, sector)
    return int(g.integers(1, 5)), int(g.integers(1, 5))


def lc_obs_id(tic_id: int, sector: int) -> str:
    return f"tess{sector_timestamp(sector)}-s{sector:04d}-{tic_id:016d}-{sector_scid(sector):04d}-s"


def lc_filename(tic_id: int, sector: int) -> str:
    return f"{lc_obs_id(tic_id, sector)}_lc.fits"


def fast_obs_id(tic_id: int, sector: int) -> str:
    return lc_obs_id(tic_id, sector)[: -len("-s")] + "-a_fast"


def fast_filename(tic_id: int, sector: int) -> str:
    return f"{fast_obs_id(tic_id, sector)}-lc.fits"


def tess_obsid(tic_id: int, sector: int) -> int:
    """The CAOM ``obsid`` of a 2-minute observation: 11 digits for most ids, invertible."""
    return TESS_OBSID_BASE + tic_id * 100 + sector


def decode_tess_obsid(obsid: int) -> tuple[int, int] | None:
    if obsid < TESS_OBSID_BASE + 100:
        return None
    tic_id, sector = divmod(obsid - TESS_OBSID_BASE, 100)
    if not 1 <= sector <= LAST_SECTOR or tic_id > MAX_TIC:
        return None
    return tic_id, sector


@dataclass(frozen=True)
class TessProduct:
    """A downloadable light-curve file named by a product file name."""

    tic_id: int
    sector: int
    cadence_s: int


_LC_NAME = re.compile(r"^tess\d{13}-s(\d{4})-(\d{16})-\d{4}-(?:s_lc\.fits|a_fast-lc\.fits)$")


def parse_product_filename(name: str, now_mjd: float) -> TessProduct | None:
    """The light curve a file name stands for, if the fake serves that exact name by ``now_mjd``."""
    m = _LC_NAME.match(name)
    if m is None:
        return None
    sector, tic_id = int(m.group(1)), int(m.group(2))
    if tic_id < 1 or sector not in tess_target(tic_id).sectors_until(now_mjd):
        return None
    if name == lc_filename(tic_id, sector):
        return TessProduct(tic_id, sector, 120)
    if name == fast_filename(tic_id, sector) and tess_target(tic_id).has_fast(sector):
        return TessProduct(tic_id, sector, 20)
    return None
