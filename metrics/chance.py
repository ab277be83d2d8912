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

Samples without foreground score NaN, as the scores themselves do. Chefer et al.'s two-class AP and the pooled
scores have no closed form here and get no chance level.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from scipy.special import gammaln
from torch import Tensor

from aft_bench.metrics.base import FOREGROUND, IGNORE, check_batch


def check_masks(masks: Tensor) -> None:
    """The masks checks of :func:`aft_bench.metrics.base.check_batch` (shape B x H x W, values 1 / 0 / -1)."""
    check_batch(torch.zeros(masks.shape, dtype=torch.float32, device=masks.device), masks)


def _counts(masks: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: non-ignore pixels N and foreground pixels K (float64)."""
    valid = (masks != IGNORE).reshape(masks.shape[0], -1).sum(dim=1).double().cpu().numpy()
    fg = (masks == FOREGROUND).reshape(masks.shape[0], -1).sum(dim=1).double().cpu().numpy()
    return valid, fg


def _result(values: np.ndarray, fg: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(np.where(fg > 0, values, np.nan)).to(device)


def pointing_game_chance(masks: Tensor, tolerance: float = 0) -> Tensor:
    """(B,) chance of a pointing-game hit: the share of non-ignore pixels within ``tolerance`` of the mask."""
    check_masks(masks)
    valid, fg = _counts(masks)
    if tolerance <= 1:  # only the point itself counts (see aft_bench.metrics.pointing.pointing_game)
        return _result(fg / np.maximum(valid, 1), fg, masks.device)
    shares = []
    for mask in masks.cpu().numpy():
        distance = ndimage.distance_transform_edt(mask != FOREGROUND)  # to the nearest foreground pixel
        accepted = ((distance == 0) | (distance**2 < tolerance**2)) & (mask != IGNORE)
        shares.append(accepted.sum() / max((mask != IGNORE).sum(), 1))
    return _result(np.array(shares, dtype=np.float64), fg, masks.device)


def pg_energy_chance(masks: Tensor) -> Tensor:
    """(B,) expected PG-energy of a random (or a uniform) map: the foreground share K / N."""
    check_masks(masks)
    valid, fg = _counts(masks)
    return _result(fg / np.maximum(valid, 1), fg, masks.device)


def average_precision_chance(masks: Tensor) -> Tensor:
    """(B,) expected foreground AP of a random ranking: (H_N + (K - 1)/(N - 1) (N - H_N)) / N."""
    check_masks(masks)
    valid, fg = _counts(masks)
    out = np.empty_like(valid)
    for i, (n, k) in enumerate(zip(valid, fg, strict=True)):
        harmonic = float(np.sum(1.0 / np.arange(1, int(n) + 1))) if n else 0.0
        out[i] = 1.0 if n == 1 else (harmonic + (k - 1) / (n - 1) * (n - harmonic)) / n
    return _result(out, fg, masks.device)


def pixel_accuracy_chance(masks: Tensor) -> Tensor:
    """(B,) expected pixel accuracy of a random map thresholded at its mean: 1/2."""
    check_masks(masks)
    _, fg = _counts(masks)
    return _result(np.full_like(fg, 0.5), fg, masks.device)


def mask_iou_chance(masks: Tensor) -> Tensor:
    """(B,) expected foreground IoU when each pixel is predicted foreground with probability 1/2:
    K/2 * sum_j P(J = j) / (K + j), J ~ Bin(N - K, 1/2)."""
    check_masks(masks)
    valid, fg = _counts(masks)
    out = np.empty_like(valid)
    for i, (n, k) in enumerate(zip(valid, fg, strict=True)):
        m = int(n - k)
        j = np.arange(m + 1, dtype=np.float64)
        log_pmf = gammaln(m + 1) - gammaln(j + 1) - gammaln(m - j + 1) - m * math.log(2)
        out[i] = k / 2 * float(np.sum(np.exp(log_pmf) / (k + j))) if k else np.nan
    return _result(out, fg, masks.device)
