"""The fake MAST API: ``/api/v0/invoke`` (CAOM searches and product lists), downloads, helpers.

What it serves (upstream-apis.md §2), over what :mod:`~harvester.testing._caom` holds:

- ``Mast.Caom.Filtered``, ``Mast.Caom.Filtered.Position`` and ``Mast.Caom.Cone``: TESS rows for
  any TIC id named in a ``target_name`` or ``obs_id`` filter and, for positional queries, every
  observation in the cone. Filters really filter: discrete values (strings, compared as MAST does)
  and ``{min, max}`` ranges; ``freeText`` wildcards; ``columns`` projects, ``COUNT_BIG(*)``
  counts. A ``Mast.Caom.Filtered`` query that names no TIC id or TESS obs_id (and has no
  position) finds nothing: the fake cannot enumerate the whole sky.
- ``Mast.Caom.Products``: the products of each obsid asked for.
- The JSON envelope MAST sends (ids as JSON ints although ``fields`` declare ``"string"``,
  ``_selected_``, ``paging``), or the ``extjs`` shape when ``format`` is not ``json``; long polling
  (``EXECUTING`` for the first polls of each (service, params, cachebreaker)); ``status: ERROR``
  with HTTP 200 for anything MAST would refuse.
- TESS file downloads, column metadata (``columnsconfig``) and the token check (``whoami``): with
  the invoke endpoint, the :data:`ROUTES` of the tess and mast archives.
- MAST's public S3 bucket (upstream-apis.md §4.2): an anonymous ``GET``/``HEAD`` of
  ``[/<bucket>]/tess/public/tid/sNNNN/xxxx/xxxx/xxxx/xxxx/<file>`` (path-style under any bucket
  name, or virtual-hosted, the bucket in the Host) answers the same bytes as the download endpoint;
  a key the layout does not give, or a file the fake does not hold, is S3's 404 ``NoSuchKey``.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio.to_thread
import orjson

from harvester.testing._asgi import FakeRequest, FakeRoute, Reply, json_reply, text_reply
from harvester.testing._caom import (
    CAOM_FIELDS,
    PRODUCT_FIELDS,
    MastContext,
    Row,
    cone_rows,
    observation_products,
    tess_rows,
)
from harvester.testing._sky import angular_sep_deg
from harvester.testing._tess import TessProduct, parse_product_filename, parse_tic

if TYPE_CHECKING:
    from harvester.testing._archive import FakeArchive

__all__ = [
    "PollBook",
    "columns_config",
    "handle_download",
    "handle_invoke",
    "mast_error",
    "mast_executing",
    "s3_error",
]

_SELECTED = ("_selected_", "boolean")
_DISTANCE = ("distance", "float")
_CAOM_NAMES = frozenset(name for name, _ in CAOM_FIELDS)
_NUMERIC = frozenset(name for name, kind in CAOM_FIELDS if kind in ("float", "int")) | {"obsid", "objID"}
_VOT_DATATYPE = {"string": "char", "float": "double", "int": "int", "boolean": "boolean"}
_SEPARATED = frozenset({"obs_collection", "project", "filters", "wavelength_region", "target_classification"})
_MAX_RADIUS_DEG = 10.0  # harvester's own guard on MAST cones (MAST documents no cap)
_DEFAULT_PAGESIZE = 1000
_SERVICES = ("Mast.Caom.Filtered", "Mast.Caom.Filtered.Position", "Mast.Caom.Cone", "Mast.Caom.Products")
_TESS_OBS_ID = re.compile(r"^tess\d{13}-s(\d{4})-(\d{16})-\d{4}-s$")


class MastError(ValueError):
    """A request MAST answers with ``status: ERROR``; the message becomes ``msg``."""


def mast_error(message: str) -> Reply:
    return json_reply({"status": "ERROR", "msg": message})


def mast_executing() -> Reply:
    return json_reply({"status": "EXECUTING", "msg": "", "data": []})


# --------------------------------------------------------------------------- request parameters


def _matches_value(row_value: Any, wanted: Any, column: str) -> bool:
    if row_value is None:
        return False
    if isinstance(wanted, Mapping):
        if column not in _NUMERIC:
            raise MastError(f"Range filter on non-numeric column: {column}")
        try:
            lo = float(wanted.get("min", -math.inf))
            hi = float(wanted.get("max", math.inf))
        except (TypeError, ValueError):
            raise MastError(f"Invalid range for {column}: {wanted!r}") from None
        return lo <= float(row_value) <= hi
    if isinstance(wanted, (str, int, float)) and not isinstance(wanted, bool):
        if column in _NUMERIC and not isinstance(row_value, str):
            try:
                return float(wanted) == float(row_value)
            except ValueError:
                return False
        if column in _SEPARATED and isinstance(row_value, str):
            return str(wanted) in row_value.split(";")
        return str(row_value) == str(wanted)
    raise MastError(f"Invalid filter value for {column}: {wanted!r}")


def _like(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"[%*]", pattern)
    return re.compile(".*".join(re.escape(p) for p in parts), re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class _Filter:
    column: str
    values: tuple[Any, ...]
    free_text: re.Pattern[str] | None

    def __call__(self, row: Mapping[str, Any]) -> bool:
        if not self.values and self.free_text is None:
            return True
        value = row.get(self.column)
        if self.free_text is not None and value is not None and self.free_text.fullmatch(str(value)):
            return True
        return any(_matches_value(value, wanted, self.column) for wanted in self.values)


def _parse_filters(raw: Any) -> list[_Filter]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise MastError("filters must be a list")
    out = []
    for item in raw:
        if not isinstance(item, Mapping) or not isinstance(item.get("paramName"), str):
            raise MastError(f"Invalid filter: {item!r}")
        column = item["paramName"]
        if column not in _CAOM_NAMES:
            raise MastError(f"Invalid column name: {column}")
        values = item.get("values", [])
        if not isinstance(values, list):
            raise MastError(f"Invalid values for {column}: must be a list")
        free = item.get("freeText")
        if free is not None and not isinstance(free, str):
            raise MastError(f"Invalid freeText for {column}")
        out.append(_Filter(column, tuple(values), _like(free) if free else None))
    return out


def _named_tess_rows(filters: list[_Filter], now_mjd: float) -> list[Row]:
    """TESS rows for the TIC ids and obs_ids that discrete filters name."""
    keys: dict[tuple[int, int | None], None] = {}
    for f in filters:
        for value in f.values:
            if not isinstance(value, str):
                continue
            if f.column == "target_name" and (tic := parse_tic(value)) is not None:
                keys[(tic, None)] = None
            elif f.column == "obs_id" and (m := _TESS_OBS_ID.match(value)) is not None:
                keys[(int(m.group(2)), int(m.group(1)))] = None
    rows: list[Row] = []
    for tic, sector in keys:
        rows.extend(r for r in tess_rows(tic, now_mjd) if sector is None or r["sequence_number"] == sector)
    return rows


def _parse_position(value: Any) -> tuple[float, float, float]:
    if not isinstance(value, str):
        raise MastError("position must be a string 'ra, dec, radius'")
    try:
        ra, dec, radius = (float(t) for t in value.replace(",", " ").split())
    except ValueError:
        raise MastError(f"Invalid position: {value!r}") from None
    return _check_cone(ra, dec, radius)


def _check_cone(ra: float, dec: float, radius: float) -> tuple[float, float, float]:
    if not all(math.isfinite(v) for v in (ra, dec, radius)) or not -90.0 <= dec <= 90.0:
        raise MastError(f"Invalid position: {ra}, {dec}")
    if not 0.0 < radius <= _MAX_RADIUS_DEG:
        raise MastError(f"Invalid radius {radius}: must be in (0, {_MAX_RADIUS_DEG}] degrees")
    return ra % 360.0, dec, radius


def _number(params: Mapping[str, Any], key: str) -> float:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise MastError(f"Missing or invalid parameter: {key}")
    try:
        return float(value)
    except ValueError:
        raise MastError(f"Missing or invalid parameter: {key}") from None


def _obsids(value: Any) -> list[int]:
    items: Iterable[Any]
    if isinstance(value, str):
        items = [v for v in value.split(",") if v.strip()]
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise MastError("Missing or invalid parameter: obsid")
    out = []
    for item in items:
        try:
            out.append(int(str(item).strip()))
        except ValueError:
            raise MastError(f"Invalid obsid: {item!r}") from None
    if not out:
        raise MastError("Missing or invalid parameter: obsid")
    return out


# --------------------------------------------------------------------------- envelope and paging


@dataclass
class _Table:
    fields: list[tuple[str, str]]
    rows: list[Row]


def _paging(page: int, pagesize: int, total: int, shown: int, lie: int) -> dict[str, int]:
    return {
        "page": page,
        "pageSize": pagesize,
        "pagesFiltered": math.ceil(total / pagesize),
        "rows": shown,
        "rowsFiltered": total + lie,
        "rowsTotal": total + lie,
    }


def _render(table: _Table, request: Mapping[str, Any], lie: int) -> Reply:
    pagesize = request.get("pagesize", _DEFAULT_PAGESIZE)
    page = request.get("page", 1)
    if isinstance(pagesize, bool) or not isinstance(pagesize, int) or pagesize < 1:
        raise MastError(f"Invalid pagesize: {pagesize!r}")
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise MastError(f"Invalid page: {page!r}")
    chunk = table.rows[(page - 1) * pagesize : page * pagesize]
    paging = _paging(page, pagesize, len(table.rows), len(chunk), lie)
    if request.get("format") == "json":
        return json_reply(
            {
                "status": "COMPLETE",
                "msg": "",
                "data": chunk,
                "fields": [{"name": n, "type": t} for n, t in table.fields],
                "paging": paging,
            }
        )
    names = [n for n, _ in table.fields]
    extjs = {
        "status": "COMPLETE",
        "msg": "",
        "data": {
            "name": "NewDataSet",
            "Tables": [
                {
                    "name": "Table",
                    "ExtendedProperties": {"Paging": paging},
                    "Columns": [
                        {"text": n, "dataIndex": n, "ExtendedProperties": {"vot.datatype": _VOT_DATATYPE[t]}}
                        for n, t in table.fields
                    ],
                    "Fields": [{"name": n, "type": t} for n, t in table.fields],
                    "Rows": [[row.get(n) for n in names] for row in chunk],
                }
            ],
            "ExtendedProperties": {},
        },
    }
    return json_reply(extjs)


def _project(columns: Any, fields: list[tuple[str, str]], rows: list[Row]) -> _Table:
    if columns is None or (isinstance(columns, str) and columns.strip() in ("", "*")):
        return _Table(fields, [{n: r.get(n) for n, _ in fields} for r in rows])
    if not isinstance(columns, str):
        raise MastError("columns must be a string")
    if columns.replace(" ", "").upper() == "COUNT_BIG(*)":
        return _Table([("Column1", "string")], [{"Column1": len(rows)}])
    wanted = [c.strip() for c in columns.split(",") if c.strip()]
    known = dict(fields)
    for c in wanted:
        if c not in known:
            raise MastError(f"Invalid column name: {c}")
    chosen = [(c, known[c]) for c in wanted]
    return _Table(chosen, [{n: r.get(n) for n, _ in chosen} for r in rows])


# --------------------------------------------------------------------------- long polling


class PollBook:
    """Counts polls per (service, params, cachebreaker): the first ``polls`` answers are EXECUTING."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def executing(self, request: Mapping[str, Any], polls: int) -> bool:
        breaker = request.get("cachebreaker", request.get("cacheBreaker"))
        key = orjson.dumps(
            [request.get("service"), request.get("params"), breaker], option=orjson.OPT_SORT_KEYS
        ).decode()
        with self._lock:
            if request.get("clearcache") is True:
                self._seen.pop(key, None)
            count = self._seen.get(key, 0) + 1
            self._seen[key] = count
        return count <= polls


