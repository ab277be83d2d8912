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

from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from aft_bench.metrics.base import BACKGROUND, FOREGROUND, IGNORE, Metric, check_batch
from aft_bench.metrics.chance import average_precision_chance, mask_iou_chance, pixel_accuracy_chance


class MapStats:
    """What the pointing-game and segmentation scores of one batch share, each computed once when first needed.

    Every metric of this module (and :mod:`aft_bench.metrics.pointing`, :mod:`aft_bench.metrics.pooled`,
    :mod:`aft_bench.metrics.chance`) takes an optional ``stats``: a task that reports several of them builds one
    :class:`MapStats` per batch, so the batch is checked once (shapes, mask values, NaN/Inf:
    :func:`aft_bench.metrics.base.check_batch`) and the pixel counts, the map's range over the non-ignore pixels,
    the normalised map, its mean threshold and the per-row ranking of the pixels are computed once for all the
    scores, on the maps' device, without a host sync on accelerators.

    Args:
        maps: B x H x W saliency maps (finite).
        masks: B x H x W masks, 1 foreground / 0 background / -1 ignore.

    Raises:
        ValueError: On bad shapes or mask values. NonFiniteMapError: If a map holds NaN or Inf.
    """

    def __init__(self, maps: Tensor, masks: Tensor) -> None:
        check_batch(maps, masks)
        self.maps, self.masks = maps, masks

    @cached_property
    def valid(self) -> Tensor:
        """B x H x W bool: the non-ignore pixels."""
        return self.masks != IGNORE

    @cached_property
    def foreground(self) -> Tensor:
        """B x H x W bool: the foreground pixels."""
        return self.masks == FOREGROUND

    @cached_property
    def valid_count(self) -> Tensor:
        """(B,) int64: the non-ignore pixels N of each sample."""
        return _count(self.valid)

    @cached_property
    def foreground_count(self) -> Tensor:
        """(B,) int64: the foreground pixels K of each sample."""
        return _count(self.foreground)

    @cached_property
    def has_foreground(self) -> Tensor:
        """(B,) bool: the samples that can be scored (a mask without foreground scores NaN)."""
        return self.foreground_count > 0

    def nan_if_empty(self, scores: Tensor) -> Tensor:
        """``scores`` with NaN for the samples without foreground (never a hit)."""
        return torch.where(self.has_foreground, scores, torch.nan)

    @cached_property
    def scores(self) -> Tensor:
        """The maps as exact floats: float maps as they are, integer maps in float64."""
        return self.maps if self.maps.is_floating_point() else self.maps.double()

    @cached_property
    def double(self) -> Tensor:
        """The maps in float64."""
        return self.maps.double()

    @cached_property
    def valid_range(self) -> tuple[Tensor, Tensor]:
        """Per-image min and max over the non-ignore pixels (B x 1 x 1 float64 each), taken in the maps' own
        dtype (exact: a min or max is one of the values)."""
        lo = self.scores.masked_fill(~self.valid, float("inf")).amin(dim=(1, 2), keepdim=True)
        hi = self.scores.masked_fill(~self.valid, float("-inf")).amax(dim=(1, 2), keepdim=True)
        return lo.double(), hi.double()

    @cached_property
    def normalised(self) -> Tensor:
        """:func:`normalise` of the maps: ``(map - min) / (max - min)`` in float64, 0 on ignore pixels and on
        constant maps."""
        lo, hi = self.valid_range
        span = hi - lo
        ok = span > 0
        out = torch.sub(self.scores, lo)  # float64: the maps are promoted to lo's dtype
        out.div_(torch.where(ok, span, 1.0))
        return out.masked_fill_(~self.valid | ~ok, 0.0)

    @cached_property
    def predicted(self) -> Tensor:
        """:func:`predicted_foreground` of the maps (the normalised map is >= 0 and 0 on ignore pixels, so no
        ignore pixel is ever above the mean)."""
        count = self.valid_count.clamp_min(1)[:, None, None]
        mean = self.normalised.sum(dim=(1, 2), keepdim=True) / count
        return self.normalised > mean

    @cached_property
    def confusion(self) -> Tensor:
        """B x 4 int64 pixel counts: non-ignore V, predicted foreground P, foreground F and their intersection I
        (every other count of the thresholded map follows from these four)."""
        pred = self.predicted
        return torch.stack([self.valid_count, _count(pred), self.foreground_count, _count(pred & self.foreground)],
                           dim=1)

    @cached_property
    def ranking(self) -> tuple[Tensor, Tensor, Tensor]:
        """Each row's non-ignore pixels in increasing order of their map value (see :func:`_rank`)."""
        b = self.maps.shape[0]
        narrow = self.maps.is_floating_point() and self.maps.element_size() <= 4  # float32 holds them exactly
        scores = self.maps.float() if narrow else self.double
        return _rank(scores.reshape(b, -1), self.foreground.reshape(b, -1), self.valid.reshape(b, -1))

    @cached_property
    def two_class_ranking(self) -> tuple[Tensor, Tensor, Tensor]:
        """The 2N scores of :func:`average_precision_two_class` in increasing order (see :func:`_rank`).

        On the CPU they follow from :attr:`ranking` without a sort of their own: ``map - min`` is non-decreasing
        and ``max - map`` non-increasing along it, so the two channels are two sorted runs, which one stable sort
        (timsort: a merge of the runs) combines.
        """
        b = self.maps.shape[0]
        lo, hi = self.valid_range
        if self.maps.device.type == "cpu":
            return _merged_two_class(self.ranking, lo.reshape(b, 1), hi.reshape(b, 1))
        scores = torch.cat([(hi - self.double).reshape(b, -1), (self.double - lo).reshape(b, -1)], dim=1)
        positive = torch.cat([(self.masks == BACKGROUND).reshape(b, -1), self.foreground.reshape(b, -1)], dim=1)
        return _rank(scores, positive, self.valid.reshape(b, -1).repeat(1, 2), non_negative=True)


