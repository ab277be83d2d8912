"""Similarity of two saliency maps of one image: the measures of Adebayo et al.'s (2018) sanity checks.

Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim (2018, "Sanity checks for saliency maps", NeurIPS) compare the
map of a trained model with the map of the same model after its weights were re-initialised, by

* the Spearman rank correlation of the two maps, and of their absolute values (a signed method may flip signs);
* SSIM (Wang et al. 2004), here :func:`aft_bench.metrics.ssim.map_ssim` on min-max-normalised maps;
* the Pearson correlation of the maps' histograms of oriented gradients (HOG; Dalal & Triggs 2005, "Histograms
  of oriented gradients for human detection", CVPR), computed by ``skimage.feature.hog`` with its defaults
  (9 unsigned orientations, 8 x 8-pixel cells, 3 x 3-cell blocks, L2-Hys) on min-max-normalised maps.

Every measure is 1 for identical maps. Rank correlations use average ranks for ties (as
``scipy.stats.spearmanr``), computed in torch for a batch at once.

Undefined cases of the correlations: a *reference* whose ranks (a constant map) or HOG features (all equal) are
constant has nothing to correlate with, so the correlation is NaN (the task excludes such samples); a *compared* map
whose ranks or features are constant against a reference that has structure shares no ordering or gradient with
it, so the correlation is 0. SSIM is defined for constant maps.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from skimage.feature import hog
from torch import Tensor

from aft_bench.metrics.base import Metric
from aft_bench.metrics.ssim import SSIM, normalize_minmax

HOG_CELL, HOG_BLOCK = 8, 3
"""``skimage.feature.hog``'s default cell side (pixels) and block side (cells): maps need at least 24 pixels."""


def _check_pair(maps: Tensor, reference: Tensor) -> None:
    if not isinstance(maps, Tensor) or not isinstance(reference, Tensor):
        raise TypeError(f"similarities take torch tensors, got {type(maps).__name__} and {type(reference).__name__}")
    if maps.dim() != 3 or tuple(maps.shape) != tuple(reference.shape):
        raise ValueError(f"similarities take two batches of maps of one shape B x H x W, got {tuple(maps.shape)} "
                         f"and {tuple(reference.shape)}")
    for name, t in (("compared", maps), ("reference", reference)):
        if not bool(torch.isfinite(t).all()):
            rows = torch.nonzero(~torch.isfinite(t).flatten(1).all(dim=1)).flatten().tolist()
            raise ValueError(f"the {name} maps hold NaN/Inf values in batch samples {rows[:10]}")


def rank(values: Tensor) -> Tensor:
    """Average ranks (1-based, ties share the mean of their positions) of each row of a B x N tensor, float64.

    ``rank(x)[i] == scipy.stats.rankdata(x[i], method="average")``.
    """
    if values.dim() != 2:
        raise ValueError(f"rank takes a B x N tensor, got shape {tuple(values.shape)}")
    b, n = values.shape
    ordered, order = values.sort(dim=1, stable=True)
    position = torch.arange(n, device=values.device).expand(b, n)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, position, 0).cummax(dim=1).values  # first position of each element's tie group
    last = torch.where(ends, position, n).flip(1).cummin(dim=1).values.flip(1)  # and its last position
    average = (first + last).double() / 2 + 1
    return torch.empty_like(average).scatter_(1, order, average)


def correlation(values: Tensor, reference: Tensor) -> Tensor:
    """Row-wise Pearson correlation of two B x N float64 tensors: NaN where the reference row is constant, 0 where
    only the compared row is (see the module docstring)."""
    a = values - values.mean(dim=1, keepdim=True)
    b = reference - reference.mean(dim=1, keepdim=True)
    norm_a, norm_b = a.norm(dim=1), b.norm(dim=1)
    norm = norm_a * norm_b
    r = (a * b).sum(dim=1) / torch.where(norm > 0, norm, 1.0)
    r = torch.where(norm_a > 0, r, torch.zeros_like(r))
    return torch.where(norm_b > 0, r, torch.full_like(r, float("nan")))


def spearman(maps: Tensor, reference: Tensor) -> Tensor:
    """Spearman rank correlation of each map with its reference map, over all pixels (ties: average ranks).

    Args:
        maps: B x H x W maps (of the randomised model).
        reference: B x H x W reference maps (of the original model).

    Returns:
        (B,) float64 in [-1, 1]; NaN for a constant reference, 0 for a constant map against a non-constant one.
    """
    _check_pair(maps, reference)
    return correlation(rank(maps.flatten(1)), rank(reference.flatten(1)))


def spearman_abs(maps: Tensor, reference: Tensor) -> Tensor:
    """:func:`spearman` of the absolute values of the maps (Adebayo et al.'s "absolute value" variant)."""
    return spearman(maps.abs(), reference.abs())


def hog_features(maps: Tensor) -> Tensor:
    """HOG descriptors (``skimage.feature.hog`` defaults) of min-max-normalised maps: B x F float64 (on the CPU).

    Raises:
        ValueError: If the maps are smaller than one HOG block (24 x 24 pixels).
    """
    side = HOG_CELL * HOG_BLOCK
    if maps.dim() != 3 or maps.shape[1] < side or maps.shape[2] < side:
        raise ValueError(f"HOG features need B x H x W maps of at least {side} x {side} pixels (one block of "
                         f"{HOG_BLOCK} x {HOG_BLOCK} cells of {HOG_CELL} pixels), got {tuple(maps.shape)}")
    images = normalize_minmax(maps).cpu().numpy()
    return torch.from_numpy(np.stack([hog(image, channel_axis=None) for image in images]).astype(np.float64))


def hog_similarity(maps: Tensor, reference: Tensor) -> Tensor:
    """Pearson correlation of the HOG descriptors of each map and its reference (Adebayo et al. 2018).

    Returns:
        (B,) float64 (on the maps' device) in [-1, 1]; NaN where the reference's features are constant, 0 where
        only the compared map's are.
    """
    _check_pair(maps, reference)
    return correlation(hog_features(maps), hog_features(reference)).to(maps.device)


SPEARMAN = Metric(name="spearman", higher_is_better=False, fn=spearman, scale=1.0,
                  description="Spearman rank correlation of the map after weight randomisation with the original map "
                              "(lower: the map depends on the weights)")
SPEARMAN_ABS = Metric(name="spearman_abs", higher_is_better=False, fn=spearman_abs, scale=1.0,
                      description="Spearman rank correlation of absolute values of the map after weight randomisation "
                                  "with the original map (lower: the map depends on the weights)")
HOG_SIMILARITY = Metric(name="hog", higher_is_better=False, fn=hog_similarity, scale=1.0,
                        description="Pearson correlation of HOG features (Dalal & Triggs 2005) of the map after weight "
                                    "randomisation with the original map (lower: the map depends on the weights)")
RANDOMISED_SSIM = replace(SSIM, higher_is_better=False, scale=1.0,
                          description="SSIM of the map after weight randomisation with the original map (lower: "
                                      "the map depends on the weights)")
"""The SSIM of :mod:`aft_bench.metrics.ssim` read as a sanity check: on the 0-1 scale, lower is better."""
