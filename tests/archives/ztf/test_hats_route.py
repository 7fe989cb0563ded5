"""The hats route (``data_sources.ztf.route: hats``): ZTF light curves from a data release's HATS
catalog on S3, read through harvester's own anonymous HTTP session.

The real-data tests serve the committed fixture (IRSA's DR5 sample in DR24's layout,
tests/data/ztf_hats) from the fake archive's bucket, in-process; every epoch harvested is compared
with the same Parquet values read independently with pyarrow. The offline tests use the fake sky's
own release, which holds the same objects as the fake light-curve API.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import harvester
from harvester.archives.ztf import hats as hats_module
from harvester.archives.ztf.records import ZtfRecord
from harvester.testing import FakeArchive, Fault
from harvester.testing._hats import load_folder
from tests.conftest import REPO

COLLECTION = REPO / "tests" / "data" / "ztf_hats" / "ztf_dr5_sample_lc-hats"
PREFIX = "ztf/test/dr5/hats"
CATALOG_URL = f"s3://ipac-irsa-ztf/{PREFIX}"
CONE = {"ra": 20.25, "dec": -28.07, "radius": 0.1667}
FILTERS = {1: "zg", 2: "zr", 3: "zi"}


def reference(
    cones: list[dict[str, float]],
    *,
    bands: set[int] | None = None,
    hmjd_range: tuple[float, float] | None = None,
    mask: int = 0,
) -> dict[tuple[str, float], dict[str, Any]]:
    """The epochs a selection holds, read from the fixture's leaf files with plain pyarrow and math
    (no harvester code): ``(objectid, hmjd) → the epoch's values``, as Python floats of the float32s."""
    found: dict[tuple[str, float], dict[str, Any]] = {}
    for path in sorted((COLLECTION / "ztf_dr5_sample_lc-hats" / "dataset").rglob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            if bands and row["filterid"] not in bands:
                continue
            if not any(
                separation(row["objra"], row["objdec"], c["ra"], c["dec"]) <= c["radius"] for c in cones
            ):
                continue
            curve = row["lightcurve"]
            for i, hmjd in enumerate(curve["hmjd"]):
                if hmjd_range and not hmjd_range[0] <= hmjd <= hmjd_range[1]:
                    continue
                if curve["catflags"][i] & mask:
                    continue
                found[(str(row["objectid"]), hmjd)] = {
                    "filter": FILTERS[row["filterid"]],
                    "field": row["fieldid"],
                    "ccdid": row["rcid"] // 4 + 1,
                    "qid": row["rcid"] % 4 + 1,
                    "objra": row["objra"],
                    "objdec": row["objdec"],
                    **{k: curve[k][i] for k in ("mag", "magerr", "clrcoeff", "catflags")},
                }
    return found


def separation(ra: float, dec: float, ra0: float, dec0: float) -> float:
    a, b, c, d = map(math.radians, (ra, dec, ra0, dec0))
    h = math.sin((b - d) / 2) ** 2 + math.cos(b) * math.cos(d) * math.sin((a - c) / 2) ** 2
    return math.degrees(2 * math.asin(math.sqrt(h)))


@pytest.fixture
def archive() -> FakeArchive:
    """The fake archive, its bucket also holding the committed DR5 fixture under PREFIX."""
    fake = FakeArchive()
    fake.bucket_files.update(load_folder(COLLECTION, PREFIX))
    return fake


def retrying(attempts: int) -> dict[str, Any]:
    block = hats_settings()
    block["ztf"]["retries"] = {"attempts": attempts, "backoff_base": 0.0}
    return block


def hats_settings(**irsa: Any) -> dict[str, Any]:
    query = {"cone_search": CONE, "mjd_range": None, "filters": [], **irsa}
    return {"ztf": {"route": "hats", "hats": {"catalog_url": CATALOG_URL}, "irsa": query}}


async def harvest(archive: FakeArchive, out: Path, data_sources: dict[str, Any], **kw: Any) -> Any:
    report = await harvester.harvest(
        "ztf",
        output=out,
        transport=httpx.ASGITransport(app=archive),
        data_sources=data_sources,
        **kw,
    )
    return report.sources["ztf"]


def records(folder: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(folder.glob("*.json*")):
        out += [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return out


async def test_every_epoch_equals_the_parquet_value(archive: FakeArchive, tmp_path: Path) -> None:
    src = await harvest(archive, tmp_path, hats_settings())
    expected = reference([CONE])
    assert (src.status, src.written, src.errors) == ("ok", 2438, [])  # the issue's 78 objects, 2,438 epochs
    got = records(tmp_path / "ztf")
    assert len({r["object_id"] for r in got}) == 78
    by_key = {(r["object_id"], r["hmjd"]): r for r in got}
    assert len(by_key) == len(got) == len(expected)
    for key, values in expected.items():
        record = by_key[key]
        for name, value in values.items():
            assert record[name] == value, (key, name)  # float32 values come through exactly
        assert (record["route"], record["data_release"]) == ("hats", "ztf_dr5")
        assert record["mjd"] is None and record["hjd"] is None and record["ra"] is None  # never invented
        assert record["provenance"]["service"] == "s3" and "/Npix=" in record["provenance"]["url"]


async def test_bands_time_range_and_catflags_mask_select_as_on_the_api(
    archive: FakeArchive, tmp_path: Path
) -> None:
    window = (59150.0, 59200.0)
    src = await harvest(
        archive,
        tmp_path,
        hats_settings(filters=["zg"], mjd_range=list(window), bad_catflags_mask=32768),
    )
    expected = reference([CONE], bands={1}, hmjd_range=window, mask=32768)
    got = {(r["object_id"], r["hmjd"]) for r in records(tmp_path / "ztf")}
    assert src.errors == [] and got == set(expected) and 0 < len(got) < 2438
    assert all(
        r["catflags"] & 32768 == 0 and window[0] <= r["hmjd"] <= window[1] for r in records(tmp_path / "ztf")
    )
    # the cone's objects are all zg: asking for zr reads no row group at all (filterid statistics)
    none = await harvest(archive, tmp_path / "zr", hats_settings(filters=["zr"]))
    assert (none.errors, none.written) == ([], 0)


async def test_overlapping_cones_give_each_epoch_once(archive: FakeArchive, tmp_path: Path) -> None:
    near = {"ra": 20.3, "dec": -28.1, "radius": 0.1}
    src = await harvest(archive, tmp_path, hats_settings(cone_search=None, targets=[CONE, near]))
    expected = reference([CONE, near])
    assert src.errors == [] and src.written == len(expected)
    assert sorted((r["object_id"], r["hmjd"]) for r in records(tmp_path / "ztf")) == sorted(expected)


async def test_a_rerun_finds_everything_present_and_a_deleted_file_comes_back(
    archive: FakeArchive, tmp_path: Path
) -> None:
    first = await harvest(archive, tmp_path, hats_settings(), format="jsonl")
    shards = sorted((tmp_path / "ztf").glob("*.jsonl"))
    assert first.written == 2438 and shards
    again = await harvest(archive, tmp_path, hats_settings(), format="jsonl")
    assert (again.written, again.already_present) == (0, 2438)
    lost = len(shards[0].read_bytes().splitlines())
    shards[0].unlink()
    healed = await harvest(archive, tmp_path, hats_settings(), format="jsonl")
    assert (healed.missing_on_disk, healed.written, healed.already_present) == (lost, lost, 2438 - lost)
    assert len(records(tmp_path / "ztf")) == 2438


async def test_parquet_output_keeps_the_float32_values(archive: FakeArchive, tmp_path: Path) -> None:
    src = await harvest(archive, tmp_path, hats_settings(), format="parquet")
    table = pa.concat_tables(pq.read_table(p) for p in sorted((tmp_path / "ztf").glob("*.parquet")))
    expected = reference([CONE])
    assert src.written == table.num_rows == len(expected)
    for row in table.select(["object_id", "hmjd", "mag", "route", "mjd"]).to_pylist():
        assert row["mag"] == expected[(row["object_id"], row["hmjd"])]["mag"]
        assert (row["route"], row["mjd"]) == ("hats", None)


async def test_no_token_goes_to_the_bucket(
    archive: FakeArchive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZTF_API_TOKEN", "irsa-sekrit-123")
    seen: list[httpx.Request] = []

    class Spy(httpx.ASGITransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return await super().handle_async_request(request)

    report = await harvester.harvest(
        "ztf", output=tmp_path, transport=Spy(app=archive), data_sources=hats_settings()
    )
    assert report.sources["ztf"].written == 2438
    assert seen and all(r.url.host == "ipac-irsa-ztf.s3.amazonaws.com" for r in seen)
    assert all("authorization" not in r.headers for r in seen)
    assert "irsa-sekrit-123" not in "".join(
        p.read_text() for p in (tmp_path / "ztf").iterdir() if p.is_file()
    )


async def test_only_the_needed_bytes_of_a_leaf_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake release's leaves hold many row groups sorted by position; a small cone reads the
    footer and the row groups that can hold it, not the leaf. (Ranges closer than MERGE_GAP are
    read in one GET; 0 here, so the test sees the row groups skipped.)"""
    monkeypatch.setattr(hats_module, "MERGE_GAP", 0)
    fake = FakeArchive()
    src = await harvest(
        fake,
        tmp_path,
        {
            "ztf": {
                "route": "hats",
                "irsa": {"cone_search": {"ra": 210.8023, "dec": 54.3489, "radius": 0.05}},
            }
        },
    )
    leaves = [r for r in fake.requests if r.path.endswith(".parquet")]
    assert src.errors == [] and src.written > 0 and leaves
    whole = sum(len(fake_object(fake, path)) for path in {r.path for r in leaves})
    assert src.bytes_received < whole / 2


def fake_object(fake: FakeArchive, path: str) -> bytes:
    from harvester.testing._hats import _lookup

    data = _lookup(fake, path.lstrip("/"))
    assert data is not None
    return data


async def test_offline_both_routes_see_the_same_objects(tmp_path: Path) -> None:
    """The offline archive's release holds the fake API's objects: hmjd is the float32 of the API's
    hjd - 2400000.5, mag its float32, for every epoch."""
    api = await harvester.harvest("ztf", offline=True, output=tmp_path / "api")
    hats = await harvester.harvest(
        "ztf", offline=True, output=tmp_path / "hats", data_sources={"ztf": {"route": "hats"}}
    )
    assert api.sources["ztf"].errors == hats.sources["ztf"].errors == []
    by_api = {}
    for r in records(tmp_path / "api" / "ztf"):
        by_api[(r["object_id"], float(pa.scalar(r["hjd"] - 2400000.5, pa.float32()).as_py()))] = r
    from_hats = records(tmp_path / "hats" / "ztf")
    assert from_hats and len(from_hats) == len(by_api)
    for r in from_hats:
        twin = by_api[(r["object_id"], r["hmjd"])]
        assert r["mag"] == float(pa.scalar(twin["mag"], pa.float32()).as_py())
        assert (r["filter"], r["field"], r["ccdid"], r["qid"]) == (
            twin["filter"],
            twin["field"],
            twin["ccdid"],
            twin["qid"],
        )
        assert r["provenance"]["sample"] is True


async def test_a_missing_catalog_is_one_line_naming_it(tmp_path: Path) -> None:
    src = await harvest(
        FakeArchive(),
        tmp_path,
        hats_settings()
        | {"ztf": {**hats_settings()["ztf"], "hats": {"catalog_url": "s3://ipac-irsa-ztf/ztf/nothing"}}},
    )
    assert src.status == "failed" and src.written == 0
    (failure,) = src.errors
    assert failure.cause == "no HATS catalog at s3://ipac-irsa-ztf/ztf/nothing (no hats.properties)"
    assert not list((tmp_path / "ztf").glob("*.json"))


async def test_a_corrupt_leaf_fails_its_pixel_only(archive: FakeArchive, tmp_path: Path) -> None:
    bad = next(k for k in archive.bucket_files if k.endswith("Npix=142967/part0.snappy.parquet"))
    archive.bucket_files[bad] = b"<html>not parquet</html>"
    src = await harvest(archive, tmp_path, hats_settings())
    (failure,) = src.errors
    assert failure.target == "hats: 1 cone/Norder=7/Npix=142967"
    assert "is not a Parquet file" in failure.cause and "\n" not in failure.cause
    expected = {k for k, v in reference([CONE]).items()}
    got = {(r["object_id"], r["hmjd"]) for r in records(tmp_path / "ztf")}
    assert got and got < expected  # the other pixels' epochs are written


def test_release_records_have_their_own_keys() -> None:
    api = ZtfRecord.model_validate(
        {
            **dict.fromkeys(n for n, f in ZtfRecord.model_fields.items() if f.is_required()),
            **BASE,
            "mjd": 59128.3,
        }
    )
    release = api.model_copy(update={"mjd": None, "hmjd": 59128.31640625, "route": "hats"})
    assert api.dedup_key() == ("202116200000001", "59128.3")
    assert release.dedup_key() == ("202116200000001", "hmjd59128.31640625")


BASE: dict[str, Any] = {
    "object_id": "202116200000001",
    "filter": "zg",
    "fetched_at": "2026-01-02T03:04:05+00:00",
    "provenance": {"archive": "irsa", "url": "https://example.org/x"},
}


async def test_slow_down_and_cut_connections_are_retried(archive: FakeArchive, tmp_path: Path) -> None:
    """503 SlowDown with Retry-After and a connection cut mid-body, on the leaves: retried by the
    session, and every epoch is written once."""
    archive.add_fault(Fault(match="Npix=142967", kind="status", status=503, retry_after="0", times=2))
    archive.add_fault(Fault(match="Npix=142973", kind="truncate", times=1))
    src = await harvest(archive, tmp_path, retrying(4))
    assert (src.errors, src.written) == ([], 2438) and src.retries == 3


async def test_a_pixel_that_keeps_failing_is_reported_and_the_next_run_completes_it(
    archive: FakeArchive, tmp_path: Path
) -> None:
    archive.add_fault(Fault(match="Npix=142973", kind="status", status=500, times=None))
    first = await harvest(archive, tmp_path, retrying(1))
    (failure,) = first.errors
    assert failure.target == "hats: 1 cone/Norder=7/Npix=142973" and failure.transient
    assert "HTTP 500" in failure.cause and 0 < first.written < 2438
    archive.clear_faults()
    second = await harvest(archive, tmp_path, hats_settings())
    assert (second.errors, second.already_present, second.written) == (
        [],
        first.written,
        2438 - first.written,
    )


def rewrite_leaf(archive: FakeArchive, pixel: int, change: Any, **write: Any) -> str:
    """Replace one fixture leaf with ``change(table)``, written with ``write`` options."""
    import io

    key = next(k for k in archive.bucket_files if k.endswith(f"Npix={pixel}/part0.snappy.parquet"))
    table = change(pq.read_table(io.BytesIO(archive.bucket_files[key])))
    sink = io.BytesIO()
    pq.write_table(table, sink, **write)
    archive.bucket_files[key] = sink.getvalue()
    return key


async def test_a_missing_leaf_fails_its_pixel(archive: FakeArchive, tmp_path: Path) -> None:
    """A pixel partition_info.csv lists whose folder holds no file is reported, never skipped
    (found in review: the run said ok with half the epochs)."""
    gone = next(k for k in archive.bucket_files if k.endswith("Npix=142967/part0.snappy.parquet"))
    del archive.bucket_files[gone]
    src = await harvest(archive, tmp_path, hats_settings())
    (failure,) = src.errors
    assert failure.target == "hats: 1 cone/Norder=7/Npix=142967"
    assert failure.cause.startswith("no Parquet file under https://ipac-irsa-ztf.s3.amazonaws.com/")
    assert 0 < src.written < 2438 and src.status != "ok"


async def test_a_leaf_of_other_types_fails_its_pixel_with_one_line(
    archive: FakeArchive, tmp_path: Path
) -> None:
    """A leaf whose objectid is text (not the release's int64): that pixel fails with one line
    naming the leaf, the other pixels are written (found in review: the whole run failed with an
    internal ExceptionGroup)."""
    rewrite_leaf(
        archive, 142967, lambda t: t.set_column(1, "objectid", pa.array([f"x{i}" for i in range(t.num_rows)]))
    )
    src = await harvest(archive, tmp_path, hats_settings())
    (failure,) = src.errors
    assert failure.target == "hats: 1 cone/Norder=7/Npix=142967" and "\n" not in failure.cause
    assert "Npix=142967/part0.snappy.parquet: not a ZTF light-curve leaf" in failure.cause
    assert src.written > 0


async def test_epochs_closer_than_hmjd_s_resolution_are_both_kept(
    archive: FakeArchive, tmp_path: Path
) -> None:
    """Two exposures 60 s apart share a float32 hmjd: the second gets hmjd_seq 1 and its own key
    (found in review: it was dropped as a duplicate)."""

    def twin_first_epoch(table: pa.Table) -> pa.Table:
        rows = table.to_pylist()
        for row in rows:
            curve = row["lightcurve"]
            for name in curve:
                curve[name] = [curve[name][0], *curve[name]]
            curve["mag"][1] = curve["mag"][0] + 0.01
            row["nepochs"] += 1
        return pa.Table.from_pylist(rows, schema=table.schema)

    rewrite_leaf(archive, 142967, twin_first_epoch)
    src = await harvest(archive, tmp_path, hats_settings())
    got = records(tmp_path / "ztf")
    twins = [r for r in got if r["hmjd_seq"] == 1]
    assert src.errors == [] and src.duplicates == 0 and twins
    assert src.written == 2438 + len(twins)
    first = {(r["object_id"], r["hmjd"]): r for r in got if r["hmjd_seq"] == 0}
    for twin in twins:
        assert math.isclose(twin["mag"], first[(twin["object_id"], twin["hmjd"])]["mag"] + 0.01, abs_tol=1e-5)
    again = await harvest(archive, tmp_path, hats_settings())
    assert (again.written, again.already_present) == (0, src.written)


async def test_reads_stay_within_max_read_bytes(archive: FakeArchive, tmp_path: Path) -> None:
    """A leaf of many row groups read under a small cap: no GET asks for more than the cap, and
    every epoch arrives (found in review: the cap did not bound ranged reads)."""
    for pixel in (142967, 142973):  # the cone's two leaves
        rewrite_leaf(archive, pixel, lambda t: t, row_group_size=8)
    seen: list[httpx.Request] = []

    class Spy(httpx.ASGITransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return await super().handle_async_request(request)

    block = hats_settings()
    block["ztf"]["hats"]["max_read_bytes"] = 40_000
    report = await harvester.harvest("ztf", output=tmp_path, transport=Spy(app=archive), data_sources=block)
    assert (report.sources["ztf"].errors, report.sources["ztf"].written) == ([], 2438)
    sizes = []
    for request in seen:
        if request.headers.get("range", "").startswith("bytes=") and "-" in request.headers["range"][6:]:
            start, _, stop = request.headers["range"][6:].partition("-")
            if start:
                sizes.append(int(stop) - int(start) + 1)
    assert sizes and max(sizes) <= 40_000 and len(sizes) > 3


async def test_a_row_group_bigger_than_the_cap_is_one_line(archive: FakeArchive, tmp_path: Path) -> None:
    block = hats_settings()
    block["ztf"]["hats"]["max_read_bytes"] = 20_000
    src = await harvest(archive, tmp_path, block)
    assert src.errors and all("over hats.max_read_bytes (20,000)" in f.cause for f in src.errors)


async def test_a_forbidden_catalog_says_so(tmp_path: Path) -> None:
    fake = FakeArchive()
    fake.add_fault(Fault(match="hats.properties", kind="status", status=403))
    src = await harvest(fake, tmp_path, {"ztf": {"route": "hats", "irsa": {"cone_search": CONE}}})
    (failure,) = src.errors
    assert failure.cause.startswith(
        "no readable HATS catalog at s3://ipac-irsa-ztf/ztf/enhanced/dr24/lc/hats/"
    )
    assert "forbidden (HTTP 403" in failure.cause
