"""The linear probe: ``nn.Linear(D, C)`` on unit-norm image embeddings fitted by full-batch L-BFGS (a convex
problem with a unique optimum, so the fit is deterministic), and its accuracy."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# ---------------------------------------------------------------------------------------- the probe
@dataclass(frozen=True)
class LinearProbe:
    """A trained linear classifier over unit-norm image embeddings: ``logits = e W^T + b``.

    Attributes:
        weight: C x D float32.
        bias: C float32.
        classnames: The C class names, in label order.
        card: Provenance and quality (dataset, sample counts, accuracies, loss, options).
    """

    weight: Tensor
    bias: Tensor
    classnames: list[str]
    card: dict[str, Any] = field(default_factory=dict)

    def logits(self, embeddings: Tensor) -> Tensor:
        """B x C class logits of B x D embeddings."""
        return embeddings @ self.weight.to(embeddings).T + self.bias.to(embeddings)

    def to(self, device: str | torch.device) -> LinearProbe:
        return LinearProbe(self.weight.to(device), self.bias.to(device), self.classnames, self.card)


def fit_linear(features: Tensor, labels: Tensor, num_classes: int, weight_decay: float = 1e-4,
               steps: int = 200) -> tuple[nn.Linear, float]:
    """Fits ``nn.Linear(D, C)`` by full-batch L-BFGS on mean cross-entropy + ``weight_decay/2 ||W||^2``.

    Zero initialisation and full batches make the result deterministic (on a given device); the
    objective is strictly convex for ``weight_decay > 0``.

    Args:
        features: N x D embeddings.
        labels: N class indices in [0, num_classes).
        num_classes: C.
        weight_decay: L2 penalty on the weight (the bias is not penalised).
        steps: L-BFGS iterations.

    Returns:
        The fitted layer (float32, on ``features.device``) and the final objective value.

    Raises:
        ValueError: On a non-finite objective (non-finite embeddings).
    """
    x = features.detach().float()
    y = labels.to(device=x.device, dtype=torch.long)
    linear = nn.Linear(x.shape[1], num_classes).to(x.device)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=steps, history_size=20,
                                  tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def objective() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x), y) + 0.5 * weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    with torch.no_grad():
        final = float(F.cross_entropy(linear(x), y) + 0.5 * weight_decay * linear.weight.pow(2).sum())
    if not math.isfinite(final):
        raise ValueError(f"linear probe training diverged (objective {final}); check the embeddings for NaN/Inf")
    return linear.requires_grad_(False), final


def accuracy(probe: LinearProbe | nn.Linear, features: Tensor, labels: Tensor) -> float | None:
    """Top-1 accuracy in [0, 1] of a probe on embeddings; None for no samples."""
    if len(labels) == 0:
        return None
    with torch.no_grad():
        logits = probe.logits(features) if isinstance(probe, LinearProbe) else probe(features)
    return float((logits.argmax(dim=1).cpu() == labels.cpu()).double().mean())
