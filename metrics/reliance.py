"""Reliance on a planted feature: how often a classifier follows a swapped pattern instead of the object.

Ilyas et al. (2019) measure a model's use of a non-robust feature by relabelling it: images whose feature is
moved to another class, and the share of predictions that follow the feature. Here the feature is the shapes
world's planted class pattern (:mod:`aft_bench.data.shortcut`); each test image is classified three ways: as
drawn (its own class's pattern), with the pattern swapped for another class's, and with the pattern removed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aft_bench.metrics.base import Metric


def reliance_scores(clean: Tensor, swapped: Tensor, removed: Tensor, labels: Tensor,
                    pattern_labels: Tensor) -> dict[str, Tensor]:
    """Per-sample 0/1 scores (float64) from the predicted classes under the three conditions.

    Args:
        clean, swapped, removed: (B,) predicted classes of the image as drawn, with the pattern of
            ``pattern_labels`` planted instead, and with no pattern.
        labels: (B,) true classes (of the object).
        pattern_labels: (B,) the class whose pattern the swapped image carries (never the true class).

    Returns:
        ``{"follow": swapped == pattern, "acc_swapped": swapped == label, "acc_removed": removed == label,
        "acc": clean == label}``.

    Raises:
        ValueError: If the shapes differ or a swapped pattern is the sample's own class (no swap).
    """
    tensors = (clean, swapped, removed, labels, pattern_labels)
    if len({tuple(t.shape) for t in tensors}) != 1 or clean.dim() != 1:
        raise ValueError(f"reliance_scores: give five (B,) tensors, got shapes {[tuple(t.shape) for t in tensors]}")
    if bool((pattern_labels == labels).any()):
        raise ValueError("reliance_scores: a swapped pattern must be another class's (pattern_labels == labels)")
    as_float = {"follow": swapped == pattern_labels, "acc_swapped": swapped == labels,
                "acc_removed": removed == labels, "acc": clean == labels}
    return {name: value.to(torch.float64) for name, value in as_float.items()}


FOLLOW = Metric("follow", higher_is_better=False,
                description="% of pattern-swapped images classified as the pattern's class (reliance on the pattern)")
ACC_SWAPPED = Metric("acc_swapped", higher_is_better=True,
                     description="zero-shot accuracy (the object's class) on pattern-swapped images")
ACC_REMOVED = Metric("acc_removed", higher_is_better=True,
                     description="zero-shot accuracy with the planted pattern removed")
ACC_PLANTED = Metric("acc", higher_is_better=True, description="zero-shot accuracy on the images as drawn")
RELIANCE_METRICS = (FOLLOW, ACC_SWAPPED, ACC_REMOVED, ACC_PLANTED)
