"""Samples, batches and the dataset contract shared by every task.

A dataset yields :class:`Sample` records with a stable string id (results are keyed by it, so an
interrupted run resumes without recomputing), pixels at the encoder's input size, and, where the dataset has
them, a pixel mask with 1 = target object, 0 = background, -1 = ignore.

Pixels are float32 in [0, 1], or uint8 levels 0..255 for datasets that decode 8-bit files (ImageNet-S,
ImageNet-Segmentation): those stay uint8 through collation, the worker-to-process transfer and the copy to the
device (a quarter of the bytes of float32 at every step) and become float32 ``level / 255`` in
:meth:`Batch.to`, the same numbers a float sample of the same file holds. Every pass over a dataset goes through
:meth:`Batch.to` (:func:`aft_bench.evaluation.streaming.stream`); code that reads one sample's pixels directly uses
:func:`float_pixels`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

FOREGROUND, BACKGROUND, IGNORE = 1, 0, -1


class DataError(ValueError):
    """A bad input file or value: the message names it and says what to do."""


def float_pixels(images: Tensor) -> Tensor:
    """Pixels as float32 in [0, 1]: uint8 levels divided by 255 (a new tensor), float pixels as they are."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


@dataclass(frozen=True)
class Sample:
    """One evaluation item.

    Attributes:
        id: Stable identifier (relative file path or generator index), unique within the dataset.
        image: 3 x H x W pixels: float32 in [0, 1], or uint8 levels (see the module docstring; read them with
            :func:`float_pixels`).
        prompt: The text the attribution targets ("a photo of a {class}" or a caption).
        label: Class index into ``Dataset.classnames`` (-1 when the dataset has no classes).
        mask: H x W int8 mask (1 foreground, 0 background, -1 ignore) or None.
    """

    id: str
    image: Tensor
    prompt: str
    label: int = -1
    mask: Tensor | None = None


@dataclass(frozen=True)
class Batch:
    """Samples stacked for a forward pass (masks stacked only when every sample has one).

    ``images`` keep the samples' dtype (uint8 levels or float32, float32 when they are mixed) until :meth:`to`,
    which always gives float32 pixels in [0, 1].
    """

    ids: list[str]
    images: Tensor
    prompts: list[str]
    labels: Tensor
    masks: Tensor | None

    @classmethod
    def collate(cls, samples: Sequence[Sample]) -> Batch:
        """Stacks samples; raises DataError naming the sample whose size differs."""
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        shape = samples[0].image.shape
        for s in samples:
            if s.image.shape != shape:
                raise DataError(f"sample {s.id!r} has image shape {tuple(s.image.shape)}, expected {tuple(shape)}")
            if s.mask is not None and tuple(s.mask.shape) != tuple(shape[1:]):
                raise DataError(
                    f"sample {s.id!r}: mask shape {tuple(s.mask.shape)} differs from image size {tuple(shape[1:])}"
                )
        has_masks = all(s.mask is not None for s in samples)
        images = [s.image for s in samples]
        if len({image.dtype for image in images}) > 1:
            images = [float_pixels(image) for image in images]
        return cls(
            ids=[s.id for s in samples],
            images=torch.stack(images),
            prompts=[s.prompt for s in samples],
            labels=torch.tensor([s.label for s in samples], dtype=torch.long),
            masks=torch.stack([s.mask for s in samples]) if has_masks else None,  # type: ignore[misc]
        )

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, index: Sequence[int]) -> Batch:
        """The samples at positions ``index``, in that order."""
        rows = torch.as_tensor(list(index), dtype=torch.long)
        pick = rows.to(self.images.device)
        return Batch(ids=[self.ids[i] for i in index], images=self.images[pick],
                     prompts=[self.prompts[i] for i in index], labels=self.labels[rows.to(self.labels.device)],
                     masks=None if self.masks is None else self.masks[rows.to(self.masks.device)])

    def pin_memory(self) -> Batch:
        """The batch with its tensors in pinned memory (the DataLoader's pinning thread calls this on CUDA)."""
        return Batch(ids=self.ids, images=self.images.pin_memory(), prompts=self.prompts,
                     labels=self.labels.pin_memory(), masks=None if self.masks is None else self.masks.pin_memory())

    def to(self, device: torch.device | str, non_blocking: bool = False, pin: bool = False) -> Batch:
        """The batch's tensors on ``device`` (pinned first when ``pin``, for asynchronous copies to a GPU), with
        float32 pixels in [0, 1] (uint8 levels are copied as they are and converted there)."""

        def move(t: Tensor) -> Tensor:
            return (t.pin_memory() if pin else t).to(device, non_blocking=non_blocking)

        return Batch(ids=self.ids, images=float_pixels(move(self.images)), prompts=self.prompts,
                     labels=move(self.labels),
                     masks=None if self.masks is None else move(self.masks))


@runtime_checkable
class Dataset(Protocol):
    """What a task needs from a dataset.

    Implementations take ``image_size`` (H, W) in their constructor and return samples already
    resized to it (images bicubic, masks nearest), plus dataset-specific options.
    """

    classnames: list[str]

    def __len__(self) -> int: ...

    def ids(self) -> list[str]:
        """All sample ids in a fixed order."""
        ...

    def load(self, sample_id: str) -> Sample:
        """Loads one sample; raises DataError naming the file when it is unreadable or inconsistent."""
        ...


def iter_samples(dataset: Dataset, ids: Sequence[str]) -> Iterator[Sample]:
    """Loads ``ids`` in order."""
    for sample_id in ids:
        yield dataset.load(sample_id)


def select_ids(ids: Sequence[str], limit: int | None, seed: int) -> list[str]:
    """All ids, or a seeded random subset of ``limit`` of them (kept in dataset order)."""
    if limit is None or limit >= len(ids):
        return list(ids)
    chosen = set(random.Random(seed).sample(range(len(ids)), limit))
    return [sample_id for i, sample_id in enumerate(ids) if i in chosen]
