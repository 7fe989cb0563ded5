"""MAST's public S3 copy of TESS light curves: a product's key, a key's URL, and when to use it.

Facts (``../shared/docs/upstream-apis.md`` §4.2, §2.7): MAST keeps public copies of TESS products in
the anonymous bucket ``stpubdata``. A SPOC light curve's key is the sector, then the TIC id
zero-padded to 16 digits and split into four 4-digit folders, then the product file name::

    tess/public/tid/s0027/0000/0004/6997/9925/tess2020186164531-s0027-0000000469979925-0189-s_lc.fits

**Choice: the documented layout, not MAST's ``path_lookup``.** astroquery asks
``/api/v0.1/path_lookup/`` for each product's key (GETs of 50 URIs each), which costs
MAST requests from MAST's own budget (10/s, shared with the searches) before a single byte moves.
The layout is free and offline: the key follows from the file name alone (which carries the TIC id
and the sector), and the S3 GET is the check: a key that is not there (404, or 403 from a bucket
that hides its listing) sends that product to MAST over HTTPS. Only names in the SPOC layout of a
``mast:TESS/product/`` URI get a key; HLSP light curves (QLP, TESS-SPOC), which have no cloud copy,
go to MAST directly.

**Anonymous.** Public-bucket reads are plain unsigned HTTPS GETs, so they go through harvester's
own HTTP session (retries, timeouts, size cap, a per-host budget) with no S3 library; the session
used for them carries no token (:meth:`harvester.io.http.HttpSession.anonymous`).

**Where.** ``https://<bucket>.s3.amazonaws.com/<key>`` (virtual-hosted, AWS's public endpoint) by
default; with an endpoint (``data_sources.tess.cloud.endpoint_url``, else the standard
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` variables) ``<endpoint>/<bucket>/<key>``
(path-style: mirrors, MinIO, moto, the fake archive).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from harvester.archives.tess.settings import TessSettings
from harvester.io.s3 import ENDPOINT_VARIABLES, CloudRoute, endpoint_from_env

__all__ = [
    "ENDPOINT_VARIABLES",
    "MAST_HOST",
    "PRODUCT_PREFIX",
    "SPOC_NAME",
    "CloudRoute",
    "cloud_route",
    "product_key",
    "s3_key",
]

#: MAST's own host: the bucket is MAST's copy of what this host serves.
MAST_HOST = "mast.stsci.edu"
#: the URI of a TESS mission product: this prefix, then the product's file name
PRODUCT_PREFIX = "mast:TESS/product/"
#: tess{yyyydddhhmmss}-s{sctr}-{tid:016d}-{scid}-{cr}_lc.fits, or ..._fast-lc.fits (upstream-apis.md §3.5)
SPOC_NAME = re.compile(r"^tess\d{13}-s(\d{4})-(\d{16})-\d{4}-[xsab]_(?:fast-)?lc\.fits$")


def s3_key(tic_id: int, sector: int, filename: str) -> str:
    """The bucket key of a TESS product: ``tess/public/tid/sNNNN/xxxx/xxxx/xxxx/xxxx/<file>``."""
    if not 1 <= tic_id < 10**16 or not 1 <= sector < 10**4:
        raise ValueError(f"no S3 key for TIC {tic_id} sector {sector}")
    tic = f"{tic_id:016d}"
    folders = "/".join(tic[i : i + 4] for i in range(0, 16, 4))
    return f"tess/public/tid/s{sector:04d}/{folders}/{filename}"


def product_key(product: Mapping[str, Any]) -> str | None:
    """The key of a product's cloud copy, or None when it has none: only a SPOC light curve named
    in the SPOC layout by a ``mast:TESS/product/<file name>`` URI (not an HLSP, not another
    collection) is in the bucket's ``tess/public/tid`` tree. TIC id and sector come from the name."""
    name = str(product.get("productFilename") or "")
    if str(product.get("dataURI") or "") != PRODUCT_PREFIX + name:
        return None
    match = SPOC_NAME.fullmatch(name)
    if match is None:
        return None
    sector, tic = int(match.group(1)), int(match.group(2))
    if sector < 1 or tic < 1:
        return None
    return s3_key(tic, sector, name)


def cloud_route(config: TessSettings, environ: Mapping[str, str] | None = None) -> CloudRoute | None:
    """The S3 route a TESS run uses, or None for MAST over HTTPS only.

    None when ``cloud.enabled`` is off, and when ``base_url`` is not MAST's own server (a mirror,
    a test server) and no S3 endpoint is configured: AWS's bucket is MAST's copy, not the mirror's.
    """
    cloud = config.cloud
    if not cloud.enabled:
        return None
    endpoint = cloud.endpoint_url or endpoint_from_env(os.environ if environ is None else environ)
    if endpoint is None and (urlsplit(config.base_url).hostname or "").lower() != MAST_HOST:
        return None
    return CloudRoute(cloud.bucket, endpoint, signed=cloud.credentials == "aws")
