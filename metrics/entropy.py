"""Entropies of a classifier's output, over all classes and within a category of classes (natural log, nats).

The AFT paper (appendix A.4, "Inter-class similarity", Table 8) follows Han et al. (2023): a model that
understands how classes resemble each other spreads its prediction over related classes. It measures, per test
image, the Shannon entropy of a linear probe's softmax over all classes ("Entire") and over the classes of the
true class's coarse category, the softmax renormalised within that category ("Category"); ImageNet's 1000
classes fall into Eshed's (2020) coarse categories (:mod:`aft_bench.data.categories`).

Both are computed from logits in float64 through ``log_softmax`` (no ``log(0)``: a class whose probability
underflows to zero adds nothing, the limit of ``p log p``). A uniform softmax over K classes has entropy
``ln K``, a one-hot softmax 0, a tie of two classes ``ln 2``, a category of one class 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aft_bench.metrics.base import Metric

NO_CATEGORY = -1
"""Category index of a class that belongs to no scored category (an excluded one such as ImageNet's "other")."""


def _check_logits(logits: Tensor) -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[1] == 0:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a B x C tensor with C >= 1 classes, got {shape}")
    if not bool(torch.isfinite(logits).all()):
        rows = torch.nonzero(~torch.isfinite(logits).all(dim=1)).flatten().tolist()
        raise ValueError(f"logits hold NaN/Inf values in rows {rows[:10]}; the encoder or probe produced them "
                         "(run in fp32, or skip these samples with --on-error skip)")


def entropy(logits: Tensor, within: Tensor | None = None) -> Tensor:
    """Shannon entropy (nats) of ``softmax(logits)`` per row, optionally over a subset of the classes.

    Args:
        logits: B x C finite logits.
        within: Optional B x C bool: the classes each row's softmax is taken over (renormalised among them);
            every row needs at least one. None: all C classes.

    Returns:
        (B,) float64 entropies in [0, ln K] for K classes taken.

    Raises:
        ValueError: On a bad shape, non-finite logits, or a row of ``within`` that takes no class.
    """
    _check_logits(logits)
    x = logits.double()
    if within is not None:
        if tuple(within.shape) != tuple(logits.shape) or within.dtype != torch.bool:
            raise ValueError(f"within must be a bool tensor of the logits' shape {tuple(logits.shape)}, got "
                             f"{within.dtype} {tuple(within.shape)}")
        empty = ~within.any(dim=1)
        if bool(empty.any()):
            raise ValueError(f"within takes no class in rows {torch.nonzero(empty).flatten().tolist()[:10]}")
        x = x.masked_fill(~within, float("-inf"))
    log_p = torch.log_softmax(x, dim=1)
    p = log_p.exp()
    terms = torch.where(p > 0, p * log_p, torch.zeros_like(p))  # 0 log 0 = 0 (also the -inf of excluded classes)
    return -terms.sum(dim=1)


def category_entropy(logits: Tensor, labels: Tensor, category_of: Tensor) -> Tensor:
    """Entropy (nats) of the softmax over the classes in the category of each row's true class, renormalised.

    Args:
        logits: B x C finite logits.
        labels: (B,) true class indices in [0, C).
        category_of: (C,) integer category index of each class; :data:`NO_CATEGORY` (-1) for classes in no
            scored category. Classes in no category still count in the "Entire" entropy, not here.

    Returns:
        (B,) float64 entropies; NaN for a row whose true class is in no category (the caller excludes it).

    Raises:
        ValueError: On mismatched shapes, labels outside [0, C) or non-finite logits.
    """
    _check_logits(logits)
    num_classes = logits.shape[1]
    category_of = category_of.to(device=logits.device, dtype=torch.long)
    labels = labels.to(device=logits.device, dtype=torch.long)
    if category_of.shape != (num_classes,) or labels.shape != (logits.shape[0],):
        raise ValueError(f"category_of must have one entry per class ({num_classes}) and labels one per row "
                         f"({logits.shape[0]}); got {tuple(category_of.shape)} and {tuple(labels.shape)}")
    if bool(((labels < 0) | (labels >= num_classes)).any()):
        raise ValueError(f"labels {labels.tolist()[:10]} fall outside 0..{num_classes - 1}")
    own = category_of[labels]
    scored = own != NO_CATEGORY
    within = (category_of[None, :] == own[:, None]) & scored[:, None]
    values = torch.full((logits.shape[0],), float("nan"), dtype=torch.float64, device=logits.device)
    if bool(scored.any()):
        values[scored] = entropy(logits[scored], within[scored])
    return values


ENTROPY_ENTIRE = Metric(
    name="entropy_entire", higher_is_better=True, scale=1.0,
    description="entropy (nats) of the probe's softmax over all classes (paper Table 8 'Entire'; higher: more "
                "inter-class similarity)",
)
ENTROPY_CATEGORY = Metric(
    name="entropy_category", higher_is_better=True, scale=1.0,
    description="entropy (nats) of the probe's softmax within the true class's category, renormalised (paper "
                "Table 8 'Category')",
)
