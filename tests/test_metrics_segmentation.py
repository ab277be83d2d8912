"""Known-answer tests for pixel accuracy, mask-IoU and both APs, and both APs against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from aft_bench.metrics.base import NonFiniteMapError
from aft_bench.metrics.segmentation import (
    AVERAGE_PRECISION,
    AVERAGE_PRECISION_TWO_CLASS,
    MASK_IOU,
    PIXEL_ACCURACY,
    average_precision,
    average_precision_two_class,
    mask_iou,
    normalise,
    pixel_accuracy,
    predicted_foreground,
)

ALL = [pixel_accuracy, mask_iou, average_precision, average_precision_two_class]
METRICS = (PIXEL_ACCURACY, AVERAGE_PRECISION, MASK_IOU, AVERAGE_PRECISION_TWO_CLASS)


def _one(fn, map_: list[list[float]], mask: list[list[int]]) -> float:  # noqa: ANN001
    return float(fn(torch.tensor([map_], dtype=torch.float32), torch.tensor([mask], dtype=torch.int8))[0])


# ----------------------------------------------------------------------------------- thresholding, acc, IoU


def test_known_answer_two_by_two() -> None:
    # normalised [0, 1/3; 2/3, 1], mean 1/2 -> predicted foreground is the bottom row
    map_ = [[0.0, 1.0], [2.0, 3.0]]
    mask = [[0, 1], [0, 1]]
    assert _one(pixel_accuracy, map_, mask) == pytest.approx(2 / 4)  # (0,0) and (1,1) right
    assert _one(mask_iou, map_, mask) == pytest.approx(1 / 3)  # inter {(1,1)}, union 3 pixels
    # ranking 3 (fg), 2 (bg), 1 (fg), 0 (bg): AP = 1/2 * 1 + 1/2 * 2/3
    assert _one(average_precision, map_, mask) == pytest.approx(0.5 + 1 / 3)


def test_threshold_is_strictly_greater_than_mean() -> None:
    # normalised [0, 0.5, 1], mean exactly 0.5: the middle pixel is NOT foreground
    map_ = [[0.0, 1.0, 2.0]]
    pred = predicted_foreground(torch.tensor([map_]), torch.zeros(1, 1, 3, dtype=torch.int8))
    assert pred.tolist() == [[[False, False, True]]]
    assert _one(pixel_accuracy, map_, [[0, 1, 0]]) == pytest.approx(1 / 3)  # '>=' would give 2/3
    assert _one(mask_iou, map_, [[0, 1, 0]]) == 0.0  # '>=' would give 1/2


@pytest.mark.parametrize("value", [0.0, 4.2])
def test_constant_map_predicts_all_background(value: float) -> None:
    map_ = [[value] * 4]
    mask = [[1, 0, 0, -1]]
    assert normalise(torch.tensor([map_]), torch.tensor([mask])).abs().sum() == 0
    assert _one(pixel_accuracy, map_, mask) == pytest.approx(2 / 3)  # background share of valid pixels
    assert _one(mask_iou, map_, mask) == 0.0
    assert _one(average_precision, map_, mask) == pytest.approx(1 / 3)  # one tie group: foreground share


def test_ignore_pixels_excluded_from_normalisation_threshold_and_scores() -> None:
    map_ = [[0.0, 1.0, 2.0, 100.0]]
    mask = [[0, 0, 1, -1]]
    # valid pixels normalise to [0, .5, 1], mean .5 -> pred [0, 0, 1]: perfect on the valid pixels.
    # Counting the ignore pixel would push the mean to ~0.26 and predict only the ignore pixel.
    assert _one(pixel_accuracy, map_, mask) == 1.0
    assert _one(mask_iou, map_, mask) == 1.0
    assert _one(average_precision, map_, mask) == 1.0  # the top-scored ignore pixel is no false positive


def test_perfect_and_inverted_maps() -> None:
    mask = [[1, 1, 0, 0], [1, 1, 0, 0]]
    good = [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]
    bad = [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]
    assert [_one(f, good, mask) for f in ALL] == [1.0, 1.0, 1.0, 1.0]
    assert _one(pixel_accuracy, bad, mask) == 0.0
    assert _one(mask_iou, bad, mask) == 0.0
    assert _one(average_precision, bad, mask) == pytest.approx(0.5)  # all tied after the bg group
    # two-class: every negative scores 1 and every positive 0, N of 2N are positive
    assert _one(average_precision_two_class, bad, mask) == 0.5


def test_full_mask() -> None:
    map_ = [[0.0, 1.0], [2.0, 3.0]]
    mask = [[1, 1], [1, 1]]
    assert _one(pixel_accuracy, map_, mask) == pytest.approx(0.5)
    assert _one(mask_iou, map_, mask) == pytest.approx(0.5)
    assert _one(average_precision, map_, mask) == 1.0


def test_empty_mask_is_nan() -> None:
    for fn in ALL:
        assert math.isnan(_one(fn, [[0.0, 1.0], [2.0, 3.0]], [[0, 0], [-1, 0]]))


def test_affine_invariance_and_range() -> None:
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(4, 8, 8, generator=g, dtype=torch.float64)
    masks = torch.randint(-1, 2, (4, 8, 8), generator=g).to(torch.int8)
    masks[:, 0, 0] = 1
    for fn in ALL:
        a = fn(maps, masks)
        assert a.dtype == torch.float64 and a.shape == (4,)
        assert bool(((a >= 0) & (a <= 1)).all())
        torch.testing.assert_close(a, fn(maps * 8.0 - 3.0, masks))


def test_non_finite_map_raises() -> None:
    maps = torch.zeros(1, 2, 2)
    maps[0, 1, 1] = float("nan")
    for metric in METRICS:
        with pytest.raises(NonFiniteMapError, match="1 non-finite"):
            metric(maps, torch.ones(1, 2, 2, dtype=torch.int8))


def test_metric_names() -> None:
    assert [m.name for m in METRICS] == ["pixel_acc", "ap", "mask_iou", "ap_two_class"]
    assert all(m.higher_is_better for m in METRICS)
    assert AVERAGE_PRECISION_TWO_CLASS.fn is average_precision_two_class


# ------------------------------------------------------------------------------------------------------ AP


def test_ap_known_answers_with_ties() -> None:
    # scores 3, 2, 1 with labels 1, 0, 1: AP = 1 * 1/2 + 2/3 * 1/2
    assert _one(average_precision, [[3.0, 2.0, 1.0]], [[1, 0, 1]]) == pytest.approx(5 / 6, abs=1e-15)
    # tie {2, 2} enters together: precision 1/2 at recall 1/2, then 2/3 at recall 1
    assert _one(average_precision, [[2.0, 2.0, 1.0]], [[1, 0, 1]]) == pytest.approx(7 / 12, abs=1e-15)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [None, 3, 12])
def test_ap_matches_sklearn(seed: int, levels: int | None) -> None:
    g = torch.Generator().manual_seed(seed)
    b, h, w = 5, 9, 13
    maps = torch.randn(b, h, w, generator=g)
    if levels is not None:  # ties: few distinct values
        maps = torch.floor(torch.rand(b, h, w, generator=g) * levels)
    masks = (torch.rand(b, h, w, generator=g) < 0.3).to(torch.int8)
    masks[torch.rand(b, h, w, generator=g) < 0.2] = -1
    masks[:, 0, 0] = 1
    masks[:, 0, 1] = 0
    got = average_precision(maps, masks)
    for i in range(b):
        keep = (masks[i] != -1).numpy().reshape(-1)
        y = (masks[i] == 1).numpy().reshape(-1)[keep]
        s = maps[i].double().numpy().reshape(-1)[keep]
        assert abs(float(got[i]) - average_precision_score(y, s)) < 1e-10


def test_ap_matches_sklearn_on_close_float32_values() -> None:
    # values one float32 ulp apart must stay distinct (no rounding into ties)
    base = np.float32(0.3)
    up, down = np.nextafter(base, np.float32(1)), np.nextafter(base, np.float32(0))
    vals = np.array([base, up, down, 0.0, 1.0], np.float32)
    y = np.array([0, 1, 0, 1, 0])
    mask = torch.from_numpy(y).to(torch.int8)[None, None]
    got = average_precision(torch.from_numpy(vals)[None, None], mask)
    assert abs(float(got[0]) - average_precision_score(y, vals.astype(np.float64))) < 1e-12


# ------------------------------------------------------------------------------------------ two-class AP


def test_two_class_ap_by_hand_with_a_tie_across_the_classes() -> None:
    # normalised [0, 1/4, 1/2, 1]; foreground channel (n): 0-, 1/4+, 1/2-, 1+; background (1 - n): 1+,
    # 3/4-, 1/2+, 0-. Ranked: {1+, 1+} P=1 R=1/2; 3/4-; {1/2-, 1/2+} P=3/5 R=3/4; 1/4+ P=4/6 R=1.
    map_, mask = [[0.0, 1.0, 2.0, 4.0]], [[0, 1, 0, 1]]
    assert _one(average_precision_two_class, map_, mask) == pytest.approx(1 / 2 + 3 / 20 + 1 / 6, abs=1e-15)
    assert _one(average_precision, map_, mask) == pytest.approx(5 / 6, abs=1e-15)  # 4+, 2-, 1+, 0-
    # a mask without background is scored: every background-channel entry is a negative
    full = [[1, 1, 1, 1]]  # ranked {1+, 1-} 3/4- {1/2+, 1/2-} 1/4+ {0+, 0-}: precisions 1/2, 2/5, 1/2, 1/2
    assert _one(average_precision_two_class, map_, full) == pytest.approx((0.5 + 0.4 + 0.5 + 0.5) / 4, abs=1e-15)


def test_two_class_ap_ties_within_a_class() -> None:
    # normalised [1, 1, 0]; fg channel 1+, 1-, 0+; bg channel 0-, 0+, 1-:
    # {1+, 1-, 1-} P=1/3 R=1/3, then {0+, 0-, 0+} P=1/2 R=1
    assert _one(average_precision_two_class, [[2.0, 2.0, 1.0]], [[1, 0, 1]]) == pytest.approx(
        1 / 9 + 1 / 3, abs=1e-15)


def test_two_class_ap_keeps_ties_that_one_minus_n_would_split() -> None:
    # normalised [0, 1/3, 2/3, 1]: n = 2/3 (fg channel, px 2, negative) ties 1 - 1/3 (bg channel, px 1,
    # positive), and 1/3 ties 1 - 2/3. Exact ranks: {1-, 1-} {2/3-, 2/3+} P=1/4 R=1/4 {1/3-, 1/3+} P=1/3
    # R=1/2 {0+, 0+} P=1/2 R=1. In float64, 1 - fl(1/3) > fl(2/3): the positive would rank first (13/30).
    assert _one(average_precision_two_class, [[0.0, 1.0, 2.0, 3.0]], [[1, 0, 0, 0]]) == pytest.approx(
        1 / 16 + 1 / 12 + 1 / 4, abs=1e-15)


@pytest.mark.parametrize("value", [0.0, 4.2])
def test_two_class_ap_of_a_constant_map_is_one_half(value: float) -> None:
    # Chefer et al.: 0 / 0 = NaN set to 0 in both channels, one tie group of N positives in 2N entries
    for mask in ([[1, 0, 0, -1]], [[1, 1, 1, 0]], [[1, 1]]):
        assert _one(average_precision_two_class, [[value] * len(mask[0])], mask) == 0.5


def test_two_class_ap_leaves_ignore_pixels_out_of_normalisation_and_ranking() -> None:
    map_, mask = [[0.0, 1.0, 2.0, 4.0]], [[0, 1, 0, 1]]
    expected = _one(average_precision_two_class, map_, mask)
    for value in (100.0, -100.0, 2.0):  # with the ignore pixel in min / max the order would change
        got = _one(average_precision_two_class, [map_[0] + [value]], [mask[0] + [-1]])
        assert got == pytest.approx(expected, abs=1e-15)
    assert math.isnan(_one(average_precision_two_class, [[0.0, 1.0, 2.0]], [[0, -1, 0]]))  # no foreground


def test_two_class_ap_of_an_unrelated_map_is_one_half_foreground_ap_the_object_share() -> None:
    g = torch.Generator().manual_seed(5)
    maps = torch.rand(4, 96, 96, generator=g, dtype=torch.float64)
    masks = (torch.rand(4, 96, 96, generator=g) < 0.1).to(torch.int8)
    assert torch.allclose(average_precision_two_class(maps, masks), torch.full((4,), 0.5, dtype=torch.float64),
                          atol=0.02)
    assert torch.allclose(average_precision(maps, masks), torch.full((4,), 0.1, dtype=torch.float64), atol=0.02)


def _chefer_two_class_ap(map_: torch.Tensor, mask: torch.Tensor) -> float:
    """scikit-learn on Chefer et al.'s flattened inputs: channels (1 - n, n) against the one-hot mask."""
    keep = (mask != -1).numpy().reshape(-1)
    m = map_.double().numpy().reshape(-1)[keep]
    n = (m - m.min()) / (m.max() - m.min())
    fg = (mask == 1).numpy().reshape(-1)[keep]
    return average_precision_score(np.concatenate([~fg, fg]), np.concatenate([1 - n, n]))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_two_class_ap_matches_sklearn_on_chefer_inputs(seed: int, ties: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    b, h, w = 5, 9, 13
    maps = torch.randn(b, h, w, generator=g)
    if ties:  # quarter steps in [0, 1] so that n and 1 - n are exact: ties within and across the channels
        maps = torch.floor(torch.rand(b, h, w, generator=g) * 5) / 4
        maps[:, 0, 0], maps[:, 0, 1] = 0.0, 1.0
    masks = (torch.rand(b, h, w, generator=g) < 0.3).to(torch.int8)
    masks[torch.rand(b, h, w, generator=g) < 0.2] = -1
    masks[:, 0, 0] = 1
    masks[:, 0, 1] = 0
    got = average_precision_two_class(maps, masks)
    for i in range(b):
        assert abs(float(got[i]) - _chefer_two_class_ap(maps[i], masks[i])) < 1e-10
