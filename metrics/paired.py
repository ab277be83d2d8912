"""Paired statistics: two encoders scored on the same samples, and whether their difference is real.

Every function here takes the per-sample scores of a baseline and of another encoder *on the same samples, in
the same order* (the pairing is done by the caller, by sample id) and is pure: numpy arrays in, numbers out.

* :func:`mcnemar_exact` -- binary scores (a pointing-game hit, a correct zero-shot answer): McNemar's (1947) test
  on the discordant pairs, exact (a two-sided binomial test of the discordant counts against 1/2).
* :func:`wilcoxon_signed_rank` -- continuous scores (PG-energy, Gini, SSIM): Wilcoxon's (1945) signed-rank test of
  the paired differences, through :func:`scipy.stats.wilcoxon` (zero differences dropped, as Wilcoxon did).
* :func:`paired_bootstrap` -- the percentile interval of a paired statistic (Efron 1979; Efron & Tibshirani 1993,
  ch. 13): the samples are resampled with replacement *as pairs*, so the correlation between the two encoders'
  scores on one image is kept, and the statistic is recomputed on every resample (a mean difference, or a
  dataset-pooled score recomputed from resampled counts).
* :func:`holm` -- Holm's (1979) step-down correction of a family of p-values, controlling the family-wise error
  rate without assuming independence.

References:
    McNemar, Q. (1947). Note on the sampling error of the difference between correlated proportions or
    percentages. Psychometrika 12(2), 153-157.
    Wilcoxon, F. (1945). Individual comparisons by ranking methods. Biometrics Bulletin 1(6), 80-83.
    Efron, B. (1979). Bootstrap methods: another look at the jackknife. Annals of Statistics 7(1), 1-26.
    Efron, B., Tibshirani, R. (1993). An Introduction to the Bootstrap. Chapman & Hall.
    Holm, S. (1979). A simple sequentially rejective multiple test procedure. Scandinavian Journal of
    Statistics 6(2), 65-70.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

#: at most this many resampled indices are held in memory at once (resamples x samples)
BOOTSTRAP_CHUNK = 4_000_000


def _pair(baseline: ArrayLike, other: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The two score vectors as float64 arrays, checked to be paired (same length, finite)."""
    a = np.asarray(baseline, dtype=np.float64).reshape(-1)
    b = np.asarray(other, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need one value per sample for both encoders, got {a.size} and {b.size} "
                         "values; pair them by sample id first")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired scores hold NaN or Inf values; leave those samples out of the pairing")
    return a, b


