"""Benchmark part 4: ZTF throughput without latency — records per second end to end, and the limit.

Run with ``uv run python -m tests.tools.bench.bench_throughput [--quick]`` (or as part of
``python -m tests.tools.bench``). A script, not a test.

The fake archive runs in-process (``httpx.ASGITransport``), with no latency and a politeness
budget far above what the machine can use (1000 requests/s, 4 at once), over a few large cones
(0.1667°, ≈ 34,000 epochs each; about 100,000 records, 34,000 with ``--quick``). Every answer is
recorded once by an untimed harvest and then replayed byte for byte (:class:`Replayed`): the fake
archive's own CPU is not the harvester's. Before each timed write the disk is synced (untimed), so
no measurement pays for the writeback of the one before it. Measured:

1. **end to end**: ``harvester.harvest("ztf")`` to per-record JSON files (the default format), to
   jsonl shards and to Parquet shards, with the state store on (the default), in records per second;
2. **the limit**: a bare loop writing the *same bytes* (the records read back from the jsonl
   output) with ``orjson.dumps``: one file per record (plain ``open``/``write``, no atomicity),
   and one jsonl file; and the same rows as one Parquet file with pyarrow (same schema);
3. **where the time goes**: each stage of the columnar record path timed alone on the same bodies
   (fetch, vectorised parse and checks, dedup keys, JSON text, Parquet encoding), next to the
   record-at-a-time path it replaced (row parser, model validation, ``dump``), in records per second.

Each of the six writes in 1 and 2 runs five times, interleaved round by round, and its median run
is reported with the slowest and the fastest: this machine's disk and CPU have slow and fast
minutes, which a single run would take for the harvester's own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

import harvester
from harvester.archives.ztf.records import ZtfRecord
from harvester.archives.ztf.source import ZtfSource, irsa_params, parse_irsa_batch, parse_irsa_csv
from harvester.io.arrow import arrow_schema, parquet_bytes, parquet_options
from harvester.io.batches import Batch
from harvester.io.readers import iter_shard_records
from harvester.io.writers import dumps_record
from harvester.records import Provenance
from harvester.settings import Settings
from harvester.testing import FakeArchive
from tests.tools.bench.bench_ztf_rate import Goal, Part, bench_settings

IRSA_URL = "https://irsa.ipac.caltech.edu/cgi-bin/ZTF/nph_light_curves"
#: issue 17's goals for the columnar path
PARQUET_GOAL = 300_000
JSONL_GOAL = 200_000
JSONL_SHARE_GOAL = 1 / 3  # of the bare orjson loop, in the same run
FILES_SHARE_GOAL = 0.7  # of the bare per-file loop, in the same run
REPEATS = 5  # of each write, interleaved; the median is reported
NOISE_LIMIT = 1.5  # fastest / slowest run of a baseline beyond which a share of it is not judged
BIG_RADIUS = 0.1667


def big_cones(n: int) -> list[dict[str, float]]:
    """``n`` non-overlapping maximal cones (each ≈ 34,000 epochs in the fake sky)."""
    return [{"ra": 150.0 + 0.45 * i, "dec": 30.0, "radius": BIG_RADIUS} for i in range(n)]


def ztf_settings(folder: Path, cones: list[dict[str, float]], fmt: str, **extra: Any) -> Settings:
    return bench_settings(
        folder,
        format=fmt,
        data_sources={
            "ztf": {
                "irsa": {"base_url": IRSA_URL, "targets": cones},
                "rate_limit": {"requests_per_second": 1000, "max_concurrency": 4},
            }
        },
        **extra,
    )


@dataclass
class Throughput:
    what: str
    records: int
    seconds: float
    #: records/s of the slowest and the fastest repetition, when this is the median of several
    spread: tuple[float, float] | None = None
    runs: int = 1

    @property
    def per_s(self) -> float:
        return self.records / self.seconds


def disk_noise(bare: Throughput) -> str:
    """Why a comparison with ``bare`` says nothing, or "": its repetitions differ more than
    :data:`NOISE_LIMIT` times. On this machine's virtual disk, creating 100,000 files runs at
    5,000 or at 50,000 a second depending on what the disk did before (its throttling), so a
    share of such a loop can come out anywhere between a third and twice the truth."""
    if bare.spread is None or bare.spread[1] <= NOISE_LIMIT * bare.spread[0]:
        return ""
    return f"the bare loop's runs ranged {bare.spread[0]:,.0f}–{bare.spread[1]:,.0f} records/s"


def median_of(runs: list[Throughput]) -> Throughput:
    """The repetition with the median time, carrying the range of all of them."""
    ordered = sorted(runs, key=lambda t: t.seconds)
    middle = ordered[len(ordered) // 2]
    spread = (ordered[-1].per_s, ordered[0].per_s)
    return Throughput(middle.what, middle.records, middle.seconds, spread, runs=len(runs))


class Replayed:
    """The fake archive's answers recorded once and replayed byte for byte: a real archive's CPU
    is not the client's, so the clock sees the transport and the harvester only (the fake, in
    this process, would otherwise build each CSV body again: ≈ 2 µs a record on the same cores)."""

    def __init__(self, app: FakeArchive) -> None:
        self.app = app
        self.answers: dict[tuple[str, bytes], tuple[int, list[Any], bytes]] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = (scope["path"], scope["query_string"])
        if key not in self.answers:
            start: dict[str, Any] = {}
            body = bytearray()

            async def record(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    start.update(message)
                elif message["type"] == "http.response.body":
                    body.extend(message.get("body", b""))

            await self.app(scope, receive, record)
            self.answers[key] = (start["status"], list(start.get("headers", [])), bytes(body))
        status, headers, content = self.answers[key]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def settle_disk() -> None:
    """Flush what earlier measurements left dirty (untimed): on ext4 an ``fsync`` also waits for
    the journal, so a run right after 100,000 record files would pay for their metadata."""
    os.sync()


def end_to_end(app: Any, cones: list[dict[str, float]], fmt: str, folder: Path) -> Throughput:
    settings = ztf_settings(folder, cones, fmt)
    transport = httpx.ASGITransport(app=app)
    settle_disk()
    start = time.perf_counter()
    report = anyio.run(lambda: harvester.harvest("ztf", settings=settings, transport=transport))
    seconds = time.perf_counter() - start
    src = report.sources["ztf"]
    if src.status != "ok" or src.written != src.records:
        raise RuntimeError(
            f"ztf harvest: {src.status}, {src.written} of {src.records} written, {src.errors[:2]}"
        )
    layout = {"json": "per-record JSON files", "jsonl": "jsonl shards", "parquet": "Parquet shards"}[fmt]
    return Throughput(f"harvester → {layout}", src.written, seconds)


def bare_files(records: list[dict[str, Any]], folder: Path) -> Throughput:
    """The same records written by a bare orjson loop, one file per record (no atomicity)."""
    files = folder / "files"
    files.mkdir(parents=True)
    settle_disk()
    start = time.perf_counter()
    for k, data in enumerate(records):
        with open(files / f"record_{k:08d}.json", "wb") as fh:
            fh.write(orjson.dumps(data) + b"\n")
    return Throughput("bare orjson loop → per-record files", len(records), time.perf_counter() - start)


def bare_jsonl(records: list[dict[str, Any]], folder: Path) -> Throughput:
    """The same records written by a bare orjson loop into one jsonl file."""
    folder.mkdir(parents=True)
    settle_disk()
    start = time.perf_counter()
    with open(folder / "all.jsonl", "wb") as fh:
        for data in records:
            fh.write(orjson.dumps(data) + b"\n")
    return Throughput("bare orjson loop → one jsonl file", len(records), time.perf_counter() - start)


def bare_parquet(records: list[dict[str, Any]], folder: Path) -> Throughput:
    """The same rows as one Parquet file written by pyarrow (the writer's schema and options)."""
    folder.mkdir(parents=True)
    schema = arrow_schema(ZtfRecord)
    settle_disk()
    start = time.perf_counter()
    rows = [_flat(d) for d in records]
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, folder / "all.parquet", **parquet_options(schema))
    return Throughput("bare pyarrow loop → one Parquet file", len(records), time.perf_counter() - start)


