"""The data side of ROAR (Hooker et al. 2019): dataset splits, cached pixel rankings, removed images.

ROAR retrains a model on images whose top-k% pixels (by a saliency map) are removed, for several
fractions and seeds. Saliency is computed once per (encoder, attribution, split): each image's map is
reduced to its pixel ranks (:func:`aft_bench.metrics.removal.pixel_ranks`; 0 = most salient) and stored
in a numpy memmap in the run folder (uint16 per pixel for images up to 256 x 256, int32 above), so every
fraction and seed reads the ranks from disk and no map is held in memory. A :class:`Split` streams the
images of a labelled dataset split in batches; when the whole split fits in ``image_cache_mb`` it is
loaded once and kept in memory (the default shapes world: 700 images of 64 x 64, 34 MB), otherwise it
is read from the dataset on every pass. :class:`RandomBaseline` is ROAR's random-removal baseline as a
pseudo-attribution.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from aft_bench.atomic import atomic_write, atomic_write_text
from aft_bench.attributions.base import Attribution, Target
from aft_bench.data.base import Batch, DataError, Dataset, Sample
from aft_bench.encoder import Encoder
from aft_bench.metrics.removal import pixel_ranks, random_maps, removal_masks

log = logging.getLogger(__name__)

RANDOM = "random"
"""Name of the random-removal baseline row."""


class RandomBaseline(Attribution):
    """Random removal (Hooker et al. 2019): a uniform random score per pixel, the floor every map must beat.

    The map of an image depends only on ``seed`` and the image's pixels (a CRC-32 of its float32
    values picks the random stream, :func:`aft_bench.metrics.removal.random_maps`), so it is the same
    in any batch, on any device, in train and test passes.
    """

    name = RANDOM

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def attribute(self, encoder: Encoder, images: Tensor, target: Target) -> Tensor:
        keys = [content_key(image) for image in images.detach().to("cpu", torch.float32)]
        maps = random_maps(keys, images.shape[2], images.shape[3], self.seed)
        return maps.to(device=images.device, dtype=torch.float32)


def content_key(image: Tensor) -> int:
    """CRC-32 of an image's float32 pixel values (a stable per-image key)."""
    return zlib.crc32(image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())


def id_key(sample_id: str) -> int:
    """CRC-32 of a sample id (a stable per-sample key for noise streams)."""
    return zlib.crc32(sample_id.encode("utf-8"))


# ---------------------------------------------------------------------------------------- splits
def build_split_dataset(factory: Callable[..., Dataset], name: str, split: str | None, image_size: tuple[int, int],
                        root: str | None, on_error: str, dataset_args: dict[str, Any]) -> Dataset:
    """A dataset split: ``factory(..., split=split)`` (``split=None`` keeps the dataset's own default)."""
    args = dict(dataset_args)
    if split is not None:
        args["split"] = split
    try:
        return factory(image_size=image_size, root=root, on_error=on_error, **args)
    except TypeError as exc:
        raise DataError(
            f"dataset {name!r} rejects the arguments {args} ({exc}); ROAR needs a labelled dataset with train and "
            "test splits passed as split=..., set them with --option train_split=... --option test_split=..."
        ) from exc


class _Indexed(torch.utils.data.Dataset):
    """Loads ``ids[position]``; a DataError becomes its message so a loader worker never dies."""

    def __init__(self, dataset: Dataset, ids: Sequence[str], positions: Sequence[int]) -> None:
        self.dataset, self.ids, self.positions = dataset, ids, list(positions)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> tuple[int, Sample | str]:
        position = self.positions[index]
        try:
            return position, self.dataset.load(self.ids[position])
        except DataError as exc:
            return position, str(exc)


def _as_list(items: list[Any]) -> list[Any]:
    return items


