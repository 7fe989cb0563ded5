"""Benchmark: how long `import harvester` and the `harvester` command take to start (part 10).

Run with ``uv run python -m tests.tools.bench.bench_startup [--quick]`` (or as part 10 of
``python -m tests.tools.bench``). A script, not a test.

Each command runs in a fresh interpreter (a subprocess, as a user's shell starts it), several
times; the median wall time is reported next to the bare interpreter's start (``python -c
pass``) measured in the same run, so a slower machine moves both. Goals (issues 16 and 17):
``import harvester`` and ``harvester --help`` each ≤ 0.3 s. ``harvester run --help`` and an
import of the API (what a notebook's first ``harvest()`` loads) are shown for context.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.tools.bench.bench_ztf_rate import Goal, Part, print_part

GOAL_S = 0.3
CLI = str(Path(sys.executable).with_name("harvester"))


def wall(args: list[str], runs: int) -> float:
    """Median wall time of ``args`` over ``runs`` fresh processes (after one warm-up run)."""
    subprocess.run(args, check=True, capture_output=True)  # warm the file cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(quick: bool) -> Part:
    runs = 3 if quick else 9
    python = sys.executable
    commands = [
        ("bare interpreter: `python -c pass`", [python, "-c", "pass"]),
        ("`python -c 'import harvester'`", [python, "-c", "import harvester"]),
        ("`harvester --help`", [CLI, "--help"]),
        ("`harvester run --help`", [CLI, "run", "--help"]),
        ("`python -c 'import harvester.api'` (the first harvest())", [python, "-c", "import harvester.api"]),
    ]
    measured = [(label, wall(args, runs)) for label, args in commands]
    bare = measured[0][1]
    lines = [
        f"Median of {runs} fresh processes each (after one warm-up run).",
        "",
        "| command | wall s | over the bare interpreter, s |",
        "| --- | --- | --- |",
    ]
    for label, seconds in measured:
        lines.append(f"| {label} | {seconds:.3f} | {seconds - bare:+.3f} |")
    import_s, help_s = measured[1][1], measured[2][1]
    goals: list[Goal] = [
        (
            "`import harvester` (bare interpreter)",
            f"{import_s:.2f} s ({bare:.2f} s)",
            f"≤ {GOAL_S} s",
            import_s <= GOAL_S,
        ),
        ("`harvester --help`", f"{help_s:.2f} s", f"≤ {GOAL_S} s", help_s <= GOAL_S),
    ]
    return ("Start-up: `import harvester` and `harvester --help` (part 10)", "\n".join(lines), goals)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 runs per command instead of 9")
    args = parser.parse_args(argv)
    print_part(run(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
