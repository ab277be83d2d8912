"""Projected gradient ascent for the inner maximisation of AFT / FARE (Madry et al. 2018).

``max_delta L(x + delta) - h(delta)`` over dom h and valid pixels x + delta in [0, 1], with K steps of
size alpha along the regularizer's steepest-ascent direction (the sign of the gradient for L_inf
balls), a uniform random start and optional momentum (MI-FGSM, Dong et al. 2018: the L1-normalised
gradient accumulated with factor mu). The model's parameters take no gradient inside the loop: the
gradient is taken with ``torch.autograd.grad`` with respect to delta only, so autograd runs no
weight-gradient kernel and nothing is accumulated into ``.grad``. (Switching the parameters to
``requires_grad=False`` instead saves no FLOPs and is slower on CPU: ``matmul`` then stops folding
3-D inputs and runs the linear layers' input gradients as batched matmuls against an expanded
weight.) The perturbation, its update and both projections stay in fp32 even when the model runs
under bf16 autocast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from aft_bench.training.randomness import SampleRandom
from aft_bench.training.regularizers import Regularizer


@dataclass(frozen=True)
class PGDConfig:
    """PGD hyper-parameters (paper appendix A.3: 10 steps of 1/255).

    Attributes:
        steps: Number of ascent steps K (0 keeps the start point).
        step_size: Step alpha in pixel units.
        momentum: MI-FGSM factor mu (0 disables; the published code uses 0.9).
        random_start: Start uniformly in the ball (else at delta = 0).
    """

    steps: int = 10
    step_size: float = 1 / 255
    momentum: float = 0.0
    random_start: bool = True

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"PGD steps={self.steps}: must be >= 0")
        if not self.step_size > 0:
            raise ValueError(f"PGD step size={self.step_size}: must be positive")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"PGD momentum={self.momentum}: use a value in [0, 1)")


@dataclass
class PGDResult:
    """The maximiser found and the inner objective along the way.

    Attributes:
        delta: Detached fp32 perturbation (B x C x H x W).
        history: K x B inner objective L(x + delta_k) - h(delta_k) at the iterates delta_0..delta_{K-1}.
    """

    delta: Tensor
    history: Tensor


def project_pixels(delta: Tensor, x: Tensor, regularizer: Regularizer) -> Tensor:
    """Projects onto dom h, then onto valid pixels (x + delta in [0, 1]).

    For the L_inf ball both sets are boxes and the sequential projection is the exact projection on
    their intersection; for group balls the result is feasible (clipping only shrinks coordinates).
    """
    delta = regularizer.project(delta)
    return (x + delta).clamp_(0.0, 1.0) - x


def pgd_maximize(
    loss_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    regularizer: Regularizer,
    config: PGDConfig,
    rng: SampleRandom | None = None,
) -> PGDResult:
    """Maximises ``loss_fn(x + delta) - h(delta)`` per sample by projected (sign) gradient ascent.

    Args:
        loss_fn: Maps perturbed pixels (B x C x H x W) to a per-sample loss (B,). It may add fresh
            noise on every call (AFT's Gaussian smoothing).
        x: Clean pixels in [0, 1].
        regularizer: The penalty h, its domain and ascent geometry.
        config: Steps, step size, momentum, random start.
        rng: Per-sample generators for the random start (required when ``config.random_start``).

    Returns:
        The final fp32 perturbation and the K x B objective history.
    """
    x = x.detach().float()
    if config.random_start:
        if rng is None:
            raise ValueError("pgd_maximize: a random start needs per-sample generators (rng)")
        r = regularizer.init_radius
        delta = rng.uniform(x.shape[1:], -r, r)
    else:
        delta = torch.zeros_like(x)
    delta = project_pixels(delta, x, regularizer)
    velocity = torch.zeros_like(delta) if config.momentum > 0 else None
    history = []
    with torch.enable_grad():
        for _ in range(config.steps):
            delta.requires_grad_(True)
            objective = loss_fn(x + delta).float() - regularizer.penalty(delta)
            (grad,) = torch.autograd.grad(objective.sum(), delta)
            history.append(objective.detach())
            if velocity is not None:
                l1 = grad.abs().flatten(1).mean(dim=1).clamp_min(1e-30).view(-1, *([1] * (grad.ndim - 1)))
                velocity = config.momentum * velocity + grad / l1
                grad = velocity
            step = config.step_size * regularizer.ascent_direction(grad)
            delta = project_pixels(delta.detach() + step, x, regularizer)
    empty = x.new_zeros(0, x.shape[0])
    return PGDResult(delta=delta.detach(), history=torch.stack(history) if history else empty)
