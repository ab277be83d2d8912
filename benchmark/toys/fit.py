"""The step loop the toys train with: fixed threads, a forked RNG, AdamW on a warm-up cosine, a bar, running averages.

The toy CLIP (:mod:`aft_bench.toys.clip.fit`, CLIP's objective, Radford et al. 2021) and the toy VLM
(:mod:`aft_bench.toys.vlm.fit`, LLaVA's recipe, Liu et al. 2023) are trained by the project on first use and cached,
so their weights must be the same on every machine: :func:`toy_training` runs the build on a fixed number of CPU
threads (the thread count changes the floating-point result of CPU reductions) with the global torch RNG forked
(restored afterwards) and seeded. :func:`fit_steps` is the loop itself: per batch, the toy's step function gives the
loss; a non-finite loss stops the run with a message naming the step and the learning rate; the optimisers (AdamW,
matrices decayed: :func:`decay_groups`) step, each then its scheduler (:func:`warmup_cosine`, the project's one
schedule: :class:`aft_bench.training.schedule.WarmupCosine`); the running averages go to the progress bar
(:func:`aft_bench.core.progress.progress_bar`); a resumable build gets a checkpoint hook.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor
from torch.nn import Parameter
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from aft_bench.core.progress import progress_bar
from aft_bench.training.schedule import WarmupCosine
from aft_bench.training.threads import use_threads

Batch = TypeVar("Batch")


@contextlib.contextmanager
def toy_training(threads: int, what: str, seed: int | None = None) -> Iterator[None]:
    """Runs the block on ``threads`` torch threads with the global RNG forked (both restored afterwards).

    Args:
        threads: The toy's fixed thread count.
        what: What trains, for the log line (``"training the toy CLIP"``).
        seed: Seed of the forked global RNG (the initial weights); None leaves it as forked.
    """
    with use_threads(threads, what), torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def warmup_cosine(optimisers: Sequence[Optimizer], steps: int, warmup: int) -> list[LambdaLR]:
    """One scheduler per optimiser: linear warm-up over ``warmup`` steps, then cosine decay to zero at ``steps``."""
    return [LambdaLR(optimiser, WarmupCosine(steps, warmup)) for optimiser in optimisers]


def decay_groups(parameters: Iterable[tuple[str, Parameter]], weight_decay: float,
                 exempt: str) -> list[dict[str, Any]]:
    """AdamW's parameter groups with weight decay on matrices only, as in CLIP: gains, biases and the matrices whose
    name holds ``exempt`` (an embedding table) are not decayed.

    Args:
        parameters: ``(name, parameter)`` pairs of what trains, in the model's order.
        weight_decay: The decay of the matrices.
        exempt: Part of the names of matrices left undecayed.
    """
    decay: list[Parameter] = []
    other: list[Parameter] = []
    for name, parameter in parameters:
        (decay if parameter.ndim >= 2 and exempt not in name else other).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]


@dataclass(frozen=True)
class Step:
    """What a toy's step function gives the loop.

    Attributes:
        loss: The batch's loss (the loop checks it, back-propagates it and steps the optimisers).
        after_update: Called once the optimisers and schedulers have stepped (a parameter's clamp, figures of the
            batch); returns values averaged and shown beside the loss (names of :attr:`Loop.shown`).
    """

    loss: Tensor
    after_update: Callable[[], Mapping[str, float]] | None = None


@dataclass(frozen=True)
class Loop:
    """How a toy's loop runs and reports.

    Attributes:
        name: The toy (``"toy"``, ``"toy VLM"``), at the start of the non-finite-loss message.
        desc: The progress bar's label.
        lr: The recipe's learning rate, which the non-finite-loss message asks to lower.
        shown: The running averages on the bar, each with its format (``{"loss": ".4f"}``): ``"loss"``, and the values
            :attr:`Step.after_update` returns.
        decay, weight: A running average is the first value of the run, then ``decay * average + weight * value``.
            The toy CLIP's averages (on its card) were computed with ``weight = 1 - decay`` (0.09999999999999998),
            the toy VLM's with 0.1; each keeps its own so that their cards do not move.
        checkpoint_every: Steps between two calls of the checkpoint hook (and one after the last step); 0 for none.
    """

    name: str
    desc: str
    lr: float
    shown: Mapping[str, str]
    decay: float = 0.9
    weight: float = 0.1
    checkpoint_every: int = 0


def fit_steps(batches: Iterable[Batch], step: Callable[[int, Batch], Step], optimisers: Sequence[Optimizer],
              schedulers: Sequence[LRScheduler], loop: Loop, total: int, first: int = 0, progress: bool = True,
              checkpoint: Callable[[int], None] | None = None) -> dict[str, float]:
    """Runs the training steps; returns the running averages after the last one (0.0 for a run of no steps).

    Args:
        batches: One item a step, drawn lazily (a batch order may share its generator with the step function).
        step: ``step(step_number, batch)``, the forward pass of one batch.
        optimisers: Zeroed before and stepped after each backward pass, each then its scheduler.
        schedulers: One per optimiser (:func:`warmup_cosine`).
        loop: Names, formats and the checkpoint interval.
        total: Steps of this run (the bar's length).
        first: Number of the first step (where a resumed build continues).
        progress: Show the bar (log lines where the output is not a terminal).
        checkpoint: Called with the count of steps done every ``loop.checkpoint_every`` steps and after the last.

    Raises:
        FloatingPointError: On a non-finite loss, naming the step and the learning rate to lower.
    """
    averages = dict.fromkeys(loop.shown, 0.0)
    last = first + total
    bar = progress_bar(batches, total=total, desc=loop.desc, unit="step", enabled=progress)
    for number, batch in enumerate(bar, start=first):
        result = step(number, batch)
        loss = result.loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{loop.name} training: non-finite loss {loss.item()} at step {number}; "
                                     f"lower the recipe's lr ({loop.lr})")
        for optimiser in optimisers:
            optimiser.zero_grad(set_to_none=True)
        loss.backward()
        for optimiser, scheduler in zip(optimisers, schedulers, strict=True):
            optimiser.step()
            scheduler.step()
        values = {"loss": loss.item(), **(result.after_update() if result.after_update is not None else {})}
        for name in averages:
            previous = averages[name]
            averages[name] = values[name] if number == first else loop.decay * previous + loop.weight * values[name]
        bar.set_postfix(refresh=False, **{name: format(value, loop.shown[name]) for name, value in averages.items()})
        if checkpoint is not None and ((number + 1) % loop.checkpoint_every == 0 or number + 1 == last):
            checkpoint(number + 1)
    bar.close()
    return averages
