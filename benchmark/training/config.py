"""The training recipe: one frozen dataclass, each field documented once, hashed to name cached toy encoders.

Every field of :class:`TrainConfig` is declared with :func:`option`, which keeps its help text (and its
choices, where it has some) in the field's metadata. That one place documents the field: the class
docstring's ``Attributes`` section and the ``aft-bench train`` flags (:mod:`aft_bench.training.arguments`)
are generated from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from aft_bench.core.registries import REGULARIZERS
from aft_bench.training.presets import PRESETS

PIXEL = 1 / 255  # eps, eta, sigma and the PGD step are given in 1/255 units
TEMPLATE_NAMES = ("openai_imagenet", "simple_imagenet", "this_is_a_photo")
"""The prompt sets of :data:`aft_bench.evaluation.classifiers.TEMPLATE_SETS` (named here so that this module imports no
torch; a test keeps the two equal)."""
OBJECTIVE_ONLY: dict[str, tuple[str, ...]] = {"templates": ("tecoa", "pmg-aft"), "pmg_alpha": ("pmg-aft",),
                                              "pmg_beta": ("pmg-aft",)}
"""Fields only some objectives read: set away from its default for another objective, a field is refused rather
than ignored."""


def option(default: Any, help: str, *, choices: tuple[str, ...] | None = None,
           names: Collection[str] | None = None) -> Any:
    """A :class:`TrainConfig` field with its documentation in ``metadata``.

    Args:
        default: The default value.
        help: What the field means, in one or two sentences (docstring and ``--help`` text).
        choices: The fixed set of valid values (checked when the config is built).
        names: A live collection of valid names (a registry, the presets table), offered by the command
            line; the name is looked up, with a did-you-mean, where it is used.
    """
    return field(default=default, metadata={"help": help, "choices": choices, "names": names})


def _flag(name: str) -> str:
    """The command-line flag of field ``name`` (``max_steps`` -> ``--max-steps``)."""
    return f"--{name.replace('_', '-')}"


def _document(cls: type) -> type:
    """Appends a Google-style ``Attributes`` section, built from the fields' help texts, to the docstring."""
    lines = [f"        {f.name}: {f.metadata['help']}" for f in dataclasses.fields(cls)]
    cls.__doc__ = "\n".join([(cls.__doc__ or "").rstrip(), "", "    Attributes:", *lines, ""])
    return cls


