"""Class-to-category tables: the coarse category each class of a dataset belongs to.

The AFT paper's inter-class similarity (appendix A.4, Table 8) groups ImageNet's 1000 classes into the 67 coarse
categories of Eshed (2020, "Novelty detection and analysis in convolutional neural networks") and leaves out the
category "other", keeping 66. A table comes from, in this order:

1. ``--option categories=FILE``: a CSV file with a header row, a ``category`` column and a ``class`` column (the
   class as the dataset names it, or its WordNet id such as ``n01440764``) and/or a ``wnid`` column; other columns
   are ignored, lines starting with ``#`` are comments. It must cover every class of the dataset (rows for other
   classes are ignored), so one table serves a dataset and its subsets;
2. the shapes world: each shape is a category of its colours (``red circle``, ``blue circle``, ... -> ``circle``);
3. datasets whose classes are ImageNet WordNet ids (ImageNet-S, ImageNet and Imagenette class folders): the shipped
   ``aft_bench/data/imagenet_coarse_categories.csv`` (columns index, wnid, category), read from
   ``imagenet_categories_synset.csv`` of Eshed's repository (github.com/noameshed/novelty-detection).

A class is matched by its WordNet id when the dataset has one (the folder it came from, or its index among the
1000 ImageNet classes), else by its name.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aft_bench.data.base import DataError
from aft_bench.data.classnames import imagenet_classnames, imagenet_wnids, is_imagenet_wnid
from aft_bench.data.shapes import CLASSNAMES as SHAPES_CLASSNAMES
from aft_bench.data.shapes import COLOURS, SHAPES, class_index
from aft_bench.metrics.entropy import NO_CATEGORY

IMAGENET_TABLE = "imagenet_coarse_categories.csv"
"""The shipped table (package data of ``aft_bench.data``)."""
KEY_COLUMNS = ("class", "wnid")
CATEGORY_COLUMN = "category"


@dataclass(frozen=True)
class CategoryTable:
    """A class-to-category table.

    Attributes:
        source: Where it comes from (a file path or a description), for messages and results.
        categories: Class key (a class name or WordNet id) -> category name.
        digest: A hash of the table's content (part of a result's run key).
    """

    source: str
    categories: dict[str, str]
    digest: str


def parse_table(text: str, source: str) -> CategoryTable:
    """A table from the text of a category CSV (see the module docstring).

    Raises:
        DataError: Naming ``source`` and the line, for a missing column, an empty cell or a class given two
            different categories.
    """
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    if not rows:
        raise DataError(f"category table {source} is empty; give a CSV with a header row 'class,category'")
    header = [cell.strip().lower() for cell in rows[0]]
    keys = [header.index(column) for column in KEY_COLUMNS if column in header]
    if CATEGORY_COLUMN not in header or not keys:
        raise DataError(f"category table {source} has the columns {header}; it needs a '{CATEGORY_COLUMN}' column "
                        f"and a 'class' (class name or WordNet id) or 'wnid' column")
    where = header.index(CATEGORY_COLUMN)
    categories: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        cells = [cell.strip() for cell in row] + [""] * (len(header) - len(row))
        if not cells[where]:
            raise DataError(f"category table {source}, row {line}: no category; give every class one")
        for column in keys:
            key = cells[column]
            if not key:
                continue
            if categories.get(key, cells[where]) != cells[where]:
                raise DataError(f"category table {source}: class {key!r} is in category {categories[key]!r} "
                                f"(row {first_line[key]}) and {cells[where]!r} (row {line}); give it one category")
            categories[key] = cells[where]
            first_line.setdefault(key, line)
    return CategoryTable(source, categories, hashlib.sha256(text.encode()).hexdigest()[:16])


def read_table(path: str | Path) -> CategoryTable:
    """The category CSV at ``path``.

    Raises:
        DataError: If it cannot be read or is malformed (naming the file).
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the category table {path}: {exc}; give a CSV file with the columns "
                        "class,category") from exc
    return parse_table(text, str(path))


def imagenet_table() -> CategoryTable:
    """Eshed's (2020) coarse categories of the 1000 ImageNet classes, keyed by WordNet id (shipped)."""
    text = resources.files("aft_bench.data").joinpath(IMAGENET_TABLE).read_text(encoding="utf-8")
    return parse_table(text, f"aft_bench/data/{IMAGENET_TABLE} (Eshed 2020)")


