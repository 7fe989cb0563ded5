"""ZTF light curves from the IRSA light-curve API."""

from __future__ import annotations
