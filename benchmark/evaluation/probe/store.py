"""Linear probes on frozen image embeddings, and the probe class logit as an attribution target.

The AFT paper (section 4.1, Fig. 2d, Table 1 right half, Fig. 3 bottom) also explains a linear
classifier trained on the frozen CLIP image embeddings of a labelled dataset (linear probing, Radford
et al. 2021): the saliency of an image is taken with respect to the probe's logit of one class. This
module trains such a probe (``nn.Linear(D, C)`` on unit-norm embeddings, full-batch L-BFGS on the
mean cross-entropy plus ``weight_decay / 2 * ||W||^2``, zero initialisation, so the fit is the
unique optimum of a convex problem and deterministic), caches it, and serves it as a target:

    aft-bench run --task pointing_game --option target=probe [--option probe_class=top1]

Options (``--option key=value``; all optional):
    probe_class: ``true`` (default; the sample's label, needs labels >= 0) or ``top1`` (the probe's
        prediction on the clean image).
    probe_dataset: registry name of the labelled dataset the probe is trained on (default: the run's).
    probe_data_root: its folder (default: the run's ``data_root`` when the dataset is the run's).
    probe_split: passed to the dataset as ``split=`` (default ``train``; ``null`` passes none, for
        datasets without splits).
    probe_dataset_args: more constructor arguments (default: the run's ``dataset_args`` when the
        dataset is the run's, so the shapes world keeps its seed); ``probe_split`` wins over a ``split``.
    probe_limit: train on a seeded random subset of at most this many samples (default: all).
    probe_holdout: share of the samples held out to measure accuracy (default 0.1; 0 = none).
    probe_steps: L-BFGS iterations (default 200). probe_weight_decay: L2 weight (default 1e-4).

A probe is cached per (encoder: name, card and a fingerprint of the image tower's weights; dataset,
root, split, arguments; training options; run seed) in ``cache_dir()/probes/<key>/`` as
``probe.safetensors`` (weight, bias) and ``probe.json`` (its card: classes, sample counts, train and
held-out accuracy, loss), written atomically by :func:`aft_bench.core.cache.cached`. Within a process the
probe of an encoder object is memoised (the target factory runs once per batch); call
:func:`clear_probe_memo` after changing an encoder's weights in place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from aft_bench.core.cache import cache_dir, cached
from aft_bench.core.options import names_in, non_negative, option, positive_int
from aft_bench.core.registries import DATASETS
from aft_bench.data.base import Batch, DataError, Dataset, select_ids
from aft_bench.evaluation.streaming import BadSamples, stream_batches
from aft_bench.models.encoder import Encoder

log = logging.getLogger(__name__)

PROBE_VERSION = 1
"""Bumped whenever a probe trained with the same options would differ (invalidates the cache)."""

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


# ---------------------------------------------------------------------------------------- the probe
@dataclass(frozen=True)
class LinearProbe:
    """A trained linear classifier over unit-norm image embeddings: ``logits = e W^T + b``.

    Attributes:
        weight: C x D float32.
        bias: C float32.
        classnames: The C class names, in label order.
        card: Provenance and quality (dataset, sample counts, accuracies, loss, options).
    """

    weight: Tensor
    bias: Tensor
    classnames: list[str]
    card: dict[str, Any] = field(default_factory=dict)

    def logits(self, embeddings: Tensor) -> Tensor:
        """B x C class logits of B x D embeddings."""
        return embeddings @ self.weight.to(embeddings).T + self.bias.to(embeddings)

    def to(self, device: str | torch.device) -> LinearProbe:
        return LinearProbe(self.weight.to(device), self.bias.to(device), self.classnames, self.card)


def fit_linear(features: Tensor, labels: Tensor, num_classes: int, weight_decay: float = 1e-4,
               steps: int = 200) -> tuple[nn.Linear, float]:
    """Fits ``nn.Linear(D, C)`` by full-batch L-BFGS on mean cross-entropy + ``weight_decay/2 ||W||^2``.

    Zero initialisation and full batches make the result deterministic (on a given device); the
    objective is strictly convex for ``weight_decay > 0``.

    Args:
        features: N x D embeddings.
        labels: N class indices in [0, num_classes).
        num_classes: C.
        weight_decay: L2 penalty on the weight (the bias is not penalised).
        steps: L-BFGS iterations.

    Returns:
        The fitted layer (float32, on ``features.device``) and the final objective value.

    Raises:
        ValueError: On a non-finite objective (non-finite embeddings).
    """
    x = features.detach().float()
    y = labels.to(device=x.device, dtype=torch.long)
    linear = nn.Linear(x.shape[1], num_classes).to(x.device)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=steps, history_size=20,
                                  tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def objective() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x), y) + 0.5 * weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    with torch.no_grad():
        final = float(F.cross_entropy(linear(x), y) + 0.5 * weight_decay * linear.weight.pow(2).sum())
    if not math.isfinite(final):
        raise ValueError(f"linear probe training diverged (objective {final}); check the embeddings for NaN/Inf")
    return linear.requires_grad_(False), final


def accuracy(probe: LinearProbe | nn.Linear, features: Tensor, labels: Tensor) -> float | None:
    """Top-1 accuracy in [0, 1] of a probe on embeddings; None for no samples."""
    if len(labels) == 0:
        return None
    with torch.no_grad():
        logits = probe.logits(features) if isinstance(probe, LinearProbe) else probe(features)
    return float((logits.argmax(dim=1).cpu() == labels.cpu()).double().mean())


# ---------------------------------------------------------------------------------------- data
def build_probe_dataset(spec: ProbeSpec, image_size: tuple[int, int], on_error: str = "raise") -> Dataset:
    """The probe's labelled dataset at ``image_size``; raises DataError naming the dataset if it cannot be built."""
    factory = DATASETS.get(spec.dataset)
    try:
        return factory(image_size=image_size, root=spec.data_root, on_error=on_error, **spec.dataset_args)
    except TypeError as exc:
        raise DataError(
            f"probe dataset {spec.dataset!r} rejects the arguments {dict(spec.dataset_args)} ({exc}); for a "
            "dataset without splits pass --option probe_split=null, or set --option probe_dataset_args={...}"
        ) from exc


