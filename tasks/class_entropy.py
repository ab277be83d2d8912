"""Inter-class similarity: entropy of a linear probe's prediction, over all classes and within a category
(paper appendix A.4, "Inter-class similarity", Table 8).

Han et al. (2023) link interpretability to how well a model knows which classes resemble each other: such a model
spreads its prediction over related classes. The AFT paper measures it with a linear probe on the frozen image
embeddings (:mod:`aft_bench.evaluation.probe.store`: trained on the train split, cached, the ``probe_*`` options)
evaluated on the
test images: per image, the Shannon entropy (natural log, nats) of the probe's softmax over all classes
(``entropy_entire``, Table 8 "Entire") and over the classes of the true class's coarse category, renormalised
within it (``entropy_category``, Table 8 "Category"; :mod:`aft_bench.metrics.entropy`). Means over the images with
95% intervals; higher = more inter-class similarity, which the paper finds after AFT.

Categories (:mod:`aft_bench.data.categories`): ImageNet's classes fall into Eshed's (2020) 67 coarse categories, of
which the paper leaves out "other" (option ``exclude``, default ``[other]``); the shapes world's categories are
its shapes (each over its colours), so the task runs with no options; ``--option categories=FILE`` gives any other
class-to-category CSV (columns ``class`` or ``wnid``, and ``category``). Images of an excluded category are
excluded and counted by category. Scores are stored per image, so an interrupted run resumes.

Options (``--option key=value``): ``categories`` (a CSV file; default: the dataset's own table), ``exclude``
(categories left out), the probe's ``probe_*`` options (``probe_dataset``, ``probe_split``, ``probe_steps``, ...), and
``classifier``: ``probe`` (the paper's, default) or ``zero_shot`` (CLIP's zero-shot head, its softmax at CLIP's learnt
temperature; ``templates`` / ``prompt_template`` as in the zero-shot task), whose name is the leaderboard's
attribution column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from aft_bench.core.options import names_in, nested, option
from aft_bench.core.registries import CLASSIFIERS
from aft_bench.data.base import Batch, Dataset
from aft_bench.data.categories import CategoryTable, ClassCategories, dataset_categories, read_table
from aft_bench.evaluation.classifiers import PromptOptions
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.encoder_task import EncoderSetup, EncoderTask
from aft_bench.evaluation.probe.options import ProbeOptions
from aft_bench.evaluation.sample_task import Pair
from aft_bench.evaluation.task import Record, Reported
from aft_bench.metrics.entropy import ENTROPY_CATEGORY, ENTROPY_ENTIRE, category_entropy, entropy
from aft_bench.metrics.summary import RunningStat
from aft_bench.models.encoder import Encoder


def _table_file(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"option {key}={value!r}: give the path of a CSV file with the columns class,category")
    try:
        read_table(value)
    except ValueError as exc:
        raise ValueError(f"option {key}={value!r}: {exc}") from exc
    return value


def _category_names(value: Any, key: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) and i.strip() for i in items):
        raise ValueError(f"option {key}={value!r}: give a list of category names, e.g. --option '{key}=[other]' "
                         f"(or {key}=[] to keep every category)")
    return tuple(i.strip() for i in items)


@dataclass(frozen=True)
class ClassEntropyOptions:
    """The task's options (see the module docstring)."""

    categories: str | None = option(None, parse=_table_file,
                                    help="class-to-category CSV (class or wnid, category); default: the dataset's own")
    exclude: tuple[str, ...] = option(("other",), parse=_category_names, help="categories left out (paper: other)")
    classifier: str = option("probe", parse=names_in(CLASSIFIERS), help="probe (the paper's) or zero_shot")
    probe: ProbeOptions = nested(ProbeOptions, "probe_", help="the linear probe on frozen image embeddings")
    prompts: PromptOptions = nested(PromptOptions, "", help="the zero-shot head's prompts (classifier=zero_shot)")


@dataclass(frozen=True)
class EntropyState:
    """Per encoder: its classifier (the linear probe, or the zero-shot head) and the category of each class."""

    classifier: Any
    categories: ClassCategories


class ClassEntropy(EncoderTask):
    """Entropy of the classifier's softmax over all classes and within the true class's category, per test image."""

    Options: ClassVar[type] = ClassEntropyOptions
    reported: ClassVar[tuple[Reported, ...]] = (ENTROPY_ENTIRE, ENTROPY_CATEGORY)

    scores: ClassVar[str] = "an encoder's classifier"

    def label(self, ctx: RunContext) -> str:
        return ctx.options.classifier

    def prepare(self, ctx: RunContext) -> CategoryTable | None:
        """The ``categories`` table of the run, read once (None: each dataset's own)."""
        return read_table(ctx.options.categories) if ctx.options.categories else None

    def setup(self, ctx: RunContext, spec: str, encoder: Encoder, dataset: Dataset, ids: list[str],
              shared: CategoryTable | None) -> EncoderSetup:
        """The category of each class (before the probe, so that a bad table fails fast) and the classifier."""
        opts: ClassEntropyOptions = ctx.options
        categories = dataset_categories(dataset, shared, opts.exclude)
        classifier = CLASSIFIERS.get(opts.classifier)(encoder, dataset, opts.prompts, ctx.probe_setup(dataset))
        return EncoderSetup(EntropyState(classifier, categories), key={"categories": categories.digest})

    def evaluate(self, ctx: RunContext, pair: Pair, batch: Batch) -> list[Record]:
        state: EntropyState = pair.state
        with torch.no_grad():
            logits = state.classifier.logits(batch.images).double()
        labels = batch.labels.to(logits.device)
        finite = torch.isfinite(logits).all(dim=1).tolist()
        records: list[Record] = []
        keep: list[int] = []  # the samples to score
        for i, label in enumerate(labels.tolist()):
            if label < 0:
                records.append({"error": "no class label (the category entropy needs the true class)"})
            elif not finite[i]:
                records.append({"error": "the classifier's logits hold NaN/Inf values"})
            elif (reason := state.categories.exclusion(label)) is not None:
                records.append({"excluded": reason})
            else:
                records.append({})
                keep.append(i)
        if keep:
            index = torch.tensor(keep, device=logits.device)
            scores = self._scores(logits[index], labels[index], state.categories.tensor(logits.device))
            for i, record in zip(keep, scores, strict=True):
                records[i] = record
        return records

    @staticmethod
    def _scores(logits: Tensor, labels: Tensor, category_of: Tensor) -> list[Record]:
        entire = entropy(logits).tolist()
        within = category_entropy(logits, labels, category_of).tolist()
        correct = (logits.argmax(dim=1) == labels).tolist()
        return [{"scores": {ENTROPY_ENTIRE.name: e, ENTROPY_CATEGORY.name: c}, "correct": bool(ok)}
                for e, c, ok in zip(entire, within, correct, strict=True)]

    def extras(self, ctx: RunContext, pair: Pair, records: Sequence[Record]) -> dict[str, Any]:
        """The classifier's accuracy on the scored images, the category table, and a probe's card accuracies."""
        state: EntropyState = pair.state
        correct = RunningStat()
        correct.update([float(r["correct"]) for r in records if "correct" in r])
        extra: dict[str, Any] = {"accuracy": correct.mean, "categories": len(state.categories.names),
                                 "categories_source": state.categories.source,
                                 "excluded_categories": list(ctx.options.exclude)}
        probe = getattr(state.classifier, "probe", None)  # the zero-shot head has none
        if probe is not None:
            extra.update(probe_train_accuracy=probe.card.get("train_accuracy"),
                         probe_holdout_accuracy=probe.card.get("holdout_accuracy"))
        return extra
