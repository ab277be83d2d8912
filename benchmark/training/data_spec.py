"""``--data`` of ``aft-bench train``: which dataset the trainer reads, checked before any model loads.

Every form names a dataset of :mod:`aft_bench.data`, read through :class:`~aft_bench.training.sources.TrainSource`
(pixels in [0, 1] at the encoder's input size, resized and centre-cropped with CLIP's preprocessing):

- ``shapes``, ``shapes:N`` or ``shapes:N,shortcut=A``: the generated shapes world
  (:class:`~aft_bench.data.shapes.ShapesDataset`, train split, seed 0, N samples, default 10000), with captions
  and class labels (the "{colour} {shape}" classes); ``shortcut=A`` plants the class pattern at A/255
  (:mod:`aft_bench.data.shortcut`), as the ``toy-shortcut`` CLIP was trained with;
- a folder: every image below it, searched recursively in sorted order, without captions
  (:class:`~aft_bench.data.image_tree.ImageTree`); when every image lies directly in a sub-folder
  (``root/<class>/*.jpg``, the ImageNet train layout) the sub-folders are its classes (ImageNet wnids get CLIP's
  class names), which the class-supervised objectives (TeCoA, PMG-AFT) need;
- a ``.csv`` or ``.jsonl`` file of (path, caption) rows, for supervised AFT
  (:class:`~aft_bench.data.caption_file.CaptionFile`; relative paths start from ``--data-root``, default the
  file's folder);
- ``coco:ANNOTATIONS.json`` with ``--data-root IMAGES``: COCO's caption annotation file, one of each image's
  captions per epoch drawn with the run's seed (:class:`~aft_bench.data.coco_captions.CocoCaptions`).

The encoder card records the source's description (:meth:`TrainSource.describe`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aft_bench.data.base import DataError
from aft_bench.data.caption_file import CAPTION_SUFFIXES, CaptionFile
from aft_bench.data.coco_captions import CocoCaptions
from aft_bench.data.image_tree import ImageTree
from aft_bench.data.shapes import ShapesDataset
from aft_bench.data.shortcut import check_amplitude
from aft_bench.training.sources import TrainSource

DEFAULT_SHAPES_SIZE = 10000
SHAPES_SEED = 0
"""The shapes world the trainer reads (its train split; the run's seed orders the samples, it does not pick them)."""
COCO_PREFIX = "coco"


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
    dataset = ShapesDataset(image_size, split="train", size=size, seed=SHAPES_SEED, shortcut=shortcut)
    height, width = dataset.image_size
    planted = f", class pattern at {shortcut:g}/255" if shortcut else ""
    return TrainSource(dataset, f"shapes:{size} (seed {SHAPES_SEED}, train split, {height}x{width}{planted})",
                       captions=True)


def _check_coco(arg: str | None, root: str | None) -> None:
    """A ``coco:`` spec names an existing annotation file, and ``--data-root`` an image folder."""
    path = Path(arg or "")
    if not path.is_file():
        raise DataError(f"--data coco:{path}: the caption annotation file does not exist (COCO's "
                        "annotations/captions_train2017.json)")
    if root is None:
        raise DataError(f"--data coco:{path} needs --data-root, the folder of the images its file_name entries "
                        "name (e.g. /data/coco/train2017)")
    if not Path(root).is_dir():
        raise DataError(f"--data-root {root}: not a folder; give the folder of the COCO images (e.g. train2017)")


def _coco(arg: str | None, image_size: tuple[int, int], root: str | None, run_seed: int) -> TrainSource:
    path, images = Path(arg or ""), Path(root or "")
    dataset = CocoCaptions(image_size, root=images, annotations=path, seed=run_seed)
    left_out = f", {dataset.uncaptioned} without captions left out" if dataset.uncaptioned else ""
    return TrainSource(dataset, f"coco:{path} ({len(dataset)} captioned images under {images}{left_out})",
                       captions=True)


def _folder(path: Path, image_size: tuple[int, int], root: str | None) -> TrainSource:
    dataset = ImageTree(image_size, root=path)
    classes = f" in {len(dataset.classnames)} class folders" if dataset.classnames else ""
    return TrainSource(dataset, f"{path} ({len(dataset)} images{classes})", captions=False)


def _caption_file(path: Path, image_size: tuple[int, int], root: str | None) -> TrainSource:
    dataset = CaptionFile(image_size, root=root, file=path)
    return TrainSource(dataset, f"{path} ({len(dataset)} captioned images)", captions=True)


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
    :func:`check_data`); ``root`` is ``--data-root``, ``run_seed`` the run's seed, for sources that draw per epoch
    (COCO's captions).

    Raises:
        DataError: For a bad spec (:func:`check_data`) or a dataset that cannot be read (naming the file).
    """
    check_data(spec, root)
    name, colon, arg = spec.partition(":")
    if name in PREFIXED:
        return PREFIXED[name][1](arg if colon else None, image_size, root, run_seed)
    path = Path(spec)
    return _folder(path, image_size, root) if path.is_dir() else _caption_file(path, image_size, root)