def _flat(data: dict[str, Any]) -> dict[str, Any]:
    """A record dict as a Parquet row (provenance flattened, as the writer does)."""
    row = {k: v for k, v in data.items() if k != "provenance"}
    row.update({f"provenance_{k}": v for k, v in data["provenance"].items()})
    row["fetched_at"] = datetime.fromisoformat(data["fetched_at"])
    return row


def _timed(what: str, n: int, fn: Callable[[], object]) -> Throughput:
    start = time.perf_counter()
    fn()
    return Throughput(what, n, time.perf_counter() - start)


def stages(archive: Any, settings: Settings) -> list[Throughput]:
    """Each step of the record path alone, over the same cones: the columnar path the harvester
    takes, and the record-at-a-time path it replaced (the row parser is still the fallback for
    bodies the vectorised reader does not take)."""
    irsa = settings.data_sources.ztf.irsa
    queries = [irsa_params(cone, irsa) for cone in ZtfSource(settings).cones()]

    async def fetch_all() -> list[bytes]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=archive)) as client:
            return [(await client.get(irsa.base_url, params=tuple(q))).content for q in queries]

    start = time.perf_counter()
    bodies = anyio.run(fetch_all)
    fetch_s = time.perf_counter() - start
    provenance = Provenance(archive="irsa", url=irsa.base_url)
    now = datetime.now(UTC)
    batches: list[Batch] = []
    parse = _timed(
        "columnar: parse_irsa_batch (CSV → checked Arrow batch)",
        0,
        lambda: batches.extend(parse_irsa_batch(b, "t", provenance, now) for b in bodies),
    )
    n = parse.records = sum(len(b) for b in batches)
    rows: list[dict[str, Any]] = []

    def parse_rows() -> None:
        for body in bodies:
            rows.extend(parse_irsa_csv(body, "t"))

    records: list[ZtfRecord] = []
    return [
        Throughput("fetch only (in-process archive, bodies)", n, fetch_s),
        parse,
        _timed(
            "columnar: Batch.key_texts (dedup keys' text, joined column by column)",
            n,
            lambda: [b.key_texts for b in batches],
        ),
        _timed("columnar: Batch.json_lines (the jsonl text)", n, lambda: [b.json_lines() for b in batches]),
        _timed(
            "columnar: Parquet encode (zstd, in memory)",
            n,
            lambda: [parquet_bytes(b.table) for b in batches],
        ),
        _timed("row path: parse_irsa_csv (CSV → typed dicts)", n, parse_rows),
        _timed(
            "row path: ZtfRecord(**row) (pydantic validation)",
            n,
            lambda: records.extend(ZtfRecord(**row, fetched_at=now, provenance=provenance) for row in rows),
        ),
        _timed("row path: dumps_record (model_dump + orjson)", n, lambda: [dumps_record(r) for r in records]),
    ]


