"""The training loop of ``aft-bench train``: adversarial fine-tuning of an image tower with AFT, FARE or
supervised AFT (its command line is :mod:`aft_bench.training.arguments`).

Runs on one process or under ``torchrun --nproc_per_node N -m aft_bench train ...`` (DDP: nccl on
GPU, gloo on CPU; each rank its own slice of every global batch). Per step: the frozen original
encoder embeds the clean batch once, PGD finds delta* with the parameters frozen, and one forward
and backward of the outer loss updates the image tower with AdamW and a warm-up + cosine schedule
(paper appendix A.3). Checkpoints are atomic and exactly resumable; a non-finite loss or gradient
stops the run naming the step and keeping the last good checkpoint. The result is written with
:func:`aft_bench.models.loading.save_encoder` (safetensors + JSON card) and loads as ``ckpt:OUT/encoder.safetensors``.
With ``snapshot_every`` K the encoder at steps K, 2K, ... is kept as well
(:func:`aft_bench.models.series.snapshot_path`;
``series:OUT`` names them all), for the paper's maps over fine-tuning iterations (Fig. 5e, Fig. 15).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from aft_bench.core import distributed as dist_utils
from aft_bench.core.atomic import atomic_write_text
from aft_bench.core.errors import UserError
from aft_bench.core.progress import progress_bar
from aft_bench.core.registries import OBJECTIVES
from aft_bench.models.loading import check_encoder_spec, load_encoder, save_encoder
from aft_bench.models.series import ENCODER_FILE, snapshot_path
from aft_bench.results.result import package_versions
from aft_bench.training.batches import ShardedBatches
from aft_bench.training.checkpoint import (
    CHECKPOINT_NAME,
    ResumeError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from aft_bench.training.config import TrainConfig
from aft_bench.training.data_spec import check_data, make_source
from aft_bench.training.randomness import SampleRandom
from aft_bench.training.schedule import warmup_cosine
from aft_bench.training.threads import auto_threads, use_threads
from aft_bench.training.tower import ImageTower, Reference

log = logging.getLogger(__name__)

ENCODER_NAME = ENCODER_FILE
METRICS_NAME = "metrics.jsonl"
# Bump when a code change alters what a recipe trains (the random streams, the loop, the objectives): it keys
# the cached toy fine-tunes (aft_bench.toys.clip.finetunes), so stale ones are trained again rather than reused.
# 2: per-sample noise and PGD starts seeded by aft_bench.core.seeding (SHA-256) instead of numpy SeedSequence.
# 3: the toy presets train on 1 CPU thread (was torch's default, the machine's core count).
TRAINER_VERSION = 3


class NonFiniteError(UserError):
    """A non-finite loss or gradient: the run stops, the last good checkpoint stays.

    A user error (shown as one line): the message names the step and the options to change.
    """


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        out: Output folder.
        encoder_path: The trained encoder (``None`` when the run stopped early on purpose).
        step: Optimiser steps completed.
        total_steps: Steps of the full run.
        skipped_images: Unreadable images skipped (all ranks).
        seconds: Wall time of this invocation.
        main_process: Whether this process is rank 0 (the one that reports).
    """

    out: Path
    encoder_path: Path | None
    step: int
    total_steps: int
    skipped_images: int
    seconds: float
    main_process: bool = True


