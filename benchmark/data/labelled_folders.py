"""Shared base of the labelled image datasets (Imagenette, CUB-200-2011, Caltech-256).

These datasets have one class label per image and no masks: they feed the linear probe (paper section
4.1, linear probing and ROAR) and any task that needs a class-specific target. A subclass lists its
files once, at construction, as ``(sample id, file, class index)`` entries plus the class names;
this base turns them into :class:`~aft_bench.data.base.Sample` records with the prompt
``prompt_template.format(classname)`` (CLIP's zero-shot template, Radford et al. 2021), the class
index as ``label`` and ``mask=None``.

Listing problems (a missing file, an entry without a label) raise :class:`DataError` with
``on_error="raise"`` and are counted in ``skipped`` with ``on_error="skip"``; unreadable images
surface in :meth:`LabelledImages.load`, which always raises (the task skips such samples when
``--on-error skip`` is given).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from aft_bench.data.base import DataError, Sample
from aft_bench.data.class_images import ClassImages
from aft_bench.data.io import read_image
from aft_bench.data.listed import ListedSamples

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
DEFAULT_TEMPLATE = "a photo of a {}."


def check_choice(name: str, value: object, choices: Iterable[object], dataset: str) -> None:
    """Raises DataError naming the option, its value and the choices."""
    choices = list(choices)
    if value not in choices:
        raise DataError(f"{dataset}: {name}={value!r} is not one of {choices}; pass --dataset-arg {name}=<choice>")


def image_files(folder: Path) -> list[Path]:
    """The image files (by suffix, hidden files ignored) directly in ``folder``, sorted by name."""
    if not folder.is_dir():
        return []
    with os.scandir(folder) as entries:
        found = [
            Path(e.path) for e in entries
            if e.is_file() and not e.name.startswith(".") and Path(e.name).suffix.lower() in IMAGE_SUFFIXES
        ]
    return sorted(found, key=lambda p: p.name)


def subdirs(folder: Path) -> list[str]:
    """Names of the non-hidden sub-folders of ``folder``, sorted."""
    if not folder.is_dir():
        return []
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def resolve_root(
    root: str | Path | None,
    dataset: str,
    layout: str,
    looks_right: Callable[[Path], bool],
    nested: Sequence[str] = (),
) -> Path:
    """Finds the dataset folder: ``root`` itself or one of the ``nested`` folder names inside it.

    Args:
        root: What the user passed as ``--data-root``.
        dataset: Dataset name for messages.
        layout: Description of the expected layout for messages.
        looks_right: Whether a folder has the expected layout.
        nested: Folder names the archive usually extracts to (tried inside ``root``).

    Raises:
        DataError: If ``root`` is None, missing, or neither it nor a nested folder looks right.
    """
    if root is None:
        raise DataError(f"{dataset} needs --data-root pointing at {layout}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"{dataset} root {str(path)!r} is not a directory; pass --data-root pointing at {layout}")
    if looks_right(path):
        return path
    for name in nested:
        if looks_right(path / name):
            logger.info("%s: using %s inside %s", dataset, name, path)
            return path / name
    raise DataError(
        f"{dataset} root {str(path)!r} does not hold the expected files; pass --data-root pointing at {layout}"
    )


class LabelledImages(ClassImages, ListedSamples):
    """Images with one class label each; subclasses list the files (see the module docstring).

    Args:
        image_size: (height, width) of the returned images (shorter-side resize + center crop).
        on_error: ``"raise"`` fails on the first listing problem, ``"skip"`` skips and counts it.
        prompt_template: Text with one ``{}`` for the class name.

    Attributes:
        classnames: Class names; ``Sample.label`` indexes this list.
        skipped: Count of skipped listing problems per reason (empty unless ``on_error="skip"``).
    """

    #: Dataset name used in messages.
    dataset_name = "labelled images"

    def __init__(self, image_size: tuple[int, int] | int, on_error: str, prompt_template: str) -> None:
        super().__init__(image_size, on_error, prompt_template)
        self._entries: dict[str, tuple[Path, int]] = {}
        self._ids: list[str] = []

    # ------------------------------------------------------------------ for subclasses

    def _problem(self, reason: str, message: str) -> None:
        """Raises (on_error="raise") or counts and logs (on_error="skip") one listing problem."""
        if self.on_error == "raise":
            raise DataError(f"{message}; fix the dataset or pass --on-error skip to skip such items")
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        logger.debug("skipping: %s", message)

    def _set_entries(self, classnames: Sequence[str], entries: Iterable[tuple[str, Path, int]], root: Path) -> None:
        """Stores the class names and ``(id, file, label)`` entries (in the given order)."""
        self.classnames = list(classnames)
        for sample_id, path, label in entries:
            if not 0 <= label < len(self.classnames):
                raise ValueError(f"label {label} of {sample_id!r} outside 0..{len(self.classnames) - 1}")
            if sample_id in self._entries:
                raise DataError(f"{self.dataset_name}: sample id {sample_id!r} listed twice under {root}")
            self._entries[sample_id] = (path, label)
        self._ids = list(self._entries)
        if not self._ids:
            raise DataError(f"{self.dataset_name}: no images found under {root} for this split")
        if self.skipped:
            summary = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
            logger.warning("%s at %s: skipped %s", self.dataset_name, root, summary)

    # ------------------------------------------------------------------ access

    def _entry(self, sample_id: str) -> tuple[Path, int]:
        """The (file, label) of a sample (ids are relative file paths, in a fixed order)."""
        return self._lookup(self._entries, sample_id,
                            f"unknown {self.dataset_name} sample id {sample_id!r}; see ids() for valid ids")

    def path(self, sample_id: str) -> Path:
        """The image file of a sample."""
        return self._entry(sample_id)[0]

    def source_files(self, sample_id: str) -> list[Path]:
        """The files :meth:`load` reads (the image), for ``--cache-samples`` (:mod:`aft_bench.data.sample_cache`)."""
        return [self.path(sample_id)]

    def label(self, sample_id: str) -> int:
        """The class index of a sample, without reading the image."""
        return self._entry(sample_id)[1]

    def labels(self) -> list[int]:
        """Class indices of all samples in :meth:`ids` order (for probes and stratification)."""
        return [self._entries[i][1] for i in self._ids]

    def load(self, sample_id: str) -> Sample:
        """Reads and resizes one image.

        Raises:
            DataError: If the id is unknown or the file is missing or unreadable (the message names it).
        """
        path, label = self._entry(sample_id)
        return self._sample(sample_id, read_image(path), label)
