"""Robust accuracy under AutoAttack's first two attacks, APGD-CE then APGD-T (the paper's protocol for
Table 2 / Table 9, after Croce & Hein 2020 and Schlarmann et al. 2024).

Attacks run in sequence, each only on the samples that every earlier attack failed to fool (as
AutoAttack does); a sample is robust when it is classified correctly and no attack fooled it. APGD-T
attacks in turn the ``n_targets`` classes ranked 2nd, 3rd, ... by the clean logits (AutoAttack's
default is 9), ``steps`` iterations each.

Random starts come from the caller as one generator per sample (seeded by the sample, not the batch),
so a sample's result does not depend on which samples share its batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from aft_bench.core.registries import ATTACKS
from aft_bench.evaluation.attacks.apgd import LogitsFn, apgd

StartFn = Callable[[Tensor, str], Tensor]
"""(indices into the batch, attack tag) -> uniform [-1, 1] start noise for those samples."""


@ATTACKS.register("apgd-ce", help="APGD with the cross-entropy loss (Croce & Hein 2020)")
def apgd_ce(logits_fn: LogitsFn, images: Tensor, labels: Tensor, eps: float, steps: int, n_targets: int,
             starts: StartFn, index: Tensor) -> Tensor:
    """APGD with the cross-entropy loss; returns which samples it fooled."""
    return apgd(logits_fn, images, labels, eps, starts(index, "apgd-ce"), steps=steps, loss="ce").fooled


@ATTACKS.register("apgd-t", help="APGD with the targeted DLR loss against the runners-up (Croce & Hein 2020)")
def apgd_t(logits_fn: LogitsFn, images: Tensor, labels: Tensor, eps: float, steps: int, n_targets: int,
            starts: StartFn, index: Tensor) -> Tensor:
    """APGD with the targeted DLR loss against the runners-up of the clean logits, one target at a time."""
    with torch.no_grad():
        ranked = logits_fn(images).argsort(dim=1, descending=True)
    n_classes = ranked.shape[1]
    if n_classes < 4:
        raise ValueError(f"APGD-T needs at least 4 classes (the DLR loss), the dataset has {n_classes}")
    fooled = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
    for rank in range(1, min(n_targets, n_classes - 1) + 1):
        todo = torch.nonzero(~fooled).flatten()
        if not len(todo):
            break
        targets = ranked[todo, rank]
        result = apgd(logits_fn, images[todo], labels[todo], eps, starts(index[todo], f"apgd-t{rank}"), steps=steps,
                      loss="dlr-targeted", targets=targets)
        fooled[todo[result.fooled]] = True
    return fooled


def robust_correct(
    logits_fn: LogitsFn, images: Tensor, labels: Tensor, eps: float, starts: StartFn,
    attacks: Sequence[str] = ("apgd-ce", "apgd-t"), steps: int = 100, n_targets: int = 9,
) -> Tensor:
    """(B,) bool: classified correctly and not fooled by any of ``attacks`` (ATTACKS registry names) within
    ``eps`` (pixel units).

    Raises:
        UnknownNameError: For an unknown attack name.
    """
    run_attacks = [ATTACKS.get(a) for a in attacks]
    with torch.no_grad():
        robust = logits_fn(images).argmax(dim=1) == labels
    for attack in run_attacks:
        index = torch.nonzero(robust).flatten()
        if not len(index):
            break
        fooled = attack(logits_fn, images[index], labels[index], eps, steps, n_targets, starts, index)
        robust[index[fooled]] = False
    return robust
