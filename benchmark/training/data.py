"""Training data: image folders, caption files and the shapes world, sharded across ranks.

Sources (all return pixels in [0, 1] at the encoder's input size, resized and centre-cropped with
CLIP's preprocessing, :func:`aft_bench.data.transforms.resize_center_crop`):

- ``shapes``, ``shapes:N`` or ``shapes:N,shortcut=A``: the generated shapes world (train split, N samples,
  default 10000), with class labels (the "{colour} {shape}" classes); ``shortcut=A`` plants the class pattern
  at A/255 (:mod:`aft_bench.data.shortcut`), as the ``toy-shortcut`` CLIP was trained with;
- a folder: every image below it, searched recursively in sorted order (so the ImageNet train
  layout ``class/xxx.JPEG`` and any image-only collection work alike); when every image lies directly in
  a sub-folder (``root/<class>/*.jpg``), the sub-folders are its classes (ImageNet wnids get CLIP's
  class names), which the class-supervised objectives (TeCoA, PMG-AFT) need;
- a ``.csv`` or ``.jsonl`` file of (path, caption) rows, for supervised AFT;
- ``coco:ANNOTATIONS.json`` with ``--data-root IMAGES``: COCO's caption annotation file, one of each image's
  captions per epoch (:mod:`aft_bench.data.coco_captions`).

Every source's ``load(index, epoch)`` may depend on the epoch (COCO's caption draw); the others ignore it.

:class:`ShardedBatches` draws one permutation per epoch from the seed, cuts it into global batches
and gives each rank a contiguous slice; its position (epoch, batch) is saved in checkpoints so a
resumed run sees exactly the batches it would have seen. A corrupt image fails the run with a
:class:`~aft_bench.data.base.DataError` naming the file (``on_error="raise"``, the default), or is skipped,
counted and logged with its path (``on_error="skip"``).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from aft_bench.data.base import DataError
from aft_bench.data.classnames import imagenet_classname, is_imagenet_wnid
from aft_bench.data.coco_captions import PREFIX as COCO_PREFIX
from aft_bench.data.coco_captions import CocoCaptionSource, check_coco
from aft_bench.data.io import read_image
from aft_bench.data.shapes import CLASSNAMES as SHAPES_CLASSNAMES
from aft_bench.data.shapes import caption as shapes_caption
from aft_bench.data.shapes import render_shapes_sample
from aft_bench.data.shortcut import check_amplitude
from aft_bench.data.transforms import resize_center_crop
from aft_bench.training.objectives.base import TrainBatch

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".gif"})
PATH_COLUMNS = ("path", "image", "filepath", "file", "image_path")
CAPTION_COLUMNS = ("caption", "text", "title")
DEFAULT_SHAPES_SIZE = 10000


class TrainSource(Protocol):
    """A map-style training set."""

    def __len__(self) -> int: ...

    def load(self, index: int, epoch: int = 0) -> tuple[Tensor, str | None]:
        """(3 x H x W pixels in [0, 1], caption or None) of sample ``index`` in ``epoch``; raises DataError naming
        the file."""
        ...

    def describe(self) -> str:
        """Where the data comes from (recorded in the encoder card)."""
        ...


class LabelledSource(TrainSource, Protocol):
    """A training set with one class label per image (TeCoA and PMG-AFT train on these).

    Attributes:
        classnames: The class names, in label order.
    """

    classnames: tuple[str, ...]

    def load_labelled(self, index: int, epoch: int = 0) -> tuple[Tensor, str | None, int]:
        """(pixels, caption or None, class index); raises DataError naming the file."""
        ...


class ShapesSource:
    """The train split of the generated shapes world (captions ``"a photo of a {colour} {shape}."``, labels
    index :data:`aft_bench.data.shapes.CLASSNAMES`)."""

    classnames: tuple[str, ...] = tuple(SHAPES_CLASSNAMES)

    def __init__(self, size: int, image_size: tuple[int, int], seed: int = 0, shortcut: float = 0.0) -> None:
        if size < 1:
            raise DataError(f"shapes:{size}: give a positive number of training samples")
        self.size, self.image_size, self.seed, self.shortcut = int(size), image_size, int(seed), float(shortcut)

    def __len__(self) -> int:
        return self.size

    def load(self, index: int, epoch: int = 0) -> tuple[Tensor, str | None]:
        image, text, _ = self.load_labelled(index)
        return image, text

    def load_labelled(self, index: int, epoch: int = 0) -> tuple[Tensor, str | None, int]:
        image, _, label = render_shapes_sample(self.seed, "train", index, self.image_size, self.shortcut)
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), shapes_caption(label), int(label)

    def describe(self) -> str:
        planted = f", class pattern at {self.shortcut:g}/255" if self.shortcut else ""
        return (f"shapes:{self.size} (seed {self.seed}, train split, {self.image_size[0]}x{self.image_size[1]}"
                f"{planted})")


class ImageFolderSource:
    """Every image file below ``root`` (recursive, sorted), without captions."""

    def __init__(self, root: str | Path, image_size: tuple[int, int], files: list[Path] | None = None) -> None:
        self.root, self.image_size = Path(root), image_size
        self.files = files if files is not None else sorted(
            p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise DataError(f"{self.root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found below it")

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int, epoch: int = 0) -> tuple[Tensor, str | None]:
        return resize_center_crop(read_image(self.files[index]), self.image_size), None

    def describe(self) -> str:
        return f"{self.root} ({len(self.files)} images)"


class ClassFolderSource(ImageFolderSource):
    """An ImageNet-train-style tree ``root/<class>/*.jpg``: the same images as :class:`ImageFolderSource`, in the
    same order, each labelled by its sub-folder (sorted folder names; wnids get CLIP's ImageNet class names,
    other folder names are used with underscores as spaces)."""

    def __init__(self, root: str | Path, image_size: tuple[int, int], files: list[Path] | None = None) -> None:
        super().__init__(root, image_size, files)
        folders = sorted({p.parent.name for p in self.files})
        self.classnames = tuple(imagenet_classname(f) if is_imagenet_wnid(f) else f.replace("_", " ")
                                for f in folders)
        index = {folder: i for i, folder in enumerate(folders)}
        self.labels = [index[p.parent.name] for p in self.files]

    @staticmethod
    def applies(files: list[Path], root: Path) -> bool:
        """Whether every image lies directly in a sub-folder of ``root`` (the class-folder layout)."""
        return bool(files) and all(p.parent.parent == root for p in files)

    def load_labelled(self, index: int, epoch: int = 0) -> tuple[Tensor, str | None, int]:
        image, text = self.load(index)
        return image, text, self.labels[index]

    def describe(self) -> str:
        return f"{self.root} ({len(self.files)} images in {len(self.classnames)} class folders)"


class CaptionSource:
    """Rows of (image path, caption) from a CSV (with a header) or JSONL file.

    Accepted column names: path/image/filepath/file/image_path and caption/text/title. Relative
    paths are resolved against ``root`` (default: the file's folder).
    """

    def __init__(self, path: str | Path, image_size: tuple[int, int], root: str | Path | None = None) -> None:
        self.path, self.image_size = Path(path), image_size
        if not self.path.is_file():
            raise DataError(f"caption file {self.path} does not exist")
        base = Path(root) if root else self.path.parent
        rows = _read_rows(self.path)
        if not rows:
            raise DataError(f"caption file {self.path} has no rows")
        path_key = _column(rows[0], PATH_COLUMNS, self.path)
        text_key = _column(rows[0], CAPTION_COLUMNS, self.path)
        self.items: list[tuple[Path, str]] = []
        for line, row in enumerate(rows, start=2 if self.path.suffix == ".csv" else 1):
            if not row.get(path_key) or row.get(text_key) is None:
                raise DataError(f"{self.path}, row {line}: empty {path_key!r} or missing {text_key!r}")
            file = Path(str(row[path_key]))
            self.items.append((file if file.is_absolute() else base / file, str(row[text_key])))

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int, epoch: int = 0) -> tuple[Tensor, str | None]:
        file, text = self.items[index]
        return resize_center_crop(read_image(file), self.image_size), text

    def describe(self) -> str:
        return f"{self.path} ({len(self.items)} captioned images)"


def _read_rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {line_no}: not valid JSON ({exc})") from exc
    return rows


def _column(row: dict, names: tuple[str, ...], path: Path) -> str:
    for name in names:
        if name in row:
            return name
    raise DataError(f"{path}: no column among {names}; found {sorted(row)}")


CAPTION_SUFFIXES: dict[str, Callable[..., TrainSource]] = {".csv": CaptionSource, ".jsonl": CaptionSource}


def _shapes_args(arg: str | None) -> tuple[int, float]:
    """``N`` and ``shortcut=A`` of ``shapes:N[,shortcut=A]`` (either may be left out)."""
    usage = "give shapes, shapes:N or shapes:N,shortcut=A with a positive number N of training samples"
    size, shortcut = DEFAULT_SHAPES_SIZE, 0.0
    for i, part in enumerate((arg or "").split(",") if arg else []):
        key, sep, value = part.partition("=")
        if not sep and i == 0 and part.isdigit() and int(part) > 0:
            size = int(part)
        elif sep and key == "shortcut":
            try:
                shortcut = check_amplitude(float(value))
            except ValueError as error:
                raise DataError(f"--data shapes:{arg}: {error}") from None
        else:
            raise DataError(f"--data shapes:{arg}: {part!r} is not understood; {usage}")
    return size, shortcut


def _check_shapes(arg: str | None, root: str | None) -> None:
    _shapes_args(arg)


def _shapes(arg: str | None, image_size: tuple[int, int], root: str | None, run_seed: int) -> TrainSource:
    size, shortcut = _shapes_args(arg)
    return ShapesSource(size, image_size, shortcut=shortcut)


def _check_coco(arg: str | None, root: str | None) -> None:
    check_coco(Path(arg or ""), root)


def _coco(arg: str | None, image_size: tuple[int, int], root: str | None, run_seed: int) -> TrainSource:
    return CocoCaptionSource(Path(arg or ""), image_size, root or "", seed=run_seed)


PREFIXED: dict[str, tuple[Callable[[str | None, str | None], None], Callable[..., TrainSource]]] = {
    "shapes": (_check_shapes, _shapes),
    COCO_PREFIX: (_check_coco, _coco),
}
"""``--data NAME[:ARG]`` sources: name -> (check of ARG and --data-root, builder)."""


def check_data(spec: str, root: str | None = None) -> None:
    """Checks ``--data`` without reading any image: ``shapes[:N]`` with a positive N, ``coco:FILE`` with an
    existing file and ``--data-root`` folder (``root``), an existing folder, or an existing ``.csv``/``.jsonl``
    caption file.

    Raises:
        DataError: Naming the value and what it should be.
    """
    name, colon, arg = spec.partition(":")
    if name in PREFIXED:
        PREFIXED[name][0](arg if colon else None, root)
        return
    path = Path(spec)
    if path.is_dir():
        return
    if path.suffix.lower() in CAPTION_SUFFIXES:
        if not path.is_file():
            raise DataError(f"--data {spec!r}: caption file {path} does not exist")
        return
    raise DataError(f"--data {spec!r}: not 'shapes[:N]', 'coco:FILE', an existing folder of images, or a "
                    ".csv/.jsonl caption file (the paper presets need --data /path/to/imagenet/train)")


def make_source(spec: str, image_size: tuple[int, int], root: str | None = None, run_seed: int = 0) -> TrainSource:
    """The training source named by ``spec`` (``shapes[:N]``, ``coco:FILE``, a folder, or a caption file; see
    :func:`check_data`); ``run_seed`` is the run's seed, for sources that draw per epoch (COCO's captions)."""
    check_data(spec, root)
    name, colon, arg = spec.partition(":")
    if name in PREFIXED:
        return PREFIXED[name][1](arg if colon else None, image_size, root, run_seed)
    path = Path(spec)
    if path.is_dir():
        folder = ImageFolderSource(path, image_size)
        if ClassFolderSource.applies(folder.files, folder.root):
            return ClassFolderSource(path, image_size, folder.files)
        return folder
    return CAPTION_SUFFIXES[path.suffix.lower()](path, image_size, root)


class _LocalBatches(TorchDataset):
    """Item j = this rank's slice of global batch j of one epoch, loaded (possibly in a worker)."""

    def __init__(self, source: TrainSource, epoch: int, order: np.ndarray, batch_size: int, rank: int, local: int,
                 on_error: str) -> None:
        self.source, self.epoch, self.order, self.batch_size = source, epoch, order, batch_size
        self.rank, self.local, self.on_error = rank, local, on_error

    def __len__(self) -> int:
        return len(self.order) // self.batch_size

    def __getitem__(self, j: int) -> tuple[Tensor, list[int], list[str | None], list[int] | None, list[str]]:
        start = j * self.batch_size + self.rank * self.local
        labelled = hasattr(self.source, "load_labelled")
        images, indices, captions, labels, skipped = [], [], [], [], []
        for index in self.order[start : start + self.local].tolist():
            try:
                image, text, label = (self.source.load_labelled(index, self.epoch) if labelled
                                      else (*self.source.load(index, self.epoch), -1))
            except DataError as exc:
                if self.on_error == "raise":
                    raise
                skipped.append(str(exc))
                continue
            images.append(image)
            indices.append(index)
            captions.append(text)
            labels.append(label)
        if not images:
            raise DataError(f"every image of global batch {j} on rank {self.rank} is unreadable: {skipped[:3]}")
        return torch.stack(images), indices, captions, labels if labelled else None, skipped


class ShardedBatches:
    """Endless, resumable, rank-sharded batches over a source.

    Args:
        source: The training set.
        batch_size: Global batch size (a multiple of ``world_size``).
        seed: Seeds the per-epoch permutations.
        rank: This process's rank.
        world_size: Number of ranks.
        workers: DataLoader worker processes.
        on_error: ``raise`` (fail naming the file) or ``skip`` (count and log) for unreadable images.
    """

    def __init__(self, source: TrainSource, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 workers: int = 0, on_error: str = "raise") -> None:
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not a multiple of the {world_size} ranks")
        if len(source) < batch_size:
            raise DataError(f"the data has {len(source)} samples, fewer than one batch of {batch_size}")
        self.source, self.batch_size, self.seed = source, batch_size, int(seed)
        self.rank, self.world_size, self.workers, self.on_error = rank, world_size, workers, on_error
        self.epoch, self.batch = 0, 0
        self.skipped = 0

    @property
    def batches_per_epoch(self) -> int:
        return len(self.source) // self.batch_size

    def order(self, epoch: int) -> np.ndarray:
        """The sample permutation of ``epoch``."""
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.source))

    def state_dict(self) -> dict[str, int]:
        """Position of the next batch and this rank's count of skipped images."""
        return {"epoch": self.epoch, "batch": self.batch, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch, self.skipped = int(state["epoch"]), int(state["batch"]), int(state["skipped"])

    def __iter__(self) -> Iterator[TrainBatch]:
        local = self.batch_size // self.world_size
        while True:
            dataset = _LocalBatches(self.source, self.epoch, self.order(self.epoch), self.batch_size, self.rank,
                                    local, self.on_error)
            loader = DataLoader(dataset, batch_size=None, sampler=range(self.batch, len(dataset)),
                                num_workers=self.workers, collate_fn=None)
            classnames = getattr(self.source, "classnames", None)
            for images, indices, captions, labels, skipped in loader:
                for message in skipped:
                    log.warning("skipped unreadable image: %s", message)
                self.skipped += len(skipped)
                self.batch += 1
                yield TrainBatch(images=images, indices=list(indices), captions=list(captions),
                                 labels=None if labels is None else torch.as_tensor(labels, dtype=torch.long),
                                 classnames=None if labels is None else tuple(classnames))
            self.epoch, self.batch = self.epoch + 1, 0
