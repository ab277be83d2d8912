"""Map similarities of the sanity checks (aft_bench.metrics.similarity): ranks and Spearman against scipy, HOG
similarity against scikit-image's HOG on the same inputs, known answers and the undefined cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from skimage.feature import hog

from aft_bench.metrics.similarity import (
    HOG_SIMILARITY,
    RANDOMISED_SSIM,
    SPEARMAN,
    SPEARMAN_ABS,
    hog_similarity,
    rank,
    spearman,
    spearman_abs,
)
from aft_bench.metrics.ssim import normalize_minmax


def _maps(seed: int, shape: tuple[int, ...] = (4, 32, 32)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_rank_matches_scipy_rankdata_with_ties() -> None:
    values = torch.randint(0, 6, (5, 40), generator=torch.Generator().manual_seed(1)).double()
    expected = np.stack([scipy.stats.rankdata(row, method="average") for row in values.numpy()])
    np.testing.assert_array_equal(rank(values).numpy(), expected)
    assert rank(torch.tensor([[2.0, 2.0, 2.0]])).tolist() == [[2.0, 2.0, 2.0]]


@pytest.mark.parametrize("ties", [False, True])
def test_spearman_matches_scipy(ties: bool) -> None:
    a, b = _maps(2), _maps(3)
    b = 0.6 * a + b
    if ties:  # quantised maps, as thresholded or ReLU'd maps are: many tied pixels
        a, b = a.round(), b.clamp(min=0).round()
    expected = [scipy.stats.spearmanr(a[i].flatten(), b[i].flatten()).statistic for i in range(len(a))]
    np.testing.assert_allclose(spearman(a, b).numpy(), expected, rtol=1e-10)
    expected_abs = [scipy.stats.spearmanr(a[i].abs().flatten(), b[i].abs().flatten()).statistic for i in range(len(a))]
    np.testing.assert_allclose(spearman_abs(a, b).numpy(), expected_abs, rtol=1e-10)


def test_known_answers_identity_order_and_sign() -> None:
    a = _maps(4)
    torch.testing.assert_close(spearman(a, a), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(spearman(a.exp(), a), torch.ones(4, dtype=torch.float64))  # monotone: same ranks
    torch.testing.assert_close(spearman(-a, a), -torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(spearman_abs(-a, a), torch.ones(4, dtype=torch.float64))  # the sign is dropped
    torch.testing.assert_close(hog_similarity(a, a), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(RANDOMISED_SSIM(a, a), torch.ones(4, dtype=torch.float64))


def test_hog_similarity_is_the_correlation_of_skimage_hog_features() -> None:
    a, b = _maps(5), _maps(6)
    b = a + 0.8 * b
    expected = [np.corrcoef(hog(normalize_minmax(x[None])[0].numpy(), channel_axis=None),
                            hog(normalize_minmax(y[None])[0].numpy(), channel_axis=None))[0, 1]
                for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(hog_similarity(a, b).numpy(), expected, rtol=1e-10)
    # HOG orientations are unsigned: a negated map has the same descriptor
    torch.testing.assert_close(hog_similarity(-a, a), torch.ones(4, dtype=torch.float64))


def test_stripes_of_the_other_orientation_are_dissimilar() -> None:
    ramp = torch.arange(32, dtype=torch.float64)
    rows = torch.sin(ramp / 2)[None, :, None].expand(1, 32, 32)
    columns = rows.transpose(1, 2)
    assert float(hog_similarity(rows, columns)[0]) < 0.0
    assert float(hog_similarity(rows, rows + 0.01 * _maps(7, (1, 32, 32)))[0]) > 0.95


def test_constant_maps() -> None:
    flat, a = torch.zeros(1, 32, 32, dtype=torch.float64), _maps(8, (1, 32, 32))
    for measure in (spearman, spearman_abs, hog_similarity):
        assert math.isnan(float(measure(a, flat)[0]))  # a constant reference: nothing to correlate with
        assert float(measure(flat, a)[0]) == 0.0  # a constant map shares no ordering with a structured one


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="one shape"):
        spearman(_maps(0), _maps(0, (4, 32, 31)))
    with pytest.raises(ValueError, match="NaN/Inf values in batch samples \\[0\\]"):
        spearman(torch.full((1, 8, 8), float("nan")), torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="at least 24 x 24"):
        hog_similarity(_maps(0, (1, 16, 16)), _maps(1, (1, 16, 16)))


def test_metric_records_read_lower_as_better_on_the_unit_scale() -> None:
    for metric in (SPEARMAN, SPEARMAN_ABS, RANDOMISED_SSIM, HOG_SIMILARITY):
        assert metric.higher_is_better is False and metric.scale == 1.0 and "randomisation" in metric.description
    assert [m.name for m in (SPEARMAN, SPEARMAN_ABS, RANDOMISED_SSIM, HOG_SIMILARITY)] == [
        "spearman", "spearman_abs", "ssim", "hog"]
