"""Broden: the densely labelled concept dataset of network dissection (Bau et al. 2017, NetDissect).

Broden ("broadly and densely labelled", ``broden1_224`` / ``broden1_227``) merges ADE20K, Pascal-
Context, Pascal-Part, OpenSurfaces and DTD into one label space of about 1,200 concepts in six
categories (color, object, part, material, scene, texture). Layout, with ``root`` the
``broden1_224`` folder (or the folder holding it)::

    root/index.csv      image,split,ih,iw,sh,sw,color,object,part,material,scene,texture
    root/label.csv      number,name,category,frequency,coverage,syns
    root/category.csv   name,first,last,count,frequency
    root/images/...     the images and the label PNGs, paths relative to images/

Each label cell of ``index.csv`` holds zero or more ``;``-separated items: a PNG file name is a
per-pixel label map at the segmentation size (``sh`` x ``sw``) with label = R + 256 * G (0 =
unlabelled); a decimal number is a whole-image label (scene and texture). ``part`` may list several
PNGs (overlapping part planes). ``label.csv``'s category column reads like ``object(123);part(4)``:
the categories a label occurs in, with counts.

API for dissection tasks:

* :meth:`Broden.load` gives the image as a :class:`~aft_bench.data.base.Sample` (no prompt, label
  -1, no mask) at ``image_size``;
* :meth:`Broden.load_labels` gives a :class:`BrodenLabels`: per category the label maps (H x W
  int64 tensors at ``sh`` x ``sw``, or cropped like the image with ``size=``) and the whole-image
  label ids;
* ``label_names``, ``label_categories``, ``primary_category`` and ``categories`` describe the label
  space; :meth:`Broden.concepts` lists the label names as a concept list (CLIP-Dissect's default on
  Broden, Oikarinen and Weng 2023).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import DataError, Sample
from aft_bench.data.class_images import check_image_size, check_on_error
from aft_bench.data.io import read_image, read_label_png
from aft_bench.data.labelled_folders import check_choice, resolve_root
from aft_bench.data.listed import ListedSamples
from aft_bench.data.transforms import resize_center_crop, resize_center_crop_mask

logger = logging.getLogger(__name__)

INDEX_FILE, LABEL_FILE, CATEGORY_FILE, IMAGE_DIR = "index.csv", "label.csv", "category.csv", "images"
INDEX_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")
LABEL_COLUMNS = ("number", "name", "category")
LAYOUT = (
    f"the Broden folder (e.g. .../broden1_224) holding {INDEX_FILE}, {LABEL_FILE}, {CATEGORY_FILE} and {IMAGE_DIR}/"
)
ARCHIVE_FOLDERS = ("broden1_224", "broden1_227", "broden1_384")
_CATEGORY_COUNT = re.compile(r"^\s*([^()]+?)\s*(?:\((\d+)\))?\s*$")
_SUFFIX = re.compile(r"-[a-z]$")


@dataclass(frozen=True)
class BrodenLabels:
    """The labels of one Broden image.

    Attributes:
        pixel: Category -> label maps (H x W int64, 0 = unlabelled; several for overlapping part
            planes), one key per dataset category (empty list when the image has none).
        image: Category -> whole-image label ids (scene, texture), one key per dataset category.
    """

    pixel: dict[str, list[Tensor]]
    image: dict[str, list[int]]


@dataclass(frozen=True)
class _Row:
    image: str
    split: str
    image_shape: tuple[int, int]
    label_shape: tuple[int, int]
    cells: tuple[str, ...]


def _read_csv(path: Path, required: Sequence[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and ``(line number, row)`` pairs of a CSV file, checking the required columns."""
    if not path.is_file():
        raise DataError(f"Broden: missing {path}; expected {LAYOUT}")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}: header {header} lacks columns {missing}; re-download the Broden dataset")
        return header, [(reader.line_num, row) for row in reader]


def _int(value: str | None, path: Path, line: int, column: str) -> int:
    try:
        return int(value or "")
    except ValueError:
        raise DataError(f"{path}:{line}: column {column!r} is {value!r}, expected an integer") from None


def parse_categories(cell: str) -> dict[str, int]:
    """``"object(123);part(4)"`` -> ``{"object": 123, "part": 4}`` (a missing count reads 0; "-" none)."""
    out: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in (cell or "").split(";"))):
        match = _CATEGORY_COUNT.match(item)
        if match and match.group(1) != "-":
            out[match.group(1)] = int(match.group(2) or 0)
    return out


