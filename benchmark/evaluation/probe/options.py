"""The ``probe_*`` options of every task that can use a linear probe, and the probe they resolve to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aft_bench.core.options import names_in, non_negative, option, positive_int
from aft_bench.core.registries import DATASETS

PROBE_CLASSES = ("true", "top1")


def _probe_class(value: Any, key: str) -> str:
    if value is True:  # YAML reads a bare `true` as a boolean
        value = "true"
    if value not in PROBE_CLASSES:
        raise ValueError(f"option {key}={value!r}: choose one of {list(PROBE_CLASSES)}")
    return str(value)


def _probe_limit(value: Any, key: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
        raise ValueError(f"option {key}={value!r}: give a number of samples >= 2 (or leave it unset)")
    return value


def _holdout(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"option {key}={value!r}: give a share in [0, 1)")
    return float(value)


def _dataset_args(value: Any, key: str) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, Mapping):
        raise ValueError(f"option {key}={value!r}: give a mapping, e.g. --option '{key}={{split: train}}'")
    return None if value is None else dict(value)


# ---------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class ProbeOptions:
    """The ``probe_*`` options of every task that can use a linear probe (target, classifier or retrainer);
    see the module docstring. ``dataset``, ``data_root`` and ``dataset_args`` left unset follow the run's."""

    class_: str = option("true", parse=_probe_class, help="true: the sample's label; top1: the probe's prediction")
    dataset: str | None = option(None, parse=lambda v, k: None if v is None else names_in(DATASETS)(v, k),
                                 help="labelled dataset the probe is trained on (default: the run's)")
    data_root: str | None = option(None, help="its folder (default: the run's, when the dataset is the run's)")
    split: str | None = option("train", help="passed as split= (null: none, for datasets without splits)")
    dataset_args: dict[str, Any] | None = option(None, parse=_dataset_args, help="more constructor arguments")
    limit: int | None = option(None, parse=_probe_limit, help="train on a seeded subset of this many samples")
    holdout: float = option(0.1, parse=_holdout, help="share held out to measure accuracy")
    steps: int = option(200, parse=positive_int, help="L-BFGS iterations")
    weight_decay: float = option(1e-4, parse=non_negative, help="L2 weight")


@dataclass(frozen=True)
class ProbeSpec:
    """Everything that determines a probe, resolved from a run's probe options and dataset."""

    dataset: str
    data_root: str | None = None
    split: str | None = "train"
    dataset_args: Mapping[str, Any] = field(default_factory=dict)
    limit: int | None = None
    holdout: float = 0.1
    steps: int = 200
    weight_decay: float = 1e-4
    seed: int = 0

    @classmethod
    def resolve(cls, options: ProbeOptions, dataset: str, data_root: str | None, dataset_args: Mapping[str, Any],
                seed: int) -> ProbeSpec:
        """The probe of a run on ``dataset`` (its root and arguments) with ``options``."""
        name = options.dataset or dataset
        same = name == dataset
        root = options.data_root if options.data_root is not None or not same else data_root
        extra = dict(options.dataset_args) if options.dataset_args is not None else (dict(dataset_args) if same else {})
        if options.split is not None:
            extra["split"] = str(options.split)
        return cls(dataset=name, data_root=None if root is None else str(root), split=options.split,
                   dataset_args=extra, limit=options.limit, holdout=options.holdout, steps=options.steps,
                   weight_decay=options.weight_decay, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        root = None if self.data_root is None else str(Path(self.data_root).expanduser().resolve())
        return {"dataset": self.dataset, "data_root": root, "split": self.split,
                "dataset_args": dict(self.dataset_args), "limit": self.limit, "holdout": self.holdout,
                "steps": self.steps, "weight_decay": self.weight_decay, "seed": self.seed}


@dataclass(frozen=True)
class ProbeSetup:
    """What a consumer of the run's probe needs (the probe target, the probe classifier), resolved once per run.

    Attributes:
        spec: The probe to train or reuse.
        choice: ``true`` (the sample's label) or ``top1`` (the probe's prediction), for the target.
        eval_classnames: Class names of the evaluated dataset (``true`` needs the probe to have the same).
        batch_size, on_error: How the probe's training images are streamed.
    """

    spec: ProbeSpec
    choice: str = "true"
    eval_classnames: tuple[str, ...] = ()
    batch_size: int = 64
    on_error: str = "raise"
