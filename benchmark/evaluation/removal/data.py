"""The data side of ROAR (Hooker et al. 2019): dataset splits, cached pixel rankings, removed images.

ROAR retrains a model on images whose top-k% pixels (by a saliency map) are removed, for several
fractions and seeds. Saliency is computed once per (encoder, attribution, split): each image's map is
reduced to its pixel ranks (:func:`aft_bench.metrics.removal.pixel_ranks`; 0 = most salient) and stored
in a numpy memmap in the run folder (uint16 per pixel for images up to 256 x 256, int32 above), so every
fraction and seed reads the ranks from disk and no map is held in memory. A :class:`Split` streams the
images of a labelled dataset split in batches; when the whole split fits in ``image_cache_mb`` it is
loaded once and kept in memory (the default shapes world: 700 images of 64 x 64, 34 MB), otherwise it
is read from the dataset on every pass (through :func:`aft_bench.evaluation.streaming.stream`, the run's bad-sample
policy).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from aft_bench.core.atomic import atomic_write, atomic_write_text
from aft_bench.data.base import Batch, DataError, Dataset
from aft_bench.evaluation.map_task import non_finite_message
from aft_bench.evaluation.streaming import BadSamples, stream
from aft_bench.metrics.removal import pixel_ranks, removal_masks

log = logging.getLogger(__name__)


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
        self.policy = BadSamples(on_error)
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
        position_of = {self.ids[p]: p for p in positions}
        for chunk in stream(self.dataset, list(position_of), batch_size=self.batch_size, policy=self.policy,
                            num_workers=self.num_workers, progress=False):
            for sample_id, reason in chunk.bad:
                self.failed.setdefault(sample_id, reason)
            if chunk.batch is not None:
                yield [position_of[i] for i in chunk.batch.ids], chunk.batch

    def fail(self, position: int, message: str, record: dict[str, str]) -> None:
        """Applies the run's policy to the sample at ``position`` (raise, or skip: ``record[id] = reason``)."""
        sample_id = self.ids[position]
        if sample_id not in record:
            record[sample_id] = self.policy.handle(sample_id, message)

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
                    split.fail(positions[i], non_finite_message(maps[i]), record=failed)
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
