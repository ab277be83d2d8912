"""Per-sample random streams keyed by (seed, step, sample index).

The Gaussian smoothing noise of AFT (one fresh draw per sample at every PGD step, paper appendix
A.2) and PGD's random start are drawn from one generator per sample, seeded from the run seed, the
training step and the sample's global index in the dataset. The numbers a sample sees therefore do
not depend on how a global batch is split across DDP ranks, nor on whether the run was interrupted
and resumed: a two-process run draws exactly what a one-process run draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def sample_seed(seed: int, step: int, index: int) -> int:
    """A 63-bit seed mixing (seed, step, index) through numpy's SeedSequence hash."""
    state = np.random.SeedSequence([int(seed), int(step), int(index)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


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
        self.generators = []
        for index in indices:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(sample_seed(seed, step, int(index)))
            self.generators.append(gen)

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
