"""The metric record, input checks and the reasons a sample is left out of a score.

Every metric in :mod:`aft_bench.metrics` is a batched, pure torch function

    ``fn(maps: B x H x W float, masks: B x H x W int, **options) -> (B,) float64``

over saliency maps and pixel masks (1 foreground, 0 background, -1 ignore). Scores are fractions in
[0, 1]; ignore pixels never take part in a score; a sample whose mask has no foreground pixel gets NaN
(never a hit). Tasks call :func:`exclusion_reason` first, count the excluded samples by reason and
aggregate the rest with :class:`aft_bench.metrics.summary.RunningStat` (sums and counts, as
torchmetrics does), so no list of maps is ever kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from aft_bench.metrics.summary import RunningStat

FOREGROUND, BACKGROUND, IGNORE = 1, 0, -1

EMPTY_MASK = "empty mask"
"""Exclusion reason of a sample whose mask has no foreground pixel (ignore pixels do not count)."""


class NonFiniteMapError(ValueError):
    """A saliency map holds NaN or Inf values; the message gives how many and in which samples."""


@dataclass(frozen=True)
class Metric:
    """A reported score and how to read it, declared once: tasks list the metric objects they report, and
    result summaries and leaderboard arrows read ``higher_is_better`` and ``scale`` from them.

    Attributes:
        name: Registry name, also the column name in result files ("pg", "ap", ...).
        higher_is_better: Direction shown as an arrow in leaderboards.
        description: One line for ``aft-bench ls`` and table captions.
        fn: Batched function ``fn(maps, masks, **options) -> (B,) float64`` of per-sample scores, when the
            score is a function of maps and masks (None for scores a task computes itself, e.g. accuracy).
        scale: Factor from the per-sample value to the reported mean (100: fractions shown in percent).
        chance: Batched ``chance(masks, stats=None, **options) -> (B,) float64``: the score a random map gets in
            expectation (:mod:`aft_bench.metrics.chance`; ``stats``, the batch's
            :class:`~aft_bench.metrics.map_stats.MapStats`, lends its pixel counts), or None where there is no
            closed form.
    """

    name: str
    higher_is_better: bool
    description: str = ""
    fn: Callable[..., Tensor] | None = None
    scale: float = 100.0
    chance: Callable[..., Tensor] | None = None

    def __call__(self, maps: Tensor, masks: Tensor, **kwargs: object) -> Tensor:
        """Scores a batch; see the function's docstring for the options it takes."""
        if self.fn is None:
            raise TypeError(f"metric {self.name!r} is computed by its task, not from maps and masks")
        return self.fn(maps, masks, **kwargs)

    def renamed(self, name: str, description: str | None = None) -> Metric:
        """The same metric under another column name (``ssim@3``, ``acc@0.5``)."""
        return replace(self, name=name, description=self.description if description is None else description)

    def summary(self, stat: RunningStat) -> dict[str, Any]:
        """The result-file summary of the per-sample values in ``stat`` (already multiplied by :attr:`scale`)."""
        return {**stat.summary(), "higher_is_better": self.higher_is_better}

    def count_summary(self, value: float, n: int) -> dict[str, Any]:
        """The summary of a score that is one number for the whole run (a count of detectors over ``n`` units):
        no interval."""
        return {"mean": float(value) * self.scale, "ci95": math.nan, "n": n, "higher_is_better": self.higher_is_better}


@dataclass(frozen=True)
class PooledMetric:
    """A score pooled over the dataset from per-sample counts (Chefer et al.'s pooled pixel accuracy and mIoU).

    A task stores ``counts(maps, masks)`` (B x K integers) per sample; the summary sums them over the samples
    scored and applies ``reduce``. Resumed and sharded runs therefore pool the same totals. There is no
    per-sample value, so no interval.

    Attributes:
        name, higher_is_better, description, scale: As for :class:`Metric`.
        counts: ``counts(maps, masks) -> B x K`` int64 counts of each sample.
        reduce: Summed counts (K,) -> the pooled score as a fraction.
    """

    name: str
    higher_is_better: bool
    counts: Callable[[Tensor, Tensor], Tensor]
    reduce: Callable[[Tensor], float]
    description: str = ""
    scale: float = 100.0

    def summary(self, totals: Tensor | None, n: int) -> dict[str, Any]:
        """The result-file summary of counts summed over ``n`` samples (mean NaN when none was scored)."""
        mean = math.nan if totals is None or n == 0 else self.scale * float(self.reduce(totals))
        return {"mean": mean, "ci95": math.nan, "n": n, "higher_is_better": self.higher_is_better}


def _count_non_finite(maps: Tensor) -> Tensor:
    """Per-sample count of NaN/Inf values of a B x ... tensor (all zeros for integer maps)."""
    if not maps.is_floating_point():
        return torch.zeros(maps.shape[0], dtype=torch.long, device=maps.device)
    return (~torch.isfinite(maps)).reshape(maps.shape[0], -1).sum(dim=1)


