"""A toy archive, registered by the tests only: the proof that adding an archive needs no edit
outside its own files (docs/adding-an-archive.md walks through the same files).

The "Toy Photometry Service" serves a star's light curve as JSON at ``<base_url>/toy/lightcurve?
id=<star>[&since=<mjd>]``. Its package holds what every archive has: settings, a record model, a
source (with work units and watermarks), and a fake for the tests.
"""

from __future__ import annotations

from harvester.archives import ArchiveSpec, Token

SPEC = ArchiveSpec(
    name="toy",
    title="Toy photometry (tests only)",
    settings="tests.e2e.toy.settings:ToySettings",
    record="tests.e2e.toy.records:ToyRecord",
    source="tests.e2e.toy.source:ToySource",
    tokens=(Token("TOY_API_TOKEN", "Toy service token (optional)."),),
    fake="tests.e2e.toy.fake:ROUTES",
    order=40,
)
