"""Supervised AFT (paper Eq. 1): keep the image-caption similarity unchanged under perturbation."""

from __future__ import annotations

from torch import Tensor

from aft_bench.core.registries import OBJECTIVES
from aft_bench.data.base import DataError
from aft_bench.training.objectives.base import AdversarialObjective, TrainBatch
from aft_bench.training.tower import Reference


@OBJECTIVES.register("aft-supervised", help="supervised AFT, paper Eq. 1 (image-caption similarity; needs captions)")
class SupervisedAFTObjective(AdversarialObjective):
    """min_theta E max_delta 1/2 (T_x^T f_theta(x + z + delta) - T_x^T I_x)^2 - h(delta) (paper Eq. 1).

    T_x is the original text tower's unit-norm embedding of the image's caption and I_x the original
    unit-norm image embedding; the expectation over z is replaced by one draw per step, as in appendix
    A.3. Needs image-caption data (appendix A.4, "supervised vs unsupervised AFT", trains on COCO).
    """

    needs_captions = True

    def targets(self, reference: Reference, batch: TrainBatch) -> tuple[Tensor, Tensor]:
        missing = [i for i, c in zip(batch.indices, batch.captions, strict=True) if not c]
        if missing:
            raise DataError(
                f"aft-supervised needs a caption per image; samples {missing[:5]} have none. Train on a "
                "caption file (--data captions.csv or .jsonl with path and caption columns, or "
                "coco:captions_train2017.json with --data-root) or use --objective aft"
            )
        text = reference.text_features([str(c) for c in batch.captions])
        image = reference.image_features(batch.images.float())
        image = image / image.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return text, (text * image).sum(dim=-1)

    def discrepancy(self, embedding: Tensor, targets: tuple[Tensor, Tensor]) -> Tensor:
        text, clean_similarity = targets
        return 0.5 * ((text * embedding).sum(dim=-1) - clean_similarity).pow(2)
