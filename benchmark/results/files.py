"""Result files: where a results folder keeps them, how they are written (atomically, never overwriting, side
files first) and read back (every readable result, oldest first; anything else skipped with a warning)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

from aft_bench.core.atomic import atomic_write_text
from aft_bench.results.keys import safe_name
from aft_bench.results.result import RunResult, finite_or_null

log = logging.getLogger(__name__)


SAMPLES_DIR = "samples"


REPORTS_DIR = "reports"
"""``<out>/reports/``: what is built from a results folder's results (``aft-bench compare`` scorecards); no result
file lives there, so reading a folder's results skips it."""


# ---------------------------------------------------------------------------------------- writing
def write_result(result: RunResult, out_dir: str | Path) -> Path:
    """Writes ``result`` under ``out_dir/<task>/``; never overwrites an existing file.

    Side files (:attr:`RunResult.attachments`) are written before the result file, so a run killed while writing
    them leaves no result that lacks them.
    """
    return write_into(result, Path(out_dir) / result.task)


def result_stem(result: RunResult) -> str:
    """The start of the result's file name: ``<encoder>__<attribution>__<dataset>`` (file-name safe)."""
    return "__".join(safe_name(s) for s in (result.encoder, result.attribution, result.dataset))


def write_into(result: RunResult, folder: Path) -> Path:
    """Writes ``result`` into ``folder`` itself (as :func:`write_result` does under ``<out>/<task>/``)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    stem = result_stem(result)
    path = folder / f"{stem}__{stamp}.json"
    suffix = 1
    while path.exists():
        path = folder / f"{stem}__{stamp}-{suffix}.json"
        suffix += 1
    folder.mkdir(parents=True, exist_ok=True)
    for ending, writer in result.attachments.items():  # side files first: a result file that exists has them
        writer(path.with_suffix(ending))
    atomic_write_text(path, json.dumps(finite_or_null(result.to_dict()), indent=2, allow_nan=False) + "\n")
    return path


def read_results(folder: str | Path) -> list[RunResult]:
    """Every result file under ``folder`` (recursively), oldest first; sidecars are skipped.

    A ``.json`` file that is no readable result (corrupt, foreign, or lacking fields) is skipped with a warning
    naming it, so one stray file never stops a run or a table.
    """
    return [result for _, result in read_result_files(folder)]


def read_result_files(folder: str | Path) -> list[tuple[Path, RunResult]]:
    """The result files under ``folder`` (recursively) with their results, oldest first (as :func:`read_results`)."""
    found = []
    for path in sorted(Path(folder).rglob("*.json")):
        if SAMPLES_DIR in path.parts or path.name.startswith(".") or REPORTS_DIR in path.relative_to(folder).parts:
            continue
        result = read_result_file(path)
        if result is not None:
            found.append((path, result))
    return sorted(found, key=lambda item: item[1].date)


def read_result_file(path: Path) -> RunResult | None:
    """The result in ``path``, or None (with a warning naming the file and why) if it holds none."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("skipping %s: not readable JSON (%s); move it out of the results folder", path, exc)
        return None
    if not isinstance(data, dict) or "run_key" not in data or "metrics" not in data:
        log.warning("skipping %s: not an aft-bench result (no run_key and metrics)", path)
        return None
    try:
        return RunResult.from_dict(data)
    except ValueError as exc:
        log.warning("skipping %s: not a complete aft-bench result (%s)", path, exc)
        return None
