"""TESS SPOC light curves from MAST."""

from __future__ import annotations
