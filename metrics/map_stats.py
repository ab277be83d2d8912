"""The statistics the pointing-game, segmentation, pooled and chance scores of one batch share, computed once.

A task that reports several of these scores builds one :class:`MapStats` per batch (every such metric takes an
optional ``stats``): the batch is checked once and the pixel counts, the map's range, the normalised map, its mean
threshold and the per-row ranking of the pixels (the engine of both average precisions) are computed once for all.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from aft_bench.metrics.base import BACKGROUND, FOREGROUND, IGNORE, check_batch


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
