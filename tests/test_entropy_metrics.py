"""Entropies of a classifier's softmax (aft_bench.metrics.entropy): known answers, the category renormalisation,
edge cases, and a cross-check against scipy.stats.entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from aft_bench.metrics.entropy import NO_CATEGORY, category_entropy, entropy

BIG = 200.0  # exp(-200) ~ 1e-87: the other classes' share is zero to far below float64 rounding of the answers


def test_known_answers_uniform_one_hot_and_ties() -> None:
    logits = torch.tensor([[0.0] * 8,                    # uniform over 8: ln 8
                           [BIG] + [0.0] * 7,            # one-hot: 0
                           [BIG, BIG] + [0.0] * 6,       # a two-class tie: ln 2
                           [3.0, 3.0, 3.0, 3.0, -BIG, -BIG, -BIG, -BIG]])  # four-way tie: ln 4
    values = entropy(logits)
    assert values.dtype == torch.float64
    torch.testing.assert_close(values, torch.tensor([math.log(8), 0.0, math.log(2), math.log(4)],
                                                    dtype=torch.float64), rtol=0, atol=1e-12)


def test_entropy_is_shift_invariant_and_matches_scipy() -> None:
    logits = torch.randn(6, 11, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    expected = scipy.stats.entropy(scipy.special.softmax(logits.numpy(), axis=1), axis=1)  # natural log
    np.testing.assert_allclose(entropy(logits).numpy(), expected, rtol=1e-12)
    torch.testing.assert_close(entropy(logits + 1000.0), entropy(logits), rtol=1e-9, atol=1e-9)


def test_within_renormalises_over_the_chosen_classes() -> None:
    logits = torch.zeros(2, 6)
    within = torch.tensor([[True, True, True, False, False, False], [True] + [False] * 5])
    torch.testing.assert_close(entropy(logits, within), torch.tensor([math.log(3), 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="takes no class in rows \\[0\\]"):
        entropy(logits, torch.tensor([[False] * 6, [True] * 6]))
    with pytest.raises(ValueError, match="bool tensor"):
        entropy(logits, torch.ones(2, 5, dtype=torch.bool))


def test_category_entropy_known_answers() -> None:
    # classes 0-2: category 0; class 3: a category of one class; classes 4-5: excluded (no category)
    category_of = torch.tensor([0, 0, 0, 1, NO_CATEGORY, NO_CATEGORY])
    uniform = torch.zeros(4, 6)
    values = category_entropy(uniform, torch.tensor([1, 3, 4, 0]), category_of)
    assert values[0] == pytest.approx(math.log(3), abs=1e-12)  # renormalised within {0, 1, 2}
    assert values[1] == 0.0  # the only class of its category
    assert math.isnan(values[2])  # an excluded class: no category entropy (the task excludes the sample)
    # a tie between two classes of the category, the third far below; a large logit outside does not count
    tie = torch.tensor([[BIG, BIG, 0.0, 0.0, 2 * BIG, 0.0]])
    assert category_entropy(tie, torch.tensor([2]), category_of)[0] == pytest.approx(math.log(2), abs=1e-12)
    assert entropy(tie)[0] == pytest.approx(0.0, abs=1e-12)  # while the entire softmax is one-hot on class 4


def test_bad_inputs_are_refused_with_the_rows() -> None:
    with pytest.raises(ValueError, match="B x C"):
        entropy(torch.zeros(3))
    with pytest.raises(ValueError, match="NaN/Inf values in rows \\[1\\]"):
        entropy(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="outside 0..2"):
        category_entropy(torch.zeros(1, 3), torch.tensor([3]), torch.tensor([0, 0, 0]))
    with pytest.raises(ValueError, match="one entry per class"):
        category_entropy(torch.zeros(1, 3), torch.tensor([0]), torch.tensor([0, 0]))
