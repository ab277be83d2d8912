"""The bundled toy CLIP: a tiny open_clip ViT trained contrastively on the shapes world.

aft-bench's embedded default needs a CLIP that exists without downloads. This module trains one with
the objective of CLIP (Radford et al. 2021, "Learning transferable visual models from natural language
supervision"): a symmetric InfoNCE loss between image and caption embeddings with a learnable logit
scale, AdamW and a cosine schedule with linear warm-up. The architecture is open_clip's own ``CLIP``
(a ViT image tower with an 8 x 8 patch grid, so saliency maps have spatial structure, and a causal
text transformer over open_clip's bundled BPE tokenizer), so every code path the real encoders take
(loading, Grad-CAM on blocks, attention) serves the toy unchanged.

Duplicate captions. The shapes world has ``len(CLASSNAMES)`` captions, so a batch of 64 images holds
each caption several times, and plain InfoNCE would push an image away from the very caption that
describes it whenever a same-class image sits in another column. The loss here de-duplicates: the
image-to-text term is a cross-entropy over the *distinct* captions of the batch (one column each), and
the text-to-image term gives every distinct caption a soft target spread uniformly over all images of
its class. With one image per caption this is exactly CLIP's loss.

Training in about a minute and a half on two CPU cores. ViTs trained from scratch on little data
learn slowly; two published remedies that keep the architecture a plain ViT make the difference here:
the fixed 2-D sine-cosine position embedding and the mimetic initialisation of attention (Trockman &
Kolter 2023), which together start the attention local. The training images are rendered once into
a uint8 pool (rendering is as costly as a training step), the token table gets sparse updates, and
the thread count is picked by timing (see :func:`pick_threads`).

The trained encoder is cached in the user cache directory (:mod:`aft_bench.cache`) under the hash of
its :class:`ToyRecipe` and a fingerprint of the world, so a change to either retrains;
:func:`load_toy_encoder` is the ``toy`` entry of the encoder registry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from aft_bench.cache import cached
from aft_bench.data.shapes import CLASSNAMES, caption, generate_batch
from aft_bench.encoder import Encoder
from aft_bench.loading import build_model, load_encoder, save_encoder, tokenizer_for

log = logging.getLogger(__name__)

TRAINER_VERSION = 1  # bump when the training code changes what a recipe produces
CHECKPOINT_NAME = "toy.safetensors"
_RENDER_CHUNK = 500
# Number of leading dihedral codes (see :func:`dihedral`) each augmentation draws from.
AUGMENTATIONS: dict[str, int] = {"none": 1, "hflip": 2, "dihedral": 8}


@dataclass(frozen=True)
class ToyRecipe:
    """Architecture and training hyper-parameters of the toy CLIP; its :meth:`key` names the cache entry.

    Attributes:
        image_size: Input side in pixels.
        patch_size: ViT patch side (``image_size / patch_size`` is the token grid side).
        vision_width, vision_layers, vision_heads, vision_mlp_ratio: ViT tower shape.
        pos_embed: open_clip ``pos_embed_type`` of the ViT: ``"sin_cos_2d"`` (fixed 2-D sine-cosine
            embedding; neighbouring patches start out similar, which the mimetic attention below turns
            into local attention) or ``"learnable"``.
        mimetic: ``(alpha_qk, beta_qk, alpha_vo, beta_vo)`` of the mimetic initialisation of the ViT's
            attention (:func:`mimetic_init`), or ``None`` for open_clip's default initialisation.
        text_width, text_layers, text_heads, context_length, vocab_size: Text tower shape (the
            vocabulary is open_clip's BPE).
        embed_dim: Joint embedding size.
        mean, std: Per-channel input normalisation.
        steps, batch_size, lr, warmup, weight_decay: Optimisation (AdamW, linear warm-up over
            ``warmup`` steps, then cosine decay to zero).
        pool_size: Number of train-split images rendered once and sampled for the batches.
        augment: Random symmetries applied to each sampled image (:data:`AUGMENTATIONS`): ``"none"``,
            ``"hflip"`` (mirror left-right) or ``"dihedral"`` (flips and transposes: all 8 symmetries of
            the square). Mirroring leaves every shape class unchanged.
        seed: Seed of the initial weights and of the batch order.
        data_seed: World seed of the training images (train split).
        eval_size, eval_seed: Held-out test-split images for the zero-shot accuracy on the card.
    """

    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 64
    vision_layers: int = 4
    vision_heads: int = 4
    vision_mlp_ratio: float = 2.0
    pos_embed: str = "sin_cos_2d"
    mimetic: tuple[float, float, float, float] | None = (0.7, 0.7, 0.4, 0.4)
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    context_length: int = 16
    vocab_size: int = 49408
    embed_dim: int = 64
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    steps: int = 1400
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.1
    pool_size: int = 10_000
    augment: str = "hflip"
    seed: int = 0
    data_seed: int = 0
    eval_size: int = 500
    eval_seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"ToyRecipe: image_size={self.image_size} is not a multiple of "
                             f"patch_size={self.patch_size}")
        for name in ("vision_width", "text_width"):
            heads = getattr(self, name.replace("width", "heads"))
            if getattr(self, name) % heads:
                raise ValueError(f"ToyRecipe: {name}={getattr(self, name)} is not divisible by {heads} heads")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"ToyRecipe: augment={self.augment!r}; use one of {sorted(AUGMENTATIONS)}")
        for name in ("steps", "batch_size", "pool_size", "eval_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ToyRecipe: {name}={getattr(self, name)} must be positive")

    def model_cfg(self) -> dict[str, Any]:
        """The open_clip ``CLIP`` config dict (as in open_clip's ``model_configs/*.json``)."""
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "width": self.vision_width,
                "layers": self.vision_layers,
                "head_width": self.vision_width // self.vision_heads,
                "mlp_ratio": self.vision_mlp_ratio,
                "pos_embed_type": self.pos_embed,
            },
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": self.vocab_size,
                "width": self.text_width,
                "heads": self.text_heads,
                "layers": self.text_layers,
            },
        }

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON-ready data (tuples as lists)."""
        return json.loads(json.dumps(asdict(self)))

    def key(self) -> str:
        """Short sha256 of the recipe's JSON and :data:`TRAINER_VERSION`: any field change gives a new key."""
        payload = json.dumps({"trainer": TRAINER_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


DEFAULT_RECIPE = ToyRecipe()


# ---------------------------------------------------------------------------------------- data
def render_pool(recipe: ToyRecipe, progress: bool = True) -> tuple[Tensor, Tensor]:
    """Renders the training pool once: (N x 3 x H x W uint8 images, N int64 labels) of the train split."""
    images = torch.empty((recipe.pool_size, 3, recipe.image_size, recipe.image_size), dtype=torch.uint8)
    labels = torch.empty(recipe.pool_size, dtype=torch.long)
    starts = range(0, recipe.pool_size, _RENDER_CHUNK)
    for start in tqdm(starts, desc="toy: rendering shapes", unit="chunk", disable=not progress, leave=False):
        count = min(_RENDER_CHUNK, recipe.pool_size - start)
        chunk, _, chunk_labels = generate_batch(recipe.data_seed, "train", start, count, recipe.image_size)
        images[start : start + count] = (chunk * 255).round_().to(torch.uint8)
        labels[start : start + count] = chunk_labels
    return images, labels


def dihedral(images: Tensor, codes: Tensor) -> Tensor:
    """Applies one symmetry of the square per image (N x C x H x W, square).

    ``codes`` (N, in 0..7): bit 0 mirrors left-right, bit 1 top-bottom, bit 2 transposes; so codes 0-1
    are the identity and the mirror, 0-7 all eight symmetries. None changes a shape's class.
    """
    out = images
    out = torch.where((codes & 1).bool().view(-1, 1, 1, 1), out.flip(-1), out)
    out = torch.where((codes & 2).bool().view(-1, 1, 1, 1), out.flip(-2), out)
    return torch.where((codes & 4).bool().view(-1, 1, 1, 1), out.transpose(-1, -2), out)


def batch_indices(pool_size: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Indices into the pool for each step: successive shuffled epochs, cut into batches."""
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        while order.numel() < batch_size:
            order = torch.cat([order, torch.randperm(pool_size, generator=generator)])
        yield order[:batch_size]
        order = order[batch_size:]


# ---------------------------------------------------------------------------------------- model
@torch.no_grad()
def mimetic_init(visual: torch.nn.Module, alpha_qk: float, beta_qk: float, alpha_vo: float, beta_vo: float) -> None:
    """Mimetic initialisation of a ViT's self-attention (Trockman & Kolter 2023, "Mimetic initialization of
    self-attention layers", ICML).

    Per head, the query and key weights are set so that ``W_q^T W_k`` is the best rank-``head_dim``
    approximation of ``alpha_qk * Z + beta_qk * I``; the value and output weights so that
    ``W_v^T W_o^T = alpha_vo * Z' - beta_vo * I`` (``Z, Z'`` with i.i.d. N(0, 1/width) entries), both
    factored by an SVD. With the sine-cosine position embedding the attention then starts out local (a
    token attends to itself and its neighbours), the pattern of pretrained ViTs, and small ViTs trained
    from scratch learn markedly faster. Draws from the global torch RNG.
    """
    for block in visual.transformer.resblocks:
        attn = block.attn
        width, heads = attn.embed_dim, attn.num_heads
        head_dim = width // heads
        eye = torch.eye(width)
        weight = attn.in_proj_weight  # rows: [W_q; W_k; W_v], each width x width (out x in)
        for head in range(heads):
            query = slice(head * head_dim, (head + 1) * head_dim)
            key = slice(width + head * head_dim, width + (head + 1) * head_dim)
            u, s, vh = torch.linalg.svd(alpha_qk * torch.randn(width, width) / math.sqrt(width) + beta_qk * eye)
            root = s[:head_dim].sqrt()
            weight[query] = (u[:, :head_dim] * root).T
            weight[key] = (vh[:head_dim].T * root).T
        u, s, vh = torch.linalg.svd(alpha_vo * torch.randn(width, width) / math.sqrt(width) - beta_vo * eye)
        root = s.sqrt()
        weight[2 * width :] = (u * root).T
        attn.out_proj.weight.copy_((root[:, None] * vh).T)


def build_toy_model(recipe: ToyRecipe) -> Any:
    """The randomly initialised open_clip ``CLIP`` of ``recipe`` (global torch RNG), mimetic attention if asked."""
    model = build_model(recipe.model_cfg())
    if recipe.mimetic is not None:
        mimetic_init(model.visual, *recipe.mimetic)
    return model


# ---------------------------------------------------------------------------------------- loss
def deduplicated_clip_loss(image_emb: Tensor, text_emb: Tensor, labels: Tensor, logit_scale: Tensor) -> Tensor:
    """CLIP's symmetric InfoNCE with identical captions merged into one column (see the module docstring).

    Args:
        image_emb: B x D unit-norm image embeddings.
        text_emb: K x D unit-norm embeddings of the K distinct captions of the batch.
        labels: B indices into the K captions (every one of the K must occur).
        logit_scale: Log of the inverse temperature (CLIP's learnable ``logit_scale``).

    Returns:
        The mean of the image-to-text cross-entropy and the text-to-image soft-target KL divergence.
    """
    logits = logit_scale.exp() * image_emb @ text_emb.T  # B x K
    image_to_text = F.cross_entropy(logits, labels)
    members = (labels[None, :] == torch.arange(text_emb.shape[0], device=labels.device)[:, None]).to(logits.dtype)
    targets = members / members.sum(dim=1, keepdim=True)  # K x B, uniform over the images of each caption
    # KL divergence from the soft target: its cross-entropy less its entropy log(n_k), so that a perfect
    # fit scores 0 (the gradient is the cross-entropy's).
    cross_entropy = -(targets * F.log_softmax(logits.T, dim=1)).sum(dim=1)
    text_to_image = (cross_entropy - members.sum(dim=1).log()).mean()
    return (image_to_text + text_to_image) / 2


# ---------------------------------------------------------------------------------------- training
def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; containers often allow fewer than the host has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pick_threads(probe: Callable[[], object], most: int) -> int:
    """The faster of 1 and ``most`` intra-op threads for ``probe`` (timed once each after a warm-up).

    On a busy machine torch's OpenMP threads wait at every operator for a thread the scheduler has
    pre-empted, and a small model's step can run ten times slower on 2 threads than on 1; timing a
    forward pass both ways (a fraction of a second) avoids that trap without giving up the cores of an
    idle machine.
    """
    timings: dict[int, float] = {}
    for threads in sorted({1, max(1, most)}):
        torch.set_num_threads(threads)
        probe()
        start = time.perf_counter()
        probe()
        timings[threads] = time.perf_counter() - start
    return min(timings, key=lambda n: timings[n])


@contextlib.contextmanager
def _restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _optimisers(model: torch.nn.Module, recipe: ToyRecipe) -> list[torch.optim.Optimizer]:
    """AdamW with weight decay on matrices only (gains, biases, embeddings and the logit scale are exempt,
    as in CLIP), plus a sparse Adam for the token table.

    The world's captions use a dozen of the 49408 BPE tokens; a dense AdamW update of the whole
    table (3M entries) would cost a tenth of every step, so the table takes sparse gradients and only its
    used rows are updated. (Freezing it instead costs several points of accuracy: the captions then differ
    only by tiny random token vectors.)
    """
    table = model.token_embedding
    decay, exempt = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad or param is table.weight:
            continue
        is_matrix = param.ndim >= 2 and "positional_embedding" not in name
        (decay if is_matrix else exempt).append(param)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": exempt, "weight_decay": 0.0}]
    adam = {"lr": recipe.lr, "betas": (0.9, 0.98), "eps": 1e-6}
    return [torch.optim.AdamW(groups, **adam), torch.optim.SparseAdam([table.weight], **adam)]


def _schedule(recipe: ToyRecipe) -> Any:
    def factor(step: int) -> float:
        if step < recipe.warmup:
            return (step + 1) / recipe.warmup
        progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("aft-bench", "torch", "open_clip_torch", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def fit_toy(recipe: ToyRecipe, progress: bool = True, threads: int | None = None) -> tuple[Encoder, dict[str, Any]]:
    """Trains the toy CLIP from scratch in memory; returns the encoder and its training metrics.

    Deterministic on CPU for a given recipe and thread count: the initial weights and the batch order
    come from ``recipe.seed`` (the global torch RNG state is restored afterwards), the images from
    ``recipe.data_seed``. torch's CPU reductions split work by thread, so a different thread count
    gives slightly different weights; the card records the count used.

    Args:
        recipe: Architecture and hyper-parameters.
        progress: Show tqdm bars (rendering, and training with running loss and batch accuracy).
        threads: torch intra-op threads; ``None`` picks the faster of 1 and all available CPUs
            (:func:`pick_threads`). The previous setting is restored afterwards.

    Returns:
        The encoder (eval mode) and ``training_seconds``, ``zero_shot_accuracy``, ``final_loss``, ...
    """
    started = time.perf_counter()
    with _restore_threads(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = build_toy_model(recipe)
        encoder = Encoder(model, tokenizer_for(recipe.model_cfg()), name="toy", mean=recipe.mean, std=recipe.std)
        pool_images, pool_labels = render_pool(recipe, progress)
        rendered = time.perf_counter()
        if threads is None:
            probe_batch = pool_images[: recipe.batch_size].float().div(255)
            with torch.no_grad():
                threads = pick_threads(lambda: encoder(probe_batch), min(torch.get_num_threads(), available_cpus()))
        torch.set_num_threads(threads)
        tokens = encoder.tokenizer([caption(c) for c in range(len(CLASSNAMES))])
        optimisers = _optimisers(model, recipe)
        schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, _schedule(recipe)) for opt in optimisers]
        model.token_embedding.sparse = True  # sparse gradients for the table while training (see _optimisers)
        generator = torch.Generator().manual_seed(recipe.seed)
        max_scale = math.log(100.0)
        encoder.train()
        bar = tqdm(batch_indices(recipe.pool_size, recipe.batch_size, recipe.steps, generator), total=recipe.steps,
                   desc="toy: training CLIP", unit="step", disable=not progress)
        loss_avg = acc_avg = 0.0
        for step, index in enumerate(bar):
            codes = torch.randint(0, AUGMENTATIONS[recipe.augment], (index.numel(),), generator=generator)
            images = dihedral(pool_images[index], codes).float().div_(255)
            classes, local = torch.unique(pool_labels[index], return_inverse=True)
            image_emb = encoder(images)
            text_emb = F.normalize(model.encode_text(tokens[classes]), dim=-1)
            loss = deduplicated_clip_loss(image_emb, text_emb, local, model.logit_scale)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"toy training: non-finite loss {loss.item()} at step {step}; "
                                         f"lower the recipe's lr ({recipe.lr})")
            for opt in optimisers:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt, scheduler in zip(optimisers, schedulers, strict=True):
                opt.step()
                scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, max_scale)
                acc = ((image_emb @ text_emb.T).argmax(dim=1) == local).float().mean().item()
            momentum = 0.9 if step else 0.0
            loss_avg = momentum * loss_avg + (1 - momentum) * loss.item()
            acc_avg = momentum * acc_avg + (1 - momentum) * acc
            bar.set_postfix(loss=f"{loss_avg:.3f}", acc=f"{acc_avg:.2f}", refresh=False)
        bar.close()
        model.token_embedding.sparse = False
        encoder.eval()
        trained = time.perf_counter()
        accuracy = zero_shot_accuracy(encoder, n=recipe.eval_size, seed=recipe.eval_seed)
    metrics = {
        "training_seconds": round(trained - started, 2),
        "render_seconds": round(rendered - started, 2),
        "optimisation_seconds": round(trained - rendered, 2),
        "threads": threads,
        "steps": recipe.steps,
        "final_loss": round(loss_avg, 4),
        "final_batch_accuracy": round(acc_avg, 4),
        "logit_scale": round(model.logit_scale.detach().exp().item(), 3),
        "zero_shot_accuracy": round(accuracy, 4),
        "zero_shot_n": recipe.eval_size,
        "zero_shot_split": "test",
        "zero_shot_seed": recipe.eval_seed,
    }
    log.info("toy CLIP trained in %.1f s (%d steps, %d threads): zero-shot top-1 %.1f%% on %d test images",
             metrics["training_seconds"], recipe.steps, threads, 100 * accuracy, recipe.eval_size)
    return encoder, metrics


def toy_card(recipe: ToyRecipe, metrics: dict[str, Any]) -> dict[str, Any]:
    """The JSON card of a trained toy: enough for ``load_encoder("ckpt:...")`` to rebuild it, plus provenance."""
    return {
        "name": "toy",
        "model_cfg": recipe.model_cfg(),
        "mean": list(recipe.mean),
        "std": list(recipe.std),
        "recipe": recipe.to_dict(),
        "recipe_key": recipe.key(),
        "world_fingerprint": world_fingerprint(recipe),
        "cache_key": toy_cache_key(recipe),
        "trainer_version": TRAINER_VERSION,
        "objective": "clip, identical captions merged (aft_bench.toy.deduplicated_clip_loss)",
        "data": f"shapes world, train split, seed {recipe.data_seed}, {recipe.pool_size} images",
        **metrics,
        "versions": _versions(),
    }


def train_toy(recipe: ToyRecipe, out_dir: str | Path, progress: bool = True,
              threads: int | None = None) -> dict[str, Any]:
    """Trains the toy CLIP (:func:`fit_toy`) and writes ``out_dir/toy.safetensors`` with its JSON card.

    Returns:
        The training metrics (also on the card).
    """
    encoder, metrics = fit_toy(recipe, progress, threads)
    save_encoder(encoder, Path(out_dir) / CHECKPOINT_NAME, toy_card(recipe, metrics))
    return metrics


# ---------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def zero_shot_accuracy(encoder: Encoder, n: int = 500, seed: int = 0, batch_size: int = 250) -> float:
    """Zero-shot top-1 accuracy on ``n`` held-out shapes images (test split, world seed ``seed``).

    Every image is compared with the prompts of all classes (``"a photo of a {colour} {shape}."``);
    the prediction is the most similar prompt.
    """
    if n < 1:
        raise ValueError(f"zero_shot_accuracy: n={n} must be positive")
    was_training = encoder.training
    encoder.eval()
    prompts = encoder.encode_text([caption(c) for c in range(len(CLASSNAMES))])
    correct = 0
    for start in range(0, n, batch_size):
        images, _, labels = generate_batch(seed, "test", start, min(batch_size, n - start), encoder.image_size)
        scores = encoder(images.to(encoder.device)) @ prompts.T
        correct += int((scores.argmax(dim=1).cpu() == labels).sum())
    encoder.train(was_training)
    return correct / n


# ---------------------------------------------------------------------------------------- registry entry
def world_fingerprint(recipe: ToyRecipe) -> str:
    """Short hash of the shapes world the recipe trains on (class names and a few rendered samples).

    Part of the cache key, so that a change to the world's generator retrains the toy even when the
    recipe is unchanged.
    """
    images, masks, labels = generate_batch(recipe.data_seed, "train", 0, 4, recipe.image_size)
    digest = hashlib.sha256(json.dumps(CLASSNAMES).encode())
    for tensor in (images, masks, labels):
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:8]


def toy_cache_key(recipe: ToyRecipe) -> str:
    """Cache directory name of a recipe's toy: ``toy-<recipe key>-<world fingerprint>``."""
    return f"toy-{recipe.key()}-{world_fingerprint(recipe)}"


def toy_checkpoint(recipe: ToyRecipe = DEFAULT_RECIPE) -> Path:
    """Path of the cached toy checkpoint, training it first if the cache does not hold it."""

    def build(directory: Path) -> None:
        log.info("training the bundled toy CLIP (recipe %s) on first use; it is cached in %s",
                 recipe.key(), directory.parent)
        train_toy(recipe, directory)

    return cached(toy_cache_key(recipe), build) / CHECKPOINT_NAME


def load_toy_encoder(device: str | torch.device = "cpu", recipe: ToyRecipe = DEFAULT_RECIPE) -> Encoder:
    """The ``toy`` encoder: the cached toy CLIP, trained on first use (see :func:`train_toy`)."""
    return load_encoder(f"ckpt:{toy_checkpoint(recipe)}", device=device)
