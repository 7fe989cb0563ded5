"""Benchmark part 9: what a rerun costs — checking an output's ledger against the disk.

Run with ``uv run python -m tests.tools.bench.bench_ledger [--quick] [--records N] [--files N]
[--healthy-only]`` (or as part of ``python -m tests.tools.bench``). A script, not a test.

Every run starts with :meth:`harvester.io.ledger.Ledger.reconcile` (issue 15): one listing of the
source folder with sizes and modification times, compared with the ledger in SQL; a file is
hashed only where size or time disagree, and a file the ledger does not list is read and adopted.
This part measures that check on a ZTF output built through the real writers and ledger
(:class:`~harvester.io.writers.JsonlWriter` or
:class:`~harvester.io.writers.JsonFilesWriter`, then :meth:`Ledger.commit` per batch of
10,000, as the pipeline commits; synthetic records made with ``model_construct``, 500 epochs per
object, 1,000 targets with a watermark each), in both layouts:

- **jsonl**: 1,000,000 records in shards of the default size (``jsonl_shard_records``, 10,000);
- **json**: one file per record, 100,000 files; the cost per file is what scales. For a million
  (~4 GB of 4 KB blocks, 3 to 5 minutes to write), ``--records 0 --files 1000000
  --healthy-only`` builds them and measures only the baselines and (a).

``--quick``: 20,000 records and 1,000 files, one repetition, no (a) after (b) and no evicted
page cache. Measured, each in a **child process** (its own peak RSS, ``VmHWM``), in this order
on the same output:

- baselines: a bare ``os.scandir`` + ``stat`` of the folder, and reading every file once;
- (a) ``reconcile()`` on the healthy output: what every rerun pays (best of 3);
- (b) after deleting 1 % of the files (their records are forgotten, to be harvested again);
- (c) after touching every file's modification time: every file is hashed (as after a copy,
  a ``dvc checkout`` or a restore that does not keep times), with the page cache warm and with
  the output's pages evicted first (``posix_fadvise(DONTNEED)``, this output's files only);
- (d) with the ledger deleted: every file is read, validated and adopted (a rebuilt ledger).

"open" is opening the ledger (SQLite's ``quick_check`` of the whole file included), which every
run also pays; "check" is ``reconcile()`` alone. Ratios are to the two baselines measured in the
same run, warm. Nothing here is asserted: times vary between machines, ratios less so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from harvester.archives.ztf.records import ZtfRecord
from harvester.io.ledger import LEDGER_DIR, Ledger, is_record_file, ledger_path
from harvester.io.writers import Item, JsonFilesWriter, JsonlWriter, Writer, WriteResult
from harvester.records import Provenance
from harvester.settings import Settings
from tests.tools.bench.bench_memory import peak_rss_mb, rss_now_mb
from tests.tools.bench.bench_ztf_rate import Goal, Part, print_part

SHARD = int(Settings.model_fields["jsonl_shard_records"].default)
BATCH = 10_000  # records per writer call and ledger commit
PER_OBJECT = 500  # epochs per ZTF object id
TARGETS = 1_000  # cones, each with a watermark
RUN_ID = "20261207T000000-bench0"
SIZES = {False: (1_000_000, 100_000), True: (20_000, 1_000)}  # quick -> (jsonl records, json files)

_PROVENANCE = Provenance.model_construct(
    archive="irsa",
    url="https://irsa.ipac.caltech.edu/cgi-bin/ZTF/nph_light_curves?bench",
    service=None,
    sample=True,
)
_FETCHED = datetime(2026, 12, 7, tzinfo=UTC)


def ztf_record(k: int) -> ZtfRecord:
    """The ``k``-th synthetic epoch: every field set, a unique (object_id, mjd) key."""
    return ZtfRecord.model_construct(
        source="ztf",
        object_id=str(675103300000000 + k // PER_OBJECT),
        fetched_at=_FETCHED,
        provenance=_PROVENANCE,
        mjd=58000.0 + k * 0.001,
        filter=("zg", "zr", "zi")[k % 3],
        mag=18.0 + (k % 97) / 100,
        magerr=0.02,
        ra=210.8 + (k % 1000) * 1e-5,
        dec=54.3 - (k % 1000) * 1e-5,
        expid=40000000 + k,
        hjd=2458000.5 + k * 0.001,
        catflags=0,
        chi=1.1,
        sharp=0.01,
        filefracday=20180101000000 + k,
        field=1717,
        ccdid=11,
        qid=2,
        limitmag=20.5,
        magzp=26.1,
        magzprms=0.03,
        clrcoeff=-0.05,
        clrcounc=1e-5,
        exptime=30.0,
        airmass=1.2,
        programid=1,
    )


def _wkey(k: int) -> str:
    return f"ztf-cone-{(k // PER_OBJECT) % TARGETS:04d}"


async def commit(ledger: Ledger, result: WriteResult) -> None:
    """Enter what a write made durable, as the pipeline does."""
    await ledger.commit([], result.files, RUN_ID, result.runs)
    if result.record_files is not None:
        await ledger.commit_files(result.record_files, RUN_ID)


async def build(folder: Path, layout: str, n: int) -> None:
    """``n`` records into ``folder`` through the real writer and ledger, committed per batch."""
    writer: Writer = (
        JsonlWriter(folder, ZtfRecord, run_id=RUN_ID, shard_records=SHARD)
        if layout == "jsonl"
        else JsonFilesWriter(folder)
    )
    await writer.open()
    async with Ledger(folder, ZtfRecord) as ledger:
        for start in range(0, n, BATCH):
            items: list[Item] = [(ztf_record(k), _wkey(k)) for k in range(start, min(n, start + BATCH))]
            await commit(ledger, await writer.write(items))
        await commit(ledger, await writer.close())
        marks = {
            _wkey(k): (_wkey(k), 58000.0 + n * 0.001)
            for k in range(0, min(n, TARGETS * PER_OBJECT), PER_OBJECT)
        }
        await ledger.advance(marks, RUN_ID)


def record_files(folder: Path) -> list[Path]:
    return sorted(folder / name for name in os.listdir(folder) if is_record_file(name))


# -- what the child processes measure ----------------------------------------------------------


def bare_scan(folder: Path) -> int:
    """Baseline: list the folder and stat every entry (what the check cannot do without)."""
    count = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            entry.stat(follow_symlinks=False)
            count += 1
    return count


def bare_read(folder: Path) -> int:
    """Baseline: read every record file once, 1 MB at a time (what hashing or adopting needs)."""
    buffer = bytearray(1 << 20)
    total = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if not is_record_file(entry.name):
                continue
            with open(entry.path, "rb", buffering=0) as fh:
                while got := fh.readinto(buffer):
                    total += got
    return total


def check(folder: Path) -> dict[str, Any]:
    """Open the ledger, reconcile it with the disk, close it: the start of every run (timed in
    parts; counting the records afterwards, for the table, is not)."""

    async def main() -> dict[str, Any]:
        start = time.perf_counter()
        ledger = await Ledger(folder, ZtfRecord).open()
        opened = time.perf_counter()
        try:
            found = await ledger.reconcile()
            checked = time.perf_counter()
            records = await ledger.count()
        finally:
            closing = time.perf_counter()
            await ledger.close()
            closed = time.perf_counter()
        out = found.as_dict()
        out.pop("damaged_files")
        return {
            **out,
            "records_after": records,
            "open_s": opened - start,
            "check_s": checked - opened,
            "total_s": (checked - start) + (closed - closing),
        }

    return anyio.run(main)


def child(kind: str, folder: Path, repeat: int) -> dict[str, Any]:
    ZtfRecord.model_json_schema()  # imports and model set-up before the baseline
    baseline = rss_now_mb()
    runs: list[tuple[float, dict[str, Any]]] = []
    for _ in range(repeat):
        start = time.perf_counter()
        if kind == "scan":
            detail: dict[str, Any] = {"entries": bare_scan(folder)}
        elif kind == "read":
            detail = {"bytes": bare_read(folder)}
        else:
            detail = check(folder)
        runs.append((detail.get("total_s", time.perf_counter() - start), detail))
    seconds, detail = min(runs, key=lambda r: r[0])
    return {"seconds": seconds, "baseline_mb": baseline, "peak_mb": peak_rss_mb(), **detail}


def measure(kind: str, folder: Path, repeat: int = 1) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "tests.tools.bench.bench_ledger", "--child", kind, str(folder), str(repeat)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=3600)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- what the parent does between them ------------------------------------------------------------


def evict(folder: Path) -> None:
    """Drop this output's files from the page cache (written back first), nothing else's."""
    os.sync()
    for path in record_files(folder):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def delete_some(folder: Path, fraction: float) -> int:
    files = record_files(folder)
    step = max(1, round(1 / fraction))
    doomed = files[step // 2 :: step] or files[:1]
    for path in doomed:
        path.unlink()
    return len(doomed)


def touch_all(folder: Path) -> int:
    now = time.time_ns()
    files = record_files(folder)
    for path in files:
        os.utime(path, ns=(now, now))
    return len(files)


def measure_layout(
    layout: str, n: int, root: Path, *, quick: bool, healthy_only: bool = False
) -> list[dict[str, Any]]:
    folder = root / layout / "ztf"
    print(f"  {layout}: building {n:,} records ...", flush=True)
    start = time.perf_counter()
    anyio.run(build, folder, layout, n)
    built_s = time.perf_counter() - start
    files = record_files(folder)
    info = {
        "layout": layout,
        "records": n,
        "files": len(files),
        "data_mb": sum(p.stat().st_size for p in files) / 1e6,
        "ledger_mb": ledger_path(folder).stat().st_size / 1e6,
    }
    rows: list[dict[str, Any]] = [{**info, "step": "build", "kind": "build", "seconds": built_s}]

    def row(step: str, kind: str, repeat: int = 1, **extra: Any) -> None:
        print(f"  {layout}: {STEPS[step].strip('*')} ...", flush=True)
        rows.append({**info, "step": step, "kind": kind, **extra, **measure(kind, folder, repeat)})

    repeat = 1 if quick else 3
    row("scan", "scan", repeat)
    row("read", "read", repeat)
    row("a", "check", repeat)
    if healthy_only:
        shutil.rmtree(folder)
        return rows
    row("b", "check", deleted=delete_some(folder, 0.01))
    if not quick:
        row("a2", "check")
    row("c", "check", touched=touch_all(folder))
    if not quick:
        touch_all(folder)
        evict(folder)
        row("c cold", "check")
        evict(folder)
        row("read cold", "read")
    shutil.rmtree(folder / LEDGER_DIR)
    row("d", "check")
    shutil.rmtree(folder)
    return rows


STEPS = {
    "build": "write the output (writer + ledger commits), for scale",
    "scan": "baseline: `os.scandir` + `stat` of every entry",
    "read": "baseline: read every file once",
    "a": "**(a) healthy output: the check every rerun pays**",
    "b": "(b) 1 % of the files deleted (at least one)",
    "a2": "(a) the run after (b), healthy again",
    "c": "(c) every file's mtime touched: all hashed",
    "c cold": "(c) touched, output evicted from the page cache",
    "read cold": "baseline: read every file once, evicted first",
    "d": "(d) ledger deleted: every file read and adopted",
}
#: a rerun's check should cost less than this share of writing the same output (writer + ledger only,
#: no fetching or validation: a harvest of it takes longer still)
CHECK_GOAL = 0.01


def found_text(r: dict[str, Any]) -> str:
    if r["kind"] != "check":
        return ""
    parts: list[str] = []
    for key, label in (
        ("missing_on_disk", "missing"),
        ("hashed", "hashed"),
        ("adopted", "adopted"),
        ("damaged", "damaged"),
        ("watermarks_dropped", "watermarks dropped"),
    ):
        if r.get(key):
            parts.append(f"{r[key]:,} {label}")
    found = ", ".join(parts) or "clean"
    if "deleted" in r:
        return f"{r['deleted']:,} file{'s' if r['deleted'] != 1 else ''} deleted → {found}"
    return found


def table_row(r: dict[str, Any], scan: float, read: float) -> str:
    seconds = r["seconds"]
    cells = [r["layout"], STEPS[r["step"]], found_text(r), f"{seconds:.3f}"]
    cells += [f"{r['open_s']:.3f}", f"{r['check_s']:.3f}"] if r["kind"] == "check" else ["", ""]
    cells.append(f"{seconds / r['records'] * 1e6:.2f}")
    if r["kind"] == "build":
        cells += ["", ""]
    else:  # a baseline under a millisecond (a hundred shards) makes no useful ratio
        cells += [
            f"{seconds / base:.{digits}f}" if base >= 1e-3 else "—" for base, digits in ((scan, 1), (read, 2))
        ]
    cells.append(f"{r['peak_mb']:.0f}" if "peak_mb" in r else "")
    return "| " + " | ".join(cells) + " |"


def render(rows: list[dict[str, Any]]) -> tuple[str, list[Goal]]:
    lines = [
        "| layout | step | found | s | open s | check s | µs / record | × scan | × read | peak RSS MB |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    goals: list[Goal] = []
    for layout in ("jsonl", "json"):
        mine = [r for r in rows if r["layout"] == layout]
        if not mine:
            continue
        by = {r["step"]: r for r in mine}
        lines += [table_row(r, by["scan"]["seconds"], by["read"]["seconds"]) for r in mine]
        healthy, built = by["a"]["seconds"], by["build"]["seconds"]
        size = f"{by['a']['records']:,} records in {by['a']['files']:,} files"
        per_file = healthy / by["a"]["files"] * 1e6
        goals.append(
            (
                f"ledger check of a healthy {layout} output, {size}",
                f"{healthy:.3f} s ({healthy / built:.2%} of writing it; {per_file:.1f} µs/file)",
                f"< {CHECK_GOAL:.0%} of writing it",
                healthy < CHECK_GOAL * built,
            )
        )
    sizes = "; ".join(
        f"{r['layout']}: {r['records']:,} records in {r['files']:,} files, {r['data_mb']:,.0f} MB, "
        f"ledger {r['ledger_mb']:,.1f} MB"
        for r in rows
        if r["step"] == "build"
    )
    lines += [
        "",
        f"{sizes}. Seconds; best of 3 for the baselines and (a) (one run with `--quick`), one run "
        "otherwise. **s** = open + check + close of the ledger; **open** includes SQLite's "
        "`quick_check` of the whole ledger; **check** is `reconcile()` alone. µs / record divides s "
        "by the records of the output as built (per file, for json). × scan and × read: s over the "
        'two baselines (warm). Page cache warm unless "evicted". Peak RSS of the child process '
        "that ran the step.",
    ]
    return "\n".join(lines), goals


def run(
    quick: bool, records: int | None = None, files: int | None = None, *, healthy_only: bool = False
) -> Part:
    n_jsonl, n_json = SIZES[quick]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        if records != 0:
            rows += measure_layout(
                "jsonl", records or n_jsonl, Path(tmp), quick=quick, healthy_only=healthy_only
            )
        if files != 0:
            rows += measure_layout("json", files or n_json, Path(tmp), quick=quick, healthy_only=healthy_only)
    body, goals = render(rows)
    return ("What a rerun costs: the ledger checked against the disk (part 9)", body, goals)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="20,000 records and 1,000 files, fewer steps")
    parser.add_argument(
        "--records", type=int, help="records of the jsonl output (default 1,000,000; 0: skip)"
    )
    parser.add_argument("--files", type=int, help="files of the per-record output (default 100,000; 0: skip)")
    parser.add_argument(
        "--healthy-only", action="store_true", help="build, baselines and (a) only (e.g. --files 1000000)"
    )
    parser.add_argument("--child", nargs=3, metavar=("KIND", "FOLDER", "REPEAT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, folder, repeat = args.child
        print(json.dumps(child(kind, Path(folder), int(repeat))))
        return 0
    print_part(run(args.quick, args.records, args.files, healthy_only=args.healthy_only))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
