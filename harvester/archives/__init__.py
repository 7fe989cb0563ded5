"""The archives harvester knows, one package each, and their registry.

::

    from harvester import archives
    archives.names()                 # ("ztf", "tess", "mast")
    archives.source_class("ztf")     # ZtfSource, imported on first use
    archives.register(ArchiveSpec(name="gaia", ...))   # a fourth archive, from anywhere

Each package here (``ztf/``, ``tess/``, ``mast/``) declares its :class:`ArchiveSpec` as ``SPEC`` in
its ``__init__.py``; the registry finds them on first use. Everything the rest of harvester knows
about an archive comes from its entry: the CLI's ``--source`` choices, the ``data_sources.<name>``
settings block and its token variables, the record model, the work-unit planning (on the Source
class), the fake archive's routes, the feature and plot commands, the generated docs.

An entry names its classes by import path (``"module:attr"``), so naming the archives (CLI
choices, ``--help``) never imports an archive's fetch code (numpy, astropy, the FITS reader).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from harvester.archives.base import Source
    from harvester.records import BaseRecord

__all__ = [
    "ArchiveSpec",
    "Token",
    "load",
    "names",
    "on_change",
    "record_model",
    "register",
    "settings_model",
    "source_class",
    "spec",
    "specs",
    "unregister",
]


@dataclass(frozen=True)
class Token:
    """An archive token read from the environment or ``.env`` under its unprefixed name."""

    env: str
    description: str


@dataclass(frozen=True)
class ArchiveSpec:
    """One archive, as the rest of harvester sees it.

    :param name: the ``--source`` choice, the output sub-folder and ``data_sources.<name>``.
    :param title: a few words naming it (the description of its settings block).
    :param settings: ``"module:Class"`` of the ``data_sources.<name>`` block, a subclass of
        :class:`harvester.archives.common.ArchiveSettings` (pydantic only: cheap to import).
    :param record: ``"module:Class"`` of its record model (a :class:`~harvester.records.BaseRecord`).
    :param source: ``"module:Class"`` of its :class:`~harvester.archives.base.Source`.
    :param tokens: the environment variables holding its token, in order of preference (the
        first one set is used); each becomes a secret setting that is never logged or written.
    :param fake: ``"module:attr"`` of its fake-archive routes (a sequence of
        :class:`harvester.testing.FakeRoute`), answered by :class:`harvester.testing.FakeArchive`
        for ``--offline`` and the tests; None for an archive without a fake.
    :param features: ``"module:function"`` building its feature table (``harvester features``).
    :param plot: ``"module:function"`` drawing its quick-look plots (``harvester plot``).
    :param order: where it sorts in ``--source all`` and in reports (lower first).
    """

    name: str
    title: str
    settings: str
    record: str
    source: str
    tokens: tuple[Token, ...] = ()
    fake: str | None = None
    features: str | None = None
    plot: str | None = None
    order: int = 100

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or not self.name.islower() or self.name == "all":
            raise ValueError(f"archive name {self.name!r}: use a lower-case identifier other than 'all'")


_REGISTRY: dict[str, ArchiveSpec] = {}
_LISTENERS: list[Callable[[], None]] = []
_discovered = False


def _discover() -> None:
    """Register the ``SPEC`` of every package in this folder (once)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    found: list[ArchiveSpec] = []
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg:
            entry = getattr(importlib.import_module(f"{__name__}.{info.name}"), "SPEC", None)
            if isinstance(entry, ArchiveSpec):
                found.append(entry)
    for entry in sorted(found, key=lambda e: (e.order, e.name)):
        _REGISTRY.setdefault(entry.name, entry)


def _changed() -> None:
    for listener in list(_LISTENERS):
        listener()


def register(entry: ArchiveSpec) -> ArchiveSpec:
    """Add an archive, or replace the one of the same name; settings learn its block at once."""
    _discover()
    _REGISTRY[entry.name] = entry
    ordered = sorted(_REGISTRY.values(), key=lambda e: e.order)  # stable: ties keep their order
    _REGISTRY.clear()
    _REGISTRY.update((e.name, e) for e in ordered)
    _changed()
    return entry


def unregister(name: str) -> None:
    """Remove an archive (KeyError if unknown)."""
    _discover()
    del _REGISTRY[name]
    _changed()


def on_change(listener: Callable[[], None]) -> None:
    """Call ``listener`` after every :func:`register` / :func:`unregister` (settings rebuild)."""
    _LISTENERS.append(listener)


def names() -> tuple[str, ...]:
    """Every archive's name, in order (the order of ``--source all``)."""
    _discover()
    return tuple(_REGISTRY)


def specs() -> tuple[ArchiveSpec, ...]:
    """Every archive's entry, in order."""
    _discover()
    return tuple(_REGISTRY.values())


def spec(name: str) -> ArchiveSpec:
    """The entry of ``name``; KeyError for an unknown archive."""
    _discover()
    return _REGISTRY[name]


def load(path: str) -> Any:
    """The object a ``"module:attr"`` path names, imported now."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def source_class(name: str) -> type[Source[Any]]:
    """The Source class of ``name``, imported now."""
    cls: type[Source[Any]] = load(spec(name).source)
    return cls


def record_model(name: str) -> type[BaseRecord]:
    """The record model of ``name``, imported now."""
    model: type[BaseRecord] = load(spec(name).record)
    return model


def settings_model(name: str) -> type[BaseModel]:
    """The ``data_sources.<name>`` model, imported now."""
    model: type[BaseModel] = load(spec(name).settings)
    return model
