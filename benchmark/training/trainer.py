"""``aft-bench train``: adversarial fine-tuning of an image tower with AFT, FARE or supervised AFT.

Runs on one process or under ``torchrun --nproc_per_node N -m aft_bench train ...`` (DDP: nccl on
GPU, gloo on CPU; each rank its own slice of every global batch). Per step: the frozen original
encoder embeds the clean batch once, PGD finds delta* with the parameters frozen, and one forward
and backward of the outer loss updates the image tower with AdamW and a warm-up + cosine schedule
(paper appendix A.3). Checkpoints are atomic and exactly resumable; a non-finite loss or gradient
stops the run naming the step and keeping the last good checkpoint. The result is written with
:func:`aft_bench.loading.save_encoder` (safetensors + JSON card) and loads as ``ckpt:OUT/encoder.safetensors``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from aft_bench import distributed as dist_utils
from aft_bench.atomic import atomic_write_text
from aft_bench.data.base import DataError
from aft_bench.loading import load_encoder, save_encoder
from aft_bench.registries import OBJECTIVES
from aft_bench.results import package_versions
from aft_bench.training.checkpoint import (
    CHECKPOINT_NAME,
    ResumeError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from aft_bench.training.config import TrainConfig
from aft_bench.training.data import ShardedBatches, make_source
from aft_bench.training.objectives.base import REGULARIZERS
from aft_bench.training.presets import PRESETS
from aft_bench.training.randomness import SampleRandom
from aft_bench.training.schedule import warmup_cosine
from aft_bench.training.tower import ImageTower, Reference

log = logging.getLogger(__name__)

ENCODER_NAME = "encoder.safetensors"
METRICS_NAME = "metrics.jsonl"


class NonFiniteError(RuntimeError):
    """A non-finite loss or gradient: the run stops, the last good checkpoint stays."""


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
    """

    def __init__(self, config: TrainConfig, ctx: dist_utils.DistContext) -> None:
        self.config, self.ctx = config, ctx
        self.out = Path(config.out)
        torch.manual_seed(config.seed + ctx.rank)
        self.objective = OBJECTIVES.get(config.objective).from_config(config)
        self.encoder = load_encoder(config.encoder, ctx.device)
        if not {"arch", "model_cfg"} & set(self.encoder.card):
            raise ValueError(f"encoder {config.encoder!r} has no 'arch' or 'model_cfg' in its card; "
                             "the trained checkpoint could not be rebuilt")
        self.reference = Reference.from_encoder(self.encoder)
        self.tower = ImageTower.from_encoder(self.encoder, config.channels_last).to(ctx.device).eval()
        self.source = make_source(config.data, self.encoder.image_size, root=config.data_root)
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
        metrics = self._open_metrics()
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"train {self.config.objective}",
                   disable=None if self.ctx.is_main else True)
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

    def _write_encoder(self, skipped: int) -> Path | None:
        """Writes the trained image tower with the original text tower as safetensors + JSON card."""
        path = self.out / ENCODER_NAME
        if not self.ctx.is_main:
            return path
        self.encoder.visual.load_state_dict(self.tower.visual.state_dict())
        base = self.encoder.card
        card = {k: base[k] for k in ("arch", "pretrained", "model_cfg") if k in base}
        card.update(
            name=self.config.name or f"{self.config.preset or Path(self.config.encoder).name}-{self.config.objective}",
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
            versions=package_versions(),
        )
        return save_encoder(self.encoder, path, card)


def train(config: TrainConfig) -> TrainResult:
    """Runs (or resumes) training as described by ``config`` in this process."""
    ctx = dist_utils.setup(config.device)
    try:
        return Trainer(config, ctx).run()
    finally:
        dist_utils.teardown(ctx)