class Split:
    """The samples ``ids`` of one labelled dataset split, served in batches of (positions, Batch).

    Args:
        name: ``"train"`` or ``"test"`` (for messages).
        dataset: The dataset (samples at ``image_size``).
        ids: The sample ids used (a seeded subset of the dataset's ids).
        image_size: (H, W) of the samples.
        on_error: ``"raise"`` fails on an unreadable sample, ``"skip"`` leaves it out and records why.
        batch_size, num_workers: Loader settings.

    Attributes:
        failed: sample id -> reason, for every sample that could not be loaded (``on_error="skip"``).
    """

    def __init__(self, name: str, dataset: Dataset, ids: list[str], image_size: tuple[int, int], on_error: str,
                 batch_size: int, num_workers: int = 0) -> None:
        if not ids:
            raise DataError(f"the {name} split has no samples; check --data-root, --limit and the split options")
        self.name, self.dataset, self.ids, self.image_size = name, dataset, ids, image_size
        self.on_error, self.batch_size, self.num_workers = on_error, batch_size, num_workers
        self.failed: dict[str, str] = {}
        self._memory: tuple[Tensor, Tensor, list[str], np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def classnames(self) -> list[str]:
        return list(self.dataset.classnames)

    def preload(self, budget_bytes: float) -> bool:
        """Keeps every image in memory when the split fits in ``budget_bytes`` (float32); returns whether."""
        height, width = self.image_size
        if len(self.ids) * 3 * height * width * 4 > budget_bytes:
            return False
        images = torch.zeros((len(self.ids), 3, height, width), dtype=torch.float32)
        labels = torch.full((len(self.ids),), -1, dtype=torch.long)
        prompts = [""] * len(self.ids)
        loaded = np.zeros(len(self.ids), dtype=bool)
        for positions, batch in tqdm(self._stream(range(len(self.ids))), desc=f"loading {self.name} images",
                                     unit="batch", leave=False):
            index = torch.tensor(positions)
            images[index], labels[index], loaded[positions] = batch.images.float(), batch.labels, True
            for position, prompt in zip(positions, batch.prompts, strict=True):
                prompts[position] = prompt
        self._memory = (images, labels, prompts, loaded)
        return True

    def batches(self, positions: Sequence[int] | None = None) -> Iterator[tuple[list[int], Batch]]:
        """Batches of the samples at ``positions`` (default: all), in that order; unreadable ones left out."""
        positions = range(len(self.ids)) if positions is None else positions
        if self._memory is None:
            yield from self._stream(positions)
            return
        images, labels, prompts, loaded = self._memory
        kept = [p for p in positions if loaded[p]]
        for start in range(0, len(kept), self.batch_size):
            chunk = kept[start:start + self.batch_size]
            index = torch.tensor(chunk)
            yield chunk, Batch(ids=[self.ids[p] for p in chunk], images=images[index],
                               prompts=[prompts[p] for p in chunk], labels=labels[index], masks=None)

    def _stream(self, positions: Sequence[int]) -> Iterator[tuple[list[int], Batch]]:
        loader = DataLoader(_Indexed(self.dataset, self.ids, positions), batch_size=self.batch_size,
                            num_workers=self.num_workers, collate_fn=_as_list, shuffle=False)
        for items in loader:
            good: list[tuple[int, Sample]] = []
            for position, item in items:
                if isinstance(item, str):
                    self.fail(position, item)
                else:
                    good.append((position, item))
            if good:
                yield [p for p, _ in good], Batch.collate([s for _, s in good])

    def fail(self, position: int, message: str, record: dict[str, str] | None = None) -> None:
        """Raises (``on_error="raise"``) or records in ``record`` (default :attr:`failed`) why a sample is left out."""
        sample_id = self.ids[position]
        if self.on_error == "raise":
            raise DataError(f"{self.name} sample {sample_id}: {message} (pass --on-error skip to skip and count such "
                            "samples)")
        record = self.failed if record is None else record
        if sample_id not in record:
            log.warning("skipping %s sample %s: %s", self.name, sample_id, message)
            record[sample_id] = message.split(":")[0][:120]

    def channel_mean(self) -> Tensor:
        """Per-channel mean (3,) float64 of the split's readable images: ROAR's replacement value."""
        total, count = torch.zeros(3, dtype=torch.float64), 0
        for _, batch in self.batches():
            total += batch.images.double().sum(dim=(0, 2, 3))
            count += batch.images.shape[0] * batch.images.shape[2] * batch.images.shape[3]
        if count == 0:
            raise DataError(f"the {self.name} split has no readable image to take the channel mean of")
        return total / count


# ---------------------------------------------------------------------------------------- ranks
def rank_dtype(num_pixels: int) -> np.dtype:
    """The smallest integer type holding ranks ``0 .. num_pixels - 1`` (uint16 up to 65,536 pixels)."""
    return np.dtype(np.uint16) if num_pixels <= 2**16 else np.dtype(np.int32)


@dataclass(frozen=True)
class Ranks:
    """Pixel ranks of a split (memmap N x H x W), which rows hold ranks, and why the others do not."""

    ranks: np.ndarray
    valid: np.ndarray
    failed: dict[str, str]

    def positions(self) -> list[int]:
        return np.flatnonzero(self.valid).tolist()


def ensure_ranks(path: Path, split: Split, maps_fn: Callable[[Batch], Tensor], desc: str = "saliency") -> Ranks:
    """The pixel ranks of ``split`` under ``maps_fn``, computed once and cached at ``path`` (a ``.npy``).

    The ranks file is written to a temporary name and renamed into place last, after its sidecars
    (``<name>.valid.npy`` and ``<name>.failed.json``), so a file that exists is complete. A sample whose
    map is non-finite fails like an unreadable one (raise, or skip and record).
    """
    valid_path, failed_path = path.with_suffix(".valid.npy"), path.with_suffix(".failed.json")
    if path.exists() and valid_path.exists() and failed_path.exists():
        return Ranks(np.load(path, mmap_mode="r"), np.load(valid_path),
                     json.loads(failed_path.read_text(encoding="utf-8")))
    height, width = split.image_size
    dtype = rank_dtype(height * width)
    valid = np.zeros(len(split), dtype=bool)
    failed: dict[str, str] = {}

    def fill(tmp: Path) -> None:
        ranks = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(split), height, width))
        with tqdm(total=len(split), desc=desc, unit="img", leave=False) as bar:
            for positions, batch in split.batches():
                maps = maps_fn(batch).detach()
                finite = torch.isfinite(maps).flatten(1).all(dim=1).cpu()
                for i in torch.nonzero(~finite).flatten().tolist():
                    bad = int((~torch.isfinite(maps[i])).sum())
                    split.fail(positions[i], f"non-finite map: {bad} NaN/Inf values", record=failed)
                keep = torch.nonzero(finite).flatten()
                if len(keep):
                    rows = [positions[i] for i in keep.tolist()]
                    ranks[rows] = pixel_ranks(maps[keep.to(maps.device)]).cpu().numpy().astype(dtype)
                    valid[rows] = True
                bar.update(len(positions))
        ranks.flush()
        del ranks
        # The sidecars first: the ranks file, renamed into place last, marks the set complete.
        atomic_write(valid_path, lambda sidecar: _save_npy(sidecar, valid))
        atomic_write_text(failed_path, json.dumps(failed, sort_keys=True))

    atomic_write(path, fill)
    return Ranks(np.load(path, mmap_mode="r"), valid, failed)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.save on a name would append ".npy"
        np.save(handle, array)