class Trainer:
    """One training run (all state in one place; :meth:`run` drives it).

    Args:
        config: The recipe and run options.
        ctx: This process's place in the (possibly distributed) job.
        threads: CPU threads the run uses (recorded in the encoder card).
    """

    def __init__(self, config: TrainConfig, ctx: dist_utils.DistContext, threads: int = 1,
                 card_extra: dict[str, Any] | None = None) -> None:
        self.config, self.ctx, self.threads, self.card_extra = config, ctx, threads, dict(card_extra or {})
        self.out = Path(config.out)
        torch.manual_seed(config.seed + ctx.rank)
        self.objective = OBJECTIVES.get(config.objective).from_config(config)
        self.encoder = load_encoder(config.encoder, ctx.device)
        if not {"arch", "model_cfg"} & set(self.encoder.card):
            raise ValueError(f"encoder {config.encoder!r} has no 'arch' or 'model_cfg' in its card; "
                             "the trained checkpoint could not be rebuilt")
        self.reference = Reference.from_encoder(self.encoder)
        self.tower = ImageTower.from_encoder(self.encoder, config.channels_last).to(ctx.device).eval()
        self.source = make_source(config.data, self.encoder.image_size, root=config.data_root, run_seed=config.seed)
        self.batches = ShardedBatches(self.source, config.batch_size, seed=config.seed, rank=ctx.rank,
                                      world_size=ctx.world_size, workers=config.workers, on_error=config.on_error)
        self.total_steps = config.max_steps or max(1, math.ceil(config.epochs * self.batches.batches_per_epoch))
        self.optimizer = torch.optim.AdamW(self.tower.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                           betas=(config.beta1, config.beta2))
        self.scheduler = warmup_cosine(self.optimizer, self.total_steps, config.warmup, config.min_lr_ratio)
        self.step = 0
        self.last_saved: int | None = None

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT_NAME

    def save(self) -> None:
        """Writes the checkpoint (rank 0) with every rank's data position and RNG state."""
        data = dist_utils.gather_objects(self.batches.state_dict(), self.ctx)
        rngs = dist_utils.gather_objects(rng_state(), self.ctx)
        if self.ctx.is_main:
            save_checkpoint(self.checkpoint_path, {
                "step": self.step,
                "total_steps": self.total_steps,
                "world_size": self.ctx.world_size,
                "model": self.tower.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "data": data,
                "rng": rngs,
                "recipe_hash": self.config.recipe_hash(),
            })
        dist_utils.barrier(self.ctx)
        self.last_saved = self.step

    def resume(self) -> None:
        """Continues from ``OUT/checkpoint.pt`` when it exists (same recipe and world size required)."""
        if not self.checkpoint_path.is_file():
            return
        state = load_checkpoint(self.checkpoint_path)
        if state["recipe_hash"] != self.config.recipe_hash():
            raise ResumeError(f"{self.checkpoint_path} was written by a different recipe; use another --out "
                              "or delete it to start over")
        if state["world_size"] != self.ctx.world_size:
            raise ResumeError(f"{self.checkpoint_path} was written by {state['world_size']} ranks; resume with "
                              f"the same number (got {self.ctx.world_size})")
        self.tower.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.batches.load_state_dict(state["data"][self.ctx.rank])
        set_rng_state(state["rng"][self.ctx.rank])
        self.step = self.last_saved = int(state["step"])
        log.info("resumed from %s at step %d of %d", self.checkpoint_path, self.step, self.total_steps)

    # ------------------------------------------------------------------ logging
    def _open_metrics(self) -> Any:
        """The metrics log, truncated to the resumed step (entries past it are recomputed)."""
        path = self.out / METRICS_NAME
        if not self.ctx.is_main:
            return None
        kept = []
        if path.is_file():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= self.step]
        path.write_text("".join(f"{line}\n" for line in kept))
        return path.open("a")

    # ------------------------------------------------------------------ the loop
    def _models(self) -> tuple[nn.Module, nn.Module]:
        outer: nn.Module = self.tower
        if self.ctx.distributed:
            ids = [self.ctx.device] if self.ctx.device.type == "cuda" else None
            outer = DistributedDataParallel(self.tower, device_ids=ids)
        inner: nn.Module = self.tower
        if self.config.compile:
            outer, inner = torch.compile(outer), torch.compile(inner)
        return outer, inner

    def _train_step(self, outer: nn.Module, inner: nn.Module, batch: Any) -> dict[str, float]:
        device = self.ctx.device
        batch.images = batch.images.to(device, non_blocking=True)
        rng = SampleRandom(self.config.seed, self.step, batch.indices, device)
        bf16 = self.config.precision == "bf16"
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            out = self.objective(outer, inner, self.reference, batch, rng)
        out.loss.backward()
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.tower.parameters(), max_norm)
        stats = dist_utils.all_reduce_mean(
            torch.stack([out.loss.detach(), out.inner, out.delta_norm, grad_norm.to(out.inner.device)]).float(),
            self.ctx)
        loss, inner_obj, delta_norm, gnorm = stats.tolist()
        step_no = self.step + 1
        for what, value in (("loss", loss), ("gradient norm", gnorm)):
            if not math.isfinite(value):
                kept = (f"the last good checkpoint is {self.checkpoint_path} (step {self.last_saved})"
                        if self.last_saved is not None else "no checkpoint was written yet")
                raise NonFiniteError(
                    f"non-finite {what} ({value}) at step {step_no}; training stopped and {kept}. Lower --lr, "
                    "set --grad-clip, or use --precision fp32, then resume from the checkpoint.")
        lr = self.scheduler.get_last_lr()[0]  # the rate this step uses
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        history = out.history.tolist()
        return {"loss": loss, "inner": inner_obj, "delta_norm": delta_norm, "grad_norm": gnorm, "lr": lr,
                "pgd_first": history[0] if history else float("nan"),
                "pgd_last": history[-1] if history else float("nan")}

    def run(self) -> TrainResult:
        """Trains to the end (or to ``stop_at_step``), checkpointing; returns where the result is."""
        started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        self.resume()
        if self.ctx.is_main:
            text = json.dumps(dataclasses.asdict(self.config), indent=2, default=str)
            atomic_write_text(self.out / "config.json", text)
        outer, inner = self._models()
        self._log_snapshot_plan()
        metrics = self._open_metrics()
        bar = progress_bar(total=self.total_steps, initial=self.step, desc=f"train {self.config.objective}",
                           unit="step", enabled=self.ctx.is_main)
        batches = iter(self.batches)
        stop = self.total_steps if self.config.stop_at_step is None else min(self.config.stop_at_step,
                                                                              self.total_steps)
        try:
            while self.step < stop:
                tick = time.perf_counter()
                row = self._train_step(outer, inner, next(batches))
                self.step += 1
                row.update(step=self.step, images_per_s=self.config.batch_size / (time.perf_counter() - tick))
                if metrics is not None:
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                bar.update(1)
                if self.step % self.config.log_every == 0 or self.step == self.total_steps:
                    bar.set_postfix(loss=f"{row['loss']:.4g}", img_s=f"{row['images_per_s']:.1f}")
                    log.debug("step %d: %s", self.step, row)
                if self._snapshot_due():
                    self._write_encoder(self.batches.skipped, snapshot_path(self.out, self.step))
                if self.step % self.config.save_every == 0 or self.step == stop:
                    self.save()
        finally:
            bar.close()
            if metrics is not None:
                metrics.close()
        skipped = dist_utils.all_reduce_sum_int(self.batches.skipped, self.ctx)
        if skipped:
            log.warning("%d unreadable image(s) were skipped (see the warnings above for their paths)", skipped)
        encoder_path = None
        if self.step >= self.total_steps:
            encoder_path = self._write_encoder(skipped)
        dist_utils.barrier(self.ctx)
        return TrainResult(self.out, encoder_path, self.step, self.total_steps, skipped,
                           time.perf_counter() - started, self.ctx.is_main)

    def _snapshot_due(self) -> bool:
        """Whether this step keeps a snapshot (every ``snapshot_every`` steps, but not the last: that is the
        final encoder)."""
        every = self.config.snapshot_every
        return bool(every) and self.step % every == 0 and self.step < self.total_steps

    def _log_snapshot_plan(self) -> None:
        """States in the log how many snapshots the run keeps and the disk they take."""
        every = self.config.snapshot_every
        if not every or not self.ctx.is_main:
            return
        count = (self.total_steps - 1) // every
        size = sum(t.numel() * t.element_size() for t in self.encoder.model.state_dict().values())
        log.info("keeping a snapshot every %d steps: %d snapshots of %.1f MB (%.1f MB in all) under %s", every,
                 count, size / 1e6, count * size / 1e6, self.out / "snapshots")

    def _write_encoder(self, skipped: int, path: Path | None = None) -> Path | None:
        """Writes the trained image tower with the original text tower as safetensors + JSON card (to ``path``:
        a snapshot, named ``NAME@stepK``; default the final encoder)."""
        snapshot = path is not None
        path = path or self.out / ENCODER_NAME
        if not self.ctx.is_main:
            return path
        self.encoder.visual.load_state_dict(self.tower.visual.state_dict())
        base = self.encoder.card
        card = {k: base[k] for k in ("arch", "pretrained", "model_cfg") if k in base}
        name = self.config.name or f"{self.config.preset or Path(self.config.encoder).name}-{self.config.objective}"
        card.update(
            name=f"{name}@step{self.step}" if snapshot else name,
            snapshot=snapshot,
            base_encoder=self.config.encoder,
            objective=self.config.objective,
            **self.objective.describe(),
            train_steps=self.step,
            batch_size=self.config.batch_size,
            lr=self.config.lr,
            seed=self.config.seed,
            data=self.source.describe(),
            skipped_images=skipped,
            preset=self.config.preset,
            recipe=self.config.recipe(),
            recipe_hash=self.config.recipe_hash(),
            world_size=self.ctx.world_size,
            threads=self.threads,
            versions=package_versions(),
            **self.card_extra,
        )
        return save_encoder(self.encoder, path, card)


