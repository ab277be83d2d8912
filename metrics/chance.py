"""Chance levels of the pointing-game scores: the score a random map gets in expectation, exactly, from the masks.

The negative control of a saliency benchmark: a map that knows nothing about the object. "Random" here is the
``random`` method's map (Hooker et al. 2019's random baseline: independent, identically distributed continuous
scores, one per pixel), so every ranking of the non-ignore pixels is equally likely and no two pixels tie. For
each score, per sample (``masks``: B x H x W, 1 foreground / 0 background / -1 ignore; N non-ignore pixels, K of
them foreground):

- pointing game: the argmax is uniform over the N pixels, so the chance of a hit is K / N, or with a tolerance
  the share of the N pixels that lie within it of a foreground pixel (the mask dilated by TorchRay's strict
  rule, distance < tolerance);
- PG-energy: exchangeable positive scores put an expected share K / N of their mass on any K pixels (the sum of
  the N expected shares is one), the same as a uniform map;
- foreground AP (scikit-learn's definition): given its rank r, a positive's precision has expectation
  (1 + (r - 1)(K - 1)/(N - 1)) / r (the positives above it are hypergeometric), so
  E[AP] = (H_N + (K - 1)/(N - 1) (N - H_N)) / N with H_N the N-th harmonic number; about K / N for large N;
- pixel accuracy (the normalised map thresholded at its mean, Chefer et al. 2021): a symmetric score
  distribution makes each pixel equally likely to be above or below the mean, so every pixel is right with
  probability 1/2 and the chance level is 1/2;
- mask IoU: with each pixel predicted foreground with probability 1/2, independently (the empirical mean couples
  the pixels, an effect that vanishes as N grows), I ~ Bin(K, 1/2) hits and J ~ Bin(N - K, 1/2) false alarms give
  IoU = I / (K + J) and E[IoU] = K/2 * E[1 / (K + J)], summed exactly over J's distribution.

Every function is batched in torch on the masks' device (no per-image loop, no copy to the host), and takes the
batch's :class:`~aft_bench.metrics.map_stats.MapStats` when a task has one, so that the counts are not taken
again. Samples without foreground score NaN, as the scores themselves do. Chefer et al.'s two-class AP and the pooled
scores have no closed form here and get no chance level.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from aft_bench.metrics.base import FOREGROUND, IGNORE, check_masks
from aft_bench.metrics.map_stats import MapStats

IOU_WINDOW_LOG = 23.0
"""Half-width of the window of J that :func:`mask_iou_chance` sums, as ``sqrt(IOU_WINDOW_LOG * H * W)``: by
Hoeffding's inequality the terms outside it weigh at most ``2 exp(-2 * IOU_WINDOW_LOG) < 2.2e-20`` together, a
relative error below ``2.2e-20 * H * W`` of the expectation (about 1.1e-15 at 224 x 224)."""


def _counts(masks: Tensor, stats: MapStats | None) -> tuple[Tensor, Tensor]:
    """Per sample: non-ignore pixels N and foreground pixels K (float64, on the masks' device); the masks are
    checked here unless the batch's ``stats`` (which checked them) are given."""
    if stats is not None:
        return stats.valid_count.double(), stats.foreground_count.double()
    check_masks(masks)
    flat = masks.reshape(masks.shape[0], -1)
    return (flat != IGNORE).sum(dim=1).double(), (flat == FOREGROUND).sum(dim=1).double()


def _result(values: Tensor, fg: Tensor) -> Tensor:
    return torch.where(fg > 0, values, torch.nan)


def pointing_game_chance(masks: Tensor, tolerance: float = 0, stats: MapStats | None = None) -> Tensor:
    """(B,) chance of a pointing-game hit: the share of non-ignore pixels within ``tolerance`` of the mask."""
    valid, fg = _counts(masks, stats)
    if tolerance <= 1:  # only the point itself counts (see aft_bench.metrics.pointing.pointing_game)
        return _result(fg / valid.clamp_min(1), fg)
    shares = []
    for mask in masks.cpu().numpy():  # a distance transform per image: only with a tolerance
        distance = ndimage.distance_transform_edt(mask != FOREGROUND)  # to the nearest foreground pixel
        accepted = ((distance == 0) | (distance**2 < tolerance**2)) & (mask != IGNORE)
        shares.append(accepted.sum() / max((mask != IGNORE).sum(), 1))
    return _result(torch.tensor(np.array(shares, dtype=np.float64), device=masks.device), fg)


def pg_energy_chance(masks: Tensor, stats: MapStats | None = None) -> Tensor:
    """(B,) expected PG-energy of a random (or a uniform) map: the foreground share K / N."""
    valid, fg = _counts(masks, stats)
    return _result(fg / valid.clamp_min(1), fg)


def average_precision_chance(masks: Tensor, stats: MapStats | None = None) -> Tensor:
    """(B,) expected foreground AP of a random ranking: (H_N + (K - 1)/(N - 1) (N - H_N)) / N, with the harmonic
    number H_N = digamma(N + 1) + Euler's gamma."""
    n, k = _counts(masks, stats)
    harmonic = torch.special.digamma(n + 1) + np.euler_gamma
    out = (harmonic + (k - 1) / (n - 1).clamp_min(1) * (n - harmonic)) / n.clamp_min(1)
    return _result(torch.where(n == 1, 1.0, out), k)


def pixel_accuracy_chance(masks: Tensor, stats: MapStats | None = None) -> Tensor:
    """(B,) expected pixel accuracy of a random map thresholded at its mean: 1/2."""
    _, fg = _counts(masks, stats)
    return _result(torch.full_like(fg, 0.5), fg)


def mask_iou_chance(masks: Tensor, stats: MapStats | None = None) -> Tensor:
    """(B,) expected foreground IoU when each pixel is predicted foreground with probability 1/2:
    K/2 * sum_j P(J = j) / (K + j), J ~ Bin(N - K, 1/2).

    The sum runs over the ``j`` within :data:`IOU_WINDOW_LOG`'s window around (N - K) / 2 (every ``j`` for small
    masks), batched: one B x window grid of log-probabilities.
    """
    n, k = _counts(masks, stats)
    m = n - k
    pixels = masks.shape[1] * masks.shape[2]
    half = min(pixels, math.ceil(math.sqrt(IOU_WINDOW_LOG * pixels)) + 2)
    offsets = torch.arange(-half, half + 1, dtype=torch.float64, device=masks.device)
    j = torch.floor(m / 2)[:, None] + offsets
    inside = (j >= 0) & (j <= m[:, None])
    j = j.clamp(min=0).minimum(m[:, None])
    log_pmf = torch.lgamma(m + 1)[:, None] - torch.lgamma(j + 1) - torch.lgamma(m[:, None] - j + 1) \
        - (m * math.log(2))[:, None]
    terms = torch.where(inside, torch.exp(log_pmf) / (k[:, None] + j).clamp_min(1), 0.0)
    return _result(k / 2 * terms.sum(dim=1), k)
