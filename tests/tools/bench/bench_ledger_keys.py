"""The ledger alone: what recording a written shard's keys costs, and what reading them back costs.

Run with ``uv run python -m tests.tools.bench.bench_ledger_keys [--quick] [--repeat N]``. A script,
not a test, and not one of the numbered parts: it isolates the one cost that part 4's end-to-end
numbers hide inside a harvest (issue 17: about a quarter of ZTF → jsonl).

Everything goes through the public :class:`~harvester.io.ledger.Ledger` API, as the pipeline calls
it: :meth:`Ledger.commit` once per shard of 10,000 keys (the default ``jsonl_shard_records``) with
the shard's :class:`FileInfo`, ZTF-shaped keys (``object_id``, ``repr(mjd)``; 500 epochs per object,
one target per 34,000 keys, as the fake sky's cones), ``synchronous=FULL`` as always. Measured, in
one process, each step best and worst of ``--repeat`` fresh folders:

- **commit, empty ledger**: 200,000 keys into a new output (part 4's case);
- **commit, large ledger**: 100,000 more keys into a ledger that holds 1,000,000 (200,000 with
  ``--quick``), built untimed through the same API;
- **present**: :meth:`Ledger.present` of 100,000 keys, half of them held (a rerun's lookups);
- **forget**: 1 % of the shards deleted, then :meth:`Ledger.reconcile` (their keys forgotten and
  listed as lost, the watermarks of their targets dropped);
- **open**: opening the large ledger (SQLite's ``quick_check`` of the whole file included), and its
  size on disk.

The shards themselves are empty files (the ledger never reads a listed file whose size and time
agree), so only the ledger is timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from harvester.archives.ztf.records import ZtfRecord
from harvester.io.ledger import FileInfo, Key, Ledger, ledger_path

SHARD = 10_000
PER_OBJECT = 500
PER_TARGET = 34_000
RUN_ID = "20261207T000000-bench0"
EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # of b""


def key(k: int) -> Key:
    """The ``k``-th ZTF-shaped key: 500 epochs per object id, mjd as ``repr`` of a float."""
    obj, epoch = divmod(k, PER_OBJECT)
    return (str(675103300000000 + obj), repr(58000.0 + epoch * 0.731 + obj * 1e-4))


def wkey(k: int) -> str:
    return f"ztf-cone-{k // PER_TARGET:05d}"


Entry = tuple[Key, str, str | None]


def shard(folder: Path, seq: int, start: int, stop: int) -> tuple[list[Entry], FileInfo]:
    """One shard's entries (as a writer reports them) and its file, created empty in ``folder``."""
    name = f"part-{RUN_ID}-{seq:05d}.jsonl"
    path = folder / name
    path.touch()
    st = path.stat()
    entries: list[Entry] = [(key(k), name, wkey(k)) for k in range(start, stop)]
    return entries, FileInfo(name, st.st_size, st.st_mtime_ns, EMPTY_SHA)


async def fill(ledger: Ledger, start: int, stop: int, seq: int, timed: list[float] | None = None) -> int:
    """Commit keys ``start`` to ``stop`` shard by shard; the commits alone are timed into ``timed``."""
    for lo in range(start, stop, SHARD):
        seq += 1
        entries, info = shard(ledger.folder, seq, lo, min(stop, lo + SHARD))
        began = time.perf_counter()
        await ledger.commit(entries, [info], RUN_ID)
        if timed is not None:
            timed.append(time.perf_counter() - began)
    return seq


async def _timed(fn: Callable[[], Awaitable[object]]) -> float:
    began = time.perf_counter()
    await fn()
    return time.perf_counter() - began


async def once(root: Path, fresh: int, large: int, more: int) -> dict[str, float]:
    out: dict[str, float] = {}
    folder = root / "fresh" / "ztf"
    folder.mkdir(parents=True)
    async with Ledger(folder, ZtfRecord) as ledger:
        commits: list[float] = []
        await fill(ledger, 0, fresh, 0, commits)
        out["commit_empty"] = fresh / sum(commits)

    folder = root / "large" / "ztf"
    folder.mkdir(parents=True)
    async with Ledger(folder, ZtfRecord) as ledger:
        seq = await fill(ledger, 0, large, 0)
    began = time.perf_counter()
    ledger = await Ledger(folder, ZtfRecord).open()
    out["open_s"] = time.perf_counter() - began
    out["ledger_mb"] = ledger_path(folder).stat().st_size / 1e6
    try:
        commits = []
        seq = await fill(ledger, large, large + more, seq, commits)
        out["commit_large"] = more / sum(commits)
        total = large + more
        asked = [key(k) for k in range(total - 50_000, total + 50_000)]  # half held, half not
        found: set[Key] = set()

        async def look() -> None:
            found.update(await ledger.present(asked))

        out["present"] = len(asked) / await _timed(look)
        if len(found) != 50_000:
            raise RuntimeError(f"present() found {len(found)} of the 50,000 held keys")
        shards = sorted(folder.glob("part-*.jsonl"))
        doomed = shards[50::100] or shards[:1]
        for path in doomed:
            path.unlink()
        result = None

        async def check() -> None:
            nonlocal result
            result = await ledger.reconcile()

        out["forget_s"] = await _timed(check)
        assert result is not None
        if result.missing_on_disk != len(doomed) * SHARD:
            raise RuntimeError(f"forgot {result.missing_on_disk} keys, not {len(doomed) * SHARD}")
        out["forgotten"] = result.missing_on_disk
        if await ledger.count() != total - len(doomed) * SHARD:
            raise RuntimeError("the ledger's count after forgetting is wrong")
    finally:
        await ledger.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a 200,000-key large ledger, not 1,000,000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    large = 200_000 if args.quick else 1_000_000
    runs: list[dict[str, float]] = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-ledger-keys-") as tmp:
            runs.append(anyio.run(once, Path(tmp), 200_000, large, 100_000))

    def span(name: str, fmt: str) -> str:
        values = [r[name] for r in runs]
        lo, hi, mid = min(values), max(values), statistics.median(values)
        return f"{format(mid, fmt)} ({format(lo, fmt)} – {format(hi, fmt)})"

    print(f"ledger alone, {args.repeat} runs, median (min – max); pid {os.getpid()}")
    print("| step | value |\n| --- | --- |")
    print(f"| commit 200,000 keys into an empty ledger, keys/s | {span('commit_empty', ',.0f')} |")
    print(f"| commit 100,000 keys into a {large:,}-key ledger, keys/s | {span('commit_large', ',.0f')} |")
    print(f"| present() of 100,000 keys (half held), keys/s | {span('present', ',.0f')} |")
    print(f"| reconcile after 1 % of the shards deleted, s | {span('forget_s', '.3f')} |")
    print(f"| open the {large:,}-key ledger (quick_check included), s | {span('open_s', '.3f')} |")
    print(f"| its size, MB | {span('ledger_mb', '.1f')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
