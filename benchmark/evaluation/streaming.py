"""The one streaming loop: samples by id, in batches, through a DataLoader, with one policy for bad samples.

Every pass over a dataset (the per-sample tasks, activations for dissection, probe embeddings, ROAR's splits,
network dissection) goes through :func:`stream`. A sample that cannot be loaded (a :class:`DataError` in the
dataset's ``load``, in the main process or in a worker) never kills a worker: it travels back as a message and
:class:`BadSamples` applies the run's policy once: ``raise`` (the default) fails naming the sample, ``skip``
leaves it out, logs it with its file and counts it by the kind of problem (:func:`problem_kind`).

Samples load in DataLoader worker processes (:func:`default_workers` of them unless the run says otherwise, never
more than there are batches), each worker stacks its batch, and at most :data:`PREFETCH` batches per worker wait
ahead of the consumer, so memory stays bounded whatever the dataset's size. On CUDA the batches are pinned (in
the loader's pinning thread) and copied to the device without blocking. A dataset's uint8 pixels stay uint8 up to
the device and are made float there (:meth:`aft_bench.data.base.Batch.to`): every chunk's images are float32.

Workers start by ``fork`` where the platform has it (:data:`START_METHOD`): a worker is ready in milliseconds,
where ``spawn`` and ``forkserver`` import torch again in every worker of every pass (seconds each on a small
machine) and need every dataset to be importable by name. Forking after the parent ran OpenMP-parallel torch
operators does not hang: each worker runs on one torch thread (:func:`_one_thread`), so it never enters an OpenMP
parallel region of the runtime state it inherited (tests/test_speed_workers.py runs a 2-thread operator in the
parent and then 2 workers doing torch operators, under a timeout, and compares with loading in the main process).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from aft_bench.core.progress import progress_bar
from aft_bench.data.base import Batch, DataError, Dataset, Sample

log = logging.getLogger(__name__)

SKIP_HINT = "--on-error skip"
EXAMPLES_PER_KIND = 5  # skipped samples kept (with their files) per kind of problem
MAX_WORKERS = 8
"""The default number of loading workers is the available cores, at most this many."""
PREFETCH = 2
"""Batches each worker loads ahead of the consumer (the bound on the memory of batches in flight)."""
START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
"""How workers start: ``fork`` where the platform has it (see the module docstring), else its default."""


def default_workers() -> int:
    """DataLoader workers when the run does not say: the cores this process may use, at most :data:`MAX_WORKERS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


def problem_kind(message: str) -> tuple[str, str]:
    """Splits a bad sample's message into the kind of problem and where it happened.

    Messages name the place first (``"<file>: unreadable or corrupt image (OSError: ...); re-download ..."``):
    the kind is what follows the place, without the details in parentheses, the remedy after ``;`` and
    numbers (written ``N``), so that samples with the same problem are counted together.

    Returns:
        ``(kind, where)``; ``where`` is empty when the message names no place.
    """
    where, sep, rest = message.partition(": ")
    if not sep or not rest.strip():
        where, rest = "", message
    kind = re.split(r"[;(]", rest, maxsplit=1)[0]
    kind = re.sub(r"\d+", "N", " ".join(kind.split())).rstrip(" .,:")
    return (kind[:80] or "unknown problem"), where


@dataclass
class BadSamples:
    """The raise-or-skip-and-count policy for samples that cannot be used (unreadable, inconsistent, a
    non-finite map), written once.

    Attributes:
        on_error: ``"raise"`` fails at the first bad sample; ``"skip"`` leaves it out and counts it.
        counts: Skipped samples per kind of problem (:func:`problem_kind`).
        examples: Per kind, the first skipped samples as ``(sample id, file or place)``.
    """

    on_error: str = "raise"
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")

    def handle(self, sample_id: str, message: str) -> str:
        """Applies the policy to one bad sample; returns the kind of problem (under ``skip``).

        Raises:
            DataError: Naming the sample and the problem (and, once, how to skip such samples), under ``raise``.
        """
        if self.on_error == "raise":
            hint = "" if SKIP_HINT in message else f" (pass {SKIP_HINT} to skip and count such samples)"
            raise DataError(f"sample {sample_id}: {message}{hint}")
        kind, where = problem_kind(message)
        log.warning("skipping sample %s (%s): %s", sample_id, where or "no file named", message)
        self.counts[kind] += 1
        kept = self.examples.setdefault(kind, [])
        if len(kept) < EXAMPLES_PER_KIND:
            kept.append((sample_id, where))
        return kind


@dataclass(frozen=True)
class Chunk:
    """One step of :func:`stream`: the loaded samples as a batch (None if none loaded) and the ids that could
    not be loaded, each with its reason (only under ``skip``; under ``raise`` the stream has raised)."""

    batch: Batch | None
    bad: list[tuple[str, str]]

    @property
    def size(self) -> int:
        return (len(self.batch) if self.batch is not None else 0) + len(self.bad)

    def pin_memory(self) -> Chunk:
        """The chunk with its batch in pinned memory (called by the DataLoader's pinning thread on CUDA)."""
        return Chunk(self.batch.pin_memory() if self.batch is not None else None, self.bad)


class _ById(torch.utils.data.Dataset):
    """Loads samples by id; a DataError becomes ``(id, message)`` so that a worker never dies mid-run."""

    def __init__(self, dataset: Dataset, ids: Sequence[str]) -> None:
        self.dataset, self.ids = dataset, list(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample | tuple[str, str]:
        try:
            return self.dataset.load(self.ids[index])
        except DataError as exc:
            return (self.ids[index], str(exc))


def _one_thread(worker_id: int) -> None:
    """Worker start: one torch thread, so that workers do not compete for the cores (and never run OpenMP)."""
    torch.set_num_threads(1)


def _collate(items: list[Sample | tuple[str, str]]) -> Chunk:
    """A loader batch as a :class:`Chunk` (stacked in the worker); bad samples are still ``(id, message)``."""
    samples = [item for item in items if isinstance(item, Sample)]
    bad = [item for item in items if not isinstance(item, Sample)]
    return Chunk(Batch.collate(samples) if samples else None, bad)  # type: ignore[arg-type]


def stream(
    dataset: Dataset, ids: Sequence[str], *, batch_size: int, policy: BadSamples, num_workers: int | None = 0,
    device: torch.device | str | None = None, desc: str = "", progress: bool = True,
) -> Iterator[Chunk]:
    """Chunks of ``ids`` in order: each the batch of the samples that loaded and the ids that did not.

    Args:
        dataset: Where samples are loaded from (``dataset.load(id)``).
        ids: The samples, in the order to stream them.
        batch_size: Samples per chunk.
        policy: What a bad sample does (raise, or skip and count).
        num_workers: DataLoader worker processes (0: load in this process; None: :func:`default_workers`); never
            more than there are batches, and none for a single batch.
        device: Move each batch here (pinned memory and non-blocking copies on CUDA); None leaves it on the CPU.
            Either way its images are float32 in [0, 1].
        desc, progress: The progress report's label, and whether to show it
        (:func:`aft_bench.core.progress.progress_bar`).
    """
    target = torch.device(device) if device is not None else None
    cuda = target is not None and target.type == "cuda"
    batches = math.ceil(len(ids) / batch_size)
    workers = min(default_workers() if num_workers is None else num_workers, batches if batches > 1 else 0)
    loader = DataLoader(_ById(dataset, ids), batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                        shuffle=False, pin_memory=cuda, prefetch_factor=PREFETCH if workers else None,
                        persistent_workers=False, worker_init_fn=_one_thread if workers else None,
                        multiprocessing_context=START_METHOD if workers else None)
    with progress_bar(total=len(ids), desc=desc, unit="img", leave=False, enabled=progress) as bar:
        for loaded in loader:
            bad = [(sample_id, policy.handle(sample_id, message)) for sample_id, message in loaded.bad]
            batch = loaded.batch
            if batch is not None:  # float pixels on the device (uint8 ones travel as uint8 up to here)
                batch = batch.to(target or "cpu", non_blocking=cuda)
            bar.update(loaded.size)
            yield Chunk(batch, bad)


def stream_batches(dataset: Dataset, ids: Sequence[str], *, batch_size: int, policy: BadSamples,
                   num_workers: int | None = 0, device: torch.device | str | None = None, desc: str = "",
                   progress: bool = True) -> Iterator[Batch]:
    """The batches of :func:`stream` alone (bad samples are handled by ``policy`` and counted there)."""
    for chunk in stream(dataset, ids, batch_size=batch_size, policy=policy, num_workers=num_workers, device=device,
                        desc=desc, progress=progress):
        if chunk.batch is not None:
            yield chunk.batch