def _all_finite(maps: Tensor) -> bool:
    """Whether every value is finite, from one min/max pass (NaN propagates into both, +-Inf shows in one)."""
    if not maps.is_floating_point() or maps.numel() == 0:
        return True
    lo, hi = torch.aminmax(maps)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def check_masks(masks: Tensor) -> None:
    """Checks that masks are a B x H x W integer (or bool) tensor with values 1 / 0 / -1.

    Raises:
        TypeError: If ``masks`` is not a tensor.
        ValueError: If the shape is not B x H x W with pixels, the dtype is floating, or another value occurs.
    """
    if not isinstance(masks, Tensor):
        raise TypeError(f"masks must be a torch tensor, got {type(masks).__name__}")
    if masks.dim() != 3 or masks.shape[1] == 0 or masks.shape[2] == 0:
        raise ValueError(f"masks must be B x H x W with pixels, got shape {tuple(masks.shape)}")
    if masks.is_floating_point() or masks.is_complex():
        raise ValueError(
            f"masks must be an integer tensor (1 fg / 0 bg / -1 ignore), got dtype {masks.dtype}; "
            "convert them with masks.to(torch.int8)"
        )
    if masks.dtype == torch.bool or masks.numel() == 0:
        return
    lo, hi = torch.aminmax(masks)  # one pass; the offending values are looked up only on failure
    if int(lo) < IGNORE or int(hi) > FOREGROUND:
        bad = torch.unique(masks[(masks < IGNORE) | (masks > FOREGROUND)]).tolist()[:5]
        raise ValueError(
            f"masks hold values {bad} outside {{1 foreground, 0 background, -1 ignore}}; map the dataset's "
            "labels onto this convention first"
        )


def check_batch(maps: Tensor, masks: Tensor) -> None:
    """Checks shapes, mask values and finiteness of a batch before it is scored.

    Args:
        maps: B x H x W saliency maps.
        masks: B x H x W integer (or bool) masks with values 1 / 0 / -1.

    Raises:
        ValueError: If the shapes differ, are not B x H x W, or the mask holds other values.
        NonFiniteMapError: If a map holds NaN or Inf values.
    """
    if not isinstance(maps, Tensor) or not isinstance(masks, Tensor):
        raise TypeError(
            f"maps and masks must be torch tensors, got {type(maps).__name__} and {type(masks).__name__}"
        )
    if maps.dim() != 3:
        raise ValueError(
            f"maps must be B x H x W, got shape {tuple(maps.shape)}; add a batch dimension with maps[None] "
            "or drop a channel dimension before scoring"
        )
    if tuple(masks.shape) != tuple(maps.shape):
        raise ValueError(
            f"mask shape {tuple(masks.shape)} differs from map shape {tuple(maps.shape)}; resize the maps to "
            "the mask size (nearest-neighbour for masks) before scoring"
        )
    if maps.shape[1] == 0 or maps.shape[2] == 0:
        raise ValueError(f"maps have no pixels (shape {tuple(maps.shape)})")
    check_masks(masks)
    if not _all_finite(maps):
        bad_counts = _count_non_finite(maps)
        samples = torch.nonzero(bad_counts).flatten().tolist()
        raise NonFiniteMapError(
            f"maps hold {int(bad_counts.sum())} non-finite (NaN/Inf) values in batch samples {samples[:10]}"
            f"{' ...' if len(samples) > 10 else ''}; the attribution produced them: run it in fp32, "
            "or skip these samples with --on-error skip"
        )


def exclusion_reason(map: Tensor, mask: Tensor) -> str | None:
    """Says why one sample cannot be scored, or None when it can.

    A mask with no foreground pixel (only background and/or ignore) is excluded as ``"empty mask"``:
    a pointing game hit would be impossible, and counting it as a miss would punish the attribution
    for the dataset. A mask with no background (object fills the image) is *not* excluded.

    Args:
        map: H x W saliency map of one sample.
        mask: H x W mask of the same sample (1 / 0 / -1).

    Returns:
        ``"empty mask"`` or None.

    Raises:
        NonFiniteMapError: If the map holds NaN or Inf; the message gives the count of bad values.
        ValueError: If the shapes differ.
    """
    if tuple(map.shape) != tuple(mask.shape) or map.dim() != 2:
        raise ValueError(
            f"exclusion_reason takes one H x W map and mask of the same shape, got {tuple(map.shape)} and "
            f"{tuple(mask.shape)}; use exclusion_reasons for a batch"
        )
    bad = int(_count_non_finite(map[None])[0])
    if bad:
        raise NonFiniteMapError(
            f"saliency map holds {bad} non-finite (NaN/Inf) values out of {map.numel()}; the attribution "
            "produced them: run it in fp32, or skip the sample with --on-error skip"
        )
    if not bool((mask == FOREGROUND).any()):
        return EMPTY_MASK
    return None


def exclusion_reasons(maps: Tensor, masks: Tensor) -> list[str | None]:
    """Batched :func:`exclusion_reason`: one reason (or None) per sample.

    Args:
        maps: B x H x W saliency maps.
        masks: B x H x W masks (1 / 0 / -1).

    Returns:
        A list of length B.

    Raises:
        NonFiniteMapError: If any map holds NaN or Inf (the message names the samples and counts).
        ValueError: On bad shapes or mask values.
    """
    check_batch(maps, masks)
    has_fg = (masks == FOREGROUND).reshape(masks.shape[0], -1).any(dim=1).tolist()
    return [None if fg else EMPTY_MASK for fg in has_fg]
