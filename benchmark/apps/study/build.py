"""``aft-bench study build``: the HIVE "distinct" study (Kim et al. 2022) of any encoders, as the AFT paper's
appendix A.4 runs it, written as ``study.html`` and ``manifest.json``.

Per encoder: its zero-shot head (:class:`aft_bench.evaluation.classifiers.ZeroShotClassifier`, the dataset's prompt
unless ``templates`` / ``prompt_template`` say otherwise) classifies the dataset's images in the study's seeded order
until half the cases have a correct and half a wrong prediction (:mod:`aft_bench.apps.study.cases`); each case gets
four maps of the attribution method (Grad-CAM by default, as in the paper), one per shown class, each explaining
that class's prompt (:mod:`aft_bench.apps.study.maps`). Then the cases of all encoders are shuffled into one page. Every
name and option is checked before any model loads; the encoders, the dataset and the streaming loop are the
benchmark's own (:class:`aft_bench.evaluation.context.RunContext`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aft_bench.apps.study.cases import CHOICES, Case, sample_order, select_cases, study_order
from aft_bench.apps.study.manifest import PAGE_NAME, TASK, StudyManifest, check_replace, write_manifest
from aft_bench.apps.study.maps import class_maps
from aft_bench.apps.study.page import CasePictures, page_html
from aft_bench.apps.study.render import data_uri, image_pixels, overlays
from aft_bench.attributions.base import Attribution
from aft_bench.core.atomic import atomic_write_text
from aft_bench.core.options import parse_options
from aft_bench.core.registries import ATTRIBUTIONS, CLASSIFIERS
from aft_bench.data.base import DataError, Dataset, float_pixels
from aft_bench.evaluation.classifiers import PromptOptions
from aft_bench.evaluation.config import RunConfig
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.runner import check_components

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyConfig:
    """The settings of a study build (the command line's flags; defaults: the embedded world).

    Attributes:
        encoders: Encoder specs (the paper: the original CLIP and its AFT fine-tune).
        dataset, data_root, dataset_args: Where the images come from (its default split).
        attribution: The method whose maps are shown. attribution_args: ``{method: {hyperparameter: value}}``
            (``--attr-arg gradcam.block=-1``; a method other than ``attribution`` is refused).
        cases: Cases per encoder, half with a correct and half with a wrong zero-shot prediction (paper: 10).
        seed: Seeds the image order, the map order in each case and the case order.
        options: The zero-shot head's prompt options (``templates``, ``prompt_template``).
        device, batch_size: Where, and in batches of how many images, the images are classified and explained (they
            change no case).
    """

    encoders: tuple[str, ...] = ("toy", "toy-aft")
    dataset: str = "shapes"
    data_root: str | None = None
    dataset_args: Mapping[str, Any] = field(default_factory=dict)
    attribution: str = "gradcam"
    attribution_args: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    cases: int = 10
    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.cases < 2 or self.cases % 2:
            raise ValueError(f"--cases {self.cases}: give an even number of at least 2 cases per encoder (half with "
                             "a correct, half with a wrong zero-shot prediction; the paper uses 10)")
        if not self.encoders or len(set(self.encoders)) != len(self.encoders):
            raise ValueError(f"--encoders {' '.join(self.encoders)}: give one or more different encoders")

    def run_config(self) -> RunConfig:
        """The benchmark's run configuration of these settings (names checked, encoders and data loaded by it)."""
        return RunConfig(task=TASK, encoders=self.encoders, attributions=(self.attribution,), dataset=self.dataset,
                         data_root=self.data_root, seed=self.seed, device=self.device, batch_size=self.batch_size,
                         options=dict(self.options), dataset_args=dict(self.dataset_args),
                         attribution_args={name: dict(args) for name, args in self.attribution_args.items()})

    def record(self) -> dict[str, Any]:
        """The settings the manifest records (execution settings left out: they change no case)."""
        settings = asdict(self)
        for name in ("device", "batch_size"):
            settings.pop(name)
        return settings


@dataclass(frozen=True)
class StudyBuild:
    """A written study: its manifest, page and manifest paths, the page's size in bytes and the build time."""

    manifest: StudyManifest
    page: Path
    manifest_path: Path
    page_bytes: int
    seconds: float


def _scored(ctx: RunContext, dataset: Dataset, ids: list[str], classifier: Any) -> Iterator[tuple[str, int, Tensor]]:
    """``(sample id, true class, zero-shot logits)`` of ``ids`` in order, batch by batch, as far as it is read."""
    policy = ctx.policy(dataset)
    for batch in ctx.batches(dataset, ids, policy, desc="study: classifying"):
        with torch.no_grad():
            logits = classifier.logits(batch.images).float().cpu()
        yield from zip(batch.ids, batch.labels.tolist(), logits, strict=True)


def _encoder_cases(ctx: RunContext, spec: str, config: StudyConfig, prompts: PromptOptions,
                   method: Attribution) -> tuple[dict[str, Any], list[str], list[tuple[Case, CasePictures]]]:
    """One encoder's record, the dataset's class names, and its cases with their pictures."""
    encoder = ctx.load_encoder(spec)
    method.check(encoder)
    dataset = ctx.dataset(encoder.image_size)
    if len(dataset.classnames) < CHOICES:
        raise DataError(f"dataset {config.dataset!r} has {len(dataset.classnames)} classes; the study shows "
                        f"{CHOICES} classes per case, so it needs a labelled dataset with at least {CHOICES}")
    classifier = CLASSIFIERS.get("zero_shot")(encoder, dataset, prompts, None)
    order = sample_order(dataset.ids(), config.seed)
    half = config.cases // 2
    cases = select_cases(spec, _scored(ctx, dataset, order, classifier), half, half, config.seed)
    images = [float_pixels(dataset.load(case.sample_id).image) for case in cases]
    every_map = class_maps(encoder, method, classifier.text, images, [case.classes for case in cases],
                           config.batch_size)
    shown, alike = [], 0
    for case, image, maps in zip(cases, images, every_map, strict=True):
        if not torch.isfinite(maps).all():
            raise ValueError(f"encoder {spec!r}: the {config.attribution} maps of sample {case.sample_id!r} hold NaN "
                             "or infinite values; choose another attribution or its arguments (--attr-arg)")
        alike += all(torch.equal(maps[0], other) for other in maps[1:])
        pictures = tuple(data_uri(picture) for picture in overlays(image, maps))
        shown.append((case, CasePictures(case.id, data_uri(image_pixels(image)), pictures)))
    if alike:
        log.warning("encoder %s: %d of its %d cases show %d identical maps (attribution %r, %s); participants can only "
                    "guess there: choose a method or layer whose maps depend on the class", spec, alike, len(cases),
                    CHOICES, config.attribution, dict(config.attribution_args.get(config.attribution, {})))
    log.info("encoder %s: %d cases (%d correct, %d wrong zero-shot predictions)", spec, len(cases), half, half)
    return {"spec": spec, "name": encoder.name, "card": encoder.card}, list(dataset.classnames), shown


def build_study(config: StudyConfig, out: str | Path) -> StudyBuild:
    """Builds the study of ``config`` into the folder ``out`` (``study.html`` and ``manifest.json``).

    Raises:
        UnknownNameError: For an unknown encoder, dataset, attribution, hyperparameter or option (before any
            model loads).
        ValueError: For a method that does not serve an encoder, a dataset with fewer than 4 classes or too few
            correct / wrong predictions, or an ``out`` that holds another study.
    """
    began = time.perf_counter()
    run_config = config.run_config()
    check_components(run_config)
    prompts = parse_options(PromptOptions, config.options, "aft-bench study build")
    ctx = RunContext.local(run_config, prompts)
    method: Attribution = ATTRIBUTIONS.get(config.attribution)(**config.attribution_args.get(config.attribution, {}))
    encoders, every_case, classnames = [], [], []
    for spec in config.encoders:
        record, classnames, shown = _encoder_cases(ctx, spec, config, prompts, method)
        encoders.append(record)
        every_case += shown
    pictures = {case.id: picture for case, picture in every_case}
    ordered = study_order([case for case, _ in every_case], config.seed)
    manifest = StudyManifest.create(config.record(), encoders, classnames, ordered)
    folder = Path(out)
    check_replace(folder, manifest.study_id)
    html = page_html(manifest.study_id, [pictures[case.id] for case in ordered])
    page = atomic_write_text(folder / PAGE_NAME, html)
    manifest = replace(manifest, page_sha256=hashlib.sha256(html.encode()).hexdigest())
    path = write_manifest(folder, manifest)
    return StudyBuild(manifest, page, path, page.stat().st_size, time.perf_counter() - began)