def check_inputs(config: TrainConfig) -> None:
    """The checks that need no weights, run before any model loads: the encoder spec, the data and the device.

    Raises:
        UnknownNameError: For an unknown encoder or objective name (with a did-you-mean).
        DataError: For a ``--data`` that is neither ``shapes[:N]``, ``coco:FILE`` with a ``--data-root`` folder, nor
            an existing folder or caption file.
        ValueError: For a device that is not one, or CUDA on a machine without it.
    """
    check_encoder_spec(config.encoder)
    OBJECTIVES.get(config.objective)
    check_data(config.data, config.data_root)
    dist_utils.resolve_device(config.device, 0)


def train(config: TrainConfig, card_extra: dict[str, Any] | None = None) -> TrainResult:
    """Runs (or resumes) training as described by ``config`` in this process (``card_extra``: more entries for the
    encoder card, e.g. a grid point's values).

    The inputs are checked first (:func:`check_inputs`); training runs on ``config.threads`` CPU threads, or
    on those not already busy (:func:`aft_bench.training.threads.auto_threads`), and the setting is restored.
    """
    check_inputs(config)
    ctx = dist_utils.setup(config.device)
    threads = config.threads or auto_threads(processes=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    try:
        with use_threads(threads, f"training {config.name or config.preset or config.objective}"):
            return Trainer(config, ctx, threads, card_extra).run()
    finally:
        dist_utils.teardown(ctx)
