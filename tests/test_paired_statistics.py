"""Known answers of the paired statistics: McNemar's exact test on hand-counted 2x2 tables, Wilcoxon's signed-rank
test against the exact null distribution enumerated here and against scipy, the paired bootstrap's coverage on
simulated data, and Holm's correction of a hand-worked family."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from aft_bench.metrics.paired import (
    holm,
    is_binary,
    mcnemar_exact,
    mcnemar_exact_p,
    mean_difference,
    paired_bootstrap,
    wilcoxon_signed_rank,
)


def _table(both: int, baseline_only: int, other_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Score vectors with the given 2x2 table (rows: baseline right/wrong; columns: other right/wrong)."""
    a = [1] * both + [1] * baseline_only + [0] * other_only + [0] * neither
    b = [1] * both + [0] * baseline_only + [1] * other_only + [0] * neither
    return np.array(a), np.array(b)


def test_mcnemar_exact_on_a_known_table() -> None:
    # 1 vs 9 discordant pairs: p = 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * (1 + 10) / 1024
    a, b = _table(both=30, baseline_only=1, other_only=9, neither=5)
    test = mcnemar_exact(a, b)
    assert (test.baseline_only, test.other_only) == (1, 9)
    assert test.p_value == pytest.approx(22 / 1024, rel=1e-12)
    assert mcnemar_exact(b, a).p_value == pytest.approx(22 / 1024, rel=1e-12)  # symmetric


def test_mcnemar_counts_only_discordant_pairs_and_caps_at_one() -> None:
    assert mcnemar_exact_p(3, 3) == 1.0  # the two tails overlap at the centre: capped
    assert mcnemar_exact_p(0, 0) == 1.0  # no discordant pair: no evidence
    assert mcnemar_exact_p(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact(*_table(500, 0, 6, 500)).p_value == pytest.approx(2 / 64)
    with pytest.raises(ValueError, match="binary"):
        mcnemar_exact([0, 0.5], [1, 0])
    with pytest.raises(ValueError, match="one value per sample"):
        mcnemar_exact([0, 1], [1])


def _exact_signed_rank_p(differences: np.ndarray) -> float:
    """Two-sided p of the signed-rank statistic by enumerating every sign assignment of the ranks (no ties)."""
    nonzero = differences[differences != 0]
    ranks = stats.rankdata(np.abs(nonzero))
    observed = ranks[nonzero > 0].sum()
    sums = np.array([sum(r for r, s in zip(ranks, signs, strict=True) if s)
                     for signs in itertools.product((0, 1), repeat=len(ranks))])
    return min(1.0, 2 * min((sums <= observed).mean(), (sums >= observed).mean()))


def test_wilcoxon_known_exact_answers() -> None:
    # all five differences positive: W+ = 15 is the largest of 2^5 equally likely sums: p = 2 / 32
    assert wilcoxon_signed_rank(np.zeros(5), np.arange(1, 6)) == pytest.approx(0.0625)
    # a zero difference is dropped (Wilcoxon 1945): the same answer with a sixth, unchanged sample
    assert wilcoxon_signed_rank(np.zeros(6), [1, 2, 3, 4, 5, 0]) == pytest.approx(0.0625)
    assert wilcoxon_signed_rank([0.3, 0.2], [0.3, 0.2]) == 1.0  # identical scores: no difference at all
    rng = np.random.default_rng(3)
    for _ in range(3):
        a, b = rng.random(11), rng.random(11) + 0.2
        assert wilcoxon_signed_rank(a, b) == pytest.approx(_exact_signed_rank_p(b - a), rel=1e-9)


@pytest.mark.parametrize("n, ties", [(12, False), (40, False), (80, False), (60, True)])
def test_wilcoxon_against_scipy(n: int, ties: bool) -> None:
    rng = np.random.default_rng(n)
    a = rng.random(n)
    b = a + rng.normal(0.1, 0.3, n)
    if ties:  # rounded scores: tied absolute differences and some zero ones
        a, b = np.round(a, 1), np.round(b, 1)
    expected = stats.wilcoxon(b - a, zero_method="wilcox").pvalue
    assert wilcoxon_signed_rank(a, b) == pytest.approx(expected, rel=1e-12)
    assert wilcoxon_signed_rank(b, a) == pytest.approx(expected, rel=1e-12)


def test_bootstrap_interval_covers_the_true_difference_at_about_the_nominal_rate() -> None:
    true_difference, covered, trials = 0.3, 0, 200
    for seed in range(trials):
        rng = np.random.default_rng(1000 + seed)
        shared = rng.normal(size=60)  # a per-image effect both encoders see: the pairing matters
        a = shared + rng.normal(scale=0.5, size=60)
        b = shared + true_difference + rng.normal(scale=0.5, size=60)
        boot = paired_bootstrap(mean_difference(a, b), 60, resamples=500, seed=seed)
        covered += boot.low <= true_difference <= boot.high
        assert boot.estimate == pytest.approx(float((b - a).mean()))
    assert 0.90 <= covered / trials <= 0.98


def test_bootstrap_is_seeded_and_its_p_value_reads_the_interval() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(40)
    far = paired_bootstrap(mean_difference(a, a + 0.5), 40, resamples=999, seed=7)
    assert (far.low, far.high) == pytest.approx((0.5, 0.5))
    assert far.p_value == pytest.approx(2 / 1000)  # every resample above 0: the smallest possible p
    noisy = mean_difference(a, a + rng.normal(0, 0.2, 40))
    first, again = paired_bootstrap(noisy, 40, seed=1), paired_bootstrap(noisy, 40, seed=1)
    assert first == again and paired_bootstrap(noisy, 40, seed=2) != first
    none = paired_bootstrap(mean_difference(a, a), 40, resamples=100)
    assert (none.estimate, none.low, none.high, none.p_value) == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="at least one paired sample"):
        paired_bootstrap(noisy, 0)


def test_bootstrap_of_a_pooled_statistic_resamples_counts_as_pairs() -> None:
    # a pooled ratio (sum of hits / sum of trials) per encoder: the statistic recomputes it on each resample
    hits_a, hits_b, trials = np.array([1, 2, 3, 4]), np.array([2, 3, 4, 5]), np.array([5, 5, 5, 5])

    def pooled_difference(index: np.ndarray) -> np.ndarray:
        return hits_b[index].sum(axis=1) / trials[index].sum(axis=1) - hits_a[index].sum(axis=1) / trials[
            index].sum(axis=1)

    boot = paired_bootstrap(pooled_difference, 4, resamples=200, seed=0)
    assert (boot.estimate, boot.low, boot.high) == pytest.approx((0.2, 0.2, 0.2))  # every sample gains one hit in 5


def test_holm_on_a_known_family() -> None:
    # sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> raised to 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.01, None, 0.5]) == [0.02, None, 0.5]  # None: no test, not part of the family
    assert holm([0.6, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == []
    with pytest.raises(ValueError, match="p-value #1"):
        holm([0.1, 1.5])
    assert math.isclose(holm([0.2])[0], 0.2)


def test_is_binary() -> None:
    assert is_binary([0, 1, 1.0], [0.0])
    assert not is_binary([0, 1], [0.5])