# --------------------------------------------------------------------------- the handlers


def parse_invoke_request(text: str | None) -> Mapping[str, Any]:
    """The ``request`` JSON object, or MastError."""
    if text is None:
        raise MastError("No request given: POST a form field 'request' holding a JSON object")
    try:
        request = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MastError(f"Could not parse request: {exc}") from None
    if not isinstance(request, dict):
        raise MastError("request must be a JSON object")
    return request


async def handle_invoke(request: Mapping[str, Any], ctx: MastContext) -> Reply:
    """Answer one COMPLETE invoke request (long polling is the caller's business)."""
    service = request.get("service")
    params = request.get("params", {})
    try:
        if service not in _SERVICES:
            raise MastError(f"Unknown service: {service!r}")
        if not isinstance(params, Mapping):
            raise MastError("params must be a JSON object")
        if service == "Mast.Caom.Products":
            rows: list[Row] = []
            for obsid in _obsids(params.get("obsid")):
                rows.extend(await observation_products(obsid, ctx))
            fields = [*PRODUCT_FIELDS, _SELECTED]
            return _render(_Table(fields, [r | {"_selected_": None} for r in rows]), request, ctx.lie_rows)
        table = await anyio.to_thread.run_sync(_caom_table, str(service), params, ctx)
        return _render(table, request, ctx.lie_rows)
    except MastError as exc:
        return mast_error(str(exc))


