"""The archives harvester knows, one package each, and their registry."""

from __future__ import annotations
