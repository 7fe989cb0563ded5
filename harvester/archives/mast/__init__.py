"""MAST CAOM observation metadata."""

from __future__ import annotations
