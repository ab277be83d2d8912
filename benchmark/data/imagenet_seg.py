"""ImageNet-Segmentation: 4,276 ImageNet images with object/background masks, one MATLAB file.

The masks are the ground truth of Guillaumin, Küttel and Ferrari 2014 ("ImageNet auto-annotation with
segmentation propagation", IJCV), distributed as ``gtsegs_ijcv.mat``; Chefer, Gur and Wolf 2021
("Transformer interpretability beyond attention visualization") made it a standard benchmark for
ViT saliency maps (pointing game, pixel accuracy, mIoU, AP).

The file is MATLAB v7.3, i.e. HDF5, read here with h5py. MATLAB stores arrays column-major, so
every array appears transposed. Its struct ``value`` holds cell arrays (N x 1 datasets of object
references into ``#refs#``):

* ``/value/img[i]`` -> the image, uint8 3 x W x H (transpose to H x W x 3); a grey image is W x H;
* ``/value/gt[i]`` -> a 1 x 1 cell -> the mask, W x H (transpose to H x W), nonzero = object;
* ``/value/id[i]`` -> the ImageNet image name as a MATLAB char array (uint16 code units), e.g.
  ``n01440764_18``, whose prefix is the image's WordNet id (read when present).

Labels and prompts: the images come from about 445 ImageNet synsets, not all of them ImageNet-1k
classes. When the synset of an image is one of the 1000 classes, ``label`` is its ImageNet-1k index
and the prompt is ``prompt_template`` with CLIP's class name; otherwise (or with
``use_labels=False``, or when the file has no ``id`` field) ``label`` is -1 and the prompt is the
generic ``prompt``. A text target on a generic prompt is not class-specific: for the protocol of
Chefer et al. (the explained class is the model's top-1 prediction) use a target that predicts the
class (probe or zero-shot top-1 over ``classnames``).

Sample ids are ``imagenet_seg/<index>`` (0-based order of the file). The HDF5 handle is opened
lazily in each process (h5py handles must not cross a fork), so the dataset works in DataLoader
workers.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import h5py
import numpy as np
import torch

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import BACKGROUND, FOREGROUND, DataError, Sample
from aft_bench.data.class_images import check_image_size, check_on_error
from aft_bench.data.classnames import imagenet_classnames, imagenet_index, is_imagenet_wnid
from aft_bench.data.io import REMEDY
from aft_bench.data.labelled_folders import DEFAULT_TEMPLATE
from aft_bench.data.transforms import mask_indices, resize_center_crop, resize_center_crop_uint8

logger = logging.getLogger(__name__)

DEFAULT_FILE = "gtsegs_ijcv.mat"
IMAGE_KEY, MASK_KEY, NAME_KEY = "/value/img", "/value/gt", "/value/id"
ID_PREFIX = "imagenet_seg/"
DEFAULT_PROMPT = "a photo of the main object."
LAYOUT = f"the file {DEFAULT_FILE} (MATLAB v7.3 / HDF5) of ImageNet-Segmentation, or the folder holding it"
# h5py raises these for bad references, missing members and damaged files
_H5_ERRORS = (KeyError, ValueError, OSError, TypeError, RuntimeError)


def _is_reference(dataset: h5py.Dataset) -> bool:
    return h5py.check_dtype(ref=dataset.dtype) is h5py.Reference


def decode_matlab_chars(array: np.ndarray) -> str:
    """A MATLAB char array (uint16 UTF-16 code units, any shape) -> str."""
    return "".join(chr(int(c)) for c in np.asarray(array).ravel() if c)


def _to_unit(array: np.ndarray, where: str) -> np.ndarray:
    """Integer or float pixels -> float32 in [0, 1]."""
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    pixels = array.astype(np.float32)
    if not np.isfinite(pixels).all() or pixels.min(initial=0.0) < 0.0 or pixels.max(initial=0.0) > 1.0:
        raise DataError(f"{where}: float image values outside [0, 1]; {REMEDY}")
    return pixels


@DATASETS.register("imagenet_seg", help="ImageNet-Segmentation gtsegs_ijcv.mat (4,276 images); --data-root: the .mat")
class ImageNetSegmentation:
    """ImageNet-Segmentation images with object masks (Guillaumin et al. 2014; Chefer et al. 2021).

    Args:
        image_size: (height, width) of the returned images and masks (shorter-side resize + center crop).
        root: ``gtsegs_ijcv.mat`` or the folder holding it.
        on_error: ``"raise"`` or ``"skip"``; the file has no listing problems, so this only sets how
            tasks treat unreadable samples (``load`` always raises).
        prompt_template: Text with one ``{}`` for the class name (images of an ImageNet-1k class).
        prompt: Text for the other images (see the module docstring).
        use_labels: Read the ImageNet synset of each image from ``/value/id``; False gives every
            image label -1 and ``prompt``.

    Attributes:
        classnames: The 1000 ImageNet-1k class names; ``Sample.label`` indexes it (-1: not a 1k class).
        image_names: The ImageNet image name of each sample ("" when the file has none).
        skipped: Always empty (kept for the dataset contract).
        data_version: Bumped when the pixels a sample loads as change; part of every run key on this dataset. 2:
            uint8 images resized in uint8 (within about 1/255 per pixel of version 1's float resize).

    Raises:
        DataError: If the file is missing, not HDF5, or lacks ``/value/img`` / ``/value/gt``.
    """

    data_version: ClassVar[int] = 2

    def __init__(
        self,
        image_size: tuple[int, int] | int,
        root: str | Path | None = None,
        on_error: str = "raise",
        prompt_template: str = DEFAULT_TEMPLATE,
        prompt: str = DEFAULT_PROMPT,
        use_labels: bool = True,
    ) -> None:
        if prompt_template.count("{}") != 1:
            raise ValueError(
                f"prompt_template must contain exactly one '{{}}' for the class name: {prompt_template!r}"
            )
        self.image_size = check_image_size(image_size)
        self.on_error = check_on_error(on_error)
        self.prompt_template, self.prompt = prompt_template, prompt
        self.path = self._find_file(root)
        self.classnames: list[str] = imagenet_classnames()
        self.skipped: dict[str, int] = {}
        self._handle: h5py.File | None = None
        self._pid: int | None = None
        with self._open() as f:
            size = self._check_layout(f)
            names = self._read_names(f, size) if use_labels and NAME_KEY in f else [""] * size
        self.image_names = names
        self._labels = [self._label(name) for name in names]
        self._ids = [f"{ID_PREFIX}{i}" for i in range(size)]
        unlabelled = sum(label < 0 for label in self._labels)
        if unlabelled:
            logger.info(
                "ImageNet-Segmentation: %d of %d images are not of an ImageNet-1k class (or unlabelled): "
                "label -1, prompt %r", unlabelled, size, prompt,
            )

    # ------------------------------------------------------------------ file

    @staticmethod
    def _find_file(root: str | Path | None) -> Path:
        if root is None:
            raise DataError(f"ImageNet-Segmentation needs --data-root pointing at {LAYOUT}")
        path = Path(root).expanduser()
        if path.is_dir():
            if (path / DEFAULT_FILE).is_file():
                return path / DEFAULT_FILE
            found = sorted(p.name for p in path.glob("*.mat"))
            hint = f" (it holds {found}: pass the file itself)" if found else ""
            raise DataError(f"ImageNet-Segmentation: no {DEFAULT_FILE} in {str(path)!r}{hint}; expected {LAYOUT}")
        if not path.is_file():
            raise DataError(
                f"ImageNet-Segmentation: {str(path)!r} does not exist; pass --data-root pointing at {LAYOUT}"
            )
        return path

    def _open(self) -> h5py.File:
        try:
            return h5py.File(self.path, "r")
        except OSError as err:
            raise DataError(
                f"{self.path}: cannot open as HDF5 (MATLAB v7.3) file ({err}); re-download {DEFAULT_FILE}"
            ) from err

    def _file(self) -> h5py.File:
        """This process's handle, opened on first use (never shared across a fork)."""
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = self._open(), os.getpid()
        return self._handle

    def close(self) -> None:
        """Closes this process's handle (it reopens on the next load)."""
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = self._pid = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"] = state["_pid"] = None
        return state

    def _check_layout(self, f: h5py.File) -> int:
        for key in (IMAGE_KEY, MASK_KEY):
            if key not in f or not isinstance(f[key], h5py.Dataset) or not _is_reference(f[key]):
                raise DataError(f"{self.path}: no cell array {key}; is this {DEFAULT_FILE}? expected {LAYOUT}")
        images, masks = f[IMAGE_KEY].size, f[MASK_KEY].size
        if images != masks:
            raise DataError(f"{self.path}: {images} images but {masks} masks; re-download {DEFAULT_FILE}")
        if images == 0:
            raise DataError(f"{self.path}: holds no images; re-download {DEFAULT_FILE}")
        return int(images)

    def _member(self, f: h5py.File, key: str, index: int) -> h5py.Dataset:
        """Element ``index`` of cell array ``key``, following nested cells to the array."""
        try:
            cell = f[key]
            obj = f[cell[np.unravel_index(index, cell.shape)]]
            while isinstance(obj, h5py.Dataset) and _is_reference(obj):
                if obj.size != 1:
                    raise ValueError(f"nested cell of {obj.size} elements")
                obj = f[obj[()].ravel()[0]]
        except _H5_ERRORS as err:
            raise DataError(f"{self.path}: cannot read {key}[{index}] ({type(err).__name__}: {err}); {REMEDY}") from err
        if not isinstance(obj, h5py.Dataset):
            raise DataError(f"{self.path}: {key}[{index}] is not an array; {REMEDY}")
        return obj

    def _read_names(self, f: h5py.File, size: int) -> list[str]:
        if f[NAME_KEY].size != size:
            logger.warning("%s: %s has %d entries for %d images; ignoring names", self.path, NAME_KEY,
                           f[NAME_KEY].size, size)
            return [""] * size
        return [decode_matlab_chars(self._member(f, NAME_KEY, i)[()]).strip() for i in range(size)]

    @staticmethod
    def _label(name: str) -> int:
        wnid = name.split("_", 1)[0]
        return imagenet_index(wnid) if is_imagenet_wnid(wnid) else -1

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> list[str]:
        """``imagenet_seg/<index>`` in file order."""
        return list(self._ids)

    def index(self, sample_id: str) -> int:
        """Position of a sample in the file."""
        number = sample_id[len(ID_PREFIX):] if sample_id.startswith(ID_PREFIX) else ""
        if not number.isdigit() or int(number) >= len(self._ids) or sample_id != f"{ID_PREFIX}{int(number)}":
            raise DataError(
                f"unknown ImageNet-Segmentation sample id {sample_id!r}; ids are "
                f"'{ID_PREFIX}0' .. '{ID_PREFIX}{len(self._ids) - 1}'"
            )
        return int(number)

    def source_files(self, sample_id: str) -> list[Path]:
        """The file :meth:`load` reads (the one HDF5 file of every sample), for ``--cache-samples``
        (:mod:`aft_bench.data.sample_cache`)."""
        self.index(sample_id)  # an unknown id fails here, naming it
        return [self.path]

    def label(self, sample_id: str) -> int:
        """ImageNet-1k index of a sample's class, -1 when unknown."""
        return self._labels[self.index(sample_id)]

    def read(self, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The stored image (H x W x 3 float32 in [0, 1]) and mask (H x W bool), untransformed."""
        image, mask, where = self._stored(sample_id)
        return np.ascontiguousarray(_to_unit(image, where)), mask

    def _stored(self, sample_id: str) -> tuple[np.ndarray, np.ndarray, str]:
        """The stored image (H x W x 3, its stored dtype, a transposed view), mask (H x W bool) and where they are
        (for messages), checked."""
        i = self.index(sample_id)
        f = self._file()
        where = f"{self.path} image {i}"
        image_array, mask_array = self._member(f, IMAGE_KEY, i), self._member(f, MASK_KEY, i)
        try:
            stored, stored_mask = image_array[()], mask_array[()]
        except _H5_ERRORS as err:
            raise DataError(f"{where}: unreadable ({type(err).__name__}: {err}); {REMEDY}") from err
        if stored.ndim == 3 and stored.shape[0] == 3:
            image = stored.transpose(2, 1, 0)  # 3 x W x H -> H x W x 3
        elif stored.ndim == 2:
            image = np.repeat(stored.T[..., None], 3, axis=2)  # grey W x H
        else:
            raise DataError(f"{where}: image array of shape {stored.shape}, expected 3 x W x H; {REMEDY}")
        if stored_mask.ndim != 2:
            raise DataError(f"{where}: mask array of shape {stored_mask.shape}, expected W x H; {REMEDY}")
        mask = stored_mask.T != 0
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{where}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but the image is "
                f"{image.shape[1]}x{image.shape[0]}; {REMEDY}"
            )
        return image, mask, where

    def load(self, sample_id: str) -> Sample:
        """Reads, transposes, checks and resizes one image and its mask: a uint8 image (the file's own type)
        resized in uint8 and returned as uint8 levels, like ImageNet-S (:attr:`data_version` 2), any other through
        float; the mask indexed down to the target grid, then labelled.

        Raises:
            DataError: If the id is unknown or the stored arrays are unreadable or inconsistent.
        """
        image, mask, where = self._stored(sample_id)
        label = self._labels[self.index(sample_id)]
        if image.dtype == np.uint8:
            pixels = resize_center_crop_uint8(torch.from_numpy(image).permute(2, 0, 1), self.image_size)
        else:
            pixels = resize_center_crop(torch.from_numpy(_to_unit(image, where)).permute(2, 0, 1), self.image_size)
        rows, cols = mask_indices(*mask.shape, self.image_size)
        small = mask.take(rows.numpy(), axis=0).take(cols.numpy(), axis=1)
        return Sample(
            id=sample_id,
            image=pixels,
            prompt=self.prompt_template.format(self.classnames[label]) if label >= 0 else self.prompt,
            label=label,
            mask=torch.from_numpy(np.where(small, np.int8(FOREGROUND), np.int8(BACKGROUND))),
        )
