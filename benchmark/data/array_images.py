"""Shared base of the datasets that ship their images as one uint8 array (CIFAR, STL-10, PCAM).

Zero-shot benchmarks (CLIP's, and the AFT paper's Table 2 after it) include datasets distributed as
arrays rather than image files. A subclass hands this base an ``N x H x W x 3`` uint8 array-like (a numpy
array, a memory map or an HDF5 dataset: only ``images[i]`` is read, when sample ``i`` is loaded), the
labels and the class names; the base gives them the :class:`~aft_bench.data.base.Dataset` interface with
CLIP's preprocessing and prompts, as :class:`~aft_bench.data.labelled_folders.LabelledImages` does for
image files. Sample ids are ``<split>/<index>`` (``test/000042``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from aft_bench.data.base import DataError, Sample
from aft_bench.data.class_images import ClassImages


class ArrayImages(ClassImages):
    """Images in a uint8 array with one class label each (see the module docstring).

    Args:
        image_size: (height, width) of the returned images (shorter-side resize + center crop).
        on_error: Kept for the dataset interface (an array has no unreadable items).
        prompt_template: Text with one ``{}`` for the class name.

    Attributes:
        classnames: Class names; ``Sample.label`` indexes this list.
        skipped: Always empty (nothing is skipped when listing an array).
    """

    #: Dataset name used in messages.
    dataset_name = "array images"

    def __init__(self, image_size: tuple[int, int] | int, on_error: str, prompt_template: str) -> None:
        super().__init__(image_size, on_error, prompt_template)
        self._images: Any = None
        self._labels = np.zeros(0, dtype=np.int64)
        self.split = ""

    def _set_arrays(self, split: str, images: Any, labels: Sequence[int] | np.ndarray, classnames: Sequence[str],
                    source: str) -> None:
        """Stores the images (N x H x W x 3 uint8), their labels and the class names.

        Raises:
            DataError: Naming ``source``, if the shapes disagree, the array is not RGB uint8, or a label is
                outside the classes.
        """
        labels = np.asarray(labels).astype(np.int64).reshape(-1)
        shape = tuple(images.shape)
        if len(shape) != 4 or shape[3] != 3 or np.dtype(images.dtype) != np.uint8:
            raise DataError(f"{self.dataset_name}: {source} holds {shape} {images.dtype} images, expected "
                            "N x H x W x 3 uint8")
        if shape[0] != len(labels):
            raise DataError(f"{self.dataset_name}: {source} has {shape[0]} images but {len(labels)} labels")
        if shape[0] == 0:
            raise DataError(f"{self.dataset_name}: {source} holds no images")
        if labels.min() < 0 or labels.max() >= len(classnames):
            raise DataError(f"{self.dataset_name}: {source} has labels in {labels.min()}..{labels.max()} for "
                            f"{len(classnames)} classes")
        self.split, self._images, self._labels, self.classnames = split, images, labels, list(classnames)

    def __len__(self) -> int:
        return len(self._labels)

    def ids(self) -> list[str]:
        """``<split>/<index>`` for every image, in array order."""
        return [f"{self.split}/{i:06d}" for i in range(len(self))]

    def labels(self) -> list[int]:
        """Class indices of all samples in :meth:`ids` order (for probes and stratification)."""
        return self._labels.tolist()

    def _index(self, sample_id: str) -> int:
        split, _, number = sample_id.partition("/")
        if split != self.split or not number.isdigit() or int(number) >= len(self):
            raise DataError(f"unknown {self.dataset_name} sample id {sample_id!r}; see ids() for valid ids")
        return int(number)

    def label(self, sample_id: str) -> int:
        """The class index of a sample, without reading the image."""
        return int(self._labels[self._index(sample_id)])

    def load(self, sample_id: str) -> Sample:
        """Reads and resizes one image."""
        index = self._index(sample_id)
        pixels = torch.from_numpy(np.ascontiguousarray(self._images[index])).permute(2, 0, 1).float().div_(255)
        return self._sample(sample_id, pixels, int(self._labels[index]))
