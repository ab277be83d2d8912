"""Wall time of ``aft-bench compare`` on the embedded world, cold and again, measured in one run.

Runs the same compare twice into a fresh results folder (default: the default compare, ``toy``, ``toy-aft`` and
``toy-fare`` against ``toy`` on the ``interpretability`` suite; the toy encoders should already be cached, else the
first run also trains them) and prints

- the first compare's wall time (every task run for every encoder), with the stages' own run times from the
  result files (``duration_s``) summed per task, and
- the second compare's wall time, which reuses every stage (it loads each encoder once to read its card, pairs the
  stored scores and writes the files), and the ratio of the two.

Run::

    python benchmarks/compare_wall_time.py [--suite interpretability] [--out /tmp/compare_bench] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import shutil
import time
from collections import defaultdict
from pathlib import Path

from aft_bench.apps.cli import main as aft_bench
from aft_bench.results.files import read_results


def timed_compare(argv: list[str]) -> float:
    """Seconds one ``aft-bench compare`` takes (its printed tables are swallowed)."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = aft_bench(["compare", "-q", *argv])
    if code != 0:
        raise SystemExit(f"aft-bench compare {' '.join(argv)} exited with status {code}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="interpretability")
    parser.add_argument("--out", default="/tmp/compare_bench", help="results folder (emptied first)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    flags = ["--suite", args.suite, "--out", str(out)] + (["--threads", str(args.threads)] if args.threads else [])
    cold = timed_compare(flags)
    again = timed_compare(flags)
    per_task: dict[str, float] = defaultdict(float)
    for result in read_results(out):
        per_task[result.task] += result.duration_s
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, suite {args.suite}")
    print(f"first compare: {cold:.1f} s wall")
    for task, seconds in per_task.items():
        print(f"  {task:<20} {seconds:7.1f} s in its results' duration_s")
    print(f"second compare: {again:.1f} s wall ({again / cold:.3f} of the first: every stage reused)")
    return {"cold_s": cold, "again_s": again, "per_task_s": dict(per_task)}


if __name__ == "__main__":
    main()