@torch.no_grad()
def embed_dataset(encoder: Encoder, dataset: Dataset, ids: list[str], batch_size: int = 64,
                  on_error: str = "raise") -> tuple[Tensor, Tensor, int]:
    """Unit-norm image embeddings (N x D, on the encoder's device) and labels (N) of ``ids``, and the number of
    samples skipped.

    Raises:
        DataError: For an unreadable sample (unless ``on_error == "skip"``, which counts it) and for a
            sample without a class label (-1): a probe needs a labelled dataset.
    """
    policy = BadSamples(on_error)
    features, labels = [], []
    for batch in stream_batches(dataset, ids, batch_size=batch_size, policy=policy, device=encoder.device,
                                desc="probe embeddings"):
        if bool((batch.labels < 0).any()):
            sample_id = batch.ids[int(torch.nonzero(batch.labels < 0)[0])]
            raise DataError(
                f"probe dataset sample {sample_id!r} has no class label (-1): a linear probe needs a labelled "
                "dataset; choose one with --option probe_dataset=NAME"
            )
        features.append(encoder(batch.images).float())
        labels.append(batch.labels.cpu())
    if not features:
        raise DataError("the probe dataset yielded no readable samples")
    return torch.cat(features), torch.cat(labels), sum(policy.counts.values())


# ---------------------------------------------------------------------------------------- cache
def weights_fingerprint(module: nn.Module, samples_per_tensor: int = 4096) -> str:
    """A short hash of a module's parameters and buffers: names, shapes, sums and strided values.

    Two checkpoints with the same card but different weights get different probes; reading a
    strided sample of each tensor keeps this cheap for large encoders.
    """
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // samples_per_tensor)
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
            if flat.is_complex():
                flat = torch.view_as_real(flat).reshape(-1)
            sample = flat[::step].double() if flat.is_floating_point() else flat[::step].long()
            if flat.is_floating_point():
                digest.update(f"{float(flat.double().sum()):.10e}".encode())
            digest.update(sample.cpu().contiguous().numpy().tobytes())  # float64 / int64: any dtype (bf16 too)
    return digest.hexdigest()[:16]


