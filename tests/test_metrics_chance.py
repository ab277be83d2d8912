"""Chance levels: exact expectations of every score under a random map, checked by exhaustive enumeration on tiny
masks and by simulation with the metrics themselves."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from aft_bench.metrics.chance import (
    average_precision_chance,
    mask_iou_chance,
    pg_energy_chance,
    pixel_accuracy_chance,
    pointing_game_chance,
)
from aft_bench.metrics.pointing import pg_energy, pointing_game
from aft_bench.metrics.segmentation import average_precision, mask_iou, pixel_accuracy


def _mask(rows: list[str]) -> torch.Tensor:
    """A 1 x H x W mask from rows of '#' (foreground), '.' (background) and 'x' (ignore)."""
    values = {"#": 1, ".": 0, "x": -1}
    return torch.tensor([[[values[c] for c in row] for row in rows]], dtype=torch.int8)


MASK = _mask(["..#.", ".##.", "x..#", "...x"])  # N = 14 non-ignore pixels, K = 4 foreground


def test_pointing_game_and_energy_chance_is_the_foreground_share():
    assert pointing_game_chance(MASK).item() == pytest.approx(4 / 14)
    assert pg_energy_chance(MASK).item() == pytest.approx(4 / 14)
    assert pixel_accuracy_chance(MASK).item() == 0.5


def test_the_tolerance_dilates_the_mask_by_torchrays_strict_rule():
    centre = torch.zeros(1, 7, 7, dtype=torch.int8)
    centre[0, 3, 3] = 1
    assert pointing_game_chance(centre, tolerance=2).item() == pytest.approx(9 / 49)  # squared distance 0, 1, 2
    assert pointing_game_chance(centre, tolerance=0.5).item() == pytest.approx(1 / 49)
    # Exhaustively: a one-hot map at every non-ignore pixel is one equally likely argmax of a random map.
    for mask, tolerance in ((centre, 2.5), (MASK, 0), (MASK, 1.5), (MASK, 3)):
        h, w = mask.shape[1:]
        points = [(r, c) for r in range(h) for c in range(w) if mask[0, r, c] != -1]
        maps = torch.zeros(len(points), h, w)
        for i, (r, c) in enumerate(points):
            maps[i, r, c] = 1.0
        hits = pointing_game(maps, mask.expand(len(points), h, w), tolerance=tolerance)
        assert pointing_game_chance(mask, tolerance).item() == pytest.approx(hits.mean().item()), tolerance


@pytest.mark.parametrize(("n", "k"), [(5, 2), (6, 1), (6, 6), (7, 3)])
def test_average_precision_chance_equals_the_mean_over_every_ranking(n, k):
    mask = torch.zeros(1, 1, n, dtype=torch.int8)
    mask[0, 0, :k] = 1
    scores = []
    for order in itertools.permutations(range(n)):
        scores.append(average_precision(torch.tensor([order], dtype=torch.float32)[None], mask).item())
    assert average_precision_chance(mask).item() == pytest.approx(sum(scores) / len(scores))


@pytest.mark.parametrize(("n", "k"), [(4, 1), (5, 2), (6, 3), (3, 3)])
def test_mask_iou_chance_equals_the_mean_over_every_independent_prediction(n, k):
    mask = torch.zeros(1, 1, n, dtype=torch.int8)
    mask[0, 0, :k] = 1
    total = 0.0
    for predicted in itertools.product((0, 1), repeat=n):
        inter = sum(p for p, m in zip(predicted, mask[0, 0].tolist(), strict=True) if m == 1)
        union = sum(1 for p, m in zip(predicted, mask[0, 0].tolist(), strict=True) if p or m == 1)
        total += inter / union / 2**n
    assert mask_iou_chance(mask).item() == pytest.approx(total)


def test_masks_without_foreground_have_no_chance_level():
    empty = torch.zeros(2, 3, 3, dtype=torch.int8)
    empty[1, 1, 1] = 1
    for fn in (pointing_game_chance, pg_energy_chance, average_precision_chance, pixel_accuracy_chance,
               mask_iou_chance):
        values = fn(empty)
        assert math.isnan(values[0].item()) and not math.isnan(values[1].item()), fn.__name__
    with pytest.raises(ValueError, match="outside"):
        pg_energy_chance(torch.full((1, 2, 2), 3, dtype=torch.int8))


def test_random_maps_score_the_chance_level_on_average():
    """Simulation with the metrics themselves on a 12 x 12 mask: within 4 standard errors of 4000 random maps."""
    mask = torch.zeros(1, 12, 12, dtype=torch.int8)
    mask[0, 2:6, 3:9] = 1
    mask[0, 11, :] = -1
    maps = torch.rand(4000, 12, 12, generator=torch.Generator().manual_seed(0))
    masks = mask.expand(4000, 12, 12)
    for metric, chance in ((pointing_game, pointing_game_chance), (pg_energy, pg_energy_chance),
                           (average_precision, average_precision_chance), (pixel_accuracy, pixel_accuracy_chance),
                           (mask_iou, mask_iou_chance)):
        values = metric(maps, masks)
        error = values.std().item() / math.sqrt(len(values))
        assert abs(values.mean().item() - chance(mask).item()) < 4 * error + 1e-3, metric.__name__
