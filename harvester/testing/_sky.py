"""The deterministic sky every fake service draws from: seeded generators, grids, time helpers.

Nothing here knows about HTTP. Everything is a pure function of its arguments (and the archive
seed): the same cell of the same grid always holds the same objects, so overlapping queries see the
same objects with the same data, and a restarted archive serves the same bytes.

- :func:`rng` builds a numpy ``Generator`` from a tuple of integers and strings (no ``hash()``, which
  is salted per process).
- :class:`SkyGrid` cuts the sphere into near-equal-area cells (rows of constant declination, each
  row split into as many RA cells as fit) and lists the cells a cone can touch.
- Small astronomy helpers: angular separation, MJD ↔ calendar date, ecliptic latitude.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

__all__ = [
    "MJD_EPOCH",
    "SkyGrid",
    "angular_sep_deg",
    "ecliptic_lat_deg",
    "mjd_to_datetime",
    "rng",
    "stable_int",
]

MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)
_MASK64 = (1 << 64) - 1


def stable_int(*parts: int | str) -> int:
    """A 64-bit integer digest of ``parts``, identical in every process (unlike ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rng(*parts: int | str) -> np.random.Generator:
    """A numpy generator seeded from ``parts`` (ints, possibly negative, and strings)."""
    words = [p & _MASK64 if isinstance(p, int) else stable_int(p) for p in parts]
    return np.random.default_rng(words)


def angular_sep_deg(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle distance in degrees (haversine, good at small separations)."""
    p1, p2 = math.radians(dec1), math.radians(dec2)
    dp = p2 - p1
    dl = math.radians(ra2 - ra1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return math.degrees(2.0 * math.asin(min(1.0, math.sqrt(a))))


def ecliptic_lat_deg(ra: float, dec: float) -> float:
    """Ecliptic latitude (J2000 obliquity) of an ICRS position, in degrees."""
    eps = math.radians(23.4392911)
    a, d = math.radians(ra), math.radians(dec)
    s = math.sin(d) * math.cos(eps) - math.cos(d) * math.sin(eps) * math.sin(a)
    return math.degrees(math.asin(max(-1.0, min(1.0, s))))


def mjd_to_datetime(mjd: float) -> datetime:
    """The UTC calendar instant of an MJD (microsecond resolution)."""
    return MJD_EPOCH + timedelta(days=mjd)


@dataclass(frozen=True)
class SkyGrid:
    """Rows of height ``cell_deg`` in declination; row ``j`` is split into ``row_cells(j)`` RA cells.

    Cells have nearly equal area, so a uniform density per cell is a uniform density on the sky.
    A cell is named ``(j, i)`` or by its integer :meth:`code`.
    """

    cell_deg: float

    @property
    def n_rows(self) -> int:
        return math.ceil(180.0 / self.cell_deg)

    @property
    def max_row_cells(self) -> int:
        return int(360.0 / self.cell_deg) + 1

    def row_cells(self, j: int) -> int:
        dec_c = -90.0 + (j + 0.5) * self.cell_deg
        return max(1, int(360.0 * math.cos(math.radians(dec_c)) / self.cell_deg))

    def bounds(self, j: int, i: int) -> tuple[float, float, float, float]:
        """``(ra0, ra1, dec0, dec1)`` of cell ``(j, i)``."""
        width = 360.0 / self.row_cells(j)
        dec0 = -90.0 + j * self.cell_deg
        return i * width, (i + 1) * width, dec0, min(90.0, dec0 + self.cell_deg)

    def code(self, j: int, i: int) -> int:
        return j * self.max_row_cells + i

    def decode(self, code: int) -> tuple[int, int] | None:
        """The ``(j, i)`` of a cell code, or None when no cell has that code."""
        if code < 0:
            return None
        j, i = divmod(code, self.max_row_cells)
        if j >= self.n_rows or i >= self.row_cells(j):
            return None
        return j, i

    def cell_of(self, ra: float, dec: float) -> tuple[int, int]:
        j = min(self.n_rows - 1, max(0, int((dec + 90.0) / self.cell_deg)))
        n = self.row_cells(j)
        return j, min(n - 1, int((ra % 360.0) / (360.0 / n)))

    def cells_in_cone(self, ra: float, dec: float, radius: float) -> Iterator[tuple[int, int]]:
        """Every cell that may hold a point within ``radius`` degrees of ``(ra, dec)`` (a superset)."""
        ra %= 360.0
        j0 = max(0, math.floor((dec - radius + 90.0) / self.cell_deg))
        j1 = min(self.n_rows - 1, math.floor((dec + radius + 90.0) / self.cell_deg))
        cos_dec = math.cos(math.radians(dec))
        sin_r = math.sin(math.radians(min(radius, 90.0)))
        # The widest RA extent of a small circle: sin(half) = sin(r) / cos(dec); a pole inside → all.
        whole_rows = sin_r >= cos_dec
        half = 180.0 if whole_rows else math.degrees(math.asin(sin_r / cos_dec))
        for j in range(j0, j1 + 1):
            n = self.row_cells(j)
            width = 360.0 / n
            lo = math.floor((ra - half) / width)
            hi = math.floor((ra + half) / width)
            if whole_rows or hi - lo + 1 >= n:
                yield from ((j, i) for i in range(n))
                continue
            for k in range(lo, hi + 1):
                yield j, k % n