def probe_key(encoder: Encoder, spec: ProbeSpec) -> tuple[str, dict[str, Any]]:
    """Cache directory name (``probe-<hash>``) and the provenance it hashes."""
    parts = {
        "version": PROBE_VERSION, "encoder": encoder.name,
        "encoder_card": json.loads(json.dumps(encoder.card, sort_keys=True, default=str)),
        "weights": weights_fingerprint(encoder.visual), "image_size": list(encoder.image_size), **spec.to_dict(),
    }
    blob = json.dumps(parts, sort_keys=True, default=str)
    return f"probe-{hashlib.sha256(blob.encode()).hexdigest()[:20]}", parts


def train_probe(encoder: Encoder, spec: ProbeSpec, batch_size: int = 64, on_error: str = "raise") -> LinearProbe:
    """Embeds the probe dataset, holds out ``spec.holdout`` of it (seeded), fits and measures the probe."""
    dataset = build_probe_dataset(spec, encoder.image_size, on_error)
    ids = select_ids(dataset.ids(), spec.limit, spec.seed)
    features, labels, skipped = embed_dataset(encoder, dataset, ids, batch_size, on_error)
    num_classes = len(dataset.classnames)
    if num_classes < 2 or int(labels.max()) >= num_classes:
        raise DataError(
            f"probe dataset {spec.dataset!r} has {num_classes} class names but labels up to {int(labels.max())}; "
            "a probe needs at least two classes and labels indexing classnames"
        )
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(spec.seed))
    n_hold = int(len(labels) * spec.holdout)
    hold, fit = order[:n_hold], order[n_hold:]
    linear, loss = fit_linear(features[fit.to(features.device)], labels[fit], num_classes,
                              spec.weight_decay, spec.steps)
    probe = LinearProbe(linear.weight.detach().float(), linear.bias.detach().float(), list(dataset.classnames))
    train_acc = accuracy(probe, features[fit.to(features.device)], labels[fit])
    hold_acc = accuracy(probe, features[hold.to(features.device)], labels[hold])
    probe.card.update(
        n_train=len(fit), n_holdout=n_hold, skipped=skipped, num_classes=num_classes,
        embed_dim=int(features.shape[1]), train_accuracy=train_acc, holdout_accuracy=hold_acc, final_loss=loss,
        classnames=list(dataset.classnames),
    )
    return probe


def save_probe(probe: LinearProbe, folder: Path) -> None:
    """Writes ``probe.safetensors`` and ``probe.json`` into ``folder``."""
    save_file({"weight": probe.weight.detach().cpu().contiguous(), "bias": probe.bias.detach().cpu().contiguous()},
              str(folder / "probe.safetensors"))
    (folder / "probe.json").write_text(json.dumps(probe.card, indent=2, default=str), encoding="utf-8")


def load_probe(folder: str | Path) -> LinearProbe:
    """Reads a probe written by :func:`save_probe`; raises DataError naming the folder if it is incomplete."""
    folder = Path(folder)
    try:
        tensors = load_file(str(folder / "probe.safetensors"))
        card = json.loads((folder / "probe.json").read_text(encoding="utf-8"))
        return LinearProbe(tensors["weight"], tensors["bias"], list(card["classnames"]), card)
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"probe cache {folder} is unreadable ({exc}); delete the folder to retrain") from exc


def get_probe(encoder: Encoder, spec: ProbeSpec, batch_size: int = 64, on_error: str = "raise") -> LinearProbe:
    """The cached probe of ``encoder`` for ``spec``, trained and cached on first use."""
    key, parts = probe_key(encoder, spec)

    def build(folder: Path) -> None:
        log.info("training a linear probe of %s on %s (split %s)", encoder.name, spec.dataset, spec.split)
        probe = train_probe(encoder, spec, batch_size, on_error)
        probe.card.update(key=key, **parts)
        save_probe(probe, folder)

    probe = load_probe(cached(key, build, root=cache_dir() / "probes")).to(encoder.device)
    log.info("linear probe %s of %s on %s: train accuracy %s, held-out accuracy %s (%d + %d samples)", key,
             encoder.name, spec.dataset, _pct(probe.card.get("train_accuracy")),
             _pct(probe.card.get("holdout_accuracy")), probe.card.get("n_train", 0), probe.card.get("n_holdout", 0))
    return probe


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