# ---------------------------------------------------------------------------------------- removal
@dataclass(frozen=True)
class RemovedSplit:
    """A split with ``fraction`` of each image's pixels removed by its ranks (ROAR's modified dataset).

    Attributes:
        split: The images.
        ranks: Their pixel ranks, or None for the unmodified images (fraction 0, the clean reference).
        fraction: Share of pixels removed per image. order: ``"morf"`` or ``"lerf"``.
        remove: ``remove(images B x 3 x H x W, masks B x H x W bool) -> images`` (ROAR: the dataset mean).
    """

    split: Split
    ranks: Ranks | None
    fraction: float
    order: str
    remove: Callable[[Tensor, Tensor], Tensor]

    def positions(self) -> list[int]:
        """Positions with ranks (all positions for the unmodified images)."""
        return list(range(len(self.split))) if self.ranks is None else self.ranks.positions()

    def batches(self, positions: Sequence[int] | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """(images, labels) batches of the removed images at ``positions`` (default: all with ranks)."""
        positions = self.positions() if positions is None else positions
        for rows, batch in self.split.batches(positions):
            images = batch.images
            if self.ranks is not None and self.fraction > 0:
                ranks = torch.from_numpy(np.asarray(self.ranks.ranks[rows]).astype(np.int64))
                images = self.remove(images, removal_masks(ranks, self.fraction, self.order))
            if bool((batch.labels < 0).any()):
                raise DataError(f"{self.split.name} samples {batch.ids[:3]} have no class label (-1): ROAR retrains a "
                                "classifier and needs a labelled dataset")
            yield images, batch.labels
