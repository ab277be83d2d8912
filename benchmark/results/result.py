"""Typed run results, their writer, and the per-sample store that makes runs resumable.

A :class:`RunResult` is one (task, dataset, encoder, attribution) evaluation with everything needed
to trust and reproduce its numbers (config, task version, seed, package versions, git hash, date).
Result files are written atomically and never overwritten:
``<out>/<task>/<encoder>__<attribution>__<dataset>__<time>.json``. Per-sample scores live in a
sidecar JSON-lines file keyed by sample id and by the run's key (everything that changes the numbers),
so an interrupted run, started again, recomputes only the samples that are missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import re
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from aft_bench.core.atomic import atomic_write_text

log = logging.getLogger(__name__)

RESULT_SCHEMA_VERSION = 1
SAMPLES_DIR = "samples"
REPORTS_DIR = "reports"
"""``<out>/reports/``: what is built from a results folder's results (``aft-bench compare`` scorecards); no result
file lives there, so reading a folder's results skips it."""


@dataclass
class RunResult:
    """One evaluation: summaries per metric plus provenance.

    Attributes:
        task, task_version, dataset, encoder, attribution: What was evaluated.
        metrics: ``{name: {"mean", "ci95", "n", "higher_is_better"}}``; means in the metric's unit.
        n: Samples scored. excluded: counts per reason (for example ``"empty mask"``).
        skipped: counts per reason of samples skipped under ``--on-error skip``.
        config: The resolved run configuration. run_key: hash of what changes the numbers.
        samples_file: The sidecar with the per-sample scores (relative to the result file).
    """

    task: str
    task_version: int
    dataset: str
    encoder: str
    attribution: str
    metrics: dict[str, dict[str, Any]]
    n: int
    excluded: dict[str, int]
    skipped: dict[str, int]
    config: dict[str, Any]
    run_key: str
    seed: int
    samples_file: str
    duration_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=lambda: package_versions())
    git: str | None = field(default_factory=lambda: git_hash())
    date: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = RESULT_SCHEMA_VERSION
    #: side files written beside the result file by :func:`write_result`: suffix (``.neurons.csv``) -> a writer
    #: taking the path (it writes atomically); not part of the JSON record
    attachments: dict[str, Callable[[Path], None]] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _copy(getattr(self, f.name)) for f in fields(self) if f.name != "attachments"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        """The result a :meth:`to_dict` record describes (unknown keys are ignored).

        Raises:
            ValueError: Naming the missing fields, or the fields that should be objects and are not.
        """
        missing = [f.name for f in fields(cls) if f.name != "attachments" and f.name not in data
                   and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise ValueError(f"it lacks the fields {missing}")
        wrong = [name for name in _OBJECT_FIELDS if not isinstance(data[name], Mapping)]
        if wrong:
            raise ValueError(f"its fields {wrong} are not JSON objects")
        known = {f.name for f in fields(cls)} - {"attachments"}
        return cls(**{k: v for k, v in data.items() if k in known})

    def row_key(self) -> tuple[str, ...]:
        """What tells two results' numbers apart: the run key (task version, encoder and card, method and its
        arguments, options, data root and dataset arguments, seed) plus the ``--limit``, which the run key of a
        per-sample task leaves out (its store is shared by every subset); a leaderboard has one row per key."""
        limit = json.dumps(self.config.get("limit"))
        return (self.task, self.dataset, self.encoder, self.attribution, self.run_key, limit)

    def numbers(self) -> Any:
        """The numbers of the result as they are stored (metrics, n, excluded and skipped counts)."""
        return _copy(finite_or_null([self.metrics, self.n, self.excluded, self.skipped]))


#: the fields of a result record that must be JSON objects
_OBJECT_FIELDS = ("metrics", "excluded", "skipped", "config")


# ---------------------------------------------------------------------------------------- provenance
def package_versions() -> dict[str, str]:
    """Versions of Python and the packages whose behaviour changes the numbers."""
    versions = {"python": platform.python_version()}
    for pkg in ("aft-bench", "torch", "open_clip_torch", "numpy", "scikit-learn", "scikit-image"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_hash() -> str | None:
    """The aft-bench checkout's commit (with ``-dirty`` when modified), or None outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True, text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_key(parts: Mapping[str, Any]) -> str:
    """A short stable hash of everything that changes a run's numbers."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def safe_name(name: str) -> str:
    """A file-name-safe version of an encoder/attribution name (``ViT-B-16:openai`` -> ``ViT-B-16_openai``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] or "unnamed"


# ---------------------------------------------------------------------------------------- writing
def write_result(result: RunResult, out_dir: str | Path) -> Path:
    """Writes ``result`` under ``out_dir/<task>/``; never overwrites an existing file.

    Side files (:attr:`RunResult.attachments`) are written before the result file, so a run killed while writing
    them leaves no result that lacks them.
    """
    return _write(result, Path(out_dir) / result.task)


def result_stem(result: RunResult) -> str:
    """The start of the result's file name: ``<encoder>__<attribution>__<dataset>`` (file-name safe)."""
    return "__".join(safe_name(s) for s in (result.encoder, result.attribution, result.dataset))


def _write(result: RunResult, folder: Path) -> Path:
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


def _copy(value: Any) -> Any:
    """A deep copy of a JSON-like value (what :func:`dataclasses.asdict` did, without the attachments)."""
    return json.loads(json.dumps(value, default=str)) if isinstance(value, dict | list) else value


def finite_or_null(value: Any) -> Any:
    """Replaces NaN/Inf floats by None so result files are strict JSON (NaN: undefined, e.g. ci95 of n=1)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    return value


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


class ResultsFolder:
    """The results of one task folder (``<out>/<task>``): read once, then kept up to date in memory.

    :meth:`add` writes a new result, unless the newest stored result of its row (:meth:`RunResult.row_key`)
    has the same numbers: then that one stands and nothing is written. Files that another process wrote into
    the folder meanwhile are picked up for the result's own file stem only, so adding stays cheap.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._files: dict[Path, RunResult] = dict(read_result_files(self.folder)) if self.folder.is_dir() else {}

    @property
    def results(self) -> list[RunResult]:
        """Every result known, oldest first."""
        return sorted(self._files.values(), key=lambda r: r.date)

    def add(self, result: RunResult) -> tuple[Path, RunResult, bool]:
        """Writes ``result`` (atomically, never overwriting), or reuses the stored result it repeats.

        Returns:
            The result's file, the result that stands (``result`` or the stored one) and whether it was reused.
        """
        stem = result_stem(result)
        for path in sorted(set(self.folder.glob(f"{stem}__*.json")) - set(self._files)):
            stored = read_result_file(path)
            if stored is not None:
                self._files[path] = stored
        same_row = [(path, stored) for path, stored in self._files.items() if stored.row_key() == result.row_key()]
        if same_row:
            path, newest = max(same_row, key=lambda item: (item[1].date, item[0].name))
            if newest.numbers() == result.numbers():
                log.info("%s x %s: same numbers as %s, which stands (nothing written)", result.encoder,
                         result.attribution, path)
                return path, newest, True
        path = _write(result, self.folder)
        self._files[path] = result
        return path, result, False


# ---------------------------------------------------------------------------------------- samples
class SampleStore:
    """Append-only JSON-lines store of per-sample records keyed by sample id.

    Each record is ``{"id": ..., "scores": {...}}``, ``{"id": ..., "excluded": reason}`` or
    ``{"id": ..., "skipped": reason}``. Records are flushed and fsynced after every batch, so a killed
    run loses at most the batch in flight; a partly written last line is ignored on reading.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, dict[str, Any]] = dict(self._read())

    def _read(self) -> Iterator[tuple[str, dict[str, Any]]]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the last line of a killed run may be cut off
                yield record["id"], record

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, sample_id: str) -> dict[str, Any] | None:
        return self._records.get(sample_id)

    def ids(self) -> list[str]:
        """The stored sample ids, in the order they were first stored."""
        return list(self._records)

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Appends records durably (one fsync per call)."""
        records = list(records)
        if not records:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            if fh.tell() and not self._ends_with_newline():
                fh.write("\n")
            for record in records:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
                self._records[record["id"]] = record
            fh.flush()
            os.fsync(fh.fileno())

    def absorb(self, other: str | Path) -> int:
        """Appends the records of another store file that this one lacks, then deletes that file.

        How a sharded run's per-rank files (and those a killed sharded run left) join the main store.

        Returns:
            The number of records taken over.
        """
        other = Path(other)
        taken = [record for sample_id, record in SampleStore(other)._records.items() if sample_id not in self]
        self.append(taken)
        other.unlink()
        return len(taken)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"
