"""Gini index of saliency maps: how sparse (concentrated on few pixels) a map is.

The AFT paper (appendix A.4, Table 3) reports the Gini index of attention maps to show that AFT makes
maps sparser. Hurley & Rickard (2009, "Comparing measures of sparsity", IEEE Trans. Inf. Theory
55(10)) define it for a vector ``c`` of ``N`` non-negative values sorted ascending,
``c_(1) <= ... <= c_(N)``, as

    G(c) = 1 - 2 * sum_{k=1..N} (c_(k) / ||c||_1) * (N - k + 1/2) / N

It is 0 for a uniform vector, ``1 - 1/N`` for a one-hot vector (the most a vector of length N can
reach), scale invariant (G(a c) = G(c) for a > 0) and invariant to permutations, so the pixel layout
of a map plays no part.

Conventions fixed here:
    * Maps are taken in absolute value: the index is defined for non-negative values, and
      attribution maps are magnitudes (Simple Gradient, SmoothGrad) or ReLU'd (Grad-CAM) already, so
      ``|map|`` changes nothing for them and makes a signed map's sparsity that of its magnitude.
    * An all-zero map has no mass to distribute (0 / 0): its Gini index is NaN, and the sparsity task
      excludes such samples with the reason :data:`ZERO_MAP` (counted, never scored).
    * Sums run in float64, so ties and large maps (224 x 224) do not lose precision.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aft_bench.metrics.base import Metric, NonFiniteMapError

ZERO_MAP = "zero map"
"""Exclusion reason of a sample whose map is zero everywhere (its Gini index is undefined)."""


def gini_index(maps: Tensor) -> Tensor:
    """Gini index (Hurley & Rickard 2009) of each map of a batch, flattened.

    Args:
        maps: B x ... saliency maps (B x H x W as attributions give them; any trailing shape is
            flattened). Signs are dropped: the index is that of ``|map|``.

    Returns:
        (B,) float64 tensor in [0, 1 - 1/N] (N = pixels per map); NaN for an all-zero map.

    Raises:
        ValueError: If ``maps`` has no batch dimension or no pixels.
        NonFiniteMapError: If a map holds NaN or Inf (the message gives the samples and counts).

    Example:
        >>> gini_index(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 5.0]]))
        tensor([0.0000, 0.7500], dtype=torch.float64)
    """
    if not isinstance(maps, Tensor):
        raise TypeError(f"gini_index takes a torch tensor of maps, got {type(maps).__name__}")
    if maps.dim() < 2 or maps[0].numel() == 0:
        raise ValueError(
            f"gini_index takes a batch of maps (B x H x W), got shape {tuple(maps.shape)}; "
            "add a batch dimension with maps[None]"
        )
    values = maps.detach().reshape(maps.shape[0], -1).double().abs()
    bad = (~torch.isfinite(values)).sum(dim=1)
    if bool(bad.any()):
        samples = torch.nonzero(bad).flatten().tolist()
        raise NonFiniteMapError(
            f"maps hold {int(bad.sum())} non-finite (NaN/Inf) values in batch samples {samples[:10]}; "
            "the attribution produced them: run it in fp32, or skip these samples with --on-error skip"
        )
    n = values.shape[1]
    ordered, _ = torch.sort(values, dim=1)
    total = ordered.sum(dim=1)
    k = torch.arange(1, n + 1, dtype=torch.float64, device=values.device)
    weights = (n - k + 0.5) / n
    weighted = (ordered * weights).sum(dim=1)
    gini = 1.0 - 2.0 * weighted / total
    return torch.where(total > 0, gini, torch.full_like(gini, float("nan")))


def _gini_metric(maps: Tensor, masks: Tensor | None = None) -> Tensor:
    """:func:`gini_index` under the metric signature; masks play no part (sparsity needs none)."""
    return gini_index(maps)


GINI = Metric(
    name="gini",
    fn=_gini_metric,
    higher_is_better=True,
    description="Gini index of |map| (Hurley & Rickard 2009): 0 uniform, 1 - 1/N one-hot; higher = sparser",
)
