"""STL-10 (Coates et al. 2011) in its binary archive, a zero-shot dataset of the AFT paper's Table 2::

    stl10_binary/test_X.bin, test_y.bin, train_X.bin, train_y.bin, class_names.txt

``*_X.bin`` holds 96 x 96 RGB images as uint8, each stored channel by channel in column-major order (the
format of the dataset's MATLAB origin); ``*_y.bin`` holds one uint8 label per image, 1 to 10;
``class_names.txt`` one class name per line. The image file is memory-mapped: only the images a run loads
are read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aft_bench.core.registries import DATASETS
from aft_bench.data.array_images import ArrayImages
from aft_bench.data.base import DataError
from aft_bench.data.labelled_folders import DEFAULT_TEMPLATE, check_choice, resolve_root

SIDE = 96
SPLITS = ("test", "train")
LAYOUT = "the stl10_binary folder holding test_X.bin, test_y.bin and class_names.txt"


@DATASETS.register("stl10", help="STL-10 binary (stl10_binary), split=test|train")
class STL10(ArrayImages):
    """STL-10's labelled images: test split of 8,000 (``split=train``: 5,000), 10 classes.

    Args:
        image_size: (height, width) of the returned images.
        root: The ``stl10_binary`` folder (or the folder it was extracted into).
        on_error: ``"raise"`` or ``"skip"`` (nothing to skip in an array).
        split: ``"test"`` or ``"train"``.
        prompt_template: Text with one ``{}`` for the class name.
    """

    dataset_name = "STL-10"

    def __init__(self, image_size: tuple[int, int] | int, root: str | Path | None = None, on_error: str = "raise",
                 split: str = "test", prompt_template: str = DEFAULT_TEMPLATE) -> None:
        super().__init__(image_size, on_error, prompt_template)
        check_choice("split", split, SPLITS, self.dataset_name)
        self.root = resolve_root(root, self.dataset_name, LAYOUT, lambda p: (p / "class_names.txt").is_file(),
                                 ("stl10_binary",))
        names = [line.strip() for line in (self.root / "class_names.txt").read_text().splitlines() if line.strip()]
        x_path, y_path = self.root / f"{split}_X.bin", self.root / f"{split}_y.bin"
        for path in (x_path, y_path):
            if not path.is_file():
                raise DataError(f"STL-10: {path} is missing; pass --data-root pointing at {LAYOUT}")
        labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1
        size = x_path.stat().st_size
        if size != len(labels) * 3 * SIDE * SIDE:
            raise DataError(f"STL-10: {x_path} has {size} bytes, expected {len(labels)} images of 3 x {SIDE} x {SIDE} "
                            f"for the {len(labels)} labels of {y_path.name}")
        planes = np.memmap(x_path, dtype=np.uint8, mode="r", shape=(len(labels), 3, SIDE, SIDE))
        # Column-major planes: planes[n, c, x, y]; the image is [y, x, c].
        self._set_arrays(split, planes.transpose(0, 3, 2, 1), labels, names, str(x_path))
