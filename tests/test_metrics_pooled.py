"""Dataset-pooled pixel accuracy and mIoU (Chefer et al.'s evaluation): known answers, pooling weights,
edge cases, and a cross-check against confusion matrices summed with numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aft_bench.metrics.pooled import COUNTS, pooled_scores, segmentation_counts


def test_known_counts_with_an_ignore_pixel() -> None:
    maps = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    masks = torch.tensor([[[0, 1], [1, -1]]], dtype=torch.int8)
    # Over the 3 valid pixels the normalised map is 0, 0.5, 1 with mean 0.5: only (1, 0) is foreground.
    counts = segmentation_counts(maps, masks)
    assert counts.tolist() == [[2, 3, 1, 2, 1, 2]] and len(COUNTS) == 6
    assert pooled_scores(counts.sum(0)) == {"pixel_acc_pooled": pytest.approx(2 / 3), "miou_pooled": 0.5}


def test_pooling_weighs_images_by_their_labelled_pixels() -> None:
    maps = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]])
    masks = torch.tensor([[[1, 0], [0, 0]], [[0, -1], [-1, -1]]], dtype=torch.int8)
    counts = segmentation_counts(maps, masks)  # image 1: 4 of 4 correct; image 2: its one pixel is constant
    assert counts[:, :2].tolist() == [[4, 4], [1, 1]]
    assert pooled_scores(counts.sum(0))["pixel_acc_pooled"] == 1.0
    # The constant single-pixel map predicts background: correct, and the foreground union comes from image 1.
    assert pooled_scores(counts.sum(0))["miou_pooled"] == pytest.approx((1 / 1 + 4 / 4) / 2)


def test_edge_cases() -> None:
    only_background = torch.tensor([3, 4, 0, 0, 3, 4])  # no foreground anywhere: the IoU is the background's
    assert pooled_scores(only_background)["miou_pooled"] == 0.75
    with pytest.raises(ValueError, match="no labelled pixel"):
        pooled_scores(torch.zeros(6))
    with pytest.raises(ValueError, match="6 summed counts"):
        pooled_scores(torch.ones(5))


def _numpy_reference(maps: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    """Pixel accuracy and two-class mIoU from confusion matrices summed over the images."""
    confusion = np.zeros((2, 2), dtype=np.int64)
    for m, t in zip(maps, masks, strict=True):
        valid = t != -1
        values = m[valid]
        span = values.max() - values.min()
        norm = (values - values.min()) / span if span > 0 else np.zeros_like(values)
        pred = (norm > norm.mean()).astype(np.int64)
        truth = (t[valid] == 1).astype(np.int64)
        confusion += np.bincount(2 * truth + pred, minlength=4).reshape(2, 2)
    accuracy = np.trace(confusion) / confusion.sum()
    ious = [confusion[c, c] / (confusion[c].sum() + confusion[:, c].sum() - confusion[c, c]) for c in (0, 1)]
    return float(accuracy), float(np.mean(ious))


def test_cross_check_against_summed_confusion_matrices() -> None:
    rng = np.random.default_rng(7)
    maps = rng.normal(size=(12, 9, 11))
    masks = rng.choice([-1, 0, 1], p=[0.1, 0.6, 0.3], size=(12, 9, 11)).astype(np.int8)
    counts = segmentation_counts(torch.from_numpy(maps), torch.from_numpy(masks))
    ours = pooled_scores(counts.sum(0))
    accuracy, miou = _numpy_reference(maps, masks)
    assert ours["pixel_acc_pooled"] == pytest.approx(accuracy, abs=1e-12)
    assert ours["miou_pooled"] == pytest.approx(miou, abs=1e-12)
