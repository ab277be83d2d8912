"""M2IB (Wang, Rudner & Wilson, NeurIPS 2023, "Visual Explanations of Image-Text Representations via
Multi-Modal Information Bottleneck Attribution"), image side, batched.

An information bottleneck (Schulz et al. 2020, IBA) is inserted after one block of the image tower:
the block's features R are replaced by ``Z = lambda * R + (1 - lambda) * eps`` with
``lambda = sigmoid(alpha)`` per token and channel. ``alpha`` (initialised to 5) is fitted with Adam to

    loss = beta * mean KL( p(Z | R) || q(Z) ) - mean cos(image(Z), text),

averaged over noise samples, where ``q`` is the distribution of the noise ``eps``. Two noise modes:

- ``standard`` (the default): ``eps ~ N(0, 1)``, so the KL is ``KL( N(lambda R, (1 - lambda)^2) || N(0, 1) )``
  on the raw features. This is Wang et al.'s released code (``scripts/iba.py`` of
  github.com/YingWANGG/M2IB: ``_sample_t`` adds standard normal noise, ``_calc_capacity`` is the KL to
  N(0, 1)), whose maps the AFT paper shows.
- ``feature``: IBA's form (Schulz et al. 2020; ``_do_restrict_information`` in ``IBA/pytorch.py`` of
  github.com/BioroboticsLab/IBA): ``eps ~ N(mu, sigma^2)`` with the features' mean and std, and the
  bottleneck and its KL taken on the standardised features ``(R - mu) / sigma``, which is
  ``KL( N(lambda (R - mu) / sigma, (1 - lambda)^2) || N(0, 1) )``. As in IBA, sigma is floored at 0.01.
  Unlike IBA, which estimates mu and sigma per feature over a dataset, they are each channel's mean
  and std over the image's own tokens, so a map never depends on other images.

In both modes the KL is measured against the noise the bottleneck injects (the KL is invariant to the
affine standardisation), so the compression term and the noise are one model. The map is the KL summed
over channels at each patch token (class token dropped), on the patch grid, upsampled. Defaults follow
the authors' release (block 9 of 12, Adam lr 1, 10 steps, 10 noise samples, beta 0.1, N(0, 1) noise).
Unlike the release, which fits one image at a time through the whole model, all images of a batch are
fitted at once (Adam is elementwise, so each image's fit is unchanged), the blocks before the
bottleneck run once, and the last block is computed for the class token alone when the embedding reads
nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aft_bench.attributions.base import Attribution, Target, upsample
from aft_bench.attributions.gradients import eval_with_grad
from aft_bench.core.registries import ATTRIBUTIONS
from aft_bench.models.encoder import Encoder, EncoderKind, UnsupportedEncoderError

MIN_VAR = 1e-12
MIN_STD = 0.01  # IBA's floor on the feature std (``min_std`` of its PerSampleBottleneck)


# ---------------------------------------------------------------------------------------- tower split
@dataclass(frozen=True)
class TowerSplit:
    """An image tower cut after one block or stage.

    Attributes:
        front: Pixels in [0, 1] (B x 3 x H x W) -> features after the cut, B x T x C (no gradient).
        tail: Features B x T x C -> unit-norm image embeddings B x D (differentiable).
        grid: The (h, w) grid that ``patches`` tokens lie on, row by row.
        patches: Slice of the T tokens forming the grid (a ViT's class and other prefix tokens excluded).
    """

    front: Callable[[Tensor], Tensor]
    tail: Callable[[Tensor], Tensor]
    grid: tuple[int, int]
    patches: slice


class _Captured(Exception):  # noqa: N818 - control flow, not an error
    """Stops a forward pass once the hooked module has produced its output."""

    def __init__(self, output: Tensor) -> None:
        super().__init__()
        self.output = output


def _output_of(module: nn.Module, run: Callable[[], object]) -> Tensor:
    """Output of ``module`` during ``run()``; the rest of the forward pass is skipped."""

    def hook(_module: nn.Module, _inputs: object, output: Tensor) -> None:
        raise _Captured(output)

    handle = module.register_forward_hook(hook)
    try:
        run()
    except _Captured as captured:
        return captured.output
    finally:
        handle.remove()
    raise RuntimeError(f"{type(module).__name__} was not called during the forward pass")


def split_vit(encoder: Encoder, block: int | None) -> TowerSplit:
    """Cuts a ViT of any backend after ``block`` (default: block 9 of 12 scaled to the depth, 0-based); the rest of
    the tower is the encoder's :meth:`~aft_bench.models.encoder.Encoder.tail_after`."""
    blocks = encoder.blocks
    index = int(0.75 * len(blocks)) if block is None else encoder.resolve_block(block)
    rest = encoder.tail_after(index)

    def front(pixels: Tensor) -> Tensor:
        with torch.no_grad():
            return encoder.batch_first(_output_of(blocks[index], lambda: encoder(pixels)))

    def tail(features: Tensor) -> Tensor:
        return F.normalize(rest(features).float(), dim=-1)

    gh, gw = encoder.grid_size
    return TowerSplit(front, tail, (gh, gw), encoder.patch_slice(encoder.num_prefix_tokens + gh * gw))


def split_resnet(encoder: Encoder, stage: int | None) -> TowerSplit:
    """Cuts a CNN of any backend after stage ``stage`` (1..n, default 3): an open_clip ModifiedResNet's residual
    stages, a timm CNN's feature levels; the rest of the tower is
    :meth:`~aft_bench.models.encoder.Encoder.tail_after_stage`.
    """
    if encoder.kind != "cnn":
        raise UnsupportedEncoderError(
            f"attribution 'm2ib' cuts CNNs (open_clip ModifiedResNets, timm CNNs) at a stage; {encoder.name!r} is a "
            f"{encoder.kind}: give block= instead"
        )
    try:
        stages = encoder.num_blocks
    except UnsupportedEncoderError as exc:
        raise UnsupportedEncoderError(
            f"attribution 'm2ib' supports ViTs, open_clip ModifiedResNets and timm CNNs; {encoder.name!r} has a "
            f"{type(encoder.visual).__name__} image tower ({exc}). Choose another method for this encoder."
        ) from exc
    stage = min(3, stages) if stage is None else stage
    layer = encoder.stage(stage)
    rest = encoder.tail_after_stage(stage)
    with torch.no_grad():
        probe = torch.zeros(1, 3, *encoder.image_size, device=encoder.device)
        grid = tuple(_output_of(layer, lambda: encoder(probe)).shape[-2:])

    def front(pixels: Tensor) -> Tensor:
        with torch.no_grad():
            fmap = _output_of(layer, lambda: encoder(pixels))
        return fmap.flatten(2).transpose(1, 2)  # B x hw x C

    def tail(features: Tensor) -> Tensor:
        x = features.transpose(1, 2).reshape(features.shape[0], features.shape[2], *grid)
        return F.normalize(rest(x).float(), dim=-1)

    return TowerSplit(front, tail, grid, slice(0, grid[0] * grid[1]))


# Which splitter serves which encoder kind (the site argument: ViT block or ResNet stage).
SPLITTERS: dict[str, Callable[[Encoder, int | None], TowerSplit]] = {"vit": split_vit, "cnn": split_resnet}


# ---------------------------------------------------------------------------------------- bottleneck
def gaussian_kl(mean: Tensor, var: Tensor) -> Tensor:
    """Elementwise KL( N(mean, var) || N(0, 1) ) = (mean^2 + var - log var - 1) / 2."""
    var = var.clamp_min(MIN_VAR)
    return 0.5 * (mean.pow(2) + var - var.log() - 1.0)


def noise_statistics(features: Tensor, noise: str) -> tuple[Tensor, Tensor]:
    """Per-image, per-channel noise mean and std (B x 1 x C) for ``features`` (B x T x C).

    ``standard``: 0 and 1, N(0, 1) as Wang et al.'s release samples; ``feature``: each channel's mean
    and std over the image's tokens, the std floored at :data:`MIN_STD` (IBA's noise matching the
    feature statistics, computed per image so that maps do not depend on the batch).
    """
    if noise not in NOISE_MODES:
        raise ValueError(f"unknown noise {noise!r}; choose from {sorted(NOISE_MODES)}")
    return NOISE_MODES[noise](features)


NOISE_MODES: dict[str, Callable[[Tensor], tuple[Tensor, Tensor]]] = {
    "standard": lambda f: (torch.zeros_like(f[:, :1]), torch.ones_like(f[:, :1])),
    "feature": lambda f: (f.mean(dim=1, keepdim=True), f.std(dim=1, keepdim=True, unbiased=False).clamp_min(MIN_STD)),
}


def apply_bottleneck(features: Tensor, lam: Tensor, eps: Tensor, stats: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """The bottleneck's output and its elementwise KL (all arguments broadcast together).

    With noise ``mu + sigma * eps`` (``stats = (mu, sigma)``, ``eps`` standard normal draws):
    ``Z = lam * R + (1 - lam) * (mu + sigma * eps)`` and
    ``KL( N(lam * (R - mu) / sigma, (1 - lam)^2) || N(0, 1) )``, the KL of ``p(Z | R)`` to the noise
    distribution in standardised units (IBA, Schulz et al. 2020; with ``mu = 0``, ``sigma = 1`` the KL
    on the raw features of Wang et al.'s M2IB release).

    Returns:
        (Z, KL): Z of the shape all arguments broadcast to, KL of the shape all but ``eps`` broadcast to.
    """
    mean, std = stats
    z = lam * features + (1.0 - lam) * (mean + std * eps)
    kl = gaussian_kl(lam * ((features - mean) / std), (1.0 - lam).pow(2))
    return z, kl


def bottleneck_loss(
    split: TowerSplit,
    features: Tensor,
    alpha: Tensor,
    eps: Tensor,
    stats: tuple[Tensor, Tensor],
    target: Target,
    beta: float,
) -> tuple[Tensor, Tensor]:
    """Per-image M2IB loss and the KL it penalises.

    Args:
        split: The tower cut at the bottleneck.
        features: Features R after the cut, B x T x C (float32).
        alpha: Bottleneck logits, B x T x C; ``lambda = sigmoid(alpha)``.
        eps: Standard normal draws shared by all images, S x T x C (S noise samples).
        stats: Noise mean and std, each B x 1 x C (:func:`noise_statistics`).
        target: What each image's embedding is scored against.
        beta: Weight of the KL term.

    Returns:
        (loss B, kl B x T x C) with ``loss = beta * mean KL - mean over samples of target score``.
    """
    batch, samples = features.shape[0], eps.shape[0]
    lam = torch.sigmoid(alpha)
    z, kl = apply_bottleneck(features[:, None], lam[:, None], eps[None], (stats[0][:, None], stats[1][:, None]))
    embeddings = split.tail(z.flatten(0, 1))
    fit = target.repeat_interleave(samples).score(embeddings).view(batch, samples).mean(dim=1)
    kl = kl[:, 0]
    return beta * kl.mean(dim=(1, 2)) - fit, kl


@dataclass(frozen=True)
class BottleneckFit:
    """Result of :func:`fit_bottleneck`: the KL of the last step (B x T x C) and the losses (steps x B)."""

    kl: Tensor
    losses: Tensor


def fit_bottleneck(
    split: TowerSplit,
    features: Tensor,
    target: Target,
    *,
    beta: float,
    steps: int,
    lr: float,
    samples: int,
    noise: str,
    alpha_init: float,
    seed: int,
) -> BottleneckFit:
    """Fits the bottleneck of every image of the batch at once (Adam on B x T x C logits).

    The loss summed over images has per-image gradients, and Adam updates each element on its own,
    so each image's fit equals a fit of that image alone. Noise draws come from a generator seeded
    with ``seed`` and are shared by all images, so they do not depend on batch position. The KL of the
    last forward pass (before the last update, as the authors' release reads it) is returned.
    """
    if steps < 1 or samples < 1:
        raise ValueError(f"steps and samples must be >= 1, got steps={steps}, samples={samples}")
    features = features.detach().float()
    stats = noise_statistics(features, noise)
    alpha = torch.full_like(features, float(alpha_init), requires_grad=True)
    optimizer = torch.optim.Adam([alpha], lr=lr)
    generator = torch.Generator(device=features.device).manual_seed(seed)
    losses = []
    with torch.enable_grad():
        for _ in range(steps):
            eps = torch.randn((samples, *features.shape[1:]), generator=generator, device=features.device)
            loss, kl = bottleneck_loss(split, features, alpha, eps, stats, target, beta)
            (alpha.grad,) = torch.autograd.grad(loss.sum(), [alpha])
            optimizer.step()
            losses.append(loss.detach())
    return BottleneckFit(kl.detach(), torch.stack(losses))


@ATTRIBUTIONS.register("m2ib", help="multi-modal information bottleneck, batched (Wang et al. 2023)")
class M2IB(Attribution):
    """M2IB image maps (Wang et al. 2023) for ViTs and CNNs of every backend.

    On a ViT the bottleneck sits after a transformer block; on a CNN after a stage (an open_clip
    ModifiedResNet's residual stage, a timm CNN's feature level; tokens are the stage's spatial positions).

    Args:
        block: ViT block after which the bottleneck sits (0-based; default ``int(0.75 * depth)``,
            block 9 of 12 as in the authors' release).
        stage: CNN stage (1..n, default 3) for CNN encoders.
        beta: Weight of the KL (compression) term (default 0.1).
        steps: Adam steps (default 10).
        lr: Adam learning rate (default 1).
        samples: Noise samples per step (default 10).
        alpha_init: Initial bottleneck logit (default 5, lambda ~ 0.993).
        noise: ``standard`` (default): N(0, 1) noise and the KL on the raw features, as Wang et al.'s
            release; ``feature``: IBA's form (Schulz et al. 2020), noise with each channel's mean and
            std over the image's tokens and the KL on the standardised features.
        seed: Seed of the noise draws.
    """

    name: ClassVar[str] = "m2ib"
    supports: ClassVar[frozenset[EncoderKind]] = frozenset({"vit", "cnn"})

    def __init__(
        self,
        block: int | None = None,
        stage: int | None = None,
        beta: float = 0.1,
        steps: int = 10,
        lr: float = 1.0,
        samples: int = 10,
        alpha_init: float = 5.0,
        noise: str = "standard",
        seed: int = 0,
    ) -> None:
        if noise not in NOISE_MODES:
            raise ValueError(f"unknown noise {noise!r}; choose from {sorted(NOISE_MODES)}")
        if steps < 1 or samples < 1:
            raise ValueError(f"steps and samples must be >= 1, got steps={steps}, samples={samples}")
        self.site = {"vit": block, "cnn": stage}
        self.fit_args = dict(
            beta=beta, steps=steps, lr=lr, samples=samples, noise=noise, alpha_init=alpha_init, seed=seed
        )

    def split(self, encoder: Encoder) -> TowerSplit:
        """The encoder's tower cut where this method puts the bottleneck."""
        return SPLITTERS[encoder.kind](encoder, self.site[encoder.kind])

    def attribute(self, encoder: Encoder, images: Tensor, target: Target) -> Tensor:
        split = self.split(encoder)
        with eval_with_grad(encoder):
            features = split.front(images.detach())
            result = fit_bottleneck(split, features, target, **self.fit_args)
        saliency = result.kl[:, split.patches].sum(dim=-1)
        return upsample(saliency.reshape(-1, *split.grid), tuple(images.shape[-2:]))
