"""ImageNet-S validation set: ImageNet images with pixel-level semantic segmentation masks.

ImageNet-S is from Gao et al. 2022, "Large-scale unsupervised semantic segmentation" (TPAMI). The AFT
paper runs its pointing game on the 12,419 validation images of ImageNet-S919 (Table 1 there).

Layout, with ``root`` the subset's folder (``.../imagenet-s/ImageNetS919``, ``ImageNetS300`` or
``ImageNetS50``)::

    root/validation/<wnid>/<name>.JPEG               the image
    root/validation-segmentation/<wnid>/<name>.png   its mask, RGB, class id = R + 256 * G

Mask ids: 0 = background ("other category"), 1000 = ignore (unannotated / uncertain), any other value
= an ImageNet-S class id, 1-based index into the subset's *sorted* list of wnids. A validation image
may show objects of several classes. What this loader makes of a mask (convention of
:mod:`aft_bench.data.base`):

* ignore (-1): pixels with id 1000;
* foreground (1): the pixels of the image's own class, i.e. id ``1 + index of <wnid>`` in the sorted
  category list, when that list is known (see below) and at least one pixel carries that id;
  otherwise every annotated object pixel (id neither 0 nor 1000);
* background (0): everything else, including objects of other classes.

The category list is known when ``root`` holds the official table (``ImageNetS_categories_im<N>.txt``
from the ImageNet-S repository, one wnid a line; the one named for the subset when there are several;
sorted here as the dataset's README prescribes), or when the mask folders form a complete subset: as
many wnid folders as the subset has classes (919/300/50, taken from the folder name ``ImageNetS<N>``
or, failing that, any of the three counts; the five classes ImageNet-S919 merges into others count
once and take the id of the class they were merged into). A partial copy of the dataset without the
table falls back to "every annotated object", with a warning at construction.

Labels index the 1000 ImageNet-1k classes (``classnames``), prompts use CLIP's class names.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import BACKGROUND, FOREGROUND, IGNORE, DataError, Sample
from aft_bench.data.classnames import (
    imagenet_classname,
    imagenet_classnames,
    imagenet_index,
    is_imagenet_wnid,
)
from aft_bench.data.io import read_image_uint8, read_label_png
from aft_bench.data.listed import ListedSamples
from aft_bench.data.transforms import mask_indices, resize_center_crop_uint8

logger = logging.getLogger(__name__)

IMAGE_DIR = "validation"
MASK_DIR = "validation-segmentation"
BACKGROUND_ID = 0
IGNORE_ID = 1000
SUBSET_SIZES = {"ImageNetS919": 919, "ImageNetS300": 300, "ImageNetS50": 50}
CATEGORY_FILE_GLOB = "ImageNetS_categories_im*.txt"
# ImageNet-S919 merges these ImageNet classes into another (key into value; from the dataset's README),
# so a folder of a merged-away class takes the id of the class it was merged into.
MERGED_INTO = {
    "n04356056": "n04355933",
    "n04493381": "n02808440",
    "n03642806": "n03832673",
    "n04008634": "n03773504",
    "n03887697": "n15075141",
}
IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png"})
ON_ERROR_CHOICES = ("raise", "skip")

LAYOUT = (
    "the ImageNet-S subset folder (e.g. .../imagenet-s/ImageNetS919) that holds "
    f"{IMAGE_DIR}/<wnid>/<name>.JPEG and {MASK_DIR}/<wnid>/<name>.png"
)


def _files(folder: Path, suffixes: frozenset[str]) -> dict[str, list[Path]]:
    """Maps file stem -> files in ``folder`` with one of ``suffixes`` (hidden files ignored)."""
    found: dict[str, list[Path]] = {}
    if not folder.is_dir():
        return found
    with os.scandir(folder) as entries:
        for entry in entries:
            path = Path(entry.path)
            if entry.is_file() and not entry.name.startswith(".") and path.suffix.lower() in suffixes:
                found.setdefault(path.stem, []).append(path)
    return found


def _subdirs(folder: Path) -> set[str]:
    with os.scandir(folder) as entries:
        return {e.name for e in entries if e.is_dir() and not e.name.startswith(".")}


@DATASETS.register("imagenet_s", help="ImageNet-S validation (ImageNetS919/S50/S300), root via --data-root")
class ImageNetS(ListedSamples):
    """ImageNet-S validation images with masks of the image's own class (Gao et al. 2022).

    Args:
        root: The subset folder holding ``validation/`` and ``validation-segmentation/``.
        image_size: (height, width) of the returned images and masks (shorter-side resize + center
            crop, as CLIP preprocesses).
        prompt_template: Text with one ``{}`` for the class name.
        on_error: ``"raise"`` fails on the first listing problem (image without mask, mask without
            image, duplicate name, folder that is not an ImageNet wnid); ``"skip"`` skips and counts
            them in ``skipped``. Unreadable files surface in :meth:`load`, which always raises.
        draft: Let JPEGs of at least twice the target size decode at a reduced scale (faster; pixels within
            the bound of :data:`aft_bench.data.io.DRAFT_MARGIN`, so numbers change slightly). Off by default.

    Attributes:
        classnames: The 1000 ImageNet-1k class names; ``Sample.label`` indexes it.
        skipped: Count of skipped items per reason (empty unless ``on_error="skip"``).
        category_table: The official category file the mask ids come from, or None.
        category_ids: wnid -> ImageNet-S mask id, or None when the category list is not known (then
            foreground is every annotated object; see the module docstring).
        data_version: Bumped when the pixels a sample loads as change; part of every run key on this dataset, so
            stored scores of an older version are not reused. 2: images resized in uint8 (within about 1/255 per
            pixel of version 1's float resize).

    Raises:
        DataError: If ``root`` is None, missing or not laid out as ImageNet-S, or (with
            ``on_error="raise"``) a listing problem is found.
    """

    data_version: ClassVar[int] = 2

    def __init__(
        self,
        root: str | Path | None,
        image_size: tuple[int, int],
        prompt_template: str = "a photo of a {}.",
        on_error: str = "raise",
        draft: bool = False,
    ) -> None:
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
        if prompt_template.count("{}") != 1:
            raise ValueError(
                f"prompt_template must contain exactly one '{{}}' for the class name: {prompt_template!r}"
            )
        if len(image_size) != 2 or any(int(s) != s or s <= 0 for s in image_size):
            raise ValueError(f"image_size must be two positive integers (height, width), got {image_size!r}")
        self.root = self._check_root(root)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.prompt_template = prompt_template
        if not isinstance(draft, bool):
            raise ValueError(f"draft must be true or false, got {draft!r}")
        self.on_error = on_error
        self.draft = draft
        self.classnames: list[str] = imagenet_classnames()
        self.skipped: dict[str, int] = {}
        self._pairs = self._list_pairs()
        self._ids = sorted(self._pairs)
        self.category_table = self._category_table()
        self.category_ids = self._category_ids()
        if self.skipped:
            summary = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
            logger.warning("ImageNet-S at %s: skipped %s", self.root, summary)

    # ------------------------------------------------------------------ listing

    @staticmethod
    def _check_root(root: str | Path | None) -> Path:
        if root is None:
            raise DataError(f"ImageNet-S needs --data-root pointing at {LAYOUT}")
        path = Path(root).expanduser()
        if not path.is_dir():
            raise DataError(
                f"ImageNet-S root {str(path)!r} is not a directory; pass --data-root pointing at {LAYOUT}"
            )
        missing = [d for d in (IMAGE_DIR, MASK_DIR) if not (path / d).is_dir()]
        if missing:
            subsets = sorted(n for n in SUBSET_SIZES if (path / n).is_dir())
            hint = f" It holds subset folders {subsets}: pass one of them." if subsets else ""
            raise DataError(
                f"ImageNet-S root {str(path)!r} has no {' or '.join(m + '/' for m in missing)} folder; "
                f"expected {LAYOUT}.{hint}"
            )
        return path

    def _problem(self, reason: str, message: str) -> None:
        """Raises (on_error="raise") or counts and logs (on_error="skip") one listing problem."""
        if self.on_error == "raise":
            raise DataError(f"{message}; fix the dataset or pass --on-error skip to skip such items")
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        logger.debug("skipping: %s", message)

    def _list_pairs(self) -> dict[str, tuple[Path, Path]]:
        image_root, mask_root = self.root / IMAGE_DIR, self.root / MASK_DIR
        pairs: dict[str, tuple[Path, Path]] = {}
        for wnid in sorted(_subdirs(image_root) | _subdirs(mask_root)):
            if not is_imagenet_wnid(wnid):
                self._problem(
                    "folder not an ImageNet wnid",
                    f"folder {wnid!r} in {image_root} or {mask_root} is not an ImageNet-1k wnid",
                )
                continue
            images = _files(image_root / wnid, IMAGE_SUFFIXES)
            masks = _files(mask_root / wnid, frozenset({".png"}))
            for name in sorted(set(images) | set(masks)):
                found = [str(p) for p in images.get(name, []) + masks.get(name, [])]
                if len(images.get(name, [])) > 1 or len(masks.get(name, [])) > 1:
                    self._problem("duplicate name", f"several files named {name!r}: {found}")
                elif name not in masks:
                    self._problem(
                        "image without mask",
                        f"{images[name][0]} has no mask {mask_root / wnid / (name + '.png')}",
                    )
                elif name not in images:
                    self._problem(
                        "mask without image",
                        f"{masks[name][0]} has no image {image_root / wnid / (name + '.JPEG')}",
                    )
                else:
                    pairs[f"{wnid}/{name}"] = (images[name][0], masks[name][0])
        if not pairs:
            raise DataError(f"no image/mask pairs found under {self.root}; expected {LAYOUT}")
        return pairs

    def _category_table(self) -> Path | None:
        """The official category file in ``root``: the one named for the subset, else the only one."""
        tables = sorted(self.root.glob(CATEGORY_FILE_GLOB))
        size = SUBSET_SIZES.get(self.root.name)
        named = [t for t in tables if size is not None and t.name == f"ImageNetS_categories_im{size}.txt"]
        if named:
            return named[0]
        return tables[0] if len(tables) == 1 else None

    def _category_ids(self) -> dict[str, int] | None:
        """wnid -> mask id from the official table or a complete subset's folders; None if unknown."""
        table = self.category_table
        if table is not None:
            wnids = [line.strip() for line in table.read_text().splitlines() if line.strip()]
            source = str(table)
        else:
            wnids = sorted({MERGED_INTO.get(w, w) for w in _subdirs(self.root / MASK_DIR) if is_imagenet_wnid(w)})
            expected = SUBSET_SIZES.get(self.root.name)
            complete = len(wnids) == expected if expected else len(wnids) in SUBSET_SIZES.values()
            if not complete:
                logger.warning(
                    "ImageNet-S at %s: %d class folders, not a complete subset (%s) and no %s file, so mask "
                    "ids cannot be matched to classes: foreground = every annotated object pixel (ids other "
                    "than %d and %d). Copy the subset's category file into the root for own-class masks.",
                    self.root, len(wnids), expected or sorted(SUBSET_SIZES.values()), CATEGORY_FILE_GLOB,
                    BACKGROUND_ID, IGNORE_ID,
                )
                return None
            source = f"the {len(wnids)} folders of {self.root / MASK_DIR}"
        logger.info("ImageNet-S at %s: class ids from %s", self.root, source)
        return {wnid: i + 1 for i, wnid in enumerate(sorted(set(wnids)))}

    # ------------------------------------------------------------------ access

    def paths(self, sample_id: str) -> tuple[Path, Path]:
        """(image file, mask file) of a sample (ids are ``"<wnid>/<name>"``, sorted)."""
        return self._lookup(self._pairs, sample_id, f"unknown ImageNet-S sample id {sample_id!r}; ids look like "
                            "'<wnid>/<name>' (see ids())")

    def source_files(self, sample_id: str) -> list[Path]:
        """The files :meth:`load` reads (image, mask and the category table that picks the mask's own id), for
        ``--cache-samples`` (:mod:`aft_bench.data.sample_cache`)."""
        table = self.category_table
        return [*self.paths(sample_id), *([] if table is None else [table])]

    def target_mask(self, ids: np.ndarray, wnid: str, mask_path: Path) -> np.ndarray:
        """Converts an H x W array of ImageNet-S ids to an int8 mask (1 own class, 0 other, -1 ignore).

        Args:
            ids: Decoded mask ids (R + 256 G).
            wnid: The image's class.
            mask_path: The mask file, named in the warning when the own class is absent.
        """
        return self._labels(ids, self._own_id(ids, wnid, mask_path))

    def _own_id(self, ids: np.ndarray, wnid: str, mask_path: Path) -> int | None:
        """The id whose pixels are the foreground of the image's mask ``ids``: its class's id when the category
        list is known and some pixel has it, else None (every annotated object; with a warning if the class is
        known but absent)."""
        own = None
        if self.category_ids is not None:
            own = self.category_ids.get(wnid, self.category_ids.get(MERGED_INTO.get(wnid, ""), -1))
        if own is not None and bool((ids == own).any()):
            return own
        if own is not None and bool(((ids != BACKGROUND_ID) & (ids != IGNORE_ID)).any()):
            logger.warning(
                "%s: no pixel has the id %s of %s; using every annotated object as foreground",
                mask_path, own if own > 0 else "(not in the category list)", wnid,
            )
        return None

    @staticmethod
    def _labels(ids: np.ndarray, own: int | None) -> np.ndarray:
        """The int8 mask of ``ids`` with ``own`` (None: every annotated object) as the foreground."""
        foreground = ids == own if own is not None else (ids != BACKGROUND_ID) & (ids != IGNORE_ID)
        mask = np.where(foreground, np.int8(FOREGROUND), np.int8(BACKGROUND))
        mask[ids == IGNORE_ID] = IGNORE
        return mask

    def load(self, sample_id: str) -> Sample:
        """Reads, checks, converts and resizes one image and its mask (each file read once; the image resized
        in uint8 and returned as uint8 levels, made float on the device by :meth:`aft_bench.data.base.Batch.to`; the
        mask decoded to uint16 ids, its foreground id chosen on the full mask, then indexed down to the target grid
        and labelled there, never float).

        Raises:
            DataError: If the id is unknown, a file is unreadable, or mask and image sizes differ.
        """
        image_path, mask_path = self.paths(sample_id)
        wnid = sample_id.split("/", 1)[0]
        image, stored = read_image_uint8(image_path, draft=self.image_size if self.draft else None)
        ids = read_label_png(mask_path, np.uint16)
        if tuple(ids.shape) != stored:
            raise DataError(
                f"mask {mask_path} is {ids.shape[1]}x{ids.shape[0]} (WxH) but image {image_path} is "
                f"{stored[1]}x{stored[0]}; re-download the mask or pass --on-error skip"
            )
        own = self._own_id(ids, wnid, mask_path)
        rows, cols = mask_indices(*stored, self.image_size)
        mask = self._labels(ids.take(rows.numpy(), axis=0).take(cols.numpy(), axis=1), own)
        return Sample(
            id=sample_id,
            image=resize_center_crop_uint8(image, self.image_size, stored),
            prompt=self.prompt_template.format(imagenet_classname(wnid)),
            label=imagenet_index(wnid),
            mask=torch.from_numpy(mask),
        )


def write_synthetic(root: str | Path, n: int, size: tuple[int, int] = (375, 500), classes: int = 10,
                    seed: int = 0) -> Path:
    """Writes ``n`` image/mask pairs in the ImageNet-S layout (for benchmarks and tests; no download).

    Each image is a smooth colour gradient with textured noise and an ellipse of the image's class (what JPEG
    sees in photographs: smooth regions and edges); each mask marks the ellipse with the class's id, a strip
    of ignore pixels along its border and an object of another class. The category table of the ``classes``
    wnids is written too, so the loader finds the own-class ids.

    Args:
        root: The subset folder to create (``.../ImageNetS<k>``); existing files are overwritten.
        n: Image/mask pairs, spread over the classes.
        size: (height, width) of every image.
        classes: How many ImageNet classes (the first wnids in sorted order) the pairs use.
        seed: Seed of the images and shapes.

    Returns:
        ``root``.
    """
    from PIL import Image

    from aft_bench.data.classnames import imagenet_wnids

    root = Path(root)
    wnids = imagenet_wnids()[:classes]
    (root / f"ImageNetS_categories_im{classes}.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / f"ImageNetS_categories_im{classes}.txt").write_text("\n".join(wnids) + "\n")
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for index in range(n):
        k = index % classes
        wnid = wnids[k]
        for folder in (IMAGE_DIR, MASK_DIR):
            (root / folder / wnid).mkdir(parents=True, exist_ok=True)
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        ry, rx = rng.uniform(0.1, 0.3) * h, rng.uniform(0.1, 0.3) * w
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        base = rng.uniform(0, 255, 3).astype(np.float32)
        slope = rng.uniform(-0.3, 0.3, (2, 3)).astype(np.float32)
        rgb = base + yy[..., None] * slope[0] + xx[..., None] * slope[1] + rng.normal(0, 12, (h, w, 3))
        rgb[inside < 1] = rgb[inside < 1] * 0.4 + rng.uniform(0, 255, 3) * 0.6
        ids = np.zeros((h, w), dtype=np.int64)
        ids[inside < 1] = k + 1
        ids[(inside >= 1) & (inside < 1.15)] = IGNORE_ID
        ids[: h // 6, : w // 6] = (k + 1) % classes + 1  # an object of another class
        name = f"ILSVRC2012_val_{index:08d}"
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(root / IMAGE_DIR / wnid / f"{name}.JPEG",
                                                                    quality=90)
        label = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], axis=-1).astype(np.uint8)
        Image.fromarray(label).save(root / MASK_DIR / wnid / f"{name}.png")
    return root
