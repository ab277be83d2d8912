"""The paired difference of each encoder against the baseline, for every scorecard column, with significance.

For a column of a per-sample metric (a :class:`~aft_bench.metrics.base.Metric` of a task that stores per-sample
scores) the two encoders' scores are paired by sample id (:mod:`aft_bench.apps.compare.pairing`) and compared on the
samples both scored: the mean difference (encoder minus baseline, in the column's unit), a 95% interval from a
seeded paired bootstrap (Efron 1979) and the p-value of the matching paired test: McNemar's exact test (1947)
when every paired score is 0 or 1 (a pointing-game hit, a correct zero-shot answer), Wilcoxon's signed-rank
test (1945) otherwise. A dataset-level score the task pools from per-sample counts (a
:class:`~aft_bench.metrics.base.PooledMetric`) is recomputed on every bootstrap resample of the paired samples'
counts; its p-value is the bootstrap's (:class:`aft_bench.metrics.paired.Bootstrap`). A score no per-sample
record can recompute (detector counts, ROAR's retrained curves) gets the difference of the two results' means,
marked "no test". Holm's (1979) correction runs over every comparison with a p-value in the table (the
family), and a difference is significant when its Holm-adjusted p-value is below ``alpha``.

Each bootstrap is seeded by (``seed``, column, encoder) through :func:`aft_bench.core.seeding.sample_seed`, so a
comparison's interval does not depend on which other comparisons the table holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from aft_bench.apps.compare.pairing import Paired, Record, pair
from aft_bench.apps.compare.scorecard import Column, Scorecard
from aft_bench.core.seeding import sample_seed
from aft_bench.metrics.base import PooledMetric
from aft_bench.metrics.paired import (
    Bootstrap,
    is_binary,
    mcnemar_exact,
    mean_difference,
    paired_bootstrap,
    wilcoxon_signed_rank,
)
from aft_bench.metrics.paired import holm as holm_adjust
from aft_bench.results.result import RunResult

MCNEMAR = "McNemar exact"
WILCOXON = "Wilcoxon signed-rank"
BOOTSTRAP = "bootstrap"
NO_TEST = "no test"
NO_PAIRS = "no paired samples"


@dataclass(frozen=True)
class Difference:
    """One encoder against the baseline in one column.

    Attributes:
        column: The scorecard column. encoder: The compared encoder (the baseline is the scorecard's).
        test: :data:`MCNEMAR`, :data:`WILCOXON`, :data:`BOOTSTRAP`, :data:`NO_TEST` or :data:`NO_PAIRS`.
        n: Paired samples (None for a column without per-sample records).
        baseline_only, other_only, reasons: The unpaired samples (see :class:`~aft_bench.apps.compare.pairing.Paired`).
        baseline_value, other_value: The two encoders' scores on the paired samples (the results' means for
            "no test"), in the column's unit.
        difference: ``other_value - baseline_value``. low, high: Its 95% bootstrap interval (None: no test).
        p_value: The test's p-value. p_holm: Holm-adjusted over the table. significant: ``p_holm < alpha``.
    """

    column: Column
    encoder: str
    test: str
    n: int | None
    baseline_value: float | None
    other_value: float | None
    difference: float | None
    low: float | None = None
    high: float | None = None
    p_value: float | None = None
    p_holm: float | None = None
    significant: bool | None = None
    baseline_only: int = 0
    other_only: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    """How the differences are computed: bootstrap resamples and seed, and the level of significance."""

    resamples: int = 10_000
    seed: int = 0
    alpha: float = 0.05


def _bootstrap(column: Column, encoder: str, statistic: Callable[[np.ndarray], np.ndarray], n: int,
               settings: Settings) -> Bootstrap:
    return paired_bootstrap(statistic, n, resamples=settings.resamples,
                            seed=sample_seed(settings.seed, column.label, encoder))


def _unpaired(paired: Paired) -> dict[str, Any]:
    return {"baseline_only": paired.baseline_only, "other_only": paired.other_only, "reasons": paired.reasons}


def per_sample_difference(column: Column, encoder: str, paired: Paired, settings: Settings) -> Difference:
    """The paired test and bootstrap of a per-sample metric's column (values as stored, times the metric's scale)."""
    if paired.n == 0:
        return Difference(column, encoder, NO_PAIRS, 0, None, None, None, **_unpaired(paired))
    scale = column.metric.scale
    a, b = paired.baseline, paired.other
    binary = is_binary(a, b)
    p_value = mcnemar_exact(a, b).p_value if binary else wilcoxon_signed_rank(a, b)
    boot = _bootstrap(column, encoder, mean_difference(scale * a, scale * b), paired.n, settings)
    return Difference(column, encoder, MCNEMAR if binary else WILCOXON, paired.n, scale * float(a.mean()),
                      scale * float(b.mean()), boot.estimate, boot.low, boot.high, p_value,
                      **_unpaired(paired))


def pooled_difference(column: Column, encoder: str, paired: Paired, settings: Settings) -> Difference:
    """The bootstrap of a pooled metric's column: the pooled score recomputed from resampled per-sample counts."""
    metric = column.metric
    if not isinstance(metric, PooledMetric):
        raise TypeError(f"column {column.label}: {metric.name!r} is no pooled metric; use per_sample_difference")
    if paired.n == 0:
        return Difference(column, encoder, NO_PAIRS, 0, None, None, None, **_unpaired(paired))

    def pooled(totals: np.ndarray) -> float:
        return metric.scale * float(metric.reduce(torch.from_numpy(totals)))

    def statistic(index: np.ndarray) -> np.ndarray:
        weights = np.zeros((index.shape[0], paired.n))  # how often each sample is drawn in each resample
        np.add.at(weights, (np.arange(index.shape[0])[:, None], index), 1.0)
        sums_a, sums_b = weights @ paired.baseline, weights @ paired.other
        return np.array([pooled(sb) - pooled(sa) for sa, sb in zip(sums_a, sums_b, strict=True)])

    boot = _bootstrap(column, encoder, statistic, paired.n, settings)
    return Difference(column, encoder, BOOTSTRAP, paired.n, pooled(paired.baseline.sum(axis=0)),
                      pooled(paired.other.sum(axis=0)), boot.estimate, boot.low, boot.high, boot.p_value,
                      **_unpaired(paired))