@_document
@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (defaults: paper appendix A.3 and section 4).

    Radii and step sizes are in 1/255 units (``eps=4`` is 4/255), as on the command line.
    """

    encoder: str = option("toy", "Encoder spec to start from (ViT-B-16:openai, ckpt:PATH, toy, ...).")
    objective: str = option("aft", "Name in the objective registry (aft-bench ls objectives): aft (paper Eq. 7), "
                                   "fare (Schlarmann et al. 2024), aft-supervised (Eq. 1), tecoa (Mao et al. 2023) "
                                   "or pmg-aft (Wang et al. 2024).")
    regularizer: str = option("box", "Penalty h of the aft objectives, a name in the regularizer registry (aft-bench "
                                     "ls regularizers); box is paper Eq. 5.", names=REGULARIZERS)
    eps: float = option(4.0, "Radius of the perturbation ball in 1/255 units (4 = 4/255).")
    eta: float = option(1.0, "Smoothness eta of h* (paper Eq. 4/5) in 1/255 units.")
    eps2: float = option(1.0, "Elastic-net L2 weight eps_2 (Eq. 21).")
    group_patch: int = option(16, "Patch side in pixels of the group-patch regularizer.")
    sigma: float = option(1.0, "Std of AFT's Gaussian smoothing noise in 1/255 units.")
    outer_noise: bool = option(True, "Keep the noise z in the outer loss (paper Eq. 7); the published code drops it.")
    pgd_steps: int = option(10, "PGD steps K.")
    pgd_step_size: float = option(1.0, "PGD step alpha in 1/255 units.")
    pgd_momentum: float = option(0.0, "MI-FGSM momentum (0 = plain sign PGD; the published code uses 0.9).")
    random_start: bool = option(True, "Start PGD uniformly in the ball (else at delta = 0).")
    templates: str | None = option(None, "Class prompts of the tecoa and pmg-aft zero-shot head: openai_imagenet "
                                         "(CLIP's 80 ImageNet prompts), simple_imagenet (7 of them) or "
                                         "this_is_a_photo (RobustVLM's TeCoA prompt); default 'a photo of a {}.'.",
                                choices=TEMPLATE_NAMES)
    pmg_alpha: float = option(1.0, "PMG-AFT weight of KL(fine-tuned || original) on the adversarial image "
                                   "(Wang et al. 2024; 1 in the authors' code).")
    pmg_beta: float = option(1.0, "PMG-AFT weight of KL(adversarial || clean) of the fine-tuned model "
                                  "(Wang et al. 2024; 1 in the authors' code).")
    data: str = option("shapes", "shapes[:N], a folder of images (searched recursively; ImageNet train layout), "
                                 "a .csv/.jsonl file of (path, caption) rows, or coco:FILE, COCO's caption "
                                 "annotation JSON (one caption per image per epoch, drawn with the seed).")
    data_root: str | None = option(None, "Folder that relative image paths of a caption file are resolved against "
                                         "(default: the file's folder; coco:FILE needs it: the images' folder).")
    epochs: float = option(2.0, "Passes over the data (ignored when max_steps is set).")
    max_steps: int | None = option(None, "Total optimiser steps (overrides epochs).")
    batch_size: int = option(128, "Global batch size (split evenly across ranks).")
    lr: float = option(1e-5, "Peak learning rate.")
    min_lr_ratio: float = option(0.0, "Final learning rate as a fraction of the peak.")
    warmup: float = option(0.05, "Linear warm-up, as a fraction of the total steps.")
    weight_decay: float = option(1e-4, "AdamW weight decay.")
    beta1: float = option(0.9, "AdamW beta_1.")
    beta2: float = option(0.95, "AdamW beta_2.")
    grad_clip: float = option(0.0, "Clip the global gradient norm to this value (0 = off).")
    seed: int = option(0, "Run seed (data order, PGD start, noise).")
    precision: str = option("fp32", "fp32, or bf16 autocast (PGD stays fp32).", choices=("fp32", "bf16"))
    compile: bool = option(False, "torch.compile the image tower (the PGD loop stays eager).")
    channels_last: bool = option(False, "Channels-last inputs (helps convolutions on GPU).")
    workers: int = option(0, "Data-loading worker processes.")
    threads: int | None = option(None, "CPU threads for torch (default: the CPUs not already busy, from the load "
                                       "average, so a loaded machine is not slowed further; the toy presets use 1, "
                                       "so their weights are the same on every machine).")
    on_error: str = option("raise", "Unreadable training images: raise (fail, naming the file) or skip (leave "
                                    "them out, counted in the log and the encoder card).", choices=("raise", "skip"))
    save_every: int = option(500, "Checkpoint every this many steps (and at the end).")
    snapshot_every: int | None = option(None, "Keep the encoder every this many steps as well as the final one "
                                              "(OUT/snapshots/step-NNNNNNN/, safetensors + card with the step); "
                                              "series:OUT names them all (paper Figs. 5e and 15).")
    log_every: int = option(10, "Refresh the progress bar every this many steps (the metrics log gets every step).")
    stop_at_step: int | None = option(None, "Exit after this step (after checkpointing), as a preemption would.")
    device: str = option("auto", "auto (cuda:LOCAL_RANK when available, else cpu), cpu or cuda.")
    out: str = option("runs/train", "Output folder (checkpoint.pt, metrics.jsonl, encoder.safetensors + .json).")
    name: str | None = option(None, "Name recorded in the encoder card.")
    preset: str | None = option(None, "The named recipe the run starts from (paper runs, toy-aft, toy-fare); "
                                      "options not given keep its values.", names=PRESETS)
    grid: str | None = option(None, "Train one run per point of a grid, each into OUT/KEY=V,.../: 'KEY=V1,V2 "
                                    "KEY2=...' (every combination) or a .yaml file mapping keys to lists; "
                                    "grid:OUT names the points' encoders.")

    def __post_init__(self) -> None:
        optional = {"max_steps", "stop_at_step", "threads", "snapshot_every"}  # None (unset) is valid for these
        rules = {
            "must be positive": ("eps", "pgd_step_size", "lr", "batch_size", "max_steps", "pgd_steps", "save_every",
                                 "log_every", "group_patch", "threads", "stop_at_step", "snapshot_every"),
            "must be 0 or more": ("eta", "eps2", "sigma", "weight_decay", "grad_clip", "workers", "pmg_alpha",
                                  "pmg_beta"),
            "must be in [0, 1)": ("warmup", "pgd_momentum", "beta1", "beta2"),
            "must be in [0, 1]": ("min_lr_ratio",),
        }
        tests = {"must be positive": lambda v: v > 0, "must be 0 or more": lambda v: v >= 0,
                 "must be in [0, 1)": lambda v: 0 <= v < 1, "must be in [0, 1]": lambda v: 0 <= v <= 1}
        problems = [f"{_flag(name)} {getattr(self, name)!r} {rule}" for rule, names in rules.items() for name in names
                    if not (getattr(self, name) is None and name in optional) and not tests[rule](getattr(self, name))]
        if self.max_steps is None and not self.epochs > 0:
            problems.append(f"--epochs {self.epochs!r} must be positive (or give --max-steps)")
        problems += [f"{_flag(f.name)} {getattr(self, f.name)!r}: use one of {', '.join(f.metadata['choices'])}"
                     for f in dataclasses.fields(self)
                     if f.metadata["choices"] is not None and getattr(self, f.name) not in f.metadata["choices"]
                     and not (f.default is None and getattr(self, f.name) is None)]
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        problems += [f"{_flag(name)} {getattr(self, name)!r}: only the {' and '.join(users)} objective"
                     f"{'s use' if len(users) > 1 else ' uses'} it (--objective {self.objective}); leave it out"
                     for name, users in OBJECTIVE_ONLY.items()
                     if self.objective not in users and getattr(self, name) != defaults[name]]
        if problems:
            raise ValueError(f"invalid training option: {'; '.join(problems)}")

    # Fields that do not change the trained weights (where and how the run is carried out). ``on_error``
    # is one: a run that finishes under ``raise`` read every image, so ``skip`` would train the same, and a
    # run stopped by a corrupt image can be resumed with ``--on-error skip``.
    # ``threads`` is another: it can change the last bits of CPU results, but it is chosen per machine (the toy
    # presets fix it, and their cache key names the trainer version instead).
    NON_RECIPE = ("out", "device", "workers", "threads", "log_every", "save_every", "stop_at_step", "name",
                  "compile", "on_error", "snapshot_every", "grid")

    def recipe(self) -> dict[str, Any]:
        """The fields that determine the result (used for cache keys and cards): all but :attr:`NON_RECIPE` and
        the :data:`OBJECTIVE_ONLY` fields that this run's objective does not read (they hold their defaults), so
        adding such a field leaves the other objectives' recipes, and their cached encoders, as they were."""
        unread = {name for name, users in OBJECTIVE_ONLY.items() if self.objective not in users}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.NON_RECIPE and k not in unread}

    def recipe_hash(self) -> str:
        """Short stable hash of :meth:`recipe`."""
        blob = json.dumps(self.recipe(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)
