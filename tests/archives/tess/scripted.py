"""A scripted MAST and its S3 bucket for the S3-route tests: one or both real SPOC light curves.

:class:`ScriptedArchive` is an ``httpx.MockTransport`` handler. MAST (``mast.stsci.edu``) answers
the TESS search, the product list (with each file's real ``size``) and ``Download/file``; the
bucket answers a GET of a key in the documented layout, virtual-hosted at
``stpubdata.s3.amazonaws.com`` or path-style at any other host, with what ``s3`` says (the real
bytes by default). Every request is kept, so tests can read what was sent where.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx

DATA = Path(__file__).resolve().parents[2] / "data" / "tess"
S58 = "tess2022302161335-s0058-0000000021132157-0247-s_lc.fits"  # TIC 21132157, sector 58
S70 = "tess2023263165758-s0070-0000000278892590-0265-s_lc.fits"  # TIC 278892590, sector 70
FILES = {name: (DATA / name).read_bytes() for name in (S58, S70)}
KEYS = {
    S58: f"tess/public/tid/s0058/0000/0000/2113/2157/{S58}",
    S70: f"tess/public/tid/s0070/0000/0002/7889/2590/{S70}",
}
TICS = {S58: 21132157, S70: 278892590}
OBSIDS = {S58: 70000000058, S70: 70000000070}
MAST_HOST = "mast.stsci.edu"
AWS_HOST = "stpubdata.s3.amazonaws.com"

#: What the bucket answers for a key: (file name, how many times this key was asked) -> response.
S3Answer = Callable[[str, int], httpx.Response]


def real_object(name: str, n: int) -> httpx.Response:
    return httpx.Response(200, content=FILES[name], headers={"Content-Type": "binary/octet-stream"})


def s3_error(status: int, code: str) -> httpx.Response:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>x</Message></Error>'
    return httpx.Response(status, content=body.encode(), headers={"Content-Type": "application/xml"})


def envelope(rows: list[dict[str, Any]]) -> dict[str, Any]:
    paging = {"page": 1, "pageSize": 50000, "pagesFiltered": 1, "rows": len(rows)}
    paging |= {"rowsFiltered": len(rows), "rowsTotal": len(rows)}
    fields = [{"name": k, "type": "string"} for k in rows[0]] if rows else []
    return {"status": "COMPLETE", "msg": "", "data": rows, "fields": fields, "paging": paging}


class ScriptedArchive:
    """MAST with the real light curves named in ``files``, and its bucket answering ``s3``."""

    def __init__(self, files: tuple[str, ...] = (S58,), s3: S3Answer = real_object) -> None:
        self.files = files
        self.s3 = s3
        self.requests: list[httpx.Request] = []
        self.asked: dict[str, int] = {}

    def tess(self, **block: Any) -> dict[str, Any]:
        """Harvest settings for these files' TIC ids, quick retries, ``block`` merged in."""
        tess = {
            "query": {"tic_ids": [TICS[f] for f in self.files]},
            "retries": {"attempts": 2, "backoff_base": 0.0},
        }
        return {"data_sources": {"tess": tess | block}}

    def to(self, host: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.host == host]

    @property
    def s3_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if "/tess/public/tid/" in r.url.path]

    @property
    def mast_downloads(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == "/api/v0.1/Download/file"]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if "/tess/public/tid/" in path:
            key = path.split("/", 2)[2] if request.url.host != AWS_HOST else path[1:]
            name = next((f for f in self.files if KEYS[f] == key), None)
            if name is None:
                return s3_error(404, "NoSuchKey")
            self.asked[name] = self.asked.get(name, 0) + 1
            return self.s3(name, self.asked[name])
        if request.url.host != MAST_HOST:
            return httpx.Response(404)
        if path == "/api/v0/invoke":
            body = json.loads(parse_qs(request.content.decode())["request"][0])
            if body["service"].startswith("Mast.Caom.Filtered"):
                names = next(
                    f["values"] for f in body["params"]["filters"] if f["paramName"] == "target_name"
                )
                found = [f for f in self.files if str(TICS[f]) in names]
                rows = [
                    {"obsid": OBSIDS[f], "obs_id": f.removesuffix("_lc.fits"), "_selected_": None}
                    for f in found
                ]
                return httpx.Response(200, json=envelope(rows))
            obsids = {int(o) for o in str(body["params"]["obsid"]).split(",")}
            rows = [
                {
                    "obsID": OBSIDS[f],
                    "obs_collection": "TESS",
                    "productFilename": f,
                    "productSubGroupDescription": "LC",
                    "dataURI": f"mast:TESS/product/{f}",
                    "obs_id": f.removesuffix("_lc.fits"),
                    "size": len(FILES[f]),
                    "_selected_": None,
                }
                for f in self.files
                if OBSIDS[f] in obsids
            ]
            return httpx.Response(200, json=envelope(rows))
        if path == "/api/v0.1/Download/file":
            uri = request.url.params["uri"]
            return httpx.Response(200, content=FILES[uri.removeprefix("mast:TESS/product/")])
        return httpx.Response(404)