def untested_difference(column: Column, encoder: str, baseline: RunResult, other: RunResult) -> Difference:
    """The difference of two results' means, for a score no per-sample record recomputes."""
    a = (baseline.metrics.get(column.metric.name) or {}).get("mean")
    b = (other.metrics.get(column.metric.name) or {}).get("mean")
    difference = None if a is None or b is None else b - a
    return Difference(column, encoder, NO_TEST, None, a, b, difference)


def holm(differences: Sequence[Difference], alpha: float) -> list[Difference]:
    """``differences`` with Holm-adjusted p-values over those that have one, and the significance at ``alpha``."""
    adjusted = holm_adjust([d.p_value for d in differences])
    return [d if p is None else replace(d, p_holm=p, significant=p < alpha)
            for d, p in zip(differences, adjusted, strict=True)]


def compare_columns(card: Scorecard, records: Callable[[Column, RunResult], dict[str, Record]],
                    per_sample: Callable[[Column], bool], settings: Settings) -> list[Difference]:
    """Every encoder but the baseline against the baseline, in every column where both have a result.

    Args:
        card: The scorecard (its cells' results are compared).
        records: The stored per-sample records of a column's result
            (:func:`~aft_bench.apps.compare.pairing.stored_records`).
        per_sample: Whether a column's task keeps per-sample records.
        settings: Resamples, seed and alpha.

    Returns:
        The differences, column by column in scorecard order, with Holm's correction applied over all of them.
    """
    out = []
    for column in card.columns:
        baseline = card.results.get((card.baseline, column.label))
        for encoder in card.encoders:
            other = card.results.get((encoder, column.label))
            if encoder == card.baseline or baseline is None or other is None:
                continue
            if not per_sample(column):
                out.append(untested_difference(column, encoder, baseline, other))
                continue
            kind = "counts" if isinstance(column.metric, PooledMetric) else "scores"
            paired = pair(records(column, baseline), records(column, other), column.metric.name, kind=kind)
            score = pooled_difference if kind == "counts" else per_sample_difference
            out.append(score(column, encoder, paired, settings))
    return holm(out, settings.alpha)
