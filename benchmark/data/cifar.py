"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) in their "python version" archives, zero-shot datasets of the
AFT paper's Table 2 (after CLIP's benchmark)::

    cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch, batches.meta
    cifar-100-python/train, test, meta

Each batch is a pickled dict with ``b"data"`` (N x 3072 uint8: the red, green and blue 32 x 32 planes, row
by row) and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100, the 100 classes CLIP evaluates);
the meta file names the classes (``_`` read as a space). The pickles are read with an allow-list
(:mod:`aft_bench.data.safe_pickle`), never with a plain ``pickle.load``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aft_bench.core.registries import DATASETS
from aft_bench.data.array_images import ArrayImages
from aft_bench.data.base import DataError
from aft_bench.data.labelled_folders import DEFAULT_TEMPLATE, check_choice, resolve_root
from aft_bench.data.safe_pickle import load_array_pickle


def _field(batch: Any, key: bytes, source: Path) -> Any:
    if not isinstance(batch, dict) or key not in batch:
        found = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{source} lacks {key!r} (found {found}); is it a CIFAR python-version file?")
    return batch[key]


class _Cifar(ArrayImages):
    """The common reader; subclasses name the archive's files and keys."""

    folder: ClassVar[str] = ""
    files: ClassVar[dict[str, tuple[str, ...]]] = {}
    meta: ClassVar[tuple[str, bytes]] = ("", b"")
    label_key: ClassVar[bytes] = b""

    def __init__(self, image_size: tuple[int, int] | int, root: str | Path | None = None, on_error: str = "raise",
                 split: str = "test", prompt_template: str = DEFAULT_TEMPLATE) -> None:
        super().__init__(image_size, on_error, prompt_template)
        check_choice("split", split, tuple(self.files), self.dataset_name)
        layout = f"the {self.folder} folder holding {', '.join(self.files[split])} and {self.meta[0]}"
        self.root = resolve_root(root, self.dataset_name, layout, lambda p: (p / self.meta[0]).is_file(),
                                 (self.folder,))
        meta_path = self.root / self.meta[0]
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in _field(load_array_pickle(meta_path), self.meta[1], meta_path)]
        images, labels = [], []
        for name in self.files[split]:
            path = self.root / name
            if not path.is_file():
                raise DataError(f"{self.dataset_name}: {path} is missing; pass --data-root pointing at {layout}")
            batch = load_array_pickle(path)
            data = np.asarray(_field(batch, b"data", path), dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise DataError(f"{path}: data has shape {data.shape}, expected N x 3072")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.extend(_field(batch, self.label_key, path))
        self._set_arrays(split, np.concatenate(images), labels, [n.replace("_", " ") for n in names], str(self.root))


@DATASETS.register("cifar10", help="CIFAR-10 python batches, split=test|train; read without plain pickle")
class CIFAR10(_Cifar):
    """CIFAR-10: 10 classes, test split of 10,000 images (``split=train``: 50,000).

    Args:
        image_size: (height, width) of the returned images.
        root: The ``cifar-10-batches-py`` folder (or the folder it was extracted into).
        on_error: ``"raise"`` or ``"skip"`` (nothing to skip in an array).
        split: ``"test"`` or ``"train"``.
        prompt_template: Text with one ``{}`` for the class name.
    """

    dataset_name = "CIFAR-10"
    folder = "cifar-10-batches-py"
    files = {"test": ("test_batch",), "train": tuple(f"data_batch_{i}" for i in range(1, 6))}
    meta = ("batches.meta", b"label_names")
    label_key = b"labels"


@DATASETS.register("cifar100", help="CIFAR-100 python batches (cifar-100-python), fine labels, split=test|train")
class CIFAR100(_Cifar):
    """CIFAR-100: the 100 fine classes, test split of 10,000 images (``split=train``: 50,000).

    Args: as :class:`CIFAR10`, with ``root`` the ``cifar-100-python`` folder.
    """

    dataset_name = "CIFAR-100"
    folder = "cifar-100-python"
    files = {"test": ("test",), "train": ("train",)}
    meta = ("meta", b"fine_label_names")
    label_key = b"fine_labels"
