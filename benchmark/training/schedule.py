"""Learning-rate schedule: linear warm-up then cosine decay (paper appendix A.3)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosine:
    """Multiplier of the peak learning rate at a step: linear warm-up, then cosine decay to ``min_ratio``.

    The warm-up length is not given in the paper; it is a fraction of the run here (default 5%).
    A plain object (not a closure) so that ``LambdaLR.state_dict`` stores its fields.

    Args:
        total_steps: Optimiser steps of the whole run.
        warmup_steps: Steps of linear warm-up from lr / warmup_steps to lr.
        min_ratio: Final multiplier.
    """

    def __init__(self, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> None:
        if total_steps < 1 or not 0 <= warmup_steps < max(total_steps, 1) + 1:
            raise ValueError(f"schedule: total_steps={total_steps}, warmup_steps={warmup_steps} are inconsistent")
        self.total_steps, self.warmup_steps, self.min_ratio = int(total_steps), int(warmup_steps), float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: Optimizer, total_steps: int, warmup: float, min_ratio: float = 0.0) -> LambdaLR:
    """A LambdaLR with :class:`WarmupCosine`; ``warmup`` is a fraction of ``total_steps``."""
    return LambdaLR(optimizer, WarmupCosine(total_steps, int(round(warmup * total_steps)), min_ratio))
