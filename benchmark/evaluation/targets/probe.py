"""The ``probe`` target: a linear probe's class logit (paper section 4.1, Fig. 2d, Table 1 right half).

The saliency of an image is taken with respect to the logit of one class of a linear classifier trained on the
frozen image embeddings (:mod:`aft_bench.evaluation.probe.store`): the sample's label (``probe_class=true``) or the
probe's prediction on the clean image (``top1``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from aft_bench.core.registries import TARGETS
from aft_bench.data.base import Batch, DataError
from aft_bench.evaluation.probe.linear import LinearProbe
from aft_bench.evaluation.probe.options import ProbeSetup
from aft_bench.evaluation.probe.store import memo_probe
from aft_bench.models.encoder import Encoder


# ---------------------------------------------------------------------------------------- target
@dataclass(frozen=True)
class ProbeTarget:
    """The logit of one probe class per image (paper section 4.1, linear probing).

    Attributes:
        probe: The linear probe.
        classes: (B,) class index per image.
    """

    probe: LinearProbe
    classes: Tensor

    def score(self, embeddings: Tensor) -> Tensor:
        """``<e_i, W[c_i]> + b[c_i]`` for each image i (B,); its gradient in ``e_i`` is ``W[c_i]``."""
        classes = self.classes.to(embeddings.device)
        weight = self.probe.weight.to(embeddings)[classes]
        return (embeddings * weight).sum(-1) + self.probe.bias.to(embeddings)[classes]

    def repeat_interleave(self, n: int) -> ProbeTarget:
        return ProbeTarget(self.probe, self.classes.repeat_interleave(n, dim=0))


def _true_classes(probe: LinearProbe, labels: Tensor) -> Tensor:
    labels = labels.to(torch.long)
    if bool((labels < 0).any()):
        raise DataError(
            "probe_class=true needs a class label per image, but the dataset gives label -1; use "
            "--option probe_class=top1 to explain the probe's own prediction"
        )
    if bool((labels >= len(probe.classnames)).any()):
        raise DataError(f"labels up to {int(labels.max())} exceed the probe's {len(probe.classnames)} classes")
    return labels


def _top1_classes(probe: LinearProbe, encoder: Encoder, images: Tensor) -> Tensor:
    with torch.no_grad():
        return probe.logits(encoder(images.to(encoder.device))).argmax(dim=1)


@TARGETS.register("probe", help="class logit of a linear probe on frozen image embeddings (probe_class=true|top1)")
def probe_target(encoder: Encoder, batch: Batch, probe: ProbeSetup | None = None) -> ProbeTarget:
    """TARGETS factory ``probe``: the probe class logit of each image of ``batch`` (option ``probe_class``).

    Args:
        encoder: The encoder whose frozen embeddings the probe reads (its probe is trained on first use).
        batch: The images (for ``top1``) and labels (for ``true``).
        probe: The run's probe setup (:meth:`aft_bench.evaluation.context.RunContext.probe_setup`).

    Raises:
        ValueError: Without a probe setup.
        DataError: For true classes without labels, or an unusable probe dataset.
    """
    if probe is None:
        raise ValueError("the probe target needs the run's probe setup (its options name the probe's dataset)")
    linear = memo_probe(encoder, probe)
    classes = _true_classes(linear, batch.labels) if probe.choice == "true" else \
        _top1_classes(linear, encoder, batch.images)
    return ProbeTarget(linear, classes.to(encoder.device))