def _caom_table(service: str, params: Mapping[str, Any], ctx: MastContext) -> _Table:
    filters = _parse_filters(params.get("filters"))
    cone: tuple[float, float, float] | None = None
    if service == "Mast.Caom.Cone":
        cone = _check_cone(_number(params, "ra"), _number(params, "dec"), _number(params, "radius"))
        filters = []
    elif service == "Mast.Caom.Filtered.Position":
        cone = _parse_position(params.get("position"))
    elif not filters:
        raise MastError("Mast.Caom.Filtered needs at least one filter")

    found: dict[int, tuple[Row, float | None]] = {}
    if cone is not None:
        for row, away in cone_rows(ctx.seed, *cone, ctx.now_mjd):
            found[row["obsid"]] = (row, away)
    for row in _named_tess_rows(filters, ctx.now_mjd):
        if row["obsid"] in found:
            continue
        if cone is None:
            found[row["obsid"]] = (row, None)
        else:
            sep = angular_sep_deg(cone[0], cone[1], row["s_ra"], row["s_dec"])
            if sep <= cone[2]:
                found[row["obsid"]] = (row, sep)
    kept = [(row, dist) for row, dist in found.values() if all(f(row) for f in filters)]
    kept.sort(key=lambda rd: (rd[1] or 0.0, rd[0]["obsid"]))
    fields = list(CAOM_FIELDS)
    if cone is not None:
        fields.append(_DISTANCE)
        for row, dist in kept:
            row["distance"] = (dist or 0.0) * 3600.0
    fields.append(_SELECTED)
    rows = [row | {"_selected_": None} for row, _ in kept]
    return _project(params.get("columns"), fields, rows)


