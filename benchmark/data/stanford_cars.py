"""Stanford Cars (Krause et al. 2013), 196 car models, a zero-shot dataset of the AFT paper's Table 2::

    cars_test/00001.jpg ...                        (cars_train/ for split=train)
    cars_test_annos_withlabels.mat                 struct array "annotations": fname, class (1..196), bbox
    devkit/cars_meta.mat                           "class_names": 1 x 196 cell of names
    devkit/cars_train_annos.mat                    the train split's annotations

The test labels ship separately from the devkit (``cars_test_annos_withlabels.mat``); it may sit in the
root or in ``devkit/``. Whole images are used (not the bounding boxes), as CLIP's benchmark does. The
MATLAB files are read with scipy (data only, no code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import loadmat

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import DataError
from aft_bench.data.labelled_folders import DEFAULT_TEMPLATE, LabelledImages, check_choice, resolve_root

ANNOTATIONS = {"test": "cars_test_annos_withlabels.mat", "train": "cars_train_annos.mat"}
LAYOUT = "the Stanford Cars folder holding cars_test/, devkit/cars_meta.mat and cars_test_annos_withlabels.mat"


def _load(path: Path) -> dict[str, Any]:
    try:
        return loadmat(path, simplify_cells=True)
    except (OSError, ValueError, NotImplementedError) as exc:
        raise DataError(f"cannot read {path} as a MATLAB file: {exc}") from exc


def _field(content: dict[str, Any], key: str, path: Path) -> Any:
    if key not in content:
        raise DataError(f"{path} has no variable {key!r} (found {sorted(k for k in content if not k.startswith('_'))})")
    return content[key]


@DATASETS.register("stanford_cars", help="Stanford Cars (cars_test/, devkit/cars_meta.mat, cars_test_annos_withlabels)")
class StanfordCars(LabelledImages):
    """Stanford Cars images with model names for prompts.

    Args:
        image_size: (height, width) of the returned images.
        root: The folder holding ``cars_test/`` and ``devkit/``.
        on_error: ``"raise"`` or ``"skip"`` for annotated images that are missing.
        split: ``"test"`` (8,041 images) or ``"train"`` (8,144).
        prompt_template: Text with one ``{}`` (CLIP: "a photo of a {}.").
    """

    dataset_name = "Stanford Cars"

    def __init__(self, image_size: tuple[int, int] | int, root: str | Path | None = None, on_error: str = "raise",
                 split: str = "test", prompt_template: str = DEFAULT_TEMPLATE) -> None:
        super().__init__(image_size, on_error, prompt_template)
        check_choice("split", split, tuple(ANNOTATIONS), self.dataset_name)
        self.root = resolve_root(root, self.dataset_name, LAYOUT, lambda p: (p / "devkit" / "cars_meta.mat").is_file(),
                                 ("stanford_cars", "stanford-cars"))
        meta = self.root / "devkit" / "cars_meta.mat"
        names = [str(n) for n in np.atleast_1d(_field(_load(meta), "class_names", meta))]
        candidates = [self.root / ANNOTATIONS[split], self.root / "devkit" / ANNOTATIONS[split]]
        annotations = next((p for p in candidates if p.is_file()), None)
        if annotations is None:
            raise DataError(f"Stanford Cars: no {ANNOTATIONS[split]} in {self.root} or its devkit/; pass --data-root "
                            f"pointing at {LAYOUT}")
        rows = np.atleast_1d(_field(_load(annotations), "annotations", annotations))
        folder = self.root / f"cars_{split}"
        entries = []
        for row in rows:
            if not isinstance(row, dict) or "fname" not in row or "class" not in row:
                raise DataError(f"{annotations}: annotations lack 'fname' and 'class' (is it the file with labels?)")
            label = int(row["class"]) - 1
            if not 0 <= label < len(names):
                raise DataError(f"{annotations}: class {row['class']} of {row['fname']} is outside 1..{len(names)}")
            path = folder / str(row["fname"])
            if path.is_file():
                entries.append((f"cars_{split}/{row['fname']}", path, label))
            else:
                self._problem("image missing", f"{path} (annotated in {annotations.name}) does not exist")
        self._set_entries(names, entries, self.root)
