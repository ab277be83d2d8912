"""Saliency maps scored as soft segmentations (paper Section 4.1, Table 1: Pixel Acc., AP, mask-IoU).

Protocol of Chefer et al. 2021 ("Transformer interpretability beyond attention visualization",
ImageNet-Segmentation evaluation, ``baselines/ViT/imagenet_seg_eval.py`` in hila-chefer/Transformer-
Explainability): each map is min-max normalised per image; pixel accuracy and mask-IoU threshold the
normalised map at its mean. Two average precisions are reported:

    * ``ap_two_class`` (:func:`average_precision_two_class`) is Chefer et al.'s AP: one AP over both
      classes, the normalised map scoring the foreground and one minus it the background. A map that
      knows nothing about the object scores about 1/2.
    * ``ap`` (:func:`average_precision`) is the foreground AP: the map's pixels ranked as foreground
      scores alone. A map that knows nothing scores about the object's share of the image; the paper's
      AP values (34-78 in Table 1, below 50 for weak maps) look like this one.

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

from aft_bench.metrics.base import BACKGROUND, FOREGROUND, IGNORE, Metric, check_batch, empty_mask_to_nan
from aft_bench.metrics.chance import average_precision_chance, mask_iou_chance, pixel_accuracy_chance


def _valid_range(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The float64 maps and their per-image min and max over the non-ignore pixels (B x 1 x 1 each)."""
    valid = masks != IGNORE
    m = maps.double()
    lo = m.masked_fill(~valid, float("inf")).amin(dim=(1, 2), keepdim=True)
    hi = m.masked_fill(~valid, float("-inf")).amax(dim=(1, 2), keepdim=True)
    return m, lo, hi


def normalise(maps: Tensor, masks: Tensor) -> Tensor:
    """Per-image min-max normalisation over the non-ignore pixels, in float64.

    A constant map (max == min) becomes all zeros. Ignore pixels get 0.

    Args:
        maps: B x H x W maps.
        masks: B x H x W masks (1 / 0 / -1).

    Returns:
        B x H x W float64 maps in [0, 1] on the non-ignore pixels.
    """
    m, lo, hi = _valid_range(maps, masks)
    span = hi - lo
    ok = span > 0
    out = torch.where(ok, (m - lo) / torch.where(ok, span, 1.0), 0.0)
    return out * (masks != IGNORE)


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


def _ranked_ap(scores: Tensor, positive: Tensor, valid: Tensor) -> Tensor:
    """Average precision of every row of B x P scores, scikit-learn's ``average_precision_score``.

    With the distinct score values as thresholds in decreasing order (tied entries enter together),
    ``AP = sum_k (R_k - R_{k-1}) * P_k``. Equivalently, each positive contributes the precision at the
    lowest-ranked entry of its tie group, divided by the number of positives. Entries where ``valid`` is
    False take no part. Vectorised: one sort per row, no Python loop.

    Args:
        scores: B x P float64 scores (finite where valid).
        positive: B x P bool labels.
        valid: B x P bool, the entries that are ranked.

    Returns:
        (B,) float64 APs (0 for a row without a valid positive).
    """
    # Invalid entries sort last as one -inf group that adds neither true nor false positives.
    scores = scores.masked_fill(~valid, float("-inf"))
    scores, order = torch.sort(scores, dim=1, descending=True)
    labels = (positive & valid).double().gather(1, order)
    weights = valid.double().gather(1, order)
    tp = labels.cumsum(dim=1)
    predicted = weights.cumsum(dim=1)
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), 0.0)
    b, n = scores.shape
    # Index of the last entry of each entry's tie group: the next position whose value differs.
    is_last = torch.ones_like(scores, dtype=torch.bool)
    is_last[:, :-1] = scores[:, :-1] != scores[:, 1:]
    positions = torch.arange(n, device=scores.device).expand(b, n)
    group_end = torch.where(is_last, positions, n - 1).flip(1).cummin(dim=1).values.flip(1)
    return (labels * precision.gather(1, group_end)).sum(dim=1) / tp[:, -1].clamp_min(1)