# ---------------------------------------------------------------------------------------- command line
_FLAGS: dict[str, dict[str, Any]] = {
    "encoder": {"help": "encoder spec to start from (ViT-B-16:openai, ckpt:PATH, toy, ...)"},
    "objective": {"help": "aft (paper Eq. 7), fare, aft-supervised (Eq. 1), or another registered objective"},
    "regularizer": {"choices": sorted(REGULARIZERS),
                    "help": "h for aft: box (Eq. 5, default), box-pixelnorm (published code), group-pixel, "
                            "group-patch (Eq. 22), elastic-net (Eq. 21)"},
    "eps": {"type": float, "help": "perturbation radius in 1/255 units (4 = 4/255)"},
    "eta": {"type": float, "help": "eta of Eq. 4/5 in 1/255 units"},
    "eps2": {"type": float, "help": "elastic-net L2 weight (Eq. 21)"},
    "group_patch": {"type": int, "help": "patch side of the group-patch regularizer"},
    "sigma": {"type": float, "help": "std of the Gaussian smoothing noise in 1/255 units"},
    "pgd_steps": {"type": int, "help": "PGD steps K"},
    "pgd_step_size": {"type": float, "help": "PGD step in 1/255 units"},
    "pgd_momentum": {"type": float, "help": "MI-FGSM momentum (published code: 0.9)"},
    "data": {"help": "shapes[:N], a folder of images (recursive; ImageNet train layout) or a .csv/.jsonl "
                     "of path,caption"},
    "data_root": {"help": "folder that relative paths of a caption file are relative to"},
    "epochs": {"type": float, "help": "passes over the data"},
    "max_steps": {"type": int, "help": "total optimiser steps (overrides --epochs)"},
    "batch_size": {"type": int, "help": "global batch size"},
    "lr": {"type": float, "help": "peak learning rate"},
    "min_lr_ratio": {"type": float, "help": "final lr as a fraction of the peak"},
    "warmup": {"type": float, "help": "linear warm-up as a fraction of the run"},
    "weight_decay": {"type": float, "help": "AdamW weight decay"},
    "beta1": {"type": float, "help": "AdamW beta1"},
    "beta2": {"type": float, "help": "AdamW beta2"},
    "grad_clip": {"type": float, "help": "clip the gradient norm (0 = off)"},
    "seed": {"type": int, "help": "run seed"},
    "precision": {"choices": ["fp32", "bf16"], "help": "bf16 autocast (PGD stays fp32)"},
    "workers": {"type": int, "help": "data-loading worker processes"},
    "on_error": {"choices": ["skip", "raise"], "help": "unreadable images: skip and count (default) or fail"},
    "save_every": {"type": int, "help": "checkpoint every N steps"},
    "log_every": {"type": int, "help": "progress-bar refresh interval in steps"},
    "stop_at_step": {"type": int, "help": "exit after this step (checkpointed), as a preemption would"},
    "device": {"help": "auto, cpu or cuda"},
    "out": {"help": "output folder (checkpoint.pt, metrics.jsonl, encoder.safetensors + .json)"},
    "name": {"help": "name recorded in the encoder card"},
}
_SWITCHES: dict[str, tuple[str, str]] = {
    "outer_noise": ("no-outer-noise", "drop z from the outer loss (published code; the paper's Eq. 7 keeps it)"),
    "random_start": ("no-random-start", "start PGD at delta = 0"),
}
_ENABLES: dict[str, str] = {
    "compile": "torch.compile the image tower (the PGD loop stays eager)",
    "channels_last": "channels-last inputs",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``aft-bench train`` argument parser (unset options keep the preset's or the default value)."""
    parser = argparse.ArgumentParser(
        prog="aft-bench train",
        description="Adversarially fine-tune a CLIP image tower with AFT (paper Eq. 7) or FARE. "
                    "Radii and steps are in 1/255 units.")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe (paper runs, toy-aft, toy-fare)")
    for field, spec in _FLAGS.items():
        parser.add_argument(f"--{field.replace('_', '-')}", dest=field, default=argparse.SUPPRESS, **spec)
    for field, (flag, text) in _SWITCHES.items():
        parser.add_argument(f"--{flag}", dest=field, action="store_false", default=argparse.SUPPRESS, help=text)
    for field, text in _ENABLES.items():
        parser.add_argument(f"--{field.replace('_', '-')}", dest=field, action="store_true",
                            default=argparse.SUPPRESS, help=text)
    return parser


def config_from_args(argv: list[str] | None) -> TrainConfig:
    """Defaults, overridden by the preset, overridden by explicit flags."""
    args = vars(build_parser().parse_args(argv))
    preset = args.pop("preset", None)
    values: dict[str, Any] = dict(PRESETS[preset]) if preset else {}
    values.update(args)
    if preset:
        values["preset"] = preset
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``aft-bench train`` and ``python -m aft_bench train``; returns the exit status."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_args(argv)
    try:
        result = train(config)
    except (NonFiniteError, ResumeError, DataError) as exc:
        log.error("%s", exc)
        return 1
    if not result.main_process:
        return 0
    if result.encoder_path is not None:
        log.info("trained encoder: %s (use --encoders ckpt:%s)", result.encoder_path, result.encoder_path)
    else:
        log.info("stopped at step %d of %d; run the same command again to resume", result.step, result.total_steps)
    return 0
