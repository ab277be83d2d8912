"""Unsupervised AFT (paper Eq. 7): squared distance to the original unit-norm image embedding."""

from __future__ import annotations

from torch import Tensor

from aft_bench.core.registries import OBJECTIVES
from aft_bench.training.objectives.base import AdversarialObjective, TrainBatch
from aft_bench.training.tower import Reference


@OBJECTIVES.register("aft", help="unsupervised AFT, paper Eq. 7 (squared distance to the original embedding minus h)")
class AFTObjective(AdversarialObjective):
    """min_theta E_x max_delta 1/2 ||f_theta(x + z + delta) - I_x||^2 - h(delta) (paper Eq. 7).

    f_theta and I_x (the frozen original encoder's embedding of the clean image) are unit-normalised;
    z ~ N(0, sigma^2 I) is drawn fresh per sample at every PGD step (appendix A.2) and again for the
    outer loss; h defaults to Eq. 5 (``box``). The published code's variants are explicit options:
    ``outer_noise=False`` (no z in the outer loss) and the ``box-pixelnorm`` penalty.
    """

    def targets(self, reference: Reference, batch: TrainBatch) -> Tensor:
        return self._unit(reference.image_features(batch.images.float()))

    @staticmethod
    def _unit(features: Tensor) -> Tensor:
        return features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def discrepancy(self, embedding: Tensor, targets: Tensor) -> Tensor:
        return 0.5 * (embedding - targets).pow(2).sum(dim=-1)