def shapes_table() -> CategoryTable:
    """The shapes world's categories: each shape, over its colours."""
    categories = {SHAPES_CLASSNAMES[class_index(colour, shape)]: shape for colour in COLOURS for shape in SHAPES}
    digest = hashlib.sha256(repr(sorted(categories.items())).encode()).hexdigest()[:16]
    return CategoryTable("the shapes world (one category per shape)", categories, digest)


def class_wnids(dataset: Any) -> list[str] | None:
    """The ImageNet WordNet id of each class of ``dataset``, or None when its classes are not ImageNet classes.

    Read from the class folders (``wnids`` of Imagenette, ``folders`` of image_folder) when every one is an ImageNet
    id, or from the class order when the dataset's classes are the 1000 ImageNet classes (ImageNet-S).
    """
    classnames = list(getattr(dataset, "classnames", []) or [])
    for attribute in ("wnids", "folders"):
        folders = list(getattr(dataset, attribute, []) or [])
        if folders and len(folders) == len(classnames) and all(is_imagenet_wnid(f) for f in folders):
            return folders
    return imagenet_wnids() if classnames == imagenet_classnames() else None


@dataclass(frozen=True)
class ClassCategories:
    """The category of every class of one dataset.

    Attributes:
        class_category: Per class (in label order), its category name.
        names: The scored categories (the excluded ones left out), in order of first appearance.
        category_of: Per class, its index in ``names``, or :data:`~aft_bench.metrics.entropy.NO_CATEGORY` (-1)
            for a class of an excluded category.
        source, digest: Of the table.
    """

    class_category: tuple[str, ...]
    names: tuple[str, ...]
    category_of: tuple[int, ...]
    source: str
    digest: str

    def tensor(self, device: torch.device | str = "cpu") -> Tensor:
        """``category_of`` as a (C,) long tensor."""
        return torch.tensor(self.category_of, dtype=torch.long, device=device)

    def exclusion(self, label: int) -> str | None:
        """The reason a sample of class ``label`` is left out (its category is excluded), or None."""
        if self.category_of[label] == NO_CATEGORY:
            return f"excluded category {self.class_category[label]!r}"
        return None


def assign(classnames: Sequence[str], wnids: Sequence[str] | None, table: CategoryTable,
           exclude: Sequence[str] = ()) -> ClassCategories:
    """The category of each class: by WordNet id where ``wnids`` gives one the table holds, else by name.

    Raises:
        DataError: Naming the classes the table misses (and the table), or when every class is excluded.
    """
    found: list[str | None] = []
    for i, name in enumerate(classnames):
        wnid = wnids[i] if wnids is not None else None
        found.append(table.categories.get(wnid) if wnid in table.categories else table.categories.get(name))
    missing = [f"{name!r}" + (f" ({wnids[i]})" if wnids is not None else "")
               for i, (name, category) in enumerate(zip(classnames, found, strict=True)) if category is None]
    if missing:
        raise DataError(f"category table {table.source} has no row for {len(missing)} class(es) of the dataset: "
                        f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; add a row 'class,category' "
                        "for each (class name or WordNet id), or give another table with --option categories=FILE")
    categories: list[str] = found  # type: ignore[assignment]
    names = tuple(dict.fromkeys(c for c in categories if c not in set(exclude)))
    if not names:
        raise DataError(f"every class of the dataset is in an excluded category ({sorted(set(exclude))}); "
                        "change --option exclude")
    index = {name: i for i, name in enumerate(names)}
    return ClassCategories(tuple(categories), names, tuple(index.get(c, NO_CATEGORY) for c in categories),
                           table.source, table.digest)


def dataset_categories(dataset: Any, table: CategoryTable | None = None,
                       exclude: Sequence[str] = ("other",)) -> ClassCategories:
    """The categories of ``dataset``'s classes from ``table``, or from its own table (module docstring).

    Raises:
        DataError: If the dataset has no classes, no table is known for them, or the table misses a class.
    """
    classnames = list(getattr(dataset, "classnames", []) or [])
    if not classnames:
        raise DataError(f"dataset {type(dataset).__name__} has no classes; class categories need a labelled dataset")
    wnids = class_wnids(dataset)
    if table is None:
        if classnames == list(SHAPES_CLASSNAMES):
            table = shapes_table()
        elif wnids is not None:
            table = imagenet_table()
        else:
            raise DataError(f"no built-in category table for the {len(classnames)} classes of dataset "
                            f"{type(dataset).__name__} (they are neither the shapes world's nor ImageNet WordNet "
                            "ids); give one with --option categories=FILE (a CSV with the columns class,category)")
    return assign(classnames, wnids, table, exclude)
