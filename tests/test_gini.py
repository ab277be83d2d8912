"""Known answers for the Gini index (Hurley & Rickard 2009) of saliency maps."""

from __future__ import annotations

import math

import pytest
import torch

from aft_bench.metrics.base import NonFiniteMapError
from aft_bench.metrics.gini import GINI, gini_index


def _mean_difference_gini(x: torch.Tensor) -> float:
    """The classical Gini coefficient sum_ij |x_i - x_j| / (2 N^2 mean), equal to Hurley & Rickard's G."""
    x = x.double().flatten().abs()
    return float((x[:, None] - x[None, :]).abs().sum() / (2 * x.numel() ** 2 * x.mean()))


@pytest.mark.parametrize("shape", [(1, 1), (4, 4), (7, 5), (32, 32)])
def test_uniform_map_is_zero(shape: tuple[int, int]) -> None:
    maps = torch.full((2, *shape), 3.5)
    assert gini_index(maps).tolist() == pytest.approx([0.0, 0.0], abs=1e-12)


@pytest.mark.parametrize("shape", [(2, 2), (5, 3), (16, 16)])
def test_one_hot_map_is_one_minus_one_over_n(shape: tuple[int, int]) -> None:
    n = shape[0] * shape[1]
    maps = torch.zeros(3, *shape)
    maps[0, 0, 0], maps[1, -1, -1], maps[2, shape[0] // 2, shape[1] // 2] = 1.0, 7.0, 0.01
    assert gini_index(maps).tolist() == pytest.approx([1 - 1 / n] * 3, abs=1e-12)


def test_two_level_maps_by_hand() -> None:
    # [1, 1, 3, 3]: sum 8, weights (N - k + 1/2) / N = 3.5/4, 2.5/4, 1.5/4, 0.5/4
    # G = 1 - 2 * (1*3.5 + 1*2.5 + 3*1.5 + 3*0.5) / (8 * 4) = 1 - 24/32 = 0.25
    # [0, 0, 1, 1]: G = 1 - 2 * (1*1.5 + 1*0.5) / (2 * 4) = 0.5
    maps = torch.tensor([[[1.0, 3.0], [3.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])
    assert gini_index(maps).tolist() == pytest.approx([0.25, 0.5], abs=1e-12)


def test_matches_mean_absolute_difference_formula() -> None:
    maps = torch.rand(4, 9, 11, generator=torch.Generator().manual_seed(0)) ** 3
    expected = [_mean_difference_gini(m) for m in maps]
    assert gini_index(maps).tolist() == pytest.approx(expected, abs=1e-12)


def test_permutation_scale_and_sign_invariance() -> None:
    gen = torch.Generator().manual_seed(1)
    base = torch.rand(1, 6, 8, generator=gen, dtype=torch.float64)
    permuted = base.flatten()[torch.randperm(48, generator=gen)].view(1, 6, 8)
    signs = torch.where(torch.rand(1, 6, 8, generator=gen) > 0.5, 1.0, -1.0).double()
    values = gini_index(torch.cat([base, permuted, 250.0 * base, signs * base]))
    assert values.tolist() == pytest.approx([float(values[0])] * 4, abs=1e-12)


def test_sparser_map_scores_higher_and_range() -> None:
    spread = torch.ones(1, 8, 8)
    peaked = torch.ones(1, 8, 8)
    peaked[0, :2, :2] = 50.0
    values = gini_index(torch.cat([spread, peaked]))
    assert 0.0 <= values[0] < values[1] <= 1 - 1 / 64
    assert values.dtype == torch.float64


def test_zero_map_is_nan_and_does_not_spill() -> None:
    maps = torch.zeros(2, 4, 4)
    maps[1, 0, 0] = 1.0
    values = gini_index(maps)
    assert math.isnan(values[0]) and values[1] == pytest.approx(1 - 1 / 16)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(NonFiniteMapError, match=r"3 non-finite .* samples \[1\]"):
        gini_index(torch.stack([torch.ones(3, 3), torch.tensor([[1.0, float("nan"), 1.0]] * 3)]))
    with pytest.raises(ValueError, match="batch of maps"):
        gini_index(torch.ones(5))
    with pytest.raises(TypeError, match="torch tensor"):
        gini_index([[1.0, 2.0]])  # type: ignore[arg-type]


def test_metric_record() -> None:
    assert GINI.name == "gini" and GINI.higher_is_better is True
    maps = torch.zeros(1, 2, 2)
    maps[0, 0, 0] = 1.0
    assert GINI(maps, None).tolist() == pytest.approx([0.75])
