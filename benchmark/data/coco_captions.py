"""COCO captions as a training source: ``--data coco:ANNOTATIONS.json --data-root IMAGES``.

Reads COCO's own caption annotation file (``captions_train2017.json``; Lin et al. 2014, "Microsoft COCO: common
objects in context"): ``images`` (``id``, ``file_name``) and ``annotations`` (``image_id``, ``caption``; about
five per image). Supervised AFT (paper Eq. 1, appendix A.4, Tables 4-5) trains on one caption per image per
epoch, drawn from the image's captions with the run's seed, the epoch and the image's index, so a resumed run
draws the same captions. Images without any caption are left out, counted in the log and in the encoder card;
the unsupervised objectives train on the same images with the captions ignored.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from torch import Tensor

from aft_bench.data.base import DataError
from aft_bench.data.io import read_image
from aft_bench.data.transforms import resize_center_crop

log = logging.getLogger(__name__)
PREFIX = "coco"


def check_coco(path: Path, root: str | None) -> None:
    """Checks a ``coco:`` spec without reading the file: it exists and ``--data-root`` names an image folder.

    Raises:
        DataError: Naming the file or folder and what to give.
    """
    if not path.is_file():
        raise DataError(f"--data coco:{path}: the caption annotation file does not exist (COCO's "
                        "annotations/captions_train2017.json)")
    if root is None:
        raise DataError(f"--data coco:{path} needs --data-root, the folder of the images its file_name entries "
                        "name (e.g. /data/coco/train2017)")
    if not Path(root).is_dir():
        raise DataError(f"--data-root {root}: not a folder; give the folder of the COCO images (e.g. train2017)")


class CocoCaptionSource:
    """The images of a COCO caption annotation file, each with one of its captions per epoch.

    Args:
        path: The annotation JSON.
        image_size: (H, W) the encoder takes.
        root: Folder the ``file_name`` entries are relative to.
        seed: The run's seed (the caption drawn for image i in epoch e depends on (seed, e, i) only).

    Raises:
        DataError: For a file that is not JSON, lacks ``images``/``annotations``, has an entry without its
            fields, or has no captioned image.
    """

    def __init__(self, path: str | Path, image_size: tuple[int, int], root: str | Path, seed: int = 0) -> None:
        self.path, self.image_size, self.root, self.seed = Path(path), image_size, Path(root), int(seed)
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{self.path}: not valid JSON ({exc}); give COCO's captions_*.json") from exc
        if not isinstance(data, dict) or not {"images", "annotations"} <= set(data):
            raise DataError(f"{self.path}: a COCO caption file has 'images' and 'annotations' lists; found "
                            f"{sorted(data) if isinstance(data, dict) else type(data).__name__}")
        captions: dict[int, list[str]] = {}
        for number, entry in enumerate(data["annotations"]):
            if not isinstance(entry, dict) or "image_id" not in entry or not isinstance(entry.get("caption"), str):
                raise DataError(f"{self.path}: annotation {number} has no image_id and caption string: {entry!r}")
            captions.setdefault(entry["image_id"], []).append(entry["caption"].strip())
        self.items: list[tuple[Path, list[str]]] = []
        self.uncaptioned = 0
        for number, image in enumerate(data["images"]):
            if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
                raise DataError(f"{self.path}: image {number} has no id and file_name: {image!r}")
            if image["id"] in captions:
                self.items.append((self.root / image["file_name"], captions[image["id"]]))
            else:
                self.uncaptioned += 1
        if not self.items:
            raise DataError(f"{self.path}: no image has a caption")
        if self.uncaptioned:
            log.warning("%s: %d of %d images have no caption and are left out", self.path, self.uncaptioned,
                        self.uncaptioned + len(self.items))

    def __len__(self) -> int:
        return len(self.items)

    def caption(self, index: int, epoch: int) -> str:
        """The caption of image ``index`` in ``epoch``: one of its captions, drawn with (seed, epoch, index)."""
        options = self.items[index][1]
        return options[int(np.random.default_rng([self.seed, epoch, index]).integers(len(options)))]

    def load(self, index: int, epoch: int = 0) -> tuple[Tensor, str | None]:
        file = self.items[index][0]
        return resize_center_crop(read_image(file), self.image_size), self.caption(index, epoch)

    def describe(self) -> str:
        left_out = f", {self.uncaptioned} without captions left out" if self.uncaptioned else ""
        return f"coco:{self.path} ({len(self.items)} captioned images under {self.root}{left_out})"
