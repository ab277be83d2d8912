"""The order in which training sees its data: endless, resumable, rank-sharded batches.

:class:`ShardedBatches` draws one permutation per epoch from the seed, cuts it into global batches (the last,
incomplete one of an epoch is dropped) and gives each rank a contiguous slice; its position (epoch, batch) is saved
in checkpoints so a resumed run sees exactly the batches it would have seen. Samples are loaded in DataLoader
workers when asked. A corrupt image fails the run with a :class:`~aft_bench.data.base.DataError` naming the file
(``on_error="raise"``, the default), or is skipped, counted and logged with its path (``on_error="skip"``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from aft_bench.data.base import DataError
from aft_bench.training.objectives.base import TrainBatch
from aft_bench.training.sources import TrainSource

log = logging.getLogger(__name__)


class _LocalBatches(TorchDataset):
    """Item j = this rank's slice of global batch j of one epoch, loaded (possibly in a worker)."""

    def __init__(self, source: TrainSource, epoch: int, order: np.ndarray, batch_size: int, rank: int, local: int,
                 on_error: str) -> None:
        self.source, self.epoch, self.order, self.batch_size = source, epoch, order, batch_size
        self.rank, self.local, self.on_error = rank, local, on_error

    def __len__(self) -> int:
        return len(self.order) // self.batch_size

    def __getitem__(self, j: int) -> tuple[Tensor, list[int], list[str | None], list[int], list[str]]:
        start = j * self.batch_size + self.rank * self.local
        images, indices, captions, labels, skipped = [], [], [], [], []
        for index in self.order[start : start + self.local].tolist():
            try:
                image, text, label = self.source.load(index, self.epoch)
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
        return torch.stack(images), indices, captions, labels, skipped


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
        classnames = self.source.classnames
        while True:
            dataset = _LocalBatches(self.source, self.epoch, self.order(self.epoch), self.batch_size, self.rank,
                                    local, self.on_error)
            loader = DataLoader(dataset, batch_size=None, sampler=range(self.batch, len(dataset)),
                                num_workers=self.workers, collate_fn=None)
            for images, indices, captions, labels, skipped in loader:
                for message in skipped:
                    log.warning("skipped unreadable image: %s", message)
                self.skipped += len(skipped)
                self.batch += 1
                yield TrainBatch(images=images, indices=list(indices), captions=list(captions),
                                 labels=None if classnames is None else torch.as_tensor(labels, dtype=torch.long),
                                 classnames=classnames)
            self.epoch, self.batch = self.epoch + 1, 0
