"""Oxford Flowers-102 (Nilsback & Zisserman 2008), a zero-shot dataset of the AFT paper's Table 2::

    jpg/image_00001.jpg ... image_08189.jpg
    imagelabels.mat    "labels": 1 x 8189, classes 1..102
    setid.mat          "trnid", "valid", "tstid": image numbers of each split

The archive names no classes, so the names come from ``classnames=FILE`` (102 lines in class order) or
``classnames=clip_benchmark:flowers`` (CLIP Benchmark's list). The MATLAB files are read with scipy (data
only, no code).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import loadmat

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import DataError
from aft_bench.data.clip_benchmark import clip_benchmark_classnames, is_clip_benchmark
from aft_bench.data.labelled_folders import DEFAULT_TEMPLATE, LabelledImages, check_choice, resolve_root

SPLITS = {"test": "tstid", "train": "trnid", "val": "valid"}
LAYOUT = "the Flowers-102 folder holding jpg/, imagelabels.mat and setid.mat"


def read_mat_vector(path: Path, key: str) -> np.ndarray:
    """The 1-D integer vector ``key`` of a MATLAB file.

    Raises:
        DataError: Naming the file, if it is unreadable or lacks ``key``.
    """
    try:
        content = loadmat(path)
    except (OSError, ValueError, NotImplementedError) as exc:
        raise DataError(f"cannot read {path} as a MATLAB file: {exc}") from exc
    if key not in content:
        raise DataError(f"{path} has no variable {key!r} (found {sorted(k for k in content if not k.startswith('_'))})")
    return np.asarray(content[key]).astype(np.int64).reshape(-1)


@DATASETS.register("flowers102", help="Flowers-102 (jpg/, imagelabels.mat, setid.mat); classnames=FILE, split")
class Flowers102(LabelledImages):
    """Flowers-102 images with names from a class-name file.

    Args:
        image_size: (height, width) of the returned images.
        root: The folder holding ``jpg/``, ``imagelabels.mat`` and ``setid.mat``.
        on_error: ``"raise"`` or ``"skip"`` for listed images that are missing.
        split: ``"test"`` (6,149 images), ``"train"`` or ``"val"`` (1,020 each).
        classnames: File with the 102 class names, one per line in class order (required).
        prompt_template: Text with one ``{}`` (CLIP: "a photo of a {}, a type of flower.").
    """

    dataset_name = "Flowers-102"

    def __init__(self, image_size: tuple[int, int] | int, root: str | Path | None = None, on_error: str = "raise",
                 split: str = "test", classnames: str | Path | None = None,
                 prompt_template: str = DEFAULT_TEMPLATE) -> None:
        super().__init__(image_size, on_error, prompt_template)
        check_choice("split", split, tuple(SPLITS), self.dataset_name)
        self.root = resolve_root(root, self.dataset_name, LAYOUT, lambda p: (p / "imagelabels.mat").is_file(),
                                 ("flowers102", "flowers-102"))
        labels = read_mat_vector(self.root / "imagelabels.mat", "labels")
        if classnames is None:
            raise DataError("Flowers-102 names no classes: pass --dataset-arg classnames=FILE with the 102 names, "
                            "one per line in class order")
        names = (clip_benchmark_classnames(str(classnames)) if is_clip_benchmark(classnames) else
                 [line.strip() for line in Path(classnames).expanduser().read_text().splitlines() if line.strip()])
        if len(names) != labels.max():
            raise DataError(f"classnames file {classnames} has {len(names)} names for {labels.max()} classes")
        entries = []
        for number in read_mat_vector(self.root / "setid.mat", SPLITS[split]):
            if not 1 <= number <= len(labels):
                raise DataError(f"setid.mat lists image {number}, outside 1..{len(labels)} of imagelabels.mat")
            name = f"image_{number:05d}.jpg"
            path = self.root / "jpg" / name
            if path.is_file():
                entries.append((f"jpg/{name}", path, int(labels[number - 1]) - 1))
            else:
                self._problem("image missing", f"{path} (listed in setid.mat) does not exist")
        self._set_entries(names, entries, self.root)
