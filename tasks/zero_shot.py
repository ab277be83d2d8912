"""Zero-shot accuracy and adversarial robustness of an encoder (paper Section 4.4 and Table 2 / Table 9).

The paper weighs interpretability against accuracy: clean zero-shot top-1 accuracy on every test image,
and robust accuracy under AutoAttack's first two attacks (APGD-CE, then APGD-T with the targeted DLR loss,
100 iterations each; Croce & Hein 2020) within L-infinity radii of 2/255 and 4/255 on 1000 images
(:mod:`aft_bench.evaluation.attacks`). The classifier is CLIP's zero-shot head (class prompts, ``"a photo of a {}."``
unless the dataset or ``prompt_template`` / ``templates`` says otherwise) or the run's linear probe.

Columns: ``clean`` (every sample) and ``robust@<eps>/255`` (a seeded random subset of ``robust_n`` of the
run's samples, so that a dataset stored class by class is not attacked on its first classes only), in
percent. A sample is robust when it is classified correctly and no attack fools it. The attacks' random
starts are a pure function of (run seed, sample id, attack, radius), so a sample's result does not
depend on its batch; results are stored per sample, so an interrupted run resumes.

Options (``--option key=value``): ``eps`` (radii in 1/255 units, default [2, 4]), ``attacks`` (default
[apgd-ce, apgd-t]), ``steps`` (iterations per attack, default 100), ``n_targets`` (APGD-T target classes,
default 9), ``robust_n`` (default 1000), ``classifier`` (``zero_shot`` or ``probe``), ``prompt_template``,
``templates`` (a prompt ensemble: ``openai_imagenet`` for CLIP's 80 ImageNet prompts, or a list; see
:func:`aft_bench.evaluation.classifiers.prompt_templates`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from aft_bench.core.options import names_in, nested, option, parse_levels, positive_int
from aft_bench.core.registries import ATTACKS, CLASSIFIERS
from aft_bench.core.seeding import sample_generator
from aft_bench.data.base import Batch, DataError, Dataset
from aft_bench.evaluation.attacks.ensemble import StartFn, robust_correct
from aft_bench.evaluation.classifiers import PromptOptions
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.encoder_task import EncoderSetup, EncoderTask
from aft_bench.evaluation.probe.options import ProbeOptions
from aft_bench.evaluation.sample_task import Pair
from aft_bench.evaluation.task import Record, Reported
from aft_bench.metrics.base import Metric
from aft_bench.models.encoder import Encoder

CLEAN = Metric(name="clean", higher_is_better=True, description="zero-shot top-1 accuracy on every image")


def metric_name(eps: float) -> str:
    """The result column of radius ``eps`` (1/255 units): ``robust@4/255``, ``robust@0.5/255``."""
    return f"robust@{eps:g}/255"


@dataclass(frozen=True)
class ZeroShotOptions:
    """The task's options (see the module docstring)."""

    eps: tuple[float, ...] = option((2.0, 4.0), parse=parse_levels, help="L-infinity radii in 1/255 units")
    attacks: tuple[str, ...] = option(("apgd-ce", "apgd-t"), parse=names_in(ATTACKS, single=False),
                                      help="attacks run in sequence (ATTACKS registry)")
    steps: int = option(100, parse=positive_int, help="iterations per attack (AutoAttack: 100)")
    n_targets: int = option(9, parse=positive_int, help="APGD-T target classes (AutoAttack: 9)")
    robust_n: int = option(1000, parse=positive_int, help="attack a seeded subset of this many images")
    classifier: str = option("zero_shot", parse=names_in(CLASSIFIERS), help="zero_shot or probe")
    prompts: PromptOptions = nested(PromptOptions, "", help="the zero-shot head's prompts")
    probe: ProbeOptions = nested(ProbeOptions, "probe_", help="the linear probe (classifier=probe)")

    @property
    def label(self) -> str:
        """The leaderboard's attribution column for this task: the attacks, and the classifier unless it is
        the zero-shot head (``apgd-ce+apgd-t``, ``apgd-ce+apgd-t@probe``)."""
        attacks = "+".join(self.attacks)
        return attacks if self.classifier == "zero_shot" else f"{attacks}@{self.classifier}"


