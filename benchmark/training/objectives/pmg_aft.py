"""PMG-AFT (Wang et al. 2024): TeCoA plus two KL terms that keep the fine-tuned model near the pre-trained one."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aft_bench.core.registries import OBJECTIVES
from aft_bench.training.config import PIXEL, TrainConfig
from aft_bench.training.objectives.base import pgd_config
from aft_bench.training.objectives.tecoa import ClassTargets, TeCoAObjective
from aft_bench.training.pgd import PGDConfig
from aft_bench.training.tower import Reference


def kl_per_sample(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """(B,) KL(softmax(p_logits) || softmax(q_logits)) over the last dimension."""
    return (F.softmax(p_logits, dim=-1) * (F.log_softmax(p_logits, dim=-1) - F.log_softmax(q_logits, dim=-1))).sum(-1)


@OBJECTIVES.register("pmg-aft",
                     help="PMG-AFT (Wang et al. 2024): TeCoA + alpha KL to the original model + beta KL to clean")
class PMGAFTObjective(TeCoAObjective):
    """Pre-trained model guided adversarial fine-tuning (Wang et al. 2024, CVPR), L = L_robust + alpha L_general
    + beta L_clean.

    "Pre-trained model guided fine-tuning for zero-shot adversarial robustness". With P_tar and P_ori the
    zero-shot class distributions (softmax of the logit-scaled cosines with the frozen class-prompt
    embeddings, as in :class:`TeCoAObjective`) of the fine-tuned and of the original image tower, and x_a the
    PGD adversarial image of TeCoA's cross-entropy:

    - L_robust = CE(P_tar(x_a), y), TeCoA's loss;
    - L_general = KL(P_tar(x_a) || P_ori(x_a)): stay close to the pre-trained model's prediction;
    - L_clean = KL(P_tar(x_a) || P_tar(x)): the adversarial prediction stays close to the clean one.

    The KL directions and the defaults alpha = beta = 1 are those of the authors' published code
    (``PMG_AFT.py``: ``KLDivLoss(log_softmax(output_ori), softmax(output))``, and the clean term likewise,
    summed with weight 1); that code sums the KL terms over the batch while averaging the cross-entropy,
    here all three are batch means. The attack is TeCoA's (PGD on L_robust); the original model's logits
    need no gradient, and the clean and adversarial images go through the tower in one forward.

    Args:
        pgd: Inner-loop settings.
        eps: L_inf radius in pixel units.
        templates: Prompt set (see :class:`TeCoAObjective`).
        alpha: Weight of L_general.
        beta: Weight of L_clean.
    """

    def __init__(self, pgd: PGDConfig, eps: float, templates: str | None = None, alpha: float = 1.0,
                 beta: float = 1.0) -> None:
        if alpha < 0 or beta < 0:
            raise ValueError(f"PMG-AFT weights alpha={alpha!r}, beta={beta!r}: must be >= 0")
        super().__init__(pgd, eps, templates)
        self.alpha, self.beta = float(alpha), float(beta)

    @classmethod
    def from_config(cls, config: TrainConfig) -> PMGAFTObjective:
        return cls(pgd_config(config), config.eps * PIXEL, config.templates, config.pmg_alpha, config.pmg_beta)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "pmg_alpha": self.alpha, "pmg_beta": self.beta}

    def outer_loss(self, model: nn.Module, reference: Reference, clean: Tensor, adversarial: Tensor,
                   targets: ClassTargets) -> Tensor:
        both = self.embed(model, torch.cat([adversarial, clean]))
        adv_logits, clean_logits = targets.logits(both).chunk(2)
        with torch.no_grad():
            original = targets.logits(F.normalize(reference.image_features(adversarial), dim=-1))
        robust = F.cross_entropy(adv_logits, targets.labels, reduction="none")
        return (robust + self.alpha * kl_per_sample(adv_logits, original)
                + self.beta * kl_per_sample(adv_logits, clean_logits))