def handle_download(uri: str | None, ctx: MastContext) -> TessProduct | Reply:
    """The product a download URI names, or the 404 reply for anything the fake does not serve."""
    prefix = "mast:TESS/product/"
    if uri and uri.startswith(prefix):
        product = parse_product_filename(uri[len(prefix) :], ctx.now_mjd)
        if product is not None:
            return product
    return text_reply(404, f"File not found: {uri}")


# --------------------------------------------------------------------------- columnsconfig

_COLUMN_TEXT = {
    "dataproduct_type": "Product Type", "calib_level": "Calibration Level", "obs_collection": "Mission",
    "obs_id": "Observation ID", "target_name": "Target Name", "s_ra": "RA", "s_dec": "Dec",
    "t_min": "Start Time", "t_max": "End Time", "t_exptime": "Exposure Length",
    "wavelength_region": "Waveband", "filters": "Filters", "em_min": "Min. Wavelength",
    "em_max": "Max. Wavelength", "target_classification": "Target Classification",
    "obs_title": "Observation Title", "t_obs_release": "Release Date", "instrument_name": "Instrument",
    "proposal_pi": "Principal Investigator", "proposal_id": "Proposal ID", "project": "Project",
    "s_region": "s_region", "jpegURL": "jpegURL", "dataURL": "Data URL", "obsid": "Product Group ID",
    "objID": "Object ID", "sequence_number": "Sequence Number", "provenance_name": "Provenance Name",
    "distance": "Distance (\")",
}  # fmt: skip
_DATATYPES = {"obsid": "long", "objID": "long", "distance": "float"}


