"""The training recipe: one frozen dataclass, hashed to name cached toy encoders."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

PIXEL = 1 / 255  # eps, eta, sigma and the PGD step are given in 1/255 units


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (defaults: paper appendix A.3 and section 4).

    Radii and step sizes are in 1/255 units (``eps=4`` is 4/255), as on the command line.

    Attributes:
        encoder: Encoder spec to start from (``ViT-B-16:openai``, ``ckpt:PATH``, ``toy``, ...).
        objective: Name in the OBJECTIVES registry (``aft``, ``fare``, ``aft-supervised``).
        regularizer: Penalty h for aft objectives (``box`` = paper Eq. 5, ``box-pixelnorm`` = published
            code, ``group-pixel``, ``group-patch``, ``elastic-net``).
        eps: Radius of the perturbation ball (1/255 units).
        eta: Smoothness eta of h* (1/255 units).
        eps2: Elastic-net L2 weight eps_2 (Eq. 21).
        group_patch: Patch side of the ``group-patch`` regularizer.
        sigma: Std of AFT's Gaussian smoothing noise (1/255 units).
        outer_noise: Keep the noise z in the outer loss (paper Eq. 7); the published code drops it.
        pgd_steps: PGD steps K.
        pgd_step_size: PGD step alpha (1/255 units).
        pgd_momentum: MI-FGSM momentum (0 = plain sign PGD; the published code uses 0.9).
        random_start: Start PGD uniformly in the ball.
        data: ``shapes[:N]``, a folder of images (searched recursively; ImageNet train layout), or a
            ``.csv``/``.jsonl`` of (path, caption).
        data_root: Folder relative image paths of a caption file are resolved against.
        epochs: Passes over the data (ignored when ``max_steps`` is set).
        max_steps: Total optimiser steps (overrides ``epochs``).
        batch_size: Global batch size (split evenly across ranks).
        lr: Peak learning rate.
        min_lr_ratio: Final learning rate as a fraction of the peak.
        warmup: Linear warm-up, as a fraction of the total steps.
        weight_decay: AdamW weight decay.
        beta1: AdamW beta_1.
        beta2: AdamW beta_2.
        grad_clip: Clip the global gradient norm to this value (0 = off).
        seed: Run seed (data order, PGD start, noise).
        precision: ``fp32`` or ``bf16`` (autocast; PGD stays fp32).
        compile: ``torch.compile`` the image tower (the PGD loop stays eager).
        channels_last: Channels-last inputs (helps convolutions on GPU).
        workers: Data-loading worker processes.
        on_error: ``skip`` (count and log corrupt images) or ``raise``.
        save_every: Checkpoint every this many steps (and at the end).
        log_every: Refresh the progress bar every this many steps (the metrics log gets every step).
        stop_at_step: Exit after this step (after checkpointing), as a preemption would.
        device: ``auto`` (cuda:LOCAL_RANK when available, else cpu), ``cpu`` or ``cuda``.
        out: Output folder (checkpoint, metrics log, trained encoder).
        name: Name recorded in the encoder card.
        preset: The preset the recipe came from, if any.
    """

    encoder: str = "toy"
    objective: str = "aft"
    regularizer: str = "box"
    eps: float = 4.0
    eta: float = 1.0
    eps2: float = 1.0
    group_patch: int = 16
    sigma: float = 1.0
    outer_noise: bool = True
    pgd_steps: int = 10
    pgd_step_size: float = 1.0
    pgd_momentum: float = 0.0
    random_start: bool = True
    data: str = "shapes"
    data_root: str | None = None
    epochs: float = 2.0
    max_steps: int | None = None
    batch_size: int = 128
    lr: float = 1e-5
    min_lr_ratio: float = 0.0
    warmup: float = 0.05
    weight_decay: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 0.0
    seed: int = 0
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    workers: int = 0
    on_error: str = "skip"
    save_every: int = 500
    log_every: int = 10
    stop_at_step: int | None = None
    device: str = "auto"
    out: str = "runs/train"
    name: str | None = None
    preset: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = {
            "batch_size": self.batch_size >= 1,
            "save_every": self.save_every >= 1,
            "lr": self.lr > 0,
            "epochs": self.epochs > 0 or self.max_steps is not None,
            "warmup": 0 <= self.warmup < 1,
            "precision": self.precision in ("fp32", "bf16"),
            "on_error": self.on_error in ("skip", "raise"),
            "max_steps": self.max_steps is None or self.max_steps >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid training option(s) {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")

    # Fields that do not change the trained weights (where and how the run is carried out).
    NON_RECIPE = ("out", "device", "workers", "log_every", "save_every", "stop_at_step", "name", "compile")

    def recipe(self) -> dict[str, Any]:
        """The fields that determine the result (used for cache keys and cards)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.NON_RECIPE}

    def recipe_hash(self) -> str:
        """Short stable hash of :meth:`recipe`."""
        blob = json.dumps(self.recipe(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)