_MEMO: weakref.WeakKeyDictionary[Encoder, dict[str, LinearProbe]] = weakref.WeakKeyDictionary()


def clear_probe_memo() -> None:
    """Forgets the in-process probes (the disk cache stays)."""
    _MEMO.clear()


def _memo_probe(encoder: Encoder, setup: ProbeSetup) -> LinearProbe:
    key = json.dumps(setup.spec.to_dict(), sort_keys=True, default=str)
    memo = _MEMO.setdefault(encoder, {})
    if key not in memo:
        probe = get_probe(encoder, setup.spec, setup.batch_size, setup.on_error)
        if setup.choice == "true" and setup.eval_classnames and list(setup.eval_classnames) != probe.classnames:
            raise DataError(
                f"probe_class=true: the probe's classes (dataset {probe.card.get('dataset')!r}, "
                f"{len(probe.classnames)}) differ from the {len(setup.eval_classnames)} classes of the evaluated "
                "dataset, so labels cannot pick a probe class; use --option probe_class=top1 or a probe dataset with "
                "the same classes"
            )
        memo[key] = probe
    return memo[key]


# ---------------------------------------------------------------------------------------- target
@dataclass(frozen=True)
class ProbeTarget:
    """The logit of one probe class per image (paper section 4.1, linear probing).

    Attributes:
        probe: The linear probe.
        classes: (B,) class index per image.
    """

    probe: LinearProbe
    classes: Tensor

    def score(self, embeddings: Tensor) -> Tensor:
        """``<e_i, W[c_i]> + b[c_i]`` for each image i (B,); its gradient in ``e_i`` is ``W[c_i]``."""
        classes = self.classes.to(embeddings.device)
        weight = self.probe.weight.to(embeddings)[classes]
        return (embeddings * weight).sum(-1) + self.probe.bias.to(embeddings)[classes]

    def repeat_interleave(self, n: int) -> ProbeTarget:
        return ProbeTarget(self.probe, self.classes.repeat_interleave(n, dim=0))


def _true_classes(probe: LinearProbe, labels: Tensor) -> Tensor:
    labels = labels.to(torch.long)
    if bool((labels < 0).any()):
        raise DataError(
            "probe_class=true needs a class label per image, but the dataset gives label -1; use "
            "--option probe_class=top1 to explain the probe's own prediction"
        )
    if bool((labels >= len(probe.classnames)).any()):
        raise DataError(f"labels up to {int(labels.max())} exceed the probe's {len(probe.classnames)} classes")
    return labels


def _top1_classes(probe: LinearProbe, encoder: Encoder, images: Tensor) -> Tensor:
    with torch.no_grad():
        return probe.logits(encoder(images.to(encoder.device))).argmax(dim=1)


def probe_target(encoder: Encoder, batch: Batch, probe: ProbeSetup | None = None) -> ProbeTarget:
    """TARGETS factory ``probe``: the probe class logit of each image of ``batch`` (option ``probe_class``).

    Args:
        encoder: The encoder whose frozen embeddings the probe reads (its probe is trained on first use).
        batch: The images (for ``top1``) and labels (for ``true``).
        probe: The run's probe setup (:meth:`aft_bench.evaluation.context.RunContext.probe_setup`).

    Raises:
        ValueError: Without a probe setup.
        DataError: For true classes without labels, or an unusable probe dataset.
    """
    if probe is None:
        raise ValueError("the probe target needs the run's probe setup (its options name the probe's dataset)")
    linear = _memo_probe(encoder, probe)
    classes = _true_classes(linear, batch.labels) if probe.choice == "true" else \
        _top1_classes(linear, encoder, batch.images)
    return ProbeTarget(linear, classes.to(encoder.device))
