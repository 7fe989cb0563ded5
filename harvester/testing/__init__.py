"""A deterministic fake of IRSA (ZTF light curves) and MAST (CAOM, products, TESS files, and the
TESS files of its public S3 bucket).

The fake archive is one ASGI application, used three ways:

- in-process: ``httpx.AsyncClient(transport=httpx.ASGITransport(app=FakeArchive()))`` answers any
  host, so it stands in for irsa.ipac.caltech.edu and mast.stsci.edu at once (``--offline``);
- on loopback: :func:`running_server` (tests, benchmarks) or :func:`serve` (``harvester archive
  serve``) runs it under uvicorn on 127.0.0.1;
- for failure tests: :meth:`FakeArchive.add_fault` injects :class:`Fault` s (status codes with
  Retry-After, HTML or VOTable error pages, truncated bodies, slow bodies, resets, MAST errors,
  endless EXECUTING, lying paging, redirects) and :meth:`FakeArchive.set_down` an outage.

It records every request (:attr:`FakeArchive.requests`) and counts server-side rate-limit
violations per host (:attr:`FakeArchive.violations`).

Each archive's fake is a tuple of :class:`FakeRoute` (a path suffix, methods, an async answer
from a :class:`FakeRequest` to a :class:`Reply`) named by the ``fake`` field of its registry entry;
:class:`FakeArchive` answers the routes of every archive registered when it is made.

Modules: ``_archive`` (ASGI app, faults, pacing, log), ``_asgi`` (requests, replies, routes),
``_irsa`` (ZTF API), ``_mast`` (MAST API: filters, paging, polling, handlers, routes), ``_caom``
(what MAST holds: CAOM observations and their products), ``_tess`` (the TIC universe and TESS
naming), ``_fits_gen`` (SPOC FITS files), ``_sky`` (seeded grids), ``_server`` (uvicorn).
"""

from __future__ import annotations

from harvester.testing._archive import FakeArchive, Fault
from harvester.testing._asgi import FakeRequest, FakeRoute, Reply, json_reply, text_reply
from harvester.testing._fits_gen import make_spoc_lightcurve
from harvester.testing._irsa import IRSA_COLUMNS
from harvester.testing._server import running_server, serve

__all__ = [
    "IRSA_COLUMNS",
    "FakeArchive",
    "FakeRequest",
    "FakeRoute",
    "Fault",
    "Reply",
    "json_reply",
    "make_spoc_lightcurve",
    "running_server",
    "serve",
    "text_reply",
]
