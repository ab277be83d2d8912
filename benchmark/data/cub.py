"""CUB-200-2011: 11,788 photographs of 200 bird species (Wah et al. 2011, Caltech-UCSD Birds).

Layout of ``CUB_200_2011.tgz`` once extracted, with ``root`` the ``CUB_200_2011`` folder (or the
folder holding it)::

    root/images.txt               "<image_id> <relative path>"
    root/image_class_labels.txt   "<image_id> <class_id>"
    root/train_test_split.txt     "<image_id> <is_training_image>"   (1 = train, 0 = test)
    root/classes.txt              "<class_id> <folder name>"
    root/images/<relative path>

for example ``1 001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg`` in ``images.txt``
and ``1 001.Black_footed_Albatross`` in ``classes.txt``.

Class names for prompts drop the number and turn underscores into spaces ("Black footed
Albatross"); labels are 0-based in class-id order. Bounding boxes, parts and attributes are not
used. Sample ids are the paths of ``images.txt``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import DataError
from aft_bench.data.labelled_folders import DEFAULT_TEMPLATE, LabelledImages, check_choice, resolve_root

logger = logging.getLogger(__name__)

IMAGES_FILE = "images.txt"
LABELS_FILE = "image_class_labels.txt"
SPLIT_FILE = "train_test_split.txt"
CLASSES_FILE = "classes.txt"
IMAGE_DIR = "images"
#: split name -> accepted values of is_training_image
SPLITS = {"train": frozenset({1}), "test": frozenset({0}), "all": frozenset({0, 1})}
LAYOUT = (
    f"the CUB_200_2011 folder holding {IMAGES_FILE}, {LABELS_FILE}, {SPLIT_FILE}, {CLASSES_FILE} and {IMAGE_DIR}/"
)
_NUMBER_PREFIX = re.compile(r"^\d+\.")


def cub_classname(folder: str) -> str:
    """``"001.Black_footed_Albatross"`` -> ``"Black footed Albatross"``."""
    return _NUMBER_PREFIX.sub("", folder).replace("_", " ").strip()


def read_table(path: Path) -> dict[int, str]:
    """Reads a CUB table: one ``"<integer id> <value>"`` per line, blank lines ignored.

    Raises:
        DataError: If the file is missing, a line does not parse or an id repeats (naming file and line).
    """
    if not path.is_file():
        raise DataError(f"CUB-200-2011: missing {path}; expected {LAYOUT}")
    table: dict[int, str] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            key, _, value = line.strip().partition(" ")
            if not key.isdigit() or not value.strip():
                raise DataError(
                    f"{path}:{number}: expected '<integer id> <value>', got {line.strip()!r}; re-extract the archive"
                )
            if int(key) in table:
                raise DataError(f"{path}:{number}: id {key} listed twice; re-extract the archive")
            table[int(key)] = value.strip()
    return table


def _integer(value: str, path: Path, image_id: int) -> int:
    if not value.isdigit():
        raise DataError(f"{path}: image {image_id} has value {value!r}, expected an integer; re-extract the archive")
    return int(value)


@DATASETS.register("cub", help="CUB-200-2011 birds, official split; --data-root = CUB_200_2011, split=test|train|all")
class CUB200(LabelledImages):
    """CUB-200-2011 bird species with the official train/test split.

    Args:
        image_size: (height, width) of the returned images.
        root: The ``CUB_200_2011`` folder (or the folder holding it).
        on_error: ``"raise"`` or ``"skip"`` for listing problems (an image without label or split
            entry, a label that is not in ``classes.txt``, an image file that does not exist).
        split: ``"train"`` (5,994 images), ``"test"`` (5,794, the default) or ``"all"``.
        prompt_template: Text with one ``{}`` for the class name (CLIP's CUB prompts add ", a type
            of bird.").

    Attributes:
        classnames: The 200 species names in class-id order; ``Sample.label`` indexes it.

    Raises:
        DataError: If ``root`` or a table is missing or malformed, or the split is empty.
    """

    dataset_name = "CUB-200-2011"

    def __init__(
        self,
        image_size: tuple[int, int] | int,
        root: str | Path | None = None,
        on_error: str = "raise",
        split: str = "test",
        prompt_template: str = DEFAULT_TEMPLATE,
    ) -> None:
        super().__init__(image_size, on_error, prompt_template)
        check_choice("split", split, SPLITS, self.dataset_name)
        self.split = split
        self.root = resolve_root(root, self.dataset_name, LAYOUT, lambda p: (p / IMAGES_FILE).is_file(),
                                 ("CUB_200_2011",))
        classes = read_table(self.root / CLASSES_FILE)
        class_index = {class_id: i for i, class_id in enumerate(sorted(classes))}
        classnames = [cub_classname(classes[c]) for c in sorted(classes)]
        self._set_entries(classnames, self._list(class_index), self.root / IMAGE_DIR)

    def _list(self, class_index: dict[int, int]) -> list[tuple[str, Path, int]]:
        images = read_table(self.root / IMAGES_FILE)
        labels_path, split_path = self.root / LABELS_FILE, self.root / SPLIT_FILE
        labels, flags = read_table(labels_path), read_table(split_path)
        wanted = SPLITS[self.split]
        entries = []
        for image_id in sorted(images):
            relative = images[image_id]
            if image_id not in labels:
                self._problem("no class label", f"{LABELS_FILE} has no line for image {image_id} ({relative})")
                continue
            if image_id not in flags:
                self._problem("no split entry", f"{SPLIT_FILE} has no line for image {image_id} ({relative})")
                continue
            flag = _integer(flags[image_id], split_path, image_id)
            if flag not in (0, 1):
                raise DataError(f"{split_path}: image {image_id} has is_training_image={flag}, expected 0 or 1")
            if flag not in wanted:
                continue
            class_id = _integer(labels[image_id], labels_path, image_id)
            if class_id not in class_index:
                self._problem(
                    "unknown class",
                    f"{labels_path}: image {image_id} ({relative}) has class {class_id}, not in {CLASSES_FILE}",
                )
                continue
            path = self.root / IMAGE_DIR / relative
            if not path.is_file():
                self._problem("missing image", f"{path} (image {image_id} of {IMAGES_FILE}) does not exist")
                continue
            entries.append((relative, path, class_index[class_id]))
        return entries
