"""The archives harvester knows, one package each, and their registry.

::

    from harvester import archives
    archives.names()                 # ("ztf", "tess", "mast")
    archives.source_class("ztf")     # ZtfSource, imported on first use

Each entry names its :class:`~harvester.archives.base.Source` by import path, so naming the
archives (CLI choices, ``--help``, settings checks) never imports an archive's code (numpy,
astropy, the FITS reader). The rest of the code asks this registry instead of listing archives.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harvester.archives.base import Source

__all__ = ["ArchiveSpec", "names", "register", "source_class", "spec"]


@dataclass(frozen=True)
class ArchiveSpec:
    """One archive: its name (CLI choice, output folder, ``data_sources.<name>``), a title for
    help texts, and where its Source class lives (``"module:Class"``)."""

    name: str
    title: str
    source: str


_REGISTRY: dict[str, ArchiveSpec] = {}


def register(entry: ArchiveSpec) -> ArchiveSpec:
    """Add an archive (or replace one of the same name)."""
    _REGISTRY[entry.name] = entry
    return entry


def names() -> tuple[str, ...]:
    """Every archive's name, in registration order (the order of ``--source all``)."""
    return tuple(_REGISTRY)


def spec(name: str) -> ArchiveSpec:
    """The entry of ``name``; KeyError for an unknown archive."""
    return _REGISTRY[name]


def source_class(name: str) -> type[Source[Any]]:
    """The Source class of ``name``, imported now."""
    module, _, attr = spec(name).source.partition(":")
    cls: type[Source[Any]] = getattr(importlib.import_module(module), attr)
    return cls


register(ArchiveSpec("ztf", "ZTF light curves (IRSA)", "harvester.archives.ztf.source:ZtfSource"))
register(ArchiveSpec("tess", "TESS light curves (MAST)", "harvester.archives.tess.source:TessSource"))
register(ArchiveSpec("mast", "MAST observation metadata", "harvester.archives.mast.source:MastSource"))
