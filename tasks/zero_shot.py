"""Zero-shot accuracy and adversarial robustness of an encoder (paper Section 4.4 and Table 2 / Table 9).

The paper weighs interpretability against accuracy: clean zero-shot top-1 accuracy on every test image,
and robust accuracy under AutoAttack's first two attacks (APGD-CE, then APGD-T with the targeted DLR loss,
100 iterations each; Croce & Hein 2020) within L-infinity radii of 2/255 and 4/255 on 1000 images
(:mod:`aft_bench.attacks`). The classifier is CLIP's zero-shot head (class prompts, ``"a photo of a {}."``
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
:func:`aft_bench.classifiers.prompt_templates`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from aft_bench import distributed as dist_utils
from aft_bench.attacks.ensemble import ATTACKS, StartFn, robust_correct
from aft_bench.attributions.base import Attribution
from aft_bench.classifiers import CLASSIFIERS
from aft_bench.config import RunConfig
from aft_bench.data.base import Batch, DataError
from aft_bench.encoder import Encoder
from aft_bench.evaluation import Record, SampleTask, load_samples, select_ids
from aft_bench.loading import load_encoder
from aft_bench.tasks.options import parse_levels, positive_int, sample_seed


def metric_name(eps: float) -> str:
    """The result column of radius ``eps`` (1/255 units): ``robust@4/255``, ``robust@0.5/255``."""
    return f"robust@{eps:g}/255"


@dataclass(frozen=True)
class ZeroShotOptions:
    """The task's options, validated (see the module docstring)."""

    eps: tuple[float, ...]
    attacks: tuple[str, ...]
    steps: int
    n_targets: int
    robust_n: int
    classifier: str

    @classmethod
    def from_config(cls, config: RunConfig) -> ZeroShotOptions:
        o = config.options
        attacks = o.get("attacks", ["apgd-ce", "apgd-t"])
        attacks = tuple([attacks] if isinstance(attacks, str) else attacks)
        unknown = [a for a in attacks if a not in ATTACKS]
        if not attacks or unknown:
            raise ValueError(f"option attacks={list(attacks)!r}: choose one or more of {sorted(ATTACKS)}")
        classifier = str(o.get("classifier", "zero_shot"))
        if classifier not in CLASSIFIERS:
            raise ValueError(f"option classifier={classifier!r}: choose one of {sorted(CLASSIFIERS)}")
        return cls(eps=parse_levels(o.get("eps", [2, 4]), "eps"), attacks=attacks,
                   steps=positive_int(o, "steps", 100) or 100, n_targets=positive_int(o, "n_targets", 9) or 9,
                   robust_n=positive_int(o, "robust_n", 1000) or 1000, classifier=classifier)

    @property
    def label(self) -> str:
        """The leaderboard's attribution column for this task: the attacks, and the classifier unless it is
        the zero-shot head (``apgd-ce+apgd-t``, ``apgd-ce+apgd-t@probe``)."""
        attacks = "+".join(self.attacks)
        return attacks if self.classifier == "zero_shot" else f"{attacks}@{self.classifier}"


class ZeroShot(SampleTask):
    """Clean and robust top-1 accuracy of each encoder's zero-shot (or probe) classifier."""

    metrics: ClassVar[dict[str, bool]] = {}
    scale: ClassVar[float] = 100.0

    def run(self, config: RunConfig) -> list[Path]:
        if config.attributions:
            raise ValueError(f"task {self.spec.name!r} scores encoders, not attribution maps: drop --attributions "
                             f"({' '.join(config.attributions)})")
        self.opts = ZeroShotOptions.from_config(config)
        self.metrics = {"clean": True, **{metric_name(eps): True for eps in self.opts.eps}}
        ctx = dist_utils.setup(config.device)
        paths: list[Path] = []
        for spec in config.encoders:
            encoder = load_encoder(spec, ctx.device)
            dataset, ids = load_samples(config, encoder.image_size)
            self._check_classes(dataset.classnames, config)
            self.robust_ids = set(select_ids(ids, self.opts.robust_n, config.seed))
            self.classifier = CLASSIFIERS[self.opts.classifier](encoder, dataset, config)
            # The attacked samples first, so that the attacks run on full batches (a sample's scores do not
            # depend on its batch).
            ordered = [i for i in ids if i in self.robust_ids] + [i for i in ids if i not in self.robust_ids]
            path = self._run_pair(config, ctx, encoder, spec, self.opts.label, None, dataset, ordered)
            if path is not None:
                paths.append(path)
        return paths

    def _check_classes(self, classnames: Sequence[str], config: RunConfig) -> None:
        if len(classnames) < 2:
            raise DataError(f"dataset {config.dataset!r} has {len(classnames)} classes: zero-shot accuracy needs a "
                            "labelled dataset with at least 2 classes")
        if "apgd-t" in self.opts.attacks and len(classnames) < 4:
            raise ValueError(f"dataset {config.dataset!r} has {len(classnames)} classes; APGD-T's DLR loss needs at "
                             "least 4: run --option attacks=[apgd-ce]")

    def extra_key(self, config: RunConfig) -> dict[str, Any]:
        # Which samples are attacked (a seeded subset of the selection) depends on --limit.
        return {"limit": config.limit}

    def evaluate(self, encoder: Encoder, method: Attribution | None, batch: Batch, config: RunConfig) -> list[Record]:
        labels = batch.labels.to(encoder.device)
        images = batch.images.to(encoder.device)
        with torch.no_grad():
            correct = (self.classifier.logits(images).argmax(dim=1) == labels).cpu()
        attacked = [i for i, sample_id in enumerate(batch.ids) if sample_id in self.robust_ids and labels[i] >= 0]
        robust: dict[str, Tensor] = {}
        if attacked:
            index = torch.tensor(attacked, device=encoder.device)
            ids = [batch.ids[i] for i in attacked]
            for eps in self.opts.eps:
                robust[metric_name(eps)] = robust_correct(
                    self.classifier.logits, images[index], labels[index], eps / 255,
                    self._starts(ids, images.shape[1:], images.dtype, encoder.device, config.seed, eps),
                    attacks=self.opts.attacks, steps=self.opts.steps, n_targets=self.opts.n_targets).cpu()
        row_of = {i: row for row, i in enumerate(attacked)}
        records: list[Record] = []
        for i in range(len(batch)):
            if int(batch.labels[i]) < 0:
                records.append({"error": "no class label: zero-shot accuracy needs labelled images"})
                continue
            scores = {"clean": float(correct[i])}
            if i in row_of:
                scores.update({name: float(values[row_of[i]]) for name, values in robust.items()})
            records.append({"scores": scores})
        return records

    @staticmethod
    def _starts(ids: Sequence[str], shape: torch.Size, dtype: torch.dtype, device: torch.device, seed: int,
                eps: float) -> StartFn:
        """The attacks' random starts: uniform [-1, 1] noise per (sample, attack, radius)."""

        def starts(index: Tensor, tag: str) -> Tensor:
            noise = [torch.rand(tuple(shape), generator=torch.Generator().manual_seed(
                sample_seed(seed, ids[int(i)], tag, float(eps)))) for i in index.tolist()]
            return (2 * torch.stack(noise) - 1).to(device=device, dtype=dtype)

        return starts
