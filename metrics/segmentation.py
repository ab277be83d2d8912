"""Saliency maps scored as soft segmentations (paper Section 4.1, Table 1: Pixel Acc., AP, mask-IoU).

Protocol of Chefer et al. 2021 ("Transformer interpretability beyond attention visualization",
ImageNet-Segmentation evaluation): each map is min-max normalised per image; pixel accuracy and
mask-IoU threshold the normalised map at its mean; AP uses the normalised map as per-pixel scores.

Choices (each documented on the function that makes it):
    * Every statistic (min, max, mean, counts) is taken over the non-ignore pixels only.
    * Thresholding uses ``>`` (strictly above the mean is foreground), as Chefer et al. do
      (``Res.gt(mean)``).
    * A constant map cannot be normalised (max == min); it is defined as all zeros, so its mean is
      0 and ``>`` predicts all background.
    * Scores are per image (the task averages them); Chefer et al. pool pixel counts over the whole
      dataset for pixel accuracy and IoU, which weights large images more. The pointing-game task reports
      those pooled scores too (:mod:`aft_bench.metrics.pooled`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from aft_bench.metrics.base import FOREGROUND, IGNORE, Metric, check_batch, empty_mask_to_nan


def normalise(maps: Tensor, masks: Tensor) -> Tensor:
    """Per-image min-max normalisation over the non-ignore pixels, in float64.

    A constant map (max == min) becomes all zeros. Ignore pixels get 0.

    Args:
        maps: B x H x W maps.
        masks: B x H x W masks (1 / 0 / -1).

    Returns:
        B x H x W float64 maps in [0, 1] on the non-ignore pixels.
    """
    valid = masks != IGNORE
    m = maps.double()
    lo = m.masked_fill(~valid, float("inf")).amin(dim=(1, 2), keepdim=True)
    hi = m.masked_fill(~valid, float("-inf")).amax(dim=(1, 2), keepdim=True)
    span = hi - lo
    ok = span > 0
    out = torch.where(ok, (m - lo) / torch.where(ok, span, 1.0), 0.0)
    return out * valid


def predicted_foreground(maps: Tensor, masks: Tensor) -> Tensor:
    """Chefer et al.'s binarisation: normalised map ``>`` its mean over the non-ignore pixels.

    Args:
        maps: B x H x W maps.
        masks: B x H x W masks (1 / 0 / -1).

    Returns:
        B x H x W bool tensor, False on ignore pixels.
    """
    valid = masks != IGNORE
    norm = normalise(maps, masks)
    count = valid.sum(dim=(1, 2), keepdim=True).clamp_min(1)
    mean = norm.sum(dim=(1, 2), keepdim=True) / count
    return (norm > mean) & valid


def pixel_accuracy(maps: Tensor, masks: Tensor) -> Tensor:
    """Pixel accuracy of the map thresholded at its mean (Chefer et al. 2021).

    Fraction of non-ignore pixels where the prediction ``normalised map > mean`` equals the mask's
    foreground. A constant map predicts all background, so it scores the background share.

    Args:
        maps: B x H x W saliency maps (finite).
        masks: B x H x W masks, 1 foreground / 0 background / -1 ignore.

    Returns:
        (B,) float64 fractions in [0, 1] (NaN for masks without foreground).
    """
    check_batch(maps, masks)
    valid = masks != IGNORE
    pred = predicted_foreground(maps, masks)
    correct = ((pred == (masks == FOREGROUND)) & valid).sum(dim=(1, 2)).double()
    acc = correct / valid.sum(dim=(1, 2)).clamp_min(1).double()
    return empty_mask_to_nan(acc, masks)


def mask_iou(maps: Tensor, masks: Tensor) -> Tensor:
    """Foreground IoU of the map thresholded at its mean with the mask (the paper's "mask-IoU").

    ``|pred & fg| / |pred | fg|`` over non-ignore pixels, with ``pred = normalised map > mean``.

    Chefer et al.'s code averages the IoU of the two classes (foreground and background). The
    paper's mask-IoU values are 2-27% (Table 1); a two-class average includes the background IoU,
    which is large whenever the object and the thresholded map are small, so values that low point
    to the foreground IoU, which is what is reported here. A constant map predicts no foreground and
    scores 0.

    Args:
        maps: B x H x W saliency maps (finite).
        masks: B x H x W masks, 1 foreground / 0 background / -1 ignore.

    Returns:
        (B,) float64 fractions in [0, 1] (NaN for masks without foreground).
    """
    check_batch(maps, masks)
    pred = predicted_foreground(maps, masks)
    fg = masks == FOREGROUND
    inter = (pred & fg).sum(dim=(1, 2)).double()
    union = (pred | fg).sum(dim=(1, 2)).double()
    return empty_mask_to_nan(inter / union.clamp_min(1), masks)


def average_precision(maps: Tensor, masks: Tensor) -> Tensor:
    """Per-image average precision of the map as a pixel score for the foreground (Chefer et al. 2021).

    Same definition as scikit-learn's ``average_precision_score``: with the distinct score values as
    thresholds in decreasing order (tied pixels enter together),
    ``AP = sum_k (R_k - R_{k-1}) * P_k``. Equivalently, each foreground pixel contributes the
    precision at the lowest-ranked pixel of its tie group, divided by the number of foreground pixels.

    AP depends only on the ranking of the pixels, which min-max normalisation (strictly increasing)
    does not change, so it is computed on the float64 map directly: identical to the normalised map,
    without rounding that could merge close values into ties. A constant map is one tie group and
    scores the foreground share. Ignore pixels are left out of the ranking.

    Vectorised over the batch: one sort per row, no Python loop.

    Args:
        maps: B x H x W saliency maps (finite).
        masks: B x H x W masks, 1 foreground / 0 background / -1 ignore.

    Returns:
        (B,) float64 values in [0, 1] (NaN for masks without foreground).
    """
    check_batch(maps, masks)
    b = maps.shape[0]
    valid = (masks != IGNORE).reshape(b, -1)
    # Ignore pixels sort last as one -inf group that adds neither true nor false positives.
    scores = maps.double().reshape(b, -1).masked_fill(~valid, float("-inf"))
    labels = (masks == FOREGROUND).reshape(b, -1).double()
    scores, order = torch.sort(scores, dim=1, descending=True)
    labels = labels.gather(1, order)
    weights = valid.gather(1, order).double()
    tp = labels.cumsum(dim=1)
    fp = (weights - labels).cumsum(dim=1)
    predicted = tp + fp
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), 0.0)
    n = scores.shape[1]
    # Index of the last pixel of each pixel's tie group: the next position whose value differs.
    is_last = torch.ones_like(scores, dtype=torch.bool)
    is_last[:, :-1] = scores[:, :-1] != scores[:, 1:]
    positions = torch.arange(n, device=maps.device).expand(b, n)
    group_end = torch.where(is_last, positions, n - 1).flip(1).cummin(dim=1).values.flip(1)
    ap = (labels * precision.gather(1, group_end)).sum(dim=1) / tp[:, -1].clamp_min(1)
    return empty_mask_to_nan(ap, masks)


PIXEL_ACCURACY = Metric(
    name="pixel_acc",
    fn=pixel_accuracy,
    higher_is_better=True,
    description="pixel accuracy of the min-max normalised map thresholded at its mean",
)
AVERAGE_PRECISION = Metric(
    name="ap",
    fn=average_precision,
    higher_is_better=True,
    description="average precision of the map as a per-pixel foreground score",
)
MASK_IOU = Metric(
    name="mask_iou",
    fn=mask_iou,
    higher_is_better=True,
    description="foreground IoU of the map thresholded at its mean with the object mask",
)