def is_binary(*scores: ArrayLike) -> bool:
    """Whether every value of every score vector is 0 or 1 (a hit or a miss, correct or not)."""
    return all(np.isin(np.asarray(s, dtype=np.float64), (0.0, 1.0)).all() for s in scores)


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test of two binary score vectors.

    Attributes:
        baseline_only: Samples the baseline gets right and the other encoder wrong.
        other_only: Samples the other encoder gets right and the baseline wrong.
        p_value: Two-sided exact p-value.
    """

    baseline_only: int
    other_only: int
    p_value: float


def mcnemar_exact_p(baseline_only: int, other_only: int) -> float:
    """The two-sided exact McNemar p-value of the discordant counts of a 2x2 table.

    Under the null hypothesis (both encoders equally often right) each discordant pair falls on either side with
    probability 1/2, so ``other_only ~ Binomial(baseline_only + other_only, 1/2)``; the two-sided p-value is
    twice the smaller tail, at most 1 (McNemar 1947, in its exact binomial form). Concordant pairs carry no
    information about the difference and do not enter.

    Raises:
        ValueError: For a negative count.
    """
    if baseline_only < 0 or other_only < 0:
        raise ValueError(f"discordant counts must be >= 0, got {baseline_only} and {other_only}")
    n = baseline_only + other_only
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * stats.binom.cdf(min(baseline_only, other_only), n, 0.5)))


def mcnemar_exact(baseline: ArrayLike, other: ArrayLike) -> McNemar:
    """McNemar's exact test of paired binary scores (1 = hit / correct, 0 = miss / wrong).

    Raises:
        ValueError: If the vectors are not paired or hold a value other than 0 and 1.
    """
    a, b = _pair(baseline, other)
    if not is_binary(a, b):
        raise ValueError("McNemar's test needs binary scores (0 or 1); use wilcoxon_signed_rank for continuous ones")
    baseline_only, other_only = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    return McNemar(baseline_only, other_only, mcnemar_exact_p(baseline_only, other_only))


def wilcoxon_signed_rank(baseline: ArrayLike, other: ArrayLike) -> float:
    """The two-sided p-value of Wilcoxon's signed-rank test of the differences ``other - baseline``.

    Zero differences are dropped before ranking (Wilcoxon 1945; scipy's ``zero_method="wilcox"``); tied absolute
    differences share their mean rank. scipy chooses the null distribution (``method="auto"``): exact for small
    samples, the normal approximation with the tie correction for large ones. When every difference is zero the
    encoders agree on every sample and the p-value is 1.

    Raises:
        ValueError: If the vectors are not paired.
    """
    a, b = _pair(baseline, other)
    differences = b - a
    if not np.any(differences != 0):
        return 1.0
    return float(stats.wilcoxon(differences, zero_method="wilcox", alternative="two-sided").pvalue)


@dataclass(frozen=True)
class Bootstrap:
    """A paired bootstrap of a statistic.

    Attributes:
        estimate: The statistic on the samples as they are.
        low, high: The percentile interval at ``confidence``.
        p_value: Two-sided bootstrap p-value of "no difference": twice the smaller share of resampled statistics
            on either side of 0 (each share counted as ``(1 + k) / (1 + resamples)``), at most 1; the smallest
            level at which the percentile interval excludes 0.
        resamples: The number of resamples. confidence: The interval's level.
    """

    estimate: float
    low: float
    high: float
    p_value: float
    resamples: int
    confidence: float


Statistic = Callable[[np.ndarray], np.ndarray]
"""A paired statistic: an R x n matrix of sample indices (one resample per row) -> its R values."""


def mean_difference(baseline: ArrayLike, other: ArrayLike) -> Statistic:
    """The statistic "mean of ``other - baseline``" over the rows of an index matrix."""
    a, b = _pair(baseline, other)
    differences = b - a
    return lambda index: differences[index].mean(axis=1)


def paired_bootstrap(statistic: Statistic, n: int, *, resamples: int = 10_000, seed: int = 0,
                     confidence: float = 0.95) -> Bootstrap:
    """The percentile bootstrap of a paired statistic over ``n`` samples (Efron 1979).

    Each resample draws ``n`` sample indices with replacement; both encoders' scores of a drawn sample come along
    together, so the interval reflects the paired design. The draws come from ``numpy.random.default_rng(seed)``,
    in chunks of at most :data:`BOOTSTRAP_CHUNK` indices, so the result depends on the seed only.

    Args:
        statistic: The statistic of an index matrix (see :data:`Statistic`); e.g. :func:`mean_difference`.
        n: Number of paired samples (at least 1).
        resamples: Number of bootstrap resamples (at least 1).
        seed: The generator's seed.
        confidence: The interval's level, in (0, 1).

    Raises:
        ValueError: For ``n`` or ``resamples`` below 1, or a confidence outside (0, 1).
    """
    if n < 1:
        raise ValueError(f"a bootstrap needs at least one paired sample, got {n}")
    if resamples < 1:
        raise ValueError(f"bootstrap resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"the interval's confidence must lie in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    estimate = float(statistic(np.arange(n)[None, :])[0])
    chunk = max(1, BOOTSTRAP_CHUNK // n)
    values = np.concatenate([np.asarray(statistic(rng.integers(0, n, size=(min(chunk, resamples - start), n))),
                                        dtype=np.float64)
                             for start in range(0, resamples, chunk)])
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    below = (1 + int((values <= 0).sum())) / (1 + resamples)
    above = (1 + int((values >= 0).sum())) / (1 + resamples)
    return Bootstrap(estimate, float(low), float(high), min(1.0, 2.0 * min(below, above)), resamples, confidence)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's (1979) step-down adjusted p-values; None (a comparison without a test) stays None.

    With the m p-values sorted ascending, ``p_(i)`` becomes ``max over j <= i of min(1, (m - j + 1) p_(j))``;
    rejecting every hypothesis whose adjusted p-value is below alpha controls the family-wise error rate at alpha
    whatever the dependence between the tests. The result is in the input's order.

    Raises:
        ValueError: For a p-value outside [0, 1] or NaN.
    """
    tested = [(i, p) for i, p in enumerate(p_values) if p is not None]
    for i, p in tested:
        if not (isinstance(p, int | float) and 0.0 <= p <= 1.0) or math.isnan(p):
            raise ValueError(f"p-value #{i} is {p!r}: p-values lie in [0, 1]")
    adjusted: list[float | None] = [None] * len(p_values)
    m, running = len(tested), 0.0
    for rank, (i, p) in enumerate(sorted(tested, key=lambda item: item[1])):
        running = max(running, min(1.0, (m - rank) * float(p)))
        adjusted[i] = running
    return adjusted