@DATASETS.register("broden", help="Broden (broden1_224/227) images with pixel and image concept labels, for dissection")
class Broden(ListedSamples):
    """Broden images with per-pixel and whole-image concept labels (Bau et al. 2017).

    Args:
        image_size: (height, width) of the images :meth:`load` returns (shorter-side resize + crop).
        root: The Broden folder (or the folder holding it).
        on_error: ``"raise"`` or ``"skip"`` for listing problems (an image listed twice).
        split: ``None`` (every image), or a value of the split column (``"train"``, ``"val"``).

    Attributes:
        categories: Label categories in ``category.csv`` order (columns of ``index.csv``).
        label_names: Label number -> name (``label.csv``; number 0, "-", is unlabelled).
        label_categories: Label number -> categories it occurs in (``label.csv`` order).
        primary_category: Label number -> the category it occurs in most often (first on ties).
        classnames: Empty: Broden has no image classes (``Sample.label`` is -1).
        skipped: Count of skipped listing problems per reason.

    Raises:
        DataError: If ``root`` or a table is missing or malformed, or the split is unknown or empty.
    """

    def __init__(
        self,
        image_size: tuple[int, int] | int,
        root: str | Path | None = None,
        on_error: str = "raise",
        split: str | None = None,
    ) -> None:
        self.image_size = check_image_size(image_size)
        self.on_error = check_on_error(on_error)
        self.root = resolve_root(root, "Broden", LAYOUT, lambda p: (p / INDEX_FILE).is_file(), ARCHIVE_FOLDERS)
        self.classnames: list[str] = []
        self.skipped: dict[str, int] = {}
        self.categories = self._read_categories()
        self._read_labels()
        self.split = split
        self._rows = self._read_index(split)
        self._ids = list(self._rows)

    # ------------------------------------------------------------------ tables

    def _read_categories(self) -> list[str]:
        path = self.root / CATEGORY_FILE
        _, rows = _read_csv(path, ("name",))
        names = [row["name"].strip() for _, row in rows if (row["name"] or "").strip()]
        if not names:
            raise DataError(f"{path}: lists no categories; re-download the Broden dataset")
        return names

    def _read_labels(self) -> None:
        path = self.root / LABEL_FILE
        _, rows = _read_csv(path, LABEL_COLUMNS)
        self.label_names: dict[int, str] = {}
        self.label_categories: dict[int, list[str]] = {}
        self.primary_category: dict[int, str] = {}
        for line, row in rows:
            number = _int(row["number"], path, line, "number")
            if number in self.label_names:
                raise DataError(f"{path}:{line}: label number {number} listed twice; re-download the Broden dataset")
            counts = parse_categories(row["category"])
            self.label_names[number] = (row["name"] or "").strip()
            self.label_categories[number] = list(counts)
            if counts:
                self.primary_category[number] = max(counts, key=lambda c: counts[c])  # first of the maxima

    def _read_index(self, split: str | None) -> dict[str, _Row]:
        path = self.root / INDEX_FILE
        header, rows = _read_csv(path, INDEX_COLUMNS)
        missing = [c for c in self.categories if c not in header]
        if missing:
            raise DataError(
                f"{path}: no column for categories {missing} of {CATEGORY_FILE}; re-download the Broden dataset"
            )
        splits = sorted({row["split"] for _, row in rows})
        if split is not None:
            check_choice("split", split, splits, "Broden")
        out: dict[str, _Row] = {}
        for line, row in rows:
            if split is not None and row["split"] != split:
                continue
            image = (row["image"] or "").strip()
            if not image:
                raise DataError(f"{path}:{line}: empty image column; re-download the Broden dataset")
            if image in out:
                self._problem("duplicate image", f"{path}:{line}: image {image!r} listed twice")
                continue
            shapes = [_int(row[c], path, line, c) for c in ("ih", "iw", "sh", "sw")]
            out[image] = _Row(
                image=image, split=row["split"], image_shape=(shapes[0], shapes[1]), label_shape=(shapes[2], shapes[3]),
                cells=tuple((row[c] or "").strip() for c in self.categories),
            )
        if not out:
            raise DataError(f"{path}: no images{f' in split {split!r}' if split else ''}; expected {LAYOUT}")
        if self.skipped:
            logger.warning("Broden at %s: skipped %s", self.root, self.skipped)
        return out

    def _problem(self, reason: str, message: str) -> None:
        if self.on_error == "raise":
            raise DataError(f"{message}; fix the dataset or pass --on-error skip to skip such items")
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    # ------------------------------------------------------------------ access

    def _row(self, sample_id: str) -> _Row:
        """The index row of a sample (ids: the ``image`` column, paths relative to ``images/``, in index order)."""
        return self._lookup(self._rows, sample_id,
                            f"unknown Broden sample id {sample_id!r}; ids are the image column of {INDEX_FILE}")

    def label_shape(self, sample_id: str) -> tuple[int, int]:
        """(sh, sw): the size of the sample's label maps."""
        return self._row(sample_id).label_shape

    def load(self, sample_id: str) -> Sample:
        """Reads one image, checks its size against ``index.csv`` and resizes it.

        Raises:
            DataError: If the id is unknown or the image is missing, unreadable or of the wrong size.
        """
        row = self._row(sample_id)
        path = self.root / IMAGE_DIR / row.image
        image = read_image(path)
        if tuple(image.shape[1:]) != row.image_shape:
            raise DataError(
                f"{path} is {image.shape[2]}x{image.shape[1]} (WxH) but {INDEX_FILE} says "
                f"{row.image_shape[1]}x{row.image_shape[0]}; re-download the Broden dataset"
            )
        return Sample(id=sample_id, image=resize_center_crop(image, self.image_size), prompt="", label=-1, mask=None)

    def load_labels(self, sample_id: str, size: tuple[int, int] | int | None = None) -> BrodenLabels:
        """Reads the labels of one image.

        Args:
            sample_id: An id from :meth:`ids`.
            size: None for the stored label maps (``sh`` x ``sw``, the whole image); a (height, width)
                to get them with the same shorter-side resize + center crop as :meth:`load` applies to
                the image (nearest neighbour), so that they align with ``load(id).image``'s field of view.

        Returns:
            The pixel label maps and whole-image label ids per category.

        Raises:
            DataError: If a label PNG is missing, corrupt, or not of size ``sh`` x ``sw``.
        """
        row = self._row(sample_id)
        target = None if size is None else check_image_size(size)
        pixel: dict[str, list[Tensor]] = {c: [] for c in self.categories}
        image: dict[str, list[int]] = {c: [] for c in self.categories}
        for category, cell in zip(self.categories, row.cells, strict=True):
            for item in filter(None, (part.strip() for part in cell.split(";"))):
                if item.isdigit():
                    image[category].append(int(item))
                    continue
                labels = torch.from_numpy(self._read_map(item, row))
                pixel[category].append(labels if target is None else resize_center_crop_mask(labels, target))
        return BrodenLabels(pixel=pixel, image=image)

    def _read_map(self, item: str, row: _Row) -> np.ndarray:
        path = self.root / IMAGE_DIR / item
        labels = read_label_png(path)
        if tuple(labels.shape) != row.label_shape:
            raise DataError(
                f"{path} is {labels.shape[1]}x{labels.shape[0]} (WxH) but {INDEX_FILE} gives segmentation size "
                f"{row.label_shape[1]}x{row.label_shape[0]} for {row.image}; re-download the Broden dataset"
            )
        return labels

    def concepts(self, categories: Sequence[str] | None = None, clean: bool = True) -> list[str]:
        """Label names as a concept list, in label-number order (unlabelled 0 / "-" left out).

        Args:
            categories: Keep only labels occurring in one of these categories (None: all).
            clean: Drop Broden's one-letter disambiguation suffix (``"red-c"`` -> ``"red"``,
                ``"street-s"`` -> ``"street"``) and keep the first of names that then coincide.
        """
        wanted = None if categories is None else set(categories)
        if wanted is not None and not wanted <= set(self.categories):
            unknown = sorted(wanted - set(self.categories))
            raise DataError(f"Broden: unknown categories {unknown}; use some of {self.categories}")
        out: list[str] = []
        seen: set[str] = set()
        for number in sorted(self.label_names):
            name = self.label_names[number]
            if number == 0 or name in ("", "-"):
                continue
            if wanted is not None and not wanted & set(self.label_categories[number]):
                continue
            if clean:
                name = _SUFFIX.sub("", name)
            if name not in seen:
                seen.add(name)
                out.append(name)
        return out