_PRODUCT_TEXT = {
    "obsID": "Product Group ID", "obs_collection": "Mission", "dataproduct_type": "Product Type",
    "obs_id": "Observation ID", "description": "Description", "type": "Type", "dataURI": "Data URI",
    "productType": "Product Type", "productGroupDescription": "Product Group",
    "productSubGroupDescription": "Product Subgroup", "productDocumentationURL": "Documentation",
    "project": "Project", "prvversion": "Pipeline Version", "productFilename": "Filename",
    "size": "Size", "parent_obsid": "Parent Product Group ID",
}  # fmt: skip
_PRODUCT_DATATYPES = {"obsID": "long", "size": "long", "parent_obsid": "long"}
PRODUCTS_CONFIG_ID = "Mast.Caom.Products"


def columns_config(config_id: str | None = None) -> dict[str, Any]:
    """A columnsconfig answer shaped like MAST's (``vot.datatype`` decides discrete or range filters).

    ``colConfigId=Mast.Caom.Products`` (astroquery asks for it before its first product list) gets
    the product columns; any other id (``Mast.Caom.Cone``, the ``Filtered`` services) the CAOM
    observation columns.
    """
    out: dict[str, Any] = {"_selected_": {"text": "selected", "add": True, "type": "boolean", "hidden": True}}
    if config_id == PRODUCTS_CONFIG_ID:
        for name, kind in PRODUCT_FIELDS:
            entry: dict[str, Any] = {
                "text": _PRODUCT_TEXT[name],
                "vot.datatype": _PRODUCT_DATATYPES.get(name, _VOT_DATATYPE[kind]),
                "vot.ID": name,
                "vot.name": name,
            }
            if kind == "string":
                entry["vot.arraysize"] = "*"
            out[name] = entry
        return out
    for name, kind in [*CAOM_FIELDS, _DISTANCE]:
        entry = {
            "text": _COLUMN_TEXT[name],
            "vot.datatype": _DATATYPES.get(name, _VOT_DATATYPE[kind]),
            "vot.ID": name,
            "vot.name": name,
        }
        if kind == "string":
            entry["vot.arraysize"] = "*"
        if name in _SEPARATED:
            entry["separator"] = ";"
        out[name] = entry
    return out


# --------------------------------------------------------------------------- the routes


def _context(archive: FakeArchive, req: FakeRequest) -> MastContext:
    return MastContext(archive.seed, archive.now_mjd, archive.tess_cadences, archive.lightcurve, req.lie_rows)


