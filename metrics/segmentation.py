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

import numpy as np
import torch
from torch import Tensor

from aft_bench.metrics.base import Metric
from aft_bench.metrics.chance import average_precision_chance, mask_iou_chance, pixel_accuracy_chance
from aft_bench.metrics.map_stats import MapStats


def _ranked_ap(ranking: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """scikit-learn's ``average_precision_score`` of each row of a :func:`_rank` ranking.

    With the distinct scores as thresholds in decreasing order (tied entries enter together),
    ``AP = sum_k (R_k - R_{k-1}) * P_k``: each positive adds the precision among the entries scoring at least
    its score, and the sum is divided by the number of positives (0 for a row without one). On the CPU over the
    positives only, in numpy (:func:`_positive_ap`), elsewhere per entry in torch.
    """
    keys, labels, n = ranking
    if keys.device.type == "cpu":
        return torch.from_numpy(_positive_ap(keys.numpy(), labels.numpy(), n.numpy()))
    # int32 prefix sums and running maxima (rows < 2**31 entries)
    below = labels.cumsum(dim=1, dtype=torch.int32) - labels.int()  # positives ranked below each position
    first = torch.ones_like(labels)
    first[:, 1:] = keys[:, 1:] != keys[:, :-1]  # the first entry of each tie group
    positions = torch.arange(keys.shape[1], dtype=torch.int32, device=keys.device).expand_as(below)
    start = torch.where(first, positions, 0).cummax(dim=1).values  # the first position of each entry's group
    below_start = torch.where(first, below, 0).cummax(dim=1).values  # positives below it (non-decreasing)
    total = below[:, -1] + labels[:, -1]
    tp = (total[:, None] - below_start).double()
    precision = tp.div_((n[:, None].int() - start).clamp_min(1).double())
    return torch.where(labels, precision, 0.0).sum(dim=1) / total.clamp_min(1).double()


def _positive_ap(keys: np.ndarray, labels: np.ndarray, n: np.ndarray) -> np.ndarray:
    """:func:`_ranked_ap` over the positives, one row at a time (:func:`_row_ap`)."""
    return np.array([_row_ap(keys[row, :count], labels[row, :count]) for row, count in enumerate(n.tolist())],
                    dtype=np.float64)


def _row_ap(keys: np.ndarray, labels: np.ndarray) -> float:
    """The AP of one row of n sorted keys and their labels: a positive whose tie group starts at position s, with
    q0 of the row's P positives below s, adds ``(P - q0) / (n - s)``.

    A positive that does not follow an equal key starts its group: s is its own position and q0 its rank. The
    others come in runs, one per tie group, whose L positives add ``L * (P - q0) / (n - s)`` together: s and q0
    are those of the positive just before the run when it is in the group (it is then the group's first entry),
    else q0 is the run's first rank and a binary search of the keys finds s.
    """
    positions = np.flatnonzero(labels)
    total = positions.size
    if not total:
        return 0.0
    first = np.empty(keys.shape, dtype=bool)  # the first entry of each tie group
    first[0] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    starting = first[positions]
    ap = np.sum(np.arange(total, 0, -1, dtype=np.float64) / (keys.size - positions), where=starting)
    tied = np.flatnonzero(~starting)  # ranks of the positives that follow an equal key, in runs of one group each
    if tied.size:
        tied_keys = keys[positions[tied]]
        head = np.empty(tied.size, dtype=bool)  # the first of each run
        head[0] = True
        np.not_equal(tied_keys[1:], tied_keys[:-1], out=head[1:])
        heads, head_keys = tied[head], tied_keys[head]
        previous = positions[heads - 1]  # (wraps around for rank 0, which the next line leaves out)
        inside = (heads > 0) & (keys[previous] == head_keys)
        group_start = np.where(inside, previous, 0)
        group_start[~inside] = np.searchsorted(keys, head_keys[~inside], side="left")
        lengths = np.diff(np.flatnonzero(head), append=tied.size)
        ap += np.sum((total - heads + inside) * lengths / (keys.size - group_start))
    return float(ap) / total


def normalise(maps: Tensor, masks: Tensor) -> Tensor:
    """Per-image min-max normalisation over the non-ignore pixels, in float64.

    A constant map (max == min) becomes all zeros. Ignore pixels get 0.

    Args:
        maps: B x H x W maps.
        masks: B x H x W masks (1 / 0 / -1).

    Returns:
        B x H x W float64 maps in [0, 1] on the non-ignore pixels.
    """
    return MapStats(maps, masks).normalised


def predicted_foreground(maps: Tensor, masks: Tensor) -> Tensor:
    """Chefer et al.'s binarisation: normalised map ``>`` its mean over the non-ignore pixels.

    Args:
        maps: B x H x W maps.
        masks: B x H x W masks (1 / 0 / -1).

    Returns:
        B x H x W bool tensor, False on ignore pixels.
    """
    return MapStats(maps, masks).predicted


def pixel_accuracy(maps: Tensor, masks: Tensor, stats: MapStats | None = None) -> Tensor:
    """Pixel accuracy of the map thresholded at its mean (Chefer et al. 2021).

    Fraction of non-ignore pixels where the prediction ``normalised map > mean`` equals the mask's
    foreground. A constant map predicts all background, so it scores the background share.

    Args:
        maps: B x H x W saliency maps (finite).
        masks: B x H x W masks, 1 foreground / 0 background / -1 ignore.
        stats: The batch's shared :class:`MapStats` (built here when None).

    Returns:
        (B,) float64 fractions in [0, 1] (NaN for masks without foreground).
    """
    stats = stats or MapStats(maps, masks)
    valid, pred, fg, inter = stats.confusion.double().unbind(dim=1)
    correct = valid - pred - fg + 2 * inter  # both foreground, plus neither
    return stats.nan_if_empty(correct / valid.clamp_min(1))


def mask_iou(maps: Tensor, masks: Tensor, stats: MapStats | None = None) -> Tensor:
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
        stats: The batch's shared :class:`MapStats` (built here when None).

    Returns:
        (B,) float64 fractions in [0, 1] (NaN for masks without foreground).
    """
    stats = stats or MapStats(maps, masks)
    _, pred, fg, inter = stats.confusion.double().unbind(dim=1)
    return stats.nan_if_empty(inter / (pred + fg - inter).clamp_min(1))


def average_precision(maps: Tensor, masks: Tensor, stats: MapStats | None = None) -> Tensor:
    """Per-image foreground average precision: the map's pixels ranked as scores of the foreground alone.

    ``average_precision_score(mask == 1, map)`` of scikit-learn over the non-ignore pixels of each image:
    with the distinct values as thresholds in decreasing order (tied pixels enter together),
    ``AP = sum_k (R_k - R_{k-1}) * P_k``, i.e. each foreground pixel adds the precision among the pixels
    scoring at least its value, and the sum is divided by the number of foreground pixels. This is not
    Chefer et al.'s AP, which pools the two classes (:func:`average_precision_two_class`): a map unrelated
    to the object scores about the foreground share here and about 1/2 there. The paper's AP values
    (Table 1) look like this foreground AP.

    AP depends only on the ranking of the pixels, which min-max normalisation (strictly increasing)
    does not change, so it is computed on the map directly: identical to the normalised map, without
    rounding that could merge close values into ties. A constant map is one tie group and scores the
    foreground share. Ignore pixels are left out of the ranking. Batched: one sort per row
    (:attr:`MapStats.ranking`), prefix sums and the start of each tie group (:func:`_ranked_ap`).

    Args:
        maps: B x H x W saliency maps (finite).
        masks: B x H x W masks, 1 foreground / 0 background / -1 ignore.
        stats: The batch's shared :class:`MapStats` (built here when None).

    Returns:
        (B,) float64 values in [0, 1] (NaN for masks without foreground).
    """
    stats = stats or MapStats(maps, masks)
    return stats.nan_if_empty(_ranked_ap(stats.ranking))


def average_precision_two_class(maps: Tensor, masks: Tensor, stats: MapStats | None = None) -> Tensor:
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
          ``max - min > 0`` keeps it, so the scores ranked are ``a = m - min`` (foreground) and
          ``b = max - m`` (background) in float64: the same order as Chefer's ``n`` and ``1 - n``, without the
          rounding of the division and of ``1 - n`` that can split a foreground-background tie
          (``n_i == 1 - n_j``).
        * A constant map gives 0 in both channels, exactly Chefer's NaN-to-0: one tie group of N
          positives among 2N entries, so AP = 1/2.
        * Min and max are taken over the non-ignore pixels (Chefer et al. take them over the whole image),
          and ignore pixels are ranked in neither channel.
        * A mask without foreground scores NaN (Chefer's code would still score the background channel).

    Args:
        maps: B x H x W saliency maps (finite).
        masks: B x H x W masks, 1 foreground / 0 background / -1 ignore.
        stats: The batch's shared :class:`MapStats` (built here when None).

    Returns:
        (B,) float64 values in [0, 1] (NaN for masks without foreground).
    """
    stats = stats or MapStats(maps, masks)
    return stats.nan_if_empty(_ranked_ap(stats.two_class_ranking))


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
