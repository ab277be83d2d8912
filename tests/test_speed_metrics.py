"""The lean pointing-game metrics against the implementations they replaced (kept here as references: the
per-image chance loops and the per-entry AP, the two-class ranking by one sort of all 2N scores) and against
scikit-learn, at the benchmark's size (224 px) and on edge cases, to 1e-9 (the issue asks for 1e-6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import direct_two_class_ranking
from scipy.special import gammaln
from sklearn.metrics import average_precision_score

import aft_bench.metrics.segmentation as segmentation
from aft_bench.metrics.chance import average_precision_chance, mask_iou_chance, pg_energy_chance
from aft_bench.metrics.map_stats import MapStats
from aft_bench.metrics.segmentation import average_precision, average_precision_two_class

TOLERANCE = 1e-9


def _reference_ap_chance(n: float, k: float) -> float:
    """The replaced loop: the harmonic number summed term by term."""
    harmonic = float(np.sum(1.0 / np.arange(1, int(n) + 1))) if n else 0.0
    return 1.0 if n == 1 else (harmonic + (k - 1) / (n - 1) * (n - harmonic)) / n


def _reference_iou_chance(n: float, k: float) -> float:
    """The replaced loop: every j of Bin(N - K, 1/2)."""
    m = int(n - k)
    j = np.arange(m + 1, dtype=np.float64)
    log_pmf = gammaln(m + 1) - gammaln(j + 1) - gammaln(m - j + 1) - m * math.log(2)
    return k / 2 * float(np.sum(np.exp(log_pmf) / (k + j))) if k else math.nan


def _masks(size: int, seed: int = 0) -> torch.Tensor:
    """Ellipses with an ignore ring, plus the edge cases: no foreground, all foreground, one pixel, all ignore but
    one, half ignore."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = []
    for _ in range(3):
        cy, cx, r = (torch.rand(3, generator=g) * torch.tensor([size, size, size / 3])).tolist()
        d = ((yy - cy) ** 2 + (xx - cx) ** 2).float() / max(r, 2) ** 2
        masks.append(torch.where(d < 1, 1, torch.where(d < 1.3, -1, 0)))
    empty, full, one, lone = (torch.zeros(size, size, dtype=torch.long) for _ in range(4))
    full[:] = 1
    one[3, 4] = 1
    lone[:] = -1
    lone[0, 0] = 1
    half = torch.randint(-1, 2, (size, size), generator=g)
    return torch.stack([*masks, empty, full, one, lone, half]).to(torch.int8)


@pytest.mark.parametrize("size", [5, 224])
def test_chance_levels_equal_the_replaced_loops(size: int) -> None:
    masks = _masks(size)
    n = (masks != -1).flatten(1).sum(1).double()
    k = (masks == 1).flatten(1).sum(1).double()
    ap, iou, energy = average_precision_chance(masks), mask_iou_chance(masks), pg_energy_chance(masks)
    stats = MapStats(torch.rand(masks.shape), masks)
    torch.testing.assert_close(mask_iou_chance(masks, stats=stats), iou, rtol=0, atol=0, equal_nan=True)  # same counts
    for i in range(len(masks)):
        if k[i] == 0:
            assert math.isnan(float(ap[i])) and math.isnan(float(iou[i])) and math.isnan(float(energy[i]))
            continue
        assert float(ap[i]) == pytest.approx(_reference_ap_chance(float(n[i]), float(k[i])), rel=TOLERANCE)
        assert float(iou[i]) == pytest.approx(_reference_iou_chance(float(n[i]), float(k[i])), rel=TOLERANCE)


def _maps(kind: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    maps = torch.rand(shape, generator=g)
    if kind == "relu":  # Grad-CAM-like: half the pixels tied at 0
        return (maps - 0.5).clamp_min(0)
    if kind == "coarse":  # an upsampled 7 x 7 map: large tie groups
        return torch.nn.functional.interpolate(maps[:, None, :7, :7], size=shape[1:], mode="nearest")[:, 0]
    if kind == "float64":
        return maps.double() - 0.5
    return maps


@pytest.mark.parametrize("kind", ["continuous", "relu", "coarse", "float64"])
def test_average_precisions_equal_the_replaced_ranking_and_scikit_learn(kind: str) -> None:
    g = torch.Generator().manual_seed(1)
    masks = _masks(224)
    maps = _maps(kind, tuple(masks.shape), g)
    stats = MapStats(maps, masks)
    b = len(maps)
    # the two-class ranking from the merge holds exactly the keys of one sort of all 2N scores
    direct = direct_two_class_ranking(stats, masks)
    merged = stats.two_class_ranking
    for i in range(b):
        n = int(direct[2][i])
        assert int(merged[2][i]) == n
        assert torch.equal(merged[0][i, :n], direct[0][i, :n])
        assert int(merged[1][i, :n].sum()) == int(direct[1][i, :n].sum())
    ap, two = average_precision(maps, masks, stats=stats), average_precision_two_class(maps, masks, stats=stats)
    for i in range(b):
        valid, fg = masks[i] != -1, masks[i] == 1
        if not fg.any():
            assert math.isnan(float(ap[i])) and math.isnan(float(two[i]))
            continue
        m = maps[i].double()[valid].numpy()
        y = fg[valid].numpy()
        lo_i, hi_i = m.min(), m.max()
        assert float(ap[i]) == pytest.approx(average_precision_score(y, m), abs=TOLERANCE)
        reference = average_precision_score(np.concatenate([~y, y]), np.concatenate([hi_i - m, m - lo_i]))
        assert float(two[i]) == pytest.approx(reference, abs=TOLERANCE)


def test_the_cpu_ap_equals_the_per_entry_torch_ap() -> None:
    # _positive_ap (CPU, over the positives) against the per-entry torch code that accelerators run
    g = torch.Generator().manual_seed(2)
    masks = _masks(64)
    for kind in ("continuous", "relu", "coarse"):
        stats = MapStats(_maps(kind, tuple(masks.shape), g), masks)
        for ranking in (stats.ranking, stats.two_class_ranking):
            keys, labels, n = ranking
            numpy_ap = segmentation._positive_ap(keys.numpy(), labels.numpy(), n.numpy())
            below = labels.cumsum(dim=1) - labels.long()
            first = torch.ones_like(labels)
            first[:, 1:] = keys[:, 1:] != keys[:, :-1]
            positions = torch.arange(keys.shape[1]).expand_as(below)
            start = torch.where(first, positions, 0).cummax(dim=1).values
            below_start = torch.where(first, below, 0).cummax(dim=1).values
            total = labels.sum(dim=1)
            precision = (total[:, None] - below_start).double() / (n[:, None] - start).clamp_min(1).double()
            torch_ap = torch.where(labels, precision, 0.0).sum(dim=1) / total.clamp_min(1).double()
            np.testing.assert_allclose(numpy_ap, torch_ap.numpy(), rtol=0, atol=TOLERANCE)
