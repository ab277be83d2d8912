"""Pointing game and energy-based pointing game (paper Section 4.1, Table 1: "PG" and "PG-energy").

The paper scores a hit when the maximum of the text-specific saliency map falls inside the object's
segmentation mask, and reports the hit rate; PG-energy is the share of the map's mass inside the
mask (Wang et al. 2020, Score-CAM), which also rewards maps that do not spread.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aft_bench.metrics.base import Metric
from aft_bench.metrics.chance import pg_energy_chance, pointing_game_chance
from aft_bench.metrics.map_stats import MapStats


def pointing_game(maps: Tensor, masks: Tensor, tolerance: float = 0, stats: MapStats | None = None) -> Tensor:
    """Pointing game hits (Zhang et al. 2018, "Top-down neural attention by excitation backprop").

    The point of a map is its argmax over the non-ignore pixels. A sample is a hit when the point is a
    foreground pixel (``tolerance == 0``, the paper's protocol) or when a foreground pixel lies at a
    squared Euclidean distance (in pixels) strictly below ``tolerance**2`` from it. The strict rule is
    TorchRay's (``PointingGame.evaluate`` in torchray/benchmark/pointing_game.py of
    facebookresearch/TorchRay: a mask pixel is accepted when ``du**2 + dv**2 < tolerance**2``; their
    default tolerance is 15): a mask pixel exactly ``tolerance`` away is a miss, and any tolerance in
    (0, 1] accepts only the point itself, like tolerance 0. TorchRay's literal rule accepts nothing at
    tolerance 0 (every sample a miss); here 0 means the point itself, so that 0 is the paper's protocol.

    Deterministic choices:
        * Ties for the maximum: the first maximal pixel in row-major order is the point (the
          behaviour of ``torch.argmax``, which TorchRay's ``_saliency_to_point`` in
          examples/attribution_benchmark.py also uses on the flattened map); other maximal pixels
          do not count.
        * A constant (e.g. all-zero) map is one big tie, so its point is the first non-ignore pixel
          in row-major order.
        * Ignore pixels (-1) can never be the point, and never count as foreground within the
          tolerance.
        * A sample without foreground pixels scores NaN, never a hit (exclude it beforehand with
          :func:`aft_bench.metrics.base.exclusion_reason`).

    Args:
        maps: B x H x W saliency maps (finite).
        masks: B x H x W masks, 1 foreground / 0 background / -1 ignore.
        tolerance: Hit radius in pixels, >= 0 (strict: distance < tolerance).
        stats: The batch's shared :class:`~aft_bench.metrics.map_stats.MapStats` (built here when None).

    Returns:
        (B,) float64 tensor of 1.0 (hit), 0.0 (miss) or NaN (empty mask).

    Raises:
        ValueError: On a negative tolerance, bad shapes or mask values.
        NonFiniteMapError: If a map holds NaN or Inf.
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance!r}")
    stats = stats or MapStats(maps, masks)
    b, h, w = maps.shape
    point = stats.scores.masked_fill(~stats.valid, float("-inf")).reshape(b, h * w).argmax(dim=1)  # first maximum
    foreground = stats.foreground.reshape(b, h * w)
    if tolerance <= 1:  # distance**2 < tolerance**2 <= 1 accepts only the point itself
        hits = foreground.gather(1, point[:, None])[:, 0]
    else:
        row, col = point // w, point % w
        rows = torch.arange(h, device=maps.device)
        cols = torch.arange(w, device=maps.device)
        dist2 = (rows[None, :, None] - row[:, None, None]) ** 2 + (cols[None, None, :] - col[:, None, None]) ** 2
        hits = ((dist2.double() < float(tolerance) ** 2) & stats.foreground).reshape(b, -1).any(dim=1)
    return stats.nan_if_empty(hits.double())


def pg_energy(maps: Tensor, masks: Tensor, stats: MapStats | None = None) -> Tensor:
    """Energy-based pointing game (Wang et al. 2020, "Score-CAM", Section 4.3).

    ``sum(map inside foreground) / sum(map over all non-ignore pixels)``, computed in float64.

    Deterministic choices:
        * Maps are taken as non-negative energies: negative values are clamped to 0 first (a
          signed map would otherwise give ratios outside [0, 1]).
        * A map with no mass (all zero, or all negative, on the non-ignore pixels) scores 0, not
          NaN: it points nowhere, so it puts no energy on the object.
        * Mass on ignore pixels (-1) is counted neither in the numerator nor the denominator.
        * A sample without foreground pixels scores NaN.

    Args:
        maps: B x H x W saliency maps (finite).
        masks: B x H x W masks, 1 foreground / 0 background / -1 ignore.
        stats: The batch's shared :class:`~aft_bench.metrics.map_stats.MapStats` (built here when None).

    Returns:
        (B,) float64 tensor of fractions in [0, 1] (NaN for empty masks).

    Raises:
        ValueError: On bad shapes or mask values.
        NonFiniteMapError: If a map holds NaN or Inf.
    """
    stats = stats or MapStats(maps, masks)
    energy = stats.scores.clamp_min(0).masked_fill_(~stats.valid, 0)  # exact in the maps' dtype
    inside = energy.masked_fill(~stats.foreground, 0).sum(dim=(1, 2), dtype=torch.float64)
    total = energy.sum(dim=(1, 2), dtype=torch.float64)
    ratio = torch.where(total > 0, inside / total.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    return stats.nan_if_empty(ratio)


POINTING_GAME = Metric(
    name="pg",
    fn=pointing_game,
    chance=pointing_game_chance,
    higher_is_better=True,
    description="pointing game: share of maps whose maximum lies inside the object mask",
)
PG_ENERGY = Metric(
    name="pg_energy",
    fn=pg_energy,
    chance=pg_energy_chance,
    higher_is_better=True,
    description="energy pointing game: share of the map's (non-negative) mass inside the object mask",
)
