"""FARE (Schlarmann et al. 2024, Robust CLIP): L_inf-bounded embedding-space adversarial fine-tuning."""

from __future__ import annotations

from torch import Tensor

from aft_bench.core.registries import OBJECTIVES
from aft_bench.training.config import PIXEL, TrainConfig
from aft_bench.training.objectives.base import AdversarialObjective, TrainBatch, pgd_config
from aft_bench.training.regularizers import BoxQuadratic
from aft_bench.training.tower import Reference


@OBJECTIVES.register("fare", help="FARE (Schlarmann et al. 2024): L_inf-bounded embedding attack, no penalty")
class FAREObjective(AdversarialObjective):
    """min_theta E_x max_{||delta||_inf <= eps} ||f_theta(x + delta) - f_orig(x)||^2_2 (Schlarmann et al. 2024).

    No penalty (h = 0 on the ball), no smoothing noise, and embeddings are not normalised, as FARE trains.
    """

    normalize_embeddings = False

    @classmethod
    def from_config(cls, config: TrainConfig) -> FAREObjective:
        return cls(BoxQuadratic(config.eps * PIXEL, 0.0), pgd_config(config), sigma=0.0, outer_noise=False)

    def targets(self, reference: Reference, batch: TrainBatch) -> Tensor:
        return reference.image_features(batch.images.float())

    def discrepancy(self, embedding: Tensor, targets: Tensor) -> Tensor:
        return (embedding - targets).pow(2).sum(dim=-1)
