"""Linear probes on frozen image embeddings: training, the cache and the per-process memo.

The AFT paper (section 4.1, Fig. 2d, Table 1 right half, Fig. 3 bottom) also explains a linear
classifier trained on the frozen CLIP image embeddings of a labelled dataset (linear probing, Radford
et al. 2021): the saliency of an image is taken with respect to the probe's logit of one class. This
module trains such a probe (``nn.Linear(D, C)`` on unit-norm embeddings, full-batch L-BFGS on the
mean cross-entropy plus ``weight_decay / 2 * ||W||^2``, zero initialisation, so the fit is the
unique optimum of a convex problem and deterministic: :mod:`aft_bench.evaluation.probe.linear`), caches it, and
serves it to the ``probe`` target (:mod:`aft_bench.evaluation.targets.probe`) and classifier:

    aft-bench run --task pointing_game --option target=probe [--option probe_class=top1]

Options (``--option key=value``; all optional; :mod:`aft_bench.evaluation.probe.options`):
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
import weakref
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from aft_bench.core.cache import cache_dir, cached
from aft_bench.core.registries import DATASETS
from aft_bench.data.base import DataError, Dataset, select_ids
from aft_bench.evaluation.probe.linear import LinearProbe, accuracy, fit_linear
from aft_bench.evaluation.probe.options import ProbeSetup, ProbeSpec
from aft_bench.evaluation.streaming import BadSamples, stream_batches
from aft_bench.models.encoder import Encoder

log = logging.getLogger(__name__)

PROBE_VERSION = 1
"""Bumped whenever a probe trained with the same options would differ (invalidates the cache)."""























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


def memo_probe(encoder: Encoder, setup: ProbeSetup) -> LinearProbe:
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








