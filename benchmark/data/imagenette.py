"""Imagenette: ten easily classified ImageNet classes in class folders (Howard 2019, fast.ai).

Imagenette (https://github.com/fastai/imagenette) is a 10-class subset of ImageNet-1k (Deng et al.
2009); its archives (``imagenette2``, ``imagenette2-320``, ``imagenette2-160``) extract to::

    root/train/<wnid>/<name>.JPEG
    root/val/<wnid>/<name>.JPEG

The same layout serves Imagewoof and any ImageNet subset stored in class folders named by WordNet
id. Classes are the wnid folders found under ``train/`` and ``val/`` (their union, sorted, so both
splits share one label order); names are CLIP's ImageNet class names (``aft_bench.data.classnames``).
Sample ids are paths relative to ``root`` (``val/n01440764/ILSVRC2012_val_00009111.JPEG``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import DataError
from aft_bench.data.classnames import imagenet_classname, is_imagenet_wnid
from aft_bench.data.labelled_folders import (
    DEFAULT_TEMPLATE,
    LabelledImages,
    check_choice,
    image_files,
    resolve_root,
    subdirs,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "val")
ARCHIVE_FOLDERS = ("imagenette2", "imagenette2-320", "imagenette2-160", "imagewoof2", "imagewoof2-320",
                   "imagewoof2-160")
LAYOUT = "the Imagenette folder (e.g. .../imagenette2-320) holding train/<wnid>/*.JPEG and val/<wnid>/*.JPEG"


@DATASETS.register("imagenette", help="Imagenette/Imagewoof class folders (train/, val/); split=val|train")
class Imagenette(LabelledImages):
    """Imagenette (or Imagewoof) images with ImageNet class names for prompts.

    Args:
        image_size: (height, width) of the returned images.
        root: The folder holding ``train/`` and ``val/`` (or the folder it was extracted into).
        on_error: ``"raise"`` or ``"skip"`` for listing problems (a class folder that is not an
            ImageNet-1k wnid).
        split: ``"train"`` or ``"val"`` (default: ``"val"``, the evaluation split).
        prompt_template: Text with one ``{}`` for the class name.

    Attributes:
        classnames: CLIP names of the classes, in sorted-wnid order; ``Sample.label`` indexes it.
        wnids: The WordNet ids of the classes, same order.

    Raises:
        DataError: If ``root`` is missing or not laid out as described, or the split folder is empty.
    """

    dataset_name = "Imagenette"

    def __init__(
        self,
        image_size: tuple[int, int] | int,
        root: str | Path | None = None,
        on_error: str = "raise",
        split: str = "val",
        prompt_template: str = DEFAULT_TEMPLATE,
    ) -> None:
        super().__init__(image_size, on_error, prompt_template)
        check_choice("split", split, SPLITS, self.dataset_name)
        self.split = split
        self.root = resolve_root(
            root, self.dataset_name, LAYOUT, lambda p: any((p / s).is_dir() for s in SPLITS), ARCHIVE_FOLDERS
        )
        if not (self.root / split).is_dir():
            found = [s for s in SPLITS if (self.root / s).is_dir()]
            raise DataError(
                f"Imagenette root {str(self.root)!r} has no {split}/ folder (found: {found or 'none'}); "
                f"pass another --dataset-arg split=... or --data-root pointing at {LAYOUT}"
            )
        self.wnids = self._classes()
        entries = []
        for label, wnid in enumerate(self.wnids):
            for path in image_files(self.root / split / wnid):
                entries.append((path.relative_to(self.root).as_posix(), path, label))
        self._set_entries([imagenet_classname(w) for w in self.wnids], entries, self.root / split)

    def _classes(self) -> list[str]:
        """Sorted union of the wnid folders of both splits (others are listing problems)."""
        wnids = []
        for name in sorted({d for s in SPLITS for d in subdirs(self.root / s)}):
            if is_imagenet_wnid(name):
                wnids.append(name)
            else:
                self._problem(
                    "folder not an ImageNet wnid",
                    f"class folder {name!r} under {self.root} is not an ImageNet-1k WordNet id (like 'n01440764')",
                )
        return wnids


IMAGENETTE_CLASSES: tuple[str, ...] = (
    "tench", "English springer", "cassette player", "chain saw", "church", "French horn", "garbage truck",
    "gas pump", "golf ball", "parachute",
)
"""Appendix A.4's class list, in the paper's order (Imagenette's ten classes by their common names)."""


IMAGENETTE_WNIDS: tuple[str, ...] = (
    "n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916", "n03417042", "n03425413",
    "n03445777", "n03888257",
)
"""The WordNet ids of :data:`IMAGENETTE_CLASSES`, in the same order."""