@dataclass(frozen=True)
class ZeroShotState:
    """Per encoder: its classifier head and the samples that are attacked."""

    classifier: Any
    robust_ids: frozenset[str]


class ZeroShot(EncoderTask):
    """Clean and robust top-1 accuracy of each encoder's zero-shot (or probe) classifier."""

    Options: ClassVar[type] = ZeroShotOptions

    def metrics(self, options: Any) -> tuple[Reported, ...]:
        return (CLEAN, *(Metric(name=metric_name(eps), higher_is_better=True,
                                description=f"robust accuracy within eps {eps:g}/255") for eps in options.eps))

    def label(self, ctx: RunContext) -> str:
        return ctx.options.label

    def setup(self, ctx: RunContext, spec: str, encoder: Encoder, dataset: Dataset, ids: list[str],
              shared: Any) -> EncoderSetup:
        """The encoder's classifier head and its attacked subset; the attacked samples come first, so that the
        attacks run on full batches (a sample's scores do not depend on its batch). Which samples are attacked (a
        seeded subset of the selection) depends on ``--limit``, so it is part of the run key."""
        opts: ZeroShotOptions = ctx.options
        self._check_classes(dataset.classnames, ctx, opts)
        robust_ids = frozenset(ctx.select(ids, opts.robust_n))
        classifier = CLASSIFIERS.get(opts.classifier)(encoder, dataset, opts.prompts, ctx.probe_setup(dataset))
        ordered = [i for i in ids if i in robust_ids] + [i for i in ids if i not in robust_ids]
        return EncoderSetup(ZeroShotState(classifier, robust_ids), ordered, {"limit": ctx.config.limit})

    @staticmethod
    def _check_classes(classnames: Sequence[str], ctx: RunContext, opts: ZeroShotOptions) -> None:
        if len(classnames) < 2:
            raise DataError(f"dataset {ctx.config.dataset!r} has {len(classnames)} classes: zero-shot accuracy needs "
                            "a labelled dataset with at least 2 classes")
        if "apgd-t" in opts.attacks and len(classnames) < 4:
            raise ValueError(f"dataset {ctx.config.dataset!r} has {len(classnames)} classes; APGD-T's DLR loss needs "
                             "at least 4: run --option attacks=[apgd-ce]")

    def evaluate(self, ctx: RunContext, pair: Pair, batch: Batch) -> list[Record]:
        opts: ZeroShotOptions = ctx.options
        state: ZeroShotState = pair.state
        device = pair.encoder.device
        labels = batch.labels.to(device)
        images = batch.images.to(device)
        with torch.no_grad():
            correct = (state.classifier.logits(images).argmax(dim=1) == labels).cpu()
        attacked = [i for i, sample_id in enumerate(batch.ids) if sample_id in state.robust_ids and labels[i] >= 0]
        robust: dict[str, Tensor] = {}
        if attacked:
            index = torch.tensor(attacked, device=device)
            ids = [batch.ids[i] for i in attacked]
            for eps in opts.eps:
                robust[metric_name(eps)] = robust_correct(
                    state.classifier.logits, images[index], labels[index], eps / 255,
                    self._starts(ids, images.shape[1:], images.dtype, device, ctx.config.seed, eps),
                    attacks=opts.attacks, steps=opts.steps, n_targets=opts.n_targets).cpu()
        row_of = {i: row for row, i in enumerate(attacked)}
        records: list[Record] = []
        for i in range(len(batch)):
            if int(batch.labels[i]) < 0:
                records.append({"error": "no class label (zero-shot accuracy needs labelled images)"})
                continue
            scores = {CLEAN.name: float(correct[i])}
            if i in row_of:
                scores.update({name: float(values[row_of[i]]) for name, values in robust.items()})
            records.append({"scores": scores})
        return records

    @staticmethod
    def _starts(ids: Sequence[str], shape: torch.Size, dtype: torch.dtype, device: torch.device, seed: int,
                eps: float) -> StartFn:
        """The attacks' random starts: uniform [-1, 1] noise per (sample, attack, radius)."""

        def starts(index: Tensor, tag: str) -> Tensor:
            noise = [torch.rand(tuple(shape), generator=sample_generator(seed, ids[int(i)], tag, float(eps)))
                     for i in index.tolist()]
            return (2 * torch.stack(noise) - 1).to(device=device, dtype=dtype)

        return starts
