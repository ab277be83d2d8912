"""PatchCamelyon (Veeling et al. 2018), histopathology patches in HDF5, a zero-shot dataset of the AFT
paper's Table 2 (after CLIP's benchmark)::

    camelyonpatch_level_2_split_{test,train,valid}_x.h5   dataset "x": N x 96 x 96 x 3 uint8
    camelyonpatch_level_2_split_{test,train,valid}_y.h5   dataset "y": N x 1 x 1 x 1 uint8 (1 = tumour)

Class names are those of CLIP's benchmark: "lymph node" and "lymph node containing metastatic tumor
tissue". The HDF5 file is opened on first use in each process (so data-loader workers each have their
own handle) and only the images a run loads are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from aft_bench.core.registries import DATASETS
from aft_bench.data.array_images import ArrayImages
from aft_bench.data.base import DataError
from aft_bench.data.labelled_folders import DEFAULT_TEMPLATE, check_choice, resolve_root

SPLITS = ("test", "train", "valid")
CLASSNAMES = ("lymph node", "lymph node containing metastatic tumor tissue")
STEM = "camelyonpatch_level_2_split_{split}_{part}.h5"


class _LazyH5:
    """An HDF5 dataset opened on first indexing in this process; ``shape`` and ``dtype`` known up front."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name
        with h5py.File(path, "r") as handle:
            data = handle[name]
            self.shape, self.dtype = data.shape, data.dtype
        self._data: Any = None

    def __getitem__(self, index: int) -> np.ndarray:
        if self._data is None:
            self._data = h5py.File(self.path, "r")[self.name]
        return self._data[index]

    def __getstate__(self) -> dict[str, Any]:  # a worker process reopens the file
        return {**self.__dict__, "_data": None}


@DATASETS.register("pcam", help="PatchCamelyon HDF5 (camelyonpatch_level_2_split_*), split=test|train|valid")
class PCAM(ArrayImages):
    """PatchCamelyon: 96 x 96 patches, 2 classes; test split of 32,768 (``split=train|valid``).

    Args:
        image_size: (height, width) of the returned images.
        root: The folder holding the ``camelyonpatch_level_2_split_*.h5`` files.
        on_error: ``"raise"`` or ``"skip"`` (nothing to skip in an array).
        split: ``"test"``, ``"train"`` or ``"valid"``.
        prompt_template: Text with one ``{}`` for the class name.
    """

    dataset_name = "PCAM"

    def __init__(self, image_size: tuple[int, int] | int, root: str | Path | None = None, on_error: str = "raise",
                 split: str = "test", prompt_template: str = DEFAULT_TEMPLATE) -> None:
        super().__init__(image_size, on_error, prompt_template)
        check_choice("split", split, SPLITS, self.dataset_name)
        x_name, y_name = (STEM.format(split=split, part=part) for part in ("x", "y"))
        layout = f"the folder holding {x_name} and {y_name}"
        self.root = resolve_root(root, self.dataset_name, layout, lambda p: (p / x_name).is_file(), ("pcam",))
        try:
            images = _LazyH5(self.root / x_name, "x")
            with h5py.File(self.root / y_name, "r") as handle:
                labels = np.asarray(handle["y"]).reshape(-1)
        except (OSError, KeyError) as exc:
            raise DataError(f"PCAM: cannot read {self.root / x_name} / {y_name} ({exc}); expected HDF5 files with "
                            "datasets 'x' and 'y'") from exc
        self._set_arrays(split, images, labels, CLASSNAMES, str(self.root / x_name))
