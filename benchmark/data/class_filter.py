"""A dataset restricted to the samples of a list of classes, for any task (paper appendix A.4: ImageNet-S images of
Imagenette's ten classes).

``--dataset-arg classes=imagenette`` (a named list, :data:`NAMED_CLASS_LISTS`), ``classes=n01440764,n02102040``
(WordNet ids) or ``classes=circle,square`` (class names, matched without regard to case) wraps the run's dataset
in a :class:`ClassFilter`: it keeps the samples whose class is in the list, in the dataset's order, and relabels
them by the list: ``classnames`` is the list's names in its order (a named list's own names: appendix A.4 writes
"English springer" where ImageNet says "English springer spaniel"; ImageNet's name for a wnid; a name as given),
``Sample.label`` indexes it. Prompts and masks are the dataset's own.

A sample's class is read without loading its image where the dataset allows: its ``label(id)`` method
(class-folder datasets), or an id that starts with an ImageNet wnid (``<wnid>/<name>``, ImageNet-S) in a dataset
of the 1000 ImageNet classes; other datasets load each sample once to read its label. A class's wnid is the
dataset's ``wnids[label]``, or ImageNet-1k's for a dataset of the 1000 ImageNet classes.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aft_bench.data.base import DataError, Dataset, Sample
from aft_bench.data.classnames import NUM_IMAGENET_CLASSES, imagenet_classname, imagenet_index, imagenet_wnids
from aft_bench.data.imagenette import IMAGENETTE_CLASSES, IMAGENETTE_WNIDS
from aft_bench.data.listed import ListedSamples

log = logging.getLogger(__name__)

CLASSES_ARG = "classes"
"""The ``--dataset-arg`` key of the filter (taken by the run, never passed to the dataset)."""
NAMED_CLASS_LISTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "imagenette": (IMAGENETTE_WNIDS, IMAGENETTE_CLASSES),
}
"""Named class lists: name -> (wnids, the names the list gives them)."""
WNID = re.compile(r"n\d{8}")


@dataclass(frozen=True)
class ClassList:
    """The classes to keep: each a WordNet id or a class name (``keys``), and the name each is shown under."""

    keys: tuple[str, ...]
    names: tuple[str, ...]

    @classmethod
    def parse(cls, value: Any) -> ClassList:
        """A named list, a comma-separated string or a list of wnids and class names.

        Raises:
            ValueError: For an empty list or a repeated class, naming the value.
        """
        if isinstance(value, str) and value.strip() in NAMED_CLASS_LISTS:
            wnids, names = NAMED_CLASS_LISTS[value.strip()]
            return cls(wnids, names)
        items = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, Sequence) else None
        keys = tuple(str(item).strip() for item in items or () if str(item).strip())
        if not keys:
            named = ", ".join(NAMED_CLASS_LISTS)
            raise ValueError(f"--dataset-arg {CLASSES_ARG}={value!r}: give a named list ({named}), or wnids / class "
                             "names separated by commas")
        if len({k.casefold() for k in keys}) != len(keys):
            raise ValueError(f"--dataset-arg {CLASSES_ARG}={value!r} lists a class twice")
        return cls(keys, tuple(imagenet_classname(k) if WNID.fullmatch(k) else k for k in keys))


def class_wnids(dataset: Dataset) -> list[str] | None:
    """The wnid of each of the dataset's classes, or None when it has none (not an ImageNet-class dataset)."""
    wnids = getattr(dataset, "wnids", None)
    if wnids is not None:
        return list(wnids)
    if len(dataset.classnames) == NUM_IMAGENET_CLASSES:
        return imagenet_wnids()
    return None


def sample_label(dataset: Dataset, sample_id: str) -> int:
    """A sample's class index, without reading its image where the dataset allows (see the module docstring)."""
    label = getattr(dataset, "label", None)
    if callable(label):
        return int(label(sample_id))
    prefix = sample_id.split("/", 1)[0]
    if WNID.fullmatch(prefix) and len(dataset.classnames) == NUM_IMAGENET_CLASSES:
        return imagenet_index(prefix)
    return int(dataset.load(sample_id).label)


class ClassFilter(ListedSamples):
    """``dataset`` restricted to the classes of ``classes`` and relabelled in their order (see the module).

    Raises:
        DataError: If the dataset has no classes, or none of the listed classes has a sample.
    """

    def __init__(self, dataset: Dataset, classes: ClassList) -> None:
        self.dataset = dataset
        self.classes = classes
        self.classnames = list(classes.names)
        if all(WNID.fullmatch(key) for key in classes.keys):
            self.wnids = list(classes.keys)
        if not dataset.classnames:
            raise DataError(f"--dataset-arg {CLASSES_ARG}=...: the dataset has no classes to filter by")
        wnids = class_wnids(dataset)
        new_label: dict[int, int] = {}
        for old, name in enumerate(dataset.classnames):
            for new, key in enumerate(classes.keys):
                wnid_match = WNID.fullmatch(key) is not None and wnids is not None and wnids[old] == key
                if wnid_match or str(name).casefold() == key.casefold():
                    new_label[old] = new
        self._label = {}
        for sample_id in dataset.ids():
            old = sample_label(dataset, sample_id)
            if old in new_label:
                self._label[sample_id] = new_label[old]
        self._ids = [i for i in dataset.ids() if i in self._label]
        found = set(self._label.values())
        missing = [key for k, key in enumerate(classes.keys) if k not in found]
        if len(missing) == len(classes.keys):
            raise DataError(f"--dataset-arg {CLASSES_ARG}: no sample of the dataset has one of the classes "
                            f"{list(classes.keys)[:10]} (its classes: {list(dataset.classnames)[:10]} ...)")
        if missing:
            log.warning("class filter: no sample of %s in the dataset; keeping %d samples of the other %d classes",
                        missing, len(self._ids), len(classes.keys) - len(missing))

    def label(self, sample_id: str) -> int:
        """A kept sample's index into :attr:`classnames` (the kept ids are in the dataset's order)."""
        return self._lookup(self._label, sample_id,
                            f"sample {sample_id!r} is not in the filtered classes {list(self.classes.keys)}")

    def labels(self) -> list[int]:
        """The kept samples' indices into :attr:`classnames`, in :meth:`ids` order."""
        return [self._label[i] for i in self._ids]

    def load(self, sample_id: str) -> Sample:
        """The dataset's sample, relabelled by the class list."""
        label = self.label(sample_id)
        return dataclasses.replace(self.dataset.load(sample_id), label=label)

    def __getattr__(self, name: str) -> Any:
        """Anything else (``skipped``, ``root``, ...) is the wrapped dataset's."""
        if name.startswith("__") or name in ("dataset", "classes", "wnids", "_label", "_ids"):
            raise AttributeError(name)
        return getattr(self.dataset, name)
