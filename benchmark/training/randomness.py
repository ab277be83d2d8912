"""Per-sample random streams keyed by (seed, sample index, step).

The Gaussian smoothing noise of AFT (one fresh draw per sample at every PGD step, paper appendix
A.2) and PGD's random start are drawn from one generator per sample, seeded through the project's one
per-sample scheme (:func:`aft_bench.core.seeding.sample_seed`) from the run seed, the sample's global index in
the dataset (as its id) and the training step. The numbers a sample sees therefore do not depend on how a
global batch is split across DDP ranks, nor on whether the run was interrupted and resumed: a
two-process run draws exactly what a one-process run draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from aft_bench.core.seeding import sample_generator


class SampleRandom:
    """One torch generator per sample of a batch.

    Args:
        seed: Run seed.
        step: Training step (0-based).
        indices: Global dataset indices of the batch's samples.
        device: Where the numbers are drawn.
    """

    def __init__(self, seed: int, step: int, indices: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.generators = [sample_generator(seed, str(int(index)), int(step), device=self.device) for index in indices]

    def __len__(self) -> int:
        return len(self.generators)

    def normal(self, shape: Sequence[int], std: float) -> Tensor:
        """B x shape fp32 draws from N(0, std^2), one row per sample's stream."""
        rows = [torch.randn(tuple(shape), generator=g, device=self.device) for g in self.generators]
        return torch.stack(rows).mul_(std)

    def uniform(self, shape: Sequence[int], low: float, high: float) -> Tensor:
        """B x shape fp32 draws from U[low, high)."""
        rows = [torch.rand(tuple(shape), generator=g, device=self.device) for g in self.generators]
        return torch.stack(rows).mul_(high - low).add_(low)