def _count(flags: Tensor) -> Tensor:
    """(B,) int64 count of the True entries of each row of a B x ... bool tensor (summed as uint8 into int32,
    several times faster than a bool sum)."""
    return flags.view(torch.uint8).flatten(1).sum(dim=1, dtype=torch.int32).long()


def _rank(scores: Tensor, positive: Tensor, valid: Tensor, non_negative: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """The valid entries of each row of B x P scores in increasing order: B x P sort keys (equal exactly where
    the scores are), B x P bool labels and (B,) int64 counts n; positions from n on are padding (label False).

    On the CPU, float32 and float64 scores are ranked by integers in their order (:func:`_order_keys` of their
    int32 / int64 bit patterns, -0.0 merged with 0.0; ``non_negative``: the valid scores are >= 0, whose patterns
    are in order already), one row at a time by torch's 1-D sort (an LSD radix sort of integers for rows of 2**15
    entries or more where torch is built with FBGEMM, a comparison sort otherwise: the same order), and the labels
    gathered in that order. Other scores, and scores on other devices, are ranked by a torch argsort (float64
    values, inf for padding).
    """
    n = _count(valid)
    if scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64):
        values = scores.numpy() + 0.0  # + 0.0 turns -0.0 into 0.0, so that equal scores get one key
        keys = values.view(np.int32 if values.dtype == np.float32 else np.int64)
        if not non_negative:
            _order_keys(keys)
        np.copyto(keys, np.iinfo(keys.dtype).max, where=~valid.numpy())  # after every finite score's key
        ranked, labels, flags = torch.empty_like(torch.from_numpy(keys)), torch.zeros_like(positive), positive.numpy()
        order = torch.empty(keys.shape[1], dtype=torch.int64)
        for row, count in enumerate(n.tolist()):
            torch.sort(torch.from_numpy(keys[row]), stable=True, out=(ranked[row], order))
            np.take(flags[row], order.numpy()[:count], out=labels[row, :count].numpy())
        return ranked, labels, n
    values, order = torch.sort(scores.double().masked_fill(~valid, float("inf")), dim=1)
    return values, positive.gather(1, order) & valid.gather(1, order), n


def _order_keys(bits: np.ndarray) -> np.ndarray:
    """Turns the int32 / int64 bit patterns of floats of any sign, in place, into signed integers in the floats'
    order (the magnitude bits of negative floats flipped), and returns them; equal floats get equal keys once -0.0
    is turned into 0.0. An involution: applied to the keys it gives back the patterns."""
    bits ^= (bits >> (8 * bits.itemsize - 1)) & np.iinfo(bits.dtype).max
    return bits


def _merged_two_class(ranking: tuple[Tensor, Tensor, Tensor], lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The two-class ranking of :attr:`MapStats.two_class_ranking` from a CPU foreground :attr:`MapStats.ranking`:
    the same keys as ranking ``cat([max - map, map - min])`` directly (the int64 patterns of the non-negative
    float64 scores), from the sorted map values and a merge, one row at a time (its intermediates stay in the
    caches)."""
    keys, labels, n = ranking
    b, length = keys.shape
    values = _order_keys(keys.numpy().copy()).view(np.float32 if keys.dtype == torch.int32 else np.float64)
    merged = np.empty((b, 2 * length), dtype=np.uint64)
    two = np.zeros((b, 2 * length), dtype=bool)
    foreground = labels.numpy()
    bounds = zip(n.tolist(), lo.reshape(b).tolist(), hi.reshape(b).tolist(), strict=True)
    for row, (count, low, high) in enumerate(bounds):
        merged[row, 2 * count :] = np.iinfo(np.int64).max  # padding: after every key
        if not count:
            continue
        pixels = values[row, :count].astype(np.float64, copy=False)
        both = merged[row, : 2 * count]
        up, down = both[:count], both[count:]
        np.subtract(pixels, low, out=up.view(np.float64))  # map - min: non-decreasing along the ranking
        np.subtract(high, pixels[::-1], out=down.view(np.float64))  # max - map reversed: non-decreasing
        both <<= 1  # room for the label; drops the sign bit of -0.0 (max - map with both zero): the key of 0.0
        up |= foreground[row, :count]
        down |= ~foreground[row, count - 1 :: -1]  # a non-ignore pixel that is not foreground is background
        both.sort(kind="stable")  # timsort: a linear merge of the two presorted runs
        np.bitwise_and(both.view(np.uint8)[::8], 1, out=two[row, : 2 * count].view(np.uint8))  # the lowest byte
        both >>= 1
    return torch.from_numpy(merged.view(np.int64)), torch.from_numpy(two), 2 * n


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