def _parse_invoke(req: FakeRequest) -> None:
    form = parse_qs(req.body.decode("utf-8", "replace"), keep_blank_values=True) if req.body else {}
    text = (form.get("request") or req.params.get("request") or [None])[0]
    try:
        req.parsed = parse_invoke_request(text)
        req.params = dict(req.parsed)
        req.subjects += (str(req.parsed.get("service", "")),)
    except MastError as exc:
        req.error = str(exc)
        req.params = {"request": text}


async def _invoke(req: FakeRequest, archive: FakeArchive) -> Reply:
    if req.parsed is None:
        return mast_error(req.error or "No request given")
    if archive.polls.executing(req.parsed, archive.executing_polls):
        return mast_executing()
    return await handle_invoke(req.parsed, _context(archive, req))


def _parse_download(req: FakeRequest) -> None:
    uri = (req.params.get("uri") or [""])[0]
    req.subjects += (uri, uri.rsplit("/", 1)[-1])


async def _download(req: FakeRequest, archive: FakeArchive) -> Reply:
    found = handle_download((parse_qs(req.query).get("uri") or [""])[0], _context(archive, req))
    if isinstance(found, Reply):
        return found
    data = await archive.lightcurve(found)
    disposition = f'attachment; filename="{req.subjects[-1]}"'
    return Reply(200, data, "application/octet-stream", [("Content-Disposition", disposition)])


_S3_KEY = re.compile(r"/tess/public/tid/s(\d{4})/(\d{4})/(\d{4})/(\d{4})/(\d{4})/([^/]+)$")


def s3_error(status: int, code: str, message: str, resource: str) -> Reply:
    """An S3 error document (``<Error><Code>…``), as the bucket answers."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message><Resource>{resource}</Resource></Error>"
    )
    return Reply(status, body.encode(), "application/xml")


async def _s3_object(req: FakeRequest, archive: FakeArchive) -> Reply:
    match = _S3_KEY.search(req.path)
    assert match is not None  # the route's pattern
    sector, name = int(match.group(1)), match.group(6)
    tic = int("".join(match.group(i) for i in range(2, 6)))
    found = parse_product_filename(name, archive.now_mjd)
    if found is None or (found.tic_id, found.sector) != (tic, sector):
        return s3_error(404, "NoSuchKey", "The specified key does not exist.", req.path)
    data = await archive.lightcurve(found)
    etag = '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'
    return Reply(200, data, "binary/octet-stream", [("ETag", etag), ("Accept-Ranges", "bytes")])


def _parse_columnsconfig(req: FakeRequest) -> None:
    if req.body:  # astroquery POSTs colConfigId=<service> as a form body
        req.params = dict(parse_qs(req.body.decode("utf-8", "replace"), keep_blank_values=True))


async def _columnsconfig(req: FakeRequest, archive: FakeArchive) -> Reply:
    config_id = (req.params.get("colConfigId") or req.params.get("colconfigid") or [None])[0]
    return json_reply(columns_config(config_id))


async def _whoami(req: FakeRequest, archive: FakeArchive) -> Reply:
    scheme, _, token = req.headers.get("authorization", "").partition(" ")
    cookie = req.headers.get("cookie", "")
    signed_in = (scheme.lower() == "token" and bool(token.strip())) or "mast_token=" in cookie
    return json_reply({"anon": not signed_in})


#: The MAST API (CAOM searches, products, TESS files, column metadata, token check) and its public
#: S3 bucket's TESS files, as the ``fake`` of the tess and mast archives' registry entries (one
#: server, shared).
ROUTES = (
    FakeRoute("/api/v0/invoke", ("GET", "POST"), _invoke, _parse_invoke),
    FakeRoute("/api/v0.1/Download/file", ("GET", "HEAD"), _download, _parse_download),
    FakeRoute("/columnsconfig", ("GET", "POST"), _columnsconfig, _parse_columnsconfig),
    FakeRoute("/whoami", ("GET", "HEAD"), _whoami),
    FakeRoute("/tess/public/tid/", ("GET", "HEAD"), _s3_object, pattern=_S3_KEY),
)
