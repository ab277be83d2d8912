"""Typed run results (the record of lm-evaluation-harness' ``result_schema.py``, with a schema version).

A :class:`RunResult` is one (task, dataset, encoder, attribution) evaluation with everything needed
to trust and reproduce its numbers (config, task version, seed, package versions, git hash, date).
Result files (:mod:`aft_bench.results.files`) are written atomically and never overwritten:
``<out>/<task>/<encoder>__<attribution>__<dataset>__<time>.json``. Per-sample scores live in a
sidecar store (:mod:`aft_bench.results.store`) keyed by sample id and by the run's key
(:mod:`aft_bench.results.keys`: everything that changes the numbers), so an interrupted run, started again,
recomputes only the samples that are missing.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

RESULT_SCHEMA_VERSION = 1


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
    #: side files written beside the result file by :func:`aft_bench.results.files.write_result`: suffix
    #: (``.neurons.csv``) -> a writer
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










