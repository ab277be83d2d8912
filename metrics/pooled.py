"""Dataset-pooled segmentation scores, exactly as Chefer et al. (2021) compute them for ImageNet-Segmentation.

The per-image scores of :mod:`aft_bench.metrics.segmentation` average over images. Chefer et al.'s
evaluation instead adds pixel counts over the whole dataset before dividing:

* pooled pixel accuracy ``= sum_images correct / sum_images labelled``;
* mIoU ``= mean over the two classes (background, foreground) of sum_images |pred_c & gt_c| /
  sum_images |pred_c | gt_c|``,

with the same binarisation (min-max normalised map ``>`` its mean is foreground) and ignore pixels
left out of every count. Images are weighted by their pixel counts, and the background IoU enters the
mean; both differ from the per-image columns. :func:`segmentation_counts` gives the six counts per image,
which a task stores per sample (so resumed and sharded runs pool the same totals), and
:func:`pooled_scores` turns their sums into the two scores.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aft_bench.metrics.base import PooledMetric
from aft_bench.metrics.map_stats import MapStats

COUNTS = ("correct", "labelled", "inter_fg", "union_fg", "inter_bg", "union_bg")
"""The per-image counts, in the order :func:`segmentation_counts` returns them."""


def segmentation_counts(maps: Tensor, masks: Tensor, stats: MapStats | None = None) -> Tensor:
    """The six pixel counts of each image (see :data:`COUNTS`) for pooling over a dataset.

    Args:
        maps: B x H x W saliency maps (finite).
        masks: B x H x W masks, 1 foreground / 0 background / -1 ignore.
        stats: The batch's shared :class:`~aft_bench.metrics.map_stats.MapStats` (built here when None).

    Returns:
        B x 6 int64 counts: correct and labelled pixels, then intersection and union of the foreground and
        of the background, all over the non-ignore pixels.
    """
    stats = stats or MapStats(maps, masks)
    valid, pred, fg, inter = stats.confusion.unbind(dim=1)
    union = pred + fg - inter
    return torch.stack([valid - union + inter, valid, inter, union, valid - union, valid - inter], dim=1)


def pooled_scores(totals: Tensor) -> dict[str, float]:
    """``pixel_acc_pooled`` and ``miou_pooled`` (fractions in [0, 1]) from the counts summed over images.

    A class whose union is empty over the whole dataset has no IoU; the mean is then over the other class.

    Raises:
        ValueError: If ``totals`` does not hold the six counts, or no pixel was labelled.
    """
    totals = totals.double().reshape(-1)
    if totals.numel() != len(COUNTS):
        raise ValueError(f"pooled_scores needs the {len(COUNTS)} summed counts {COUNTS}, got {totals.numel()} values")
    correct, labelled, inter_fg, union_fg, inter_bg, union_bg = totals.tolist()
    if labelled <= 0:
        raise ValueError("pooled_scores: no labelled pixel in the whole dataset")
    ious = [inter / union for inter, union in ((inter_fg, union_fg), (inter_bg, union_bg)) if union > 0]
    return {"pixel_acc_pooled": correct / labelled, "miou_pooled": sum(ious) / len(ious)}


def _pooled_pixel_accuracy(totals: Tensor) -> float:
    return pooled_scores(totals)["pixel_acc_pooled"]


def _pooled_miou(totals: Tensor) -> float:
    return pooled_scores(totals)["miou_pooled"]


PIXEL_ACC_POOLED = PooledMetric(
    name="pixel_acc_pooled", higher_is_better=True, counts=segmentation_counts, reduce=_pooled_pixel_accuracy,
    description="pixel accuracy pooled over the dataset (Chefer et al.'s code)",
)
MIOU_POOLED = PooledMetric(
    name="miou_pooled", higher_is_better=True, counts=segmentation_counts, reduce=_pooled_miou,
    description="two-class mIoU pooled over the dataset (Chefer et al.'s code)",
)
