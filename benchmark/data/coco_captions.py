"""COCO captions: the images of a COCO caption annotation file, each with one of its captions per epoch.

Reads COCO's own caption annotation file (``captions_train2017.json``; Lin et al. 2014, "Microsoft COCO: common
objects in context"): ``images`` (``id``, ``file_name``) and ``annotations`` (``image_id``, ``caption``; about
five per image), over the folder of the images (``--data-root``, e.g. ``train2017``). Images without any caption
are left out and counted (``uncaptioned``, logged). Sample ids are the ``file_name`` entries, in file order.

Supervised AFT (paper Eq. 1, appendix A.4, Tables 4-5) trains on one caption per image per epoch, drawn from the
image's captions with the seed, the epoch and the image's position (:meth:`CocoCaptions.caption`), so a resumed run
draws the same captions: ``aft-bench train --data coco:ANNOTATIONS.json --data-root IMAGES`` reads the samples of
each epoch through :meth:`CocoCaptions.load_epoch` (:mod:`aft_bench.training.sources`); the unsupervised objectives
train on the same images with the captions ignored. :meth:`CocoCaptions.load`, what evaluation reads, is the
sample of epoch 0.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import DataError, Sample
from aft_bench.data.class_images import check_image_size, check_on_error
from aft_bench.data.file_samples import FileSamples
from aft_bench.data.io import read_image
from aft_bench.data.transforms import resize_center_crop

log = logging.getLogger(__name__)


@DATASETS.register("coco_captions", help="COCO captions (annotations=captions_*.json) over the --data-root images")
class CocoCaptions(FileSamples):
    """The captioned images of a COCO caption annotation file (see the module docstring).

    Args:
        image_size: (height, width) of the returned images.
        root: Folder the ``file_name`` entries are relative to.
        on_error: ``"raise"`` or ``"skip"`` (accepted for the common signature; a malformed file always raises, an
            unreadable image raises in :meth:`load`).
        annotations: The annotation JSON.
        seed: Seeds the caption draws (the caption of image i in epoch e depends on (seed, e, i) only); training
            passes the run's seed.

    Attributes:
        annotations: The annotation file.
        root: The image folder.
        items: (image file, its captions) of every captioned image, in file order.
        uncaptioned: Images of the file without any caption (left out).
        classnames: Empty (no classes).

    Raises:
        DataError: For a missing annotation file or image folder, a file that is not JSON, lacks
            ``images``/``annotations``, has an entry without its fields or a ``file_name`` twice, or has no captioned
            image.
    """

    dataset_name = "COCO captions"

    def __init__(self, image_size: tuple[int, int] | int, root: str | Path | None = None, on_error: str = "raise",
                 annotations: str | Path | None = None, seed: int = 0) -> None:
        self.image_size = check_image_size(image_size)
        self.on_error = check_on_error(on_error)
        self.seed = int(seed)
        self.classnames: list[str] = []
        if annotations is None or not Path(annotations).expanduser().is_file():
            raise DataError(f"coco_captions: the caption annotation file {annotations} does not exist; pass "
                            "--dataset-arg annotations=.../annotations/captions_val2017.json")
        if root is None or not Path(root).expanduser().is_dir():
            raise DataError(f"coco_captions: --data-root {root} is not a folder; give the folder of the images the "
                            "file_name entries name (e.g. /data/coco/val2017)")
        self.annotations, self.root = Path(annotations).expanduser(), Path(root).expanduser()
        self.items: list[tuple[Path, list[str]]] = []
        ids: list[str] = []
        self.uncaptioned = self._read(self.annotations, ids)
        if not self.items:
            raise DataError(f"{self.annotations}: no image has a caption")
        if self.uncaptioned:
            log.warning("%s: %d of %d images have no caption and are left out", self.annotations, self.uncaptioned,
                        self.uncaptioned + len(self.items))
        self._list(ids, [image for image, _ in self.items], self.annotations)

    def _read(self, path: Path, ids: list[str]) -> int:
        """Fills ``items`` and ``ids`` from the file; returns the number of images without a caption."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc}); give COCO's captions_*.json") from exc
        if not isinstance(data, dict) or not {"images", "annotations"} <= set(data):
            raise DataError(f"{path}: a COCO caption file has 'images' and 'annotations' lists; found "
                            f"{sorted(data) if isinstance(data, dict) else type(data).__name__}")
        captions: dict[int, list[str]] = {}
        for number, entry in enumerate(data["annotations"]):
            if not isinstance(entry, dict) or "image_id" not in entry or not isinstance(entry.get("caption"), str):
                raise DataError(f"{path}: annotation {number} has no image_id and caption string: {entry!r}")
            captions.setdefault(entry["image_id"], []).append(entry["caption"].strip())
        uncaptioned = 0
        for number, image in enumerate(data["images"]):
            if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
                raise DataError(f"{path}: image {number} has no id and file_name: {image!r}")
            if image["id"] in captions:
                self.items.append((self.root / image["file_name"], captions[image["id"]]))
                ids.append(str(image["file_name"]))
            else:
                uncaptioned += 1
        return uncaptioned

    def caption(self, sample_id: str, epoch: int) -> str:
        """The caption of ``sample_id`` in ``epoch``: one of its captions, drawn with (seed, epoch, position)."""
        position = self._position(sample_id)
        options = self.items[position][1]
        return options[int(np.random.default_rng([self.seed, epoch, position]).integers(len(options)))]

    def load_epoch(self, sample_id: str, epoch: int) -> Sample:
        """The image of ``sample_id`` with the caption drawn for ``epoch`` as its prompt.

        Raises:
            DataError: If the id is unknown or the image is missing or unreadable (the message names it).
        """
        return Sample(id=sample_id, image=resize_center_crop(read_image(self.path(sample_id)), self.image_size),
                      prompt=self.caption(sample_id, epoch))

    def load(self, sample_id: str) -> Sample:
        """The sample of epoch 0 (:meth:`load_epoch`)."""
        return self.load_epoch(sample_id, 0)
