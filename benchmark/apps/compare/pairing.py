"""Pairing two encoders' per-sample scores by sample id, from the results store.

A per-sample task keeps each result's records in its sidecar store (``<out>/<task>/<samples_file>``, keyed by sample
id; :class:`~aft_bench.results.store.SampleStore`). :func:`stored_records` reads the records of the samples a result
scored: the whole store, unless the store also holds samples of another ``--limit`` subset (it is shared by every
subset of one run key), in which case the run's own selection is rebuilt from the dataset. :func:`pair` lines up
two encoders' values of one metric on the samples *both* scored; a sample only one of them scored (the other
excluded it, skipped it as a bad sample or has no record of it) is left out of the pairing and counted, with why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aft_bench.results.result import RunResult
from aft_bench.results.store import SampleStore

Record = dict[str, Any]


def stored_records(result: RunResult, task_folder: Path, selection: Callable[[], Sequence[str]]) -> dict[str, Record]:
    """The stored records of the samples ``result`` scored, by sample id, in store order.

    Args:
        result: A result of a per-sample task. task_folder: ``<out>/<task>``, which its ``samples_file`` is relative to.
        selection: The run's sample ids (called only when the store holds more samples than the result scored).

    Raises:
        FileNotFoundError: If the result's store is gone (naming it and what to do).
    """
    path = task_folder / result.samples_file
    if not result.samples_file or not path.is_file():
        raise FileNotFoundError(f"the per-sample scores of {result.task} x {result.encoder} x {result.attribution} "
                                f"({path}) are missing; run the compare again with --fresh to recompute them")
    store = SampleStore(path)
    ids = store.ids()
    selected = result.extra.get("selected")
    if selected is not None and len(ids) > selected:
        ids = [sample_id for sample_id in selection() if sample_id in store]
    return {sample_id: store.get(sample_id) for sample_id in ids}  # type: ignore[misc]


def _value(record: Record | None, metric: str, kind: str) -> Any:
    return None if record is None else record.get(kind, {}).get(metric)


def _why_missing(record: Record | None) -> str:
    """Why a sample has no value: the record's exclusion or skip reason, else that it has none."""
    if record is None:
        return "no stored record"
    if "excluded" in record:
        return f"excluded: {record['excluded']}"
    if "skipped" in record:
        return f"skipped: {record['skipped']}"
    return "not scored for this metric"


@dataclass(frozen=True)
class Paired:
    """Two encoders' values of one metric on the samples both scored.

    Attributes:
        ids: The paired samples, in the baseline's order.
        baseline, other: Their values (n values, or n x K counts of a pooled metric), as stored.
        baseline_only: Samples the baseline scored and the other encoder did not.
        other_only: Samples the other encoder scored and the baseline did not.
        reasons: Why the side without a value of an unpaired sample lacks it (``excluded: empty mask``, ...).
    """

    ids: tuple[str, ...]
    baseline: np.ndarray
    other: np.ndarray
    baseline_only: int = 0
    other_only: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of paired samples."""
        return len(self.ids)

    @property
    def left_out(self) -> int:
        """Samples scored by only one of the two encoders."""
        return self.baseline_only + self.other_only


def pair(baseline: Mapping[str, Record], other: Mapping[str, Record], metric: str, kind: str = "scores") -> Paired:
    """Lines up ``metric`` of two encoders' records on the samples both have a value of.

    Args:
        baseline, other: Records by sample id (:func:`stored_records`).
        metric: The metric's name. kind: ``scores`` (per-sample values) or ``counts`` (a pooled metric's counts).
    """
    ids: list[str] = []
    values_a: list[Any] = []
    values_b: list[Any] = []
    only: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for sample_id in [*baseline, *(i for i in other if i not in baseline)]:
        a = _value(baseline.get(sample_id), metric, kind)
        b = _value(other.get(sample_id), metric, kind)
        if a is not None and b is not None:
            ids.append(sample_id)
            values_a.append(a)
            values_b.append(b)
        elif a is not None or b is not None:
            only["baseline" if a is not None else "other"] += 1
            reasons[_why_missing(other.get(sample_id) if a is not None else baseline.get(sample_id))] += 1
    shape = (0,) if kind == "scores" else (0, 0)
    return Paired(tuple(ids), np.asarray(values_a, dtype=np.float64) if ids else np.zeros(shape),
                  np.asarray(values_b, dtype=np.float64) if ids else np.zeros(shape),
                  only["baseline"], only["other"], dict(reasons))
