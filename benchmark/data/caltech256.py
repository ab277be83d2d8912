"""Caltech-256: 30,607 images of 256 object categories plus clutter (Griffin, Holub and Perona 2007).

Layout of ``256_ObjectCategories.tar`` once extracted, with ``root`` the ``256_ObjectCategories``
folder (or the folder holding it)::

    root/001.ak47/001_0001.jpg
    root/002.american-flag/002_0001.jpg
    ...
    root/257.clutter/257_0001.jpg

Class names for prompts drop the number and a ``-101`` suffix (classes taken over from Caltech-101)
and turn hyphens and underscores into spaces: ``"063.electric-guitar-101"`` -> ``"electric
guitar"``. ``257.clutter`` holds background scenes, not an object class, so it is excluded by
default (``include_clutter=True`` keeps it as the last class). Files without an image suffix (the
archive has a few) are ignored. Labels are 0-based in folder-number order.

The dataset has no official split. This loader draws one per class (stratified): the files of a
class, sorted by name, are shuffled by a generator seeded with ``split_seed`` and the folder name,
and the first ``round(train_fraction * n)`` go to ``"train"``, the rest to ``"test"`` (at least one
image each when a class has two or more). A class's split depends only on its own files, the seed and
the fraction, so it is identical on every machine and unaffected by other classes.
"""

from __future__ import annotations

import logging
import math
import random
import re
from pathlib import Path

from aft_bench.core.registries import DATASETS
from aft_bench.data.labelled_folders import (
    DEFAULT_TEMPLATE,
    LabelledImages,
    check_choice,
    image_files,
    resolve_root,
    subdirs,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "test", "all")
CLUTTER = "clutter"
_CLASS_FOLDER = re.compile(r"^(\d+)\.(.+)$")
LAYOUT = "the 256_ObjectCategories folder holding one NNN.name/ folder of .jpg images per class"


def caltech_classname(folder: str) -> str:
    """``"063.electric-guitar-101"`` -> ``"electric guitar"``; ``"257.clutter"`` -> ``"clutter"``."""
    match = _CLASS_FOLDER.match(folder)
    name = match.group(2) if match else folder
    name = re.sub(r"-101$", "", name)
    return re.sub(r"[-_]+", " ", name).strip()


def train_count(n: int, train_fraction: float) -> int:
    """Training images of a class of ``n``: ``round(fraction * n)`` (halves up), each split >= 1 if n >= 2."""
    count = math.floor(train_fraction * n + 0.5)
    return min(max(count, 1), n - 1) if n >= 2 else count


def split_files(files: list[Path], folder: str, train_fraction: float, split_seed: int) -> set[Path]:
    """The training files of one class (see the module docstring)."""
    order = sorted(files, key=lambda p: p.name)
    random.Random(f"caltech256:{split_seed}:{folder}").shuffle(order)
    return set(order[: train_count(len(order), train_fraction)])


def _has_class_folders(path: Path) -> bool:
    return any(_CLASS_FOLDER.match(name) for name in subdirs(path))


@DATASETS.register("caltech256", help="Caltech-256, seeded stratified split; split, train_fraction, split_seed")
class Caltech256(LabelledImages):
    """Caltech-256 object categories with a seeded, stratified train/test split.

    Args:
        image_size: (height, width) of the returned images.
        root: The ``256_ObjectCategories`` folder (or the folder holding it).
        on_error: ``"raise"`` or ``"skip"`` for listing problems (a folder not named ``NNN.name``,
            two folders with one number).
        split: ``"train"``, ``"test"`` (default) or ``"all"``.
        train_fraction: Share of each class that goes to ``"train"``, in (0, 1).
        split_seed: Seed of the split.
        include_clutter: Keep ``257.clutter`` as a class.
        prompt_template: Text with one ``{}`` for the class name.

    Attributes:
        classnames: Class names in folder-number order; ``Sample.label`` indexes it.
        folders: The class folder names, same order.

    Raises:
        DataError: If ``root`` is missing, holds no class folders, or the split is empty.
    """

    dataset_name = "Caltech-256"

    def __init__(
        self,
        image_size: tuple[int, int] | int,
        root: str | Path | None = None,
        on_error: str = "raise",
        split: str = "test",
        train_fraction: float = 0.8,
        split_seed: int = 0,
        include_clutter: bool = False,
        prompt_template: str = DEFAULT_TEMPLATE,
    ) -> None:
        super().__init__(image_size, on_error, prompt_template)
        check_choice("split", split, SPLITS, self.dataset_name)
        if isinstance(train_fraction, bool) or not isinstance(train_fraction, (int, float)) or not (
            0.0 < train_fraction < 1.0
        ):
            raise ValueError(f"Caltech-256: train_fraction={train_fraction!r}; use a number strictly between 0 and 1")
        if isinstance(split_seed, bool) or not isinstance(split_seed, int):
            raise ValueError(f"Caltech-256: split_seed={split_seed!r}; use an integer")
        self.split, self.train_fraction, self.split_seed = split, float(train_fraction), split_seed
        self.include_clutter = bool(include_clutter)
        self.root = resolve_root(root, self.dataset_name, LAYOUT, _has_class_folders, ("256_ObjectCategories",))
        self.folders = self._folders()
        entries = []
        for label, folder in enumerate(self.folders):
            files = image_files(self.root / folder)
            train = split_files(files, folder, self.train_fraction, split_seed) if split != "all" else set()
            for path in files:
                if split == "all" or (path in train) == (split == "train"):
                    entries.append((f"{folder}/{path.name}", path, label))
        self._set_entries([caltech_classname(f) for f in self.folders], entries, self.root)

    def _folders(self) -> list[str]:
        """Class folders sorted by number, clutter dropped unless asked for."""
        numbered: dict[int, str] = {}
        for name in subdirs(self.root):
            match = _CLASS_FOLDER.match(name)
            if match is None:
                self._problem("not a class folder", f"folder {name!r} in {self.root} is not named NNN.name")
                continue
            number = int(match.group(1))
            if number in numbered:
                self._problem(
                    "duplicate class number", f"folders {numbered[number]!r} and {name!r} in {self.root} share a number"
                )
                continue
            if caltech_classname(name) == CLUTTER and not self.include_clutter:
                logger.info("Caltech-256: excluding %s (pass --dataset-arg include_clutter=true to keep it)", name)
                continue
            numbered[number] = name
        return [numbered[n] for n in sorted(numbered)]