def average_precision(maps: Tensor, masks: Tensor) -> Tensor:
    """Per-image foreground average precision: the map's pixels ranked as scores of the foreground alone.

    ``average_precision_score(mask == 1, map)`` of scikit-learn over the non-ignore pixels of each image
    (:func:`_ranked_ap`). This is not Chefer et al.'s AP, which pools the two classes
    (:func:`average_precision_two_class`): a map unrelated to the object scores about the foreground
    share here and about 1/2 there. The paper's AP values (Table 1) look like this foreground AP.

    AP depends only on the ranking of the pixels, which min-max normalisation (strictly increasing)
    does not change, so it is computed on the float64 map directly: identical to the normalised map,
    without rounding that could merge close values into ties. A constant map is one tie group and
    scores the foreground share. Ignore pixels are left out of the ranking.

    Args:
        maps: B x H x W saliency maps (finite).
        masks: B x H x W masks, 1 foreground / 0 background / -1 ignore.

    Returns:
        (B,) float64 values in [0, 1] (NaN for masks without foreground).
    """
    check_batch(maps, masks)
    b = maps.shape[0]
    ap = _ranked_ap(maps.double().reshape(b, -1), (masks == FOREGROUND).reshape(b, -1),
                    (masks != IGNORE).reshape(b, -1))
    return empty_mask_to_nan(ap, masks)


def average_precision_two_class(maps: Tensor, masks: Tensor) -> Tensor:
    """Per-image AP pooled over foreground and background, as Chefer et al.'s evaluation code computes it.

    Follows hila-chefer/Transformer-Explainability: ``baselines/ViT/imagenet_seg_eval.py`` min-max
    normalises the map per image, ``n = (m - min) / (max - min)``, sets the NaNs of a constant map (0 / 0)
    to 0 in both channels, and stacks the two channels ``1 - n`` (background) and ``n`` (foreground);
    ``get_ap_scores`` in ``utils/metrices.py`` one-hot encodes the mask into the same two channels, drops
    ignore pixels (-1), flattens both channels together and takes scikit-learn's
    ``average_precision_score``. So each non-ignore pixel is ranked twice, as a foreground candidate and as
    a background candidate, and exactly one of the two is a positive: a map unrelated to the object scores
    about 1/2 whatever the object's size (the foreground AP, :func:`average_precision`, scores about
    the object's share).

    Implementation choices:
        * AP depends only on the order of the 2N scores, and multiplying both channels by
          ``max - min > 0`` keeps it, so the scores ranked are ``m - min`` (foreground) and ``max - m``
          (background) in float64: the same order as Chefer's ``n`` and ``1 - n``, without the rounding of
          the division and of ``1 - n`` that can split a foreground-background tie (``n_i == 1 - n_j``).
        * A constant map gives 0 in both channels, exactly Chefer's NaN-to-0: one tie group of N
          positives among 2N entries, so AP = 1/2.
        * Min and max are taken over the non-ignore pixels (Chefer et al. take them over the whole image),
          and ignore pixels are ranked in neither channel.
        * A mask without foreground scores NaN (Chefer's code would still score the background channel).

    Args:
        maps: B x H x W saliency maps (finite).
        masks: B x H x W masks, 1 foreground / 0 background / -1 ignore.

    Returns:
        (B,) float64 values in [0, 1] (NaN for masks without foreground).
    """
    check_batch(maps, masks)
    b = maps.shape[0]
    m, lo, hi = _valid_range(maps, masks)
    scores = torch.cat([(hi - m).reshape(b, -1), (m - lo).reshape(b, -1)], dim=1)
    positive = torch.cat([(masks == BACKGROUND).reshape(b, -1), (masks == FOREGROUND).reshape(b, -1)], dim=1)
    valid = (masks != IGNORE).reshape(b, -1).repeat(1, 2)
    return empty_mask_to_nan(_ranked_ap(scores, positive, valid), masks)


PIXEL_ACCURACY = Metric(
    name="pixel_acc",
    fn=pixel_accuracy,
    chance=pixel_accuracy_chance,
    higher_is_better=True,
    description="pixel accuracy of the min-max normalised map thresholded at its mean",
)
AVERAGE_PRECISION = Metric(
    name="ap",
    fn=average_precision,
    chance=average_precision_chance,
    higher_is_better=True,
    description="foreground average precision: the map as a per-pixel score of the object alone",
)
AVERAGE_PRECISION_TWO_CLASS = Metric(
    name="ap_two_class",
    fn=average_precision_two_class,
    higher_is_better=True,
    description="average precision pooled over both classes (map for foreground, 1 - map for background), "
    "as in Chefer et al.'s code",
)
MASK_IOU = Metric(
    name="mask_iou",
    fn=mask_iou,
    chance=mask_iou_chance,
    higher_is_better=True,
    description="foreground IoU of the map thresholded at its mean with the object mask",
)
