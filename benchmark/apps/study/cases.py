"""The cases of the HIVE "distinct" study (Kim et al. 2022) as the AFT paper runs it (appendix A.4).

Per encoder, the dataset's images are visited in a seeded random order and classified by the zero-shot head; the
first ``n_correct`` images it classifies correctly and the first ``n_wrong`` it gets wrong become the encoder's
cases (the paper: 5 and 5). A case shows four classes: the true class and the three other classes the head ranks
highest. For a correct prediction these are the top-4 predicted classes; for a wrong one, the top-3 wrong classes
and the true class, as the paper describes. The four are shown in a seeded random order, and the cases of all
encoders are shuffled together. Every draw is seeded from the study's seed through
:func:`aft_bench.core.seeding.sample_seed`, so a case's map order depends on its own sample and encoder only.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from aft_bench.core.seeding import sample_seed

CHOICES = 4
"""Maps per case (HIVE's distinct task: four; chance level 1 / 4)."""


@dataclass(frozen=True)
class Case:
    """One question of the study.

    Attributes:
        id: Opaque case id (the page and the answer files use it; it reveals neither encoder nor class).
        encoder: The encoder spec whose maps the case shows.
        sample_id: The dataset sample (kept out of the page: real datasets' ids name their class folders).
        label: The true class index. predicted: The zero-shot head's top class.
        classes: The four class indices in the order the page shows their maps.
        ranks: The zero-shot rank of each shown class (1 = the predicted class).
    """

    id: str
    encoder: str
    sample_id: str
    label: int
    predicted: int
    classes: tuple[int, ...]
    ranks: tuple[int, ...]

    @property
    def correct(self) -> bool:
        """Whether the zero-shot prediction is right."""
        return self.predicted == self.label

    @property
    def answer(self) -> int:
        """The position (1 to 4) of the true class's map on the page."""
        return self.classes.index(self.label) + 1

    def to_dict(self, classnames: Sequence[str]) -> dict[str, Any]:
        """The case as the manifest stores it, with class names for the researcher."""
        return {"id": self.id, "encoder": self.encoder, "sample_id": self.sample_id, "label": self.label,
                "class": classnames[self.label], "predicted": self.predicted,
                "predicted_class": classnames[self.predicted], "correct": self.correct, "answer": self.answer,
                "maps": [{"class": c, "name": classnames[c], "rank": r}
                         for c, r in zip(self.classes, self.ranks, strict=True)]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Case:
        """The case a :meth:`to_dict` record describes.

        Raises:
            KeyError, TypeError, ValueError: For a record that lacks fields or holds values of the wrong kind.
        """
        case = cls(id=str(data["id"]), encoder=str(data["encoder"]), sample_id=str(data["sample_id"]),
                   label=int(data["label"]), predicted=int(data["predicted"]),
                   classes=tuple(int(m["class"]) for m in data["maps"]),
                   ranks=tuple(int(m["rank"]) for m in data["maps"]))
        if len(case.classes) != CHOICES or case.label not in case.classes or int(data["answer"]) != case.answer:
            raise ValueError(f"case {case.id}: {len(case.classes)} maps, the true class {case.label} at position "
                             f"{data['answer']}; expected {CHOICES} maps with the true class at its stated position")
        return case


def shown_classes(logits: Tensor, label: int, k: int = CHOICES) -> tuple[list[int], list[int]]:
    """The classes of a case: ``label`` and the ``k - 1`` other classes with the highest logits, and their ranks.

    Ties are ranked by class index (a stable descending sort), as ``argmax`` picks the first maximum.

    Args:
        logits: (K,) zero-shot logits of one image. label: Its true class. k: Classes to show.

    Returns:
        ``(classes, ranks)``: the true class first, then the others by rank; each class's rank (1 = predicted).

    Raises:
        ValueError: If there are fewer than ``k`` classes or ``label`` is not one of them.
    """
    if logits.ndim != 1 or logits.numel() < k:
        raise ValueError(f"a case needs the logits of at least {k} classes, got shape {tuple(logits.shape)}")
    if not 0 <= label < logits.numel():
        raise ValueError(f"true class {label} is outside the {logits.numel()} classes of the zero-shot head")
    order = torch.sort(logits.detach().float().cpu(), descending=True, stable=True).indices.tolist()
    rank = {c: position + 1 for position, c in enumerate(order)}
    classes = [label] + [c for c in order if c != label][: k - 1]
    return classes, [rank[c] for c in classes]


def sample_order(ids: Sequence[str], seed: int) -> list[str]:
    """The order in which the study visits a dataset's samples: a permutation seeded by ``seed`` alone, the same
    for every encoder (so encoders that classify an image alike pick it alike)."""
    order = list(ids)
    random.Random(sample_seed(seed, "study-samples")).shuffle(order)
    return order


def select_cases(encoder: str, scored: Iterable[tuple[str, int, Tensor]], n_correct: int, n_wrong: int,
                 seed: int) -> list[Case]:
    """The first ``n_correct`` correctly and ``n_wrong`` wrongly classified samples of ``scored`` as cases.

    Args:
        encoder: The encoder spec (part of each case's id and map-order seed).
        scored: ``(sample id, true class, logits)`` in the visiting order; read only as far as needed.
        n_correct, n_wrong: Cases with a correct / wrong zero-shot prediction.
        seed: The study's seed.

    Returns:
        Cases in visiting order, each with its maps in a seeded random order.

    Raises:
        ValueError: If ``scored`` runs out first (naming how many of each kind it found).
    """
    quota = {True: n_correct, False: n_wrong}
    cases: list[Case] = []
    seen = 0
    for sample_id, label, logits in scored:
        seen += 1
        predicted = int(torch.argmax(logits))
        if quota[predicted == label] == 0:
            continue
        quota[predicted == label] -= 1
        classes, ranks = shown_classes(logits, label)
        shown = list(zip(classes, ranks, strict=True))
        random.Random(sample_seed(seed, sample_id, "study-maps", encoder)).shuffle(shown)
        cases.append(Case(id=format(sample_seed(seed, sample_id, "study-case", encoder), "016x")[:12],
                          encoder=encoder, sample_id=sample_id, label=label, predicted=predicted,
                          classes=tuple(c for c, _ in shown), ranks=tuple(r for _, r in shown)))
        if not any(quota.values()):
            return cases
    if any(quota.values()):
        found_right = n_correct - quota[True]
        found_wrong = n_wrong - quota[False]
        raise ValueError(f"encoder {encoder!r}: found {found_right} of {n_correct} correct and {found_wrong} of "
                         f"{n_wrong} wrong zero-shot predictions in all {seen} images; ask for fewer --cases or use a "
                         "larger dataset (--dataset-arg size=N for shapes)")
    return cases


def study_order(cases: Sequence[Case], seed: int) -> list[Case]:
    """The cases of all encoders in the seeded random order the page shows them."""
    order = list(cases)
    random.Random(sample_seed(seed, "study-order")).shuffle(order)
    return order
