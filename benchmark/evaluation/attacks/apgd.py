"""Auto-PGD under an L-infinity budget (Croce & Hein 2020, "Reliable evaluation of adversarial robustness
with an ensemble of diverse parameter-free attacks", ICML, Algorithm 1).

APGD is PGD with momentum whose step size needs no tuning: it starts at ``2 * eps`` and is halved at
checkpoints ``w_j`` (``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``,
``w_j = ceil(p_j * N)``) when either

1. the loss rose in fewer than ``rho`` of the steps since the last checkpoint (the paper's condition 1), or
2. the step was not halved at the last checkpoint and the best loss has not improved since (condition 2);

after a halving the iterate restarts from the best point found. Each step is
``z = P(x + eta * sign(grad))``, ``x' = P(x + alpha (z - x) + (1 - alpha)(x - x_prev))`` with
``alpha = 0.75`` (a plain step first), ``P`` the projection onto the eps-ball around the image
intersected with [0, 1]. Losses: cross-entropy (APGD-CE) and the targeted difference-of-logits ratio
``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (APGD-T). The paper evaluates robustness with
AutoAttack's first two attacks, APGD-CE then APGD-T, 100 iterations each.

Choices: the random start is ``x + eps * u / max|u|`` with ``u`` uniform in [-1, 1] (as AutoAttack), drawn
by the caller so that a sample's attack does not depend on its batch; after a restart from the best
point the momentum term starts at zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LogitsFn = Callable[[Tensor], Tensor]


def checkpoints(steps: int) -> list[int]:
    """The iterations ``w_1 < w_2 < ...`` (at most ``steps``) where APGD may halve its step size."""
    if steps < 1:
        raise ValueError(f"APGD needs at least one step, got steps={steps}")
    fractions = [0.0, 0.22]
    while True:
        nxt = fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06)
        if nxt > 1:
            break
        fractions.append(nxt)
    marks = sorted({math.ceil(round(p * steps, 9)) for p in fractions[1:]})
    return [m for m in marks if 0 < m <= steps]


def cross_entropy(logits: Tensor, labels: Tensor, targets: Tensor | None = None) -> Tensor:
    """Per-sample cross-entropy of the true class (APGD-CE maximises it); ``targets`` is unused."""
    return F.cross_entropy(logits, labels, reduction="none")


def dlr_targeted(logits: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:
    """Targeted difference-of-logits ratio, ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` per sample.

    ``z_pi`` are the logits sorted in decreasing order; the ratio is invariant to shifting and scaling
    the logits. Needs at least 4 classes.
    """
    if targets is None:
        raise ValueError("the targeted DLR loss needs target classes")
    if logits.shape[1] < 4:
        raise ValueError(f"the targeted DLR loss needs at least 4 classes, got {logits.shape[1]}")
    ordered = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, labels[:, None]).squeeze(1)
    target = logits.gather(1, targets[:, None]).squeeze(1)
    scale = ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12
    return -(true - target) / scale


LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor | None], Tensor]] = {
    "ce": cross_entropy, "dlr-targeted": dlr_targeted,
}


@dataclass
class APGDResult:
    """What the attack found, per sample.

    Attributes:
        fooled: (B,) bool, some iterate was misclassified.
        adversarial: B x C x H x W: the first misclassified iterate where fooled, else the highest-loss one.
        best_loss: (B,) the highest loss reached.
    """

    fooled: Tensor
    adversarial: Tensor
    best_loss: Tensor


def apgd(
    logits_fn: LogitsFn, images: Tensor, labels: Tensor, eps: float, start: Tensor, steps: int = 100,
    loss: str = "ce", targets: Tensor | None = None, rho: float = 0.75, momentum: float = 0.75,
) -> APGDResult:
    """Runs APGD on a batch (see the module docstring).

    Args:
        logits_fn: Images in [0, 1] -> B x K class logits (differentiable).
        images: B x C x H x W clean images in [0, 1].
        labels: (B,) true classes.
        eps: L-infinity radius in pixel units (4/255, not 4).
        start: B x C x H x W values in [-1, 1] for the random start.
        steps: Iterations (gradient evaluations after the start).
        loss: ``"ce"`` or ``"dlr-targeted"``.
        targets: (B,) target classes for the targeted loss.
        rho: Fraction of loss increases below which the step is halved (condition 1).
        momentum: ``alpha`` of the update.

    Returns:
        An :class:`APGDResult`.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown APGD loss {loss!r}; choose one of {sorted(LOSSES)}")
    loss_fn = LOSSES[loss]
    x = images.detach()
    low, high = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)

    def project(z: Tensor) -> Tensor:
        return torch.max(torch.min(z, high), low)

    def evaluate(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = z.detach().requires_grad_(True)
        logits = logits_fn(z)
        values = loss_fn(logits, labels, targets)
        (grad,) = torch.autograd.grad(values.sum(), z)
        return values.detach(), grad.detach(), logits.detach().argmax(dim=1) != labels

    def rows(mask: Tensor) -> Tensor:
        return mask.view(-1, *([1] * (x.dim() - 1)))

    peak = start.flatten(1).abs().amax(dim=1).clamp_min(1e-12)
    current = project(x + eps * start / rows(peak))
    value, grad, wrong = evaluate(current)
    fooled = wrong.clone()
    adversarial = torch.where(rows(wrong), current, x)
    best_value, best_x, best_grad = value.clone(), current.clone(), grad.clone()
    previous = current.clone()
    step = torch.full_like(value, 2 * eps)
    marks, last_mark = set(checkpoints(steps)), 0
    increases = torch.zeros_like(value)
    best_at_mark, reduced_last = best_value.clone(), torch.zeros_like(wrong)
    for k in range(steps):
        z = project(current + rows(step) * grad.sign())
        alpha = momentum if k > 0 else 1.0
        current, previous = project(current + alpha * (z - current) + (1 - alpha) * (current - previous)), current
        new_value, grad, wrong = evaluate(current)
        adversarial = torch.where(rows(wrong & ~fooled), current, adversarial)
        fooled |= wrong
        increases += (new_value > value).to(increases.dtype)
        value = new_value
        improved = value > best_value
        best_value = torch.where(improved, value, best_value)
        best_x = torch.where(rows(improved), current, best_x)
        best_grad = torch.where(rows(improved), grad, best_grad)
        if k + 1 in marks:
            oscillating = increases < rho * (k + 1 - last_mark)
            stalled = ~reduced_last & (best_value <= best_at_mark)
            reduce = oscillating | stalled
            step = torch.where(reduce, step / 2, step)
            current = torch.where(rows(reduce), best_x, current)
            previous = torch.where(rows(reduce), best_x, previous)  # no momentum across a restart
            grad = torch.where(rows(reduce), best_grad, grad)
            value = torch.where(reduce, best_value, value)
            increases.zero_()
            last_mark, best_at_mark, reduced_last = k + 1, best_value.clone(), reduce
    adversarial = torch.where(rows(fooled), adversarial, best_x)
    return APGDResult(fooled=fooled, adversarial=adversarial.detach(), best_loss=best_value)
