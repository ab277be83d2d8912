"""Captioned images listed in a caption file: rows of (image path, caption) in CSV (with a header) or JSONL.

Accepted column names: ``path``/``image``/``filepath``/``file``/``image_path`` for the image and
``caption``/``text``/``title`` for its caption (the first of each list that the first row has; other columns are
ignored). Relative paths are resolved against ``root`` (``--data-root``; default: the caption file's folder). An
image may stand in several rows (one per caption): every row is a sample. Sample ids are ``ROW:PATH``, the row
number as messages name it (CSV: the file line, counting the header; JSONL: the n-th non-blank line) and the path
as the row writes it. Each sample's prompt is its caption; there are no classes (``Sample.label`` -1) and no masks.

Supervised AFT trains on these files (``aft-bench train --data captions.csv``, :mod:`aft_bench.training.data_spec`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import DataError, Sample
from aft_bench.data.class_images import check_image_size, check_on_error
from aft_bench.data.file_samples import FileSamples
from aft_bench.data.io import read_image
from aft_bench.data.transforms import resize_center_crop

PATH_COLUMNS = ("path", "image", "filepath", "file", "image_path")
CAPTION_COLUMNS = ("caption", "text", "title")
CAPTION_SUFFIXES = (".csv", ".jsonl")
"""The caption file formats, by suffix (any case)."""


def read_rows(path: Path) -> list[dict]:
    """The rows of a CSV (by its header) or JSONL file (blank lines skipped).

    Raises:
        DataError: Naming the file and line of a JSONL line that is not a JSON object.
    """
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {line_no}: not valid JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {line_no}: not a JSON object of columns, but {type(row).__name__}")
            rows.append(row)
    return rows


def _column(row: dict, names: tuple[str, ...], path: Path) -> str:
    for name in names:
        if name in row:
            return name
    raise DataError(f"{path}: no column among {names}; found {sorted(row)}")


@DATASETS.register("caption_file", help="images and captions from file=CAPTIONS.csv|.jsonl of (path, caption) rows")
class CaptionFile(FileSamples):
    """The rows of a caption file as samples (see the module docstring).

    Args:
        image_size: (height, width) of the returned images.
        root: The folder relative image paths start from (default: the caption file's folder).
        on_error: ``"raise"`` or ``"skip"`` (accepted for the common signature; a malformed row always raises, an
            unreadable image raises in :meth:`load`).
        file: The caption file (``.csv`` with a header, or ``.jsonl``).

    Attributes:
        file: The caption file.
        items: (image file, caption) of every row, in file order.
        classnames: Empty (no classes).

    Raises:
        DataError: If the file is not given, missing, of another format, empty, lacks a path or caption column, or
            has a row with an empty path or no caption (naming the file and row).
    """

    dataset_name = "caption file"

    def __init__(self, image_size: tuple[int, int] | int, root: str | Path | None = None, on_error: str = "raise",
                 file: str | Path | None = None) -> None:
        self.image_size = check_image_size(image_size)
        self.on_error = check_on_error(on_error)
        self.classnames: list[str] = []
        if file is None:
            raise DataError("the caption_file dataset needs --dataset-arg file=CAPTIONS.csv (or .jsonl)")
        self.file = Path(file).expanduser()
        if not self.file.is_file():
            raise DataError(f"caption file {self.file} does not exist")
        if self.file.suffix.lower() not in CAPTION_SUFFIXES:
            raise DataError(f"caption file {self.file}: give a .csv file (with a header) or a .jsonl file")
        base = Path(root).expanduser() if root else self.file.parent
        rows = read_rows(self.file)
        if not rows:
            raise DataError(f"caption file {self.file} has no rows")
        path_key = _column(rows[0], PATH_COLUMNS, self.file)
        text_key = _column(rows[0], CAPTION_COLUMNS, self.file)
        self.items: list[tuple[Path, str]] = []
        ids: list[str] = []
        for line, row in enumerate(rows, start=2 if self.file.suffix.lower() == ".csv" else 1):
            if not row.get(path_key) or row.get(text_key) is None:
                raise DataError(f"{self.file}, row {line}: empty {path_key!r} or missing {text_key!r}")
            file_path = Path(str(row[path_key]))
            self.items.append((file_path if file_path.is_absolute() else base / file_path, str(row[text_key])))
            ids.append(f"{line}:{row[path_key]}")
        self._list(ids, [image for image, _ in self.items], self.file)

    def load(self, sample_id: str) -> Sample:
        """Reads and resizes one row's image; its caption is the prompt.

        Raises:
            DataError: If the id is unknown or the image is missing or unreadable (the message names it).
        """
        file, text = self.items[self._position(sample_id)]
        return Sample(id=sample_id, image=resize_center_crop(read_image(file), self.image_size), prompt=text)