def memory_folder() -> Path | None:
    """A folder in memory (tmpfs) to write in, or None: ``/dev/shm`` where it is writable."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


@dataclass
class Measured:
    ours: list[Throughput]  # harvester → jsonl, per-record files, Parquet (on the disk)
    limit: list[Throughput]  # the bare loops, the same three
    parts: list[Throughput]  # the record path's stages alone
    #: per-record files and the bare per-file loop again, on tmpfs (None without one)
    memory: tuple[Throughput, Throughput] | None = None


def measure(n_cones: int, repeats: int = REPEATS) -> Measured:
    """Each of the writes ``repeats`` times, interleaved round by round (so a slow minute of
    the machine falls on all of them alike), each reported as its median repetition. The
    per-record files and their bare loop run on the disk and again on tmpfs, where the disk's
    own noise (its throttling) cannot decide their share."""
    archive = Replayed(FakeArchive())
    cones = big_cones(n_cones)
    memory = memory_folder()
    with (
        tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp,
        tempfile.TemporaryDirectory(prefix="bench-throughput-", dir=memory) as in_memory,
    ):
        root = Path(tmp)
        end_to_end(archive, cones, "jsonl", root / "warm")  # records every answer; not timed
        records = list(iter_shard_records(root / "warm" / "raw" / "ztf"))
        writes: list[tuple[Path, Callable[[Path], Throughput]]] = [
            (root, lambda folder: end_to_end(archive, cones, "jsonl", folder)),
            (root, lambda folder: end_to_end(archive, cones, "json", folder)),
            (root, lambda folder: end_to_end(archive, cones, "parquet", folder)),
            (root, lambda folder: bare_files(records, folder)),
            (root, lambda folder: bare_jsonl(records, folder)),
            (root, lambda folder: bare_parquet(records, folder)),
        ]
        if memory is not None:
            writes += [
                (Path(in_memory), lambda folder: end_to_end(archive, cones, "json", folder)),
                (Path(in_memory), lambda folder: bare_files(records, folder)),
            ]
        runs: list[list[Throughput]] = [[] for _ in writes]
        for round_ in range(repeats):
            for k, (where, write) in enumerate(writes):
                folder = where / f"w{k}-{round_}"
                runs[k].append(write(folder))
                shutil.rmtree(folder)  # untimed: the next write starts from the same disk
        parts = stages(archive, ztf_settings(root / "stages", cones, "jsonl"))
    medians = [median_of(r) for r in runs]
    in_ram = None
    if memory is not None:
        for t in medians[6:]:
            t.what += " (tmpfs)"
        in_ram = (medians[6], medians[7])
    return Measured(medians[:3], medians[3:6], parts, in_ram)


def render(measured: Measured) -> Part:
    ours, limit, parts = measured.ours, measured.limit, measured.parts
    lines = [
        f"{ours[0].records:,} ZTF records (one per epoch) from the in-process fake archive, no latency, "
        "budget 1000 req/s × 4, state store on; every answer recorded by an untimed harvest "
        "and replayed byte for byte (the fake archive's CPU is not the harvester's).",
        "",
        f"Each write ran {ours[0].runs} times, interleaved with the others round by round; the "
        "median run is shown, with the slowest and the fastest. Per-record files and their bare "
        "loop ran on the disk and again on tmpfs (`/dev/shm`), where this machine's disk "
        "throttling cannot decide their share.",
        "",
        "| what | records | seconds | records/s | slowest – fastest |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in [*ours, *limit, *(measured.memory or ())]:
        spread = f"{t.spread[0]:,.0f} – {t.spread[1]:,.0f}" if t.spread else "–"
        lines.append(f"| {t.what} | {t.records:,} | {t.seconds:.2f} | {t.per_s:,.0f} | {spread} |")
    json_ratio = limit[0].per_s / ours[1].per_s
    jsonl_ratio = limit[1].per_s / ours[0].per_s
    parquet_ratio = limit[2].per_s / ours[2].per_s
    lines += [
        "",
        f"bare loop / harvester: per-record files **{json_ratio:.1f}×**, jsonl **{jsonl_ratio:.1f}×**, "
        f"Parquet **{parquet_ratio:.1f}×**.",
        "",
        "Stages of the record path alone, on the same bodies (records/s; µs per record):",
        "",
        "| stage | records/s | µs/record |",
        "| --- | --- | --- |",
    ]
    for t in parts:
        lines.append(f"| {t.what} | {t.per_s:,.0f} | {1e6 / t.per_s:.1f} |")
    jsonl_share = ours[0].per_s / limit[1].per_s
    goals: list[Goal] = [
        (
            "ZTF → jsonl, records/s (share of the bare orjson loop)",
            f"{ours[0].per_s:,.0f} ({jsonl_share:.0%})",
            f"≥ {JSONL_GOAL:,} and ≥ {JSONL_SHARE_GOAL:.0%} (#17)",
            ours[0].per_s >= JSONL_GOAL and jsonl_share >= JSONL_SHARE_GOAL,
        ),
        files_goal(ours[1], limit[0], measured.memory),
        (
            "ZTF → Parquet, records/s (bare pyarrow loop)",
            f"{ours[2].per_s:,.0f} ({limit[2].per_s:,.0f})",
            f"≥ {PARQUET_GOAL:,} (#17)",
            ours[2].per_s >= PARQUET_GOAL,
        ),
    ]
    return ("Throughput without latency (part 4)", "\n".join(lines), goals)


def files_goal(ours: Throughput, bare: Throughput, memory: tuple[Throughput, Throughput] | None) -> Goal:
    """The per-record goal: judged on tmpfs where there is one (this machine's disk makes a
    file-creating loop 4x faster or slower from one minute to the next), else on the disk unless
    its bare loop's runs say the disk was too noisy to tell."""
    share = ours.per_s / bare.per_s
    on_disk = f"{share:.0%} ({ours.per_s:,.0f} vs {bare.per_s:,.0f} records/s)"
    noise = disk_noise(bare)
    if memory is None:
        value = on_disk + (f"; inconclusive: {noise}" if noise else "")
        met = share >= FILES_SHARE_GOAL and not noise
    else:
        in_ram = memory[0].per_s / memory[1].per_s
        value = (
            f"{in_ram:.0%} on tmpfs ({memory[0].per_s:,.0f} vs {memory[1].per_s:,.0f} records/s); "
            f"on the disk {on_disk}" + (f", {noise}" if noise else "")
        )
        met = in_ram >= FILES_SHARE_GOAL
    return (
        "ZTF → per-record JSON, share of the bare per-file loop",
        value,
        f"≥ {FILES_SHARE_GOAL:.0%} (#17)",
        met,
    )


def run(quick: bool) -> Part:
    return render(measure(1 if quick else 3))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one cone (≈ 34,000 records) instead of three")
    args = parser.parse_args(argv)
    title, body, _ = run(args.quick)
    print(f"## {title}\n\n{body}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
