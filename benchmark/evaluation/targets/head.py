"""The ``head`` target: a classifier's own logit (timm classifiers), what a supervised network's maps explain.

A supervised ImageNet network has no text tower; its saliency is that of its own class logit (Simonyan et al.
2013 explain the class score the same way). The score is the head's logit of the pre-logits feature with its
norm held at the clean image's value: ``W[c] . (||x_clean|| e) + b[c]`` for the unit-norm embedding ``e``,
which equals the classifier's logit on the clean image and differentiates like it up to the norm's change.
The class is the sample's label (``probe_class=true``, the default; labels must index the classifier's
classes) or the classifier's own top-1 prediction (``probe_class=top1``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from aft_bench.core.registries import TARGETS
from aft_bench.data.base import Batch, DataError
from aft_bench.evaluation.probe.options import ProbeSetup
from aft_bench.models.encoder import Encoder


@dataclass(frozen=True)
class HeadTarget:
    """One classifier logit per image.

    Attributes:
        weight: C x D head weight; bias: C head bias.
        classes: (B,) class index per image.
        scale: (B,) norm of each clean image's un-normalised feature.
    """

    weight: Tensor
    bias: Tensor
    classes: Tensor
    scale: Tensor

    def score(self, embeddings: Tensor) -> Tensor:
        """``W[c_i] . (s_i e_i) + b[c_i]`` for each image i (B,)."""
        classes = self.classes.to(embeddings.device)
        features = embeddings * self.scale.to(embeddings)[:, None]
        return (features * self.weight.to(embeddings)[classes]).sum(-1) + self.bias.to(embeddings)[classes]

    def repeat_interleave(self, n: int) -> HeadTarget:
        return HeadTarget(self.weight, self.bias, self.classes.repeat_interleave(n, dim=0),
                          self.scale.repeat_interleave(n, dim=0))


@TARGETS.register("head",
                  help="the classifier's own logit of the sample's class (probe_class=true) or its top-1 (timm models)")
def head_target(encoder: Encoder, batch: Batch, probe: ProbeSetup | None = None) -> HeadTarget:
    """TARGETS factory ``head``: the classifier's logit of each image's class (option ``probe_class``).

    Raises:
        UnsupportedEncoderError: For an encoder without a classifier head (its message names it).
        DataError: For ``probe_class=true`` with labels that do not index the classifier's classes.
    """
    head = encoder.classifier()
    with torch.no_grad():
        features = encoder.visual(encoder.normalize(batch.images.to(encoder.device))).float()
        logits = head(features)
    choice = probe.choice if probe is not None else "true"
    if choice == "top1":
        classes = logits.argmax(dim=1)
    else:
        classes = batch.labels.to(device=encoder.device, dtype=torch.long)
        if bool((classes < 0).any()) or bool((classes >= logits.shape[1]).any()):
            raise DataError(f"target=head with probe_class=true: labels {classes.tolist()} do not index the "
                            f"{logits.shape[1]} classes of {encoder.name!r}'s classifier; use --option "
                            "probe_class=top1 to explain its own prediction")
    return HeadTarget(head.weight.detach().float(), head.bias.detach().float(), classes,
                      features.norm(dim=-1))
