"""Robustness of attribution maps to input noise: SSIM of clean and noisy maps (paper appendix A.4, Table 7).

For each image the task computes the map of the clean image and the maps of the image with Gaussian
noise of standard deviation sigma added (sigma in 1/255 units, default 1, 3, 5, 7, 9 as in Table 7),
min-max normalises every map to [0, 1] and reports the SSIM (Wang et al. 2004, scikit-image
defaults, data range 1) of each noisy map with the clean one: one column ``ssim@<sigma>`` per level,
in percent, higher = more robust.

Noise is a pure function of (run seed, sample id, sigma), drawn on the CPU in float32: a sample gets
the same noise whatever its batch, batch position, device or the other sigmas asked for. Noisy images
are clipped to [0, 1] (option ``clip``, default true), so the encoder sees valid pixels as it would
for a real noisy photograph; the clean map explains the same target as the noisy ones (the target is
built once per clean batch and repeated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from aft_bench.core.options import option, parse_levels
from aft_bench.core.seeding import sample_generator
from aft_bench.data.base import Batch
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.map_task import MapOptions, MapTask
from aft_bench.evaluation.sample_task import Pair
from aft_bench.evaluation.task import Record, Reported
from aft_bench.metrics.ssim import CONSTANT_MAP, SSIM, is_constant, normalize_minmax, ssim

DEFAULT_SIGMAS: tuple[float, ...] = (1, 3, 5, 7, 9)


def metric_name(sigma: float) -> str:
    """The result column of noise level ``sigma`` (1/255 units): ``ssim@1``, ``ssim@0.5``."""
    return f"ssim@{sigma:g}"


def sample_noise(seed: int, sample_id: str, sigma: float, shape: Sequence[int]) -> Tensor:
    """Gaussian noise of std ``sigma / 255`` for one image (CPU float32), a pure function of its arguments."""
    return torch.randn(tuple(shape), generator=sample_generator(seed, sample_id, float(sigma))) * (float(sigma) / 255.0)


def noisy_copies(images: Tensor, ids: Sequence[str], sigmas: Sequence[float], seed: int,
                 clip: bool = True) -> Tensor:
    """Each image followed by its noisy copies: B x (1 + S) x C x H x W (index 0 = the clean image).

    Args:
        images: B x C x H x W pixels in [0, 1].
        ids: Sample id of each image (seeds its noise).
        sigmas: Noise standard deviations in 1/255 units.
        seed: Run seed.
        clip: Clip noisy pixels to [0, 1].
    """
    cpu = images.detach().float().cpu()
    levels = [cpu]
    for sigma in sigmas:
        noise = torch.stack([sample_noise(seed, sample_id, sigma, cpu.shape[1:]) for sample_id in ids])
        noisy = cpu + noise
        levels.append(noisy.clamp(0.0, 1.0) if clip else noisy)
    return torch.stack(levels, dim=1).to(device=images.device, dtype=images.dtype)


@dataclass(frozen=True)
class SsimOptions(MapOptions):
    """Options of the SSIM robustness task (besides the target and probe of every map task)."""

    sigmas: tuple[float, ...] = option(DEFAULT_SIGMAS, parse=parse_levels, help="noise stds in 1/255 units")
    clip: bool = option(True, help="clip noisy pixels to [0, 1]")


class SsimRobustness(MapTask):
    """SSIM between the map of each clean image and its maps under Gaussian noise, one column per sigma.

    Options: ``sigmas`` (list, 1/255 units; default 1, 3, 5, 7, 9), ``clip`` (default true). One
    attribution call per batch covers the clean and all noisy images (``batch_size * (1 + S)``
    images: lower ``--batch-size`` for large encoders). A sample whose clean map is constant has no
    structure to compare and is excluded as ``"constant map"``.
    """

    Options: ClassVar[type] = SsimOptions

    def metrics(self, options: Any) -> tuple[Reported, ...]:
        return tuple(SSIM.renamed(metric_name(s), f"SSIM of clean and sigma={s:g}/255 noisy maps")
                     for s in options.sigmas)

    def maps(self, ctx: RunContext, pair: Pair, batch: Batch) -> Tensor:
        """B x (1 + S) x H x W maps: the clean image's, then one per noise level."""
        images = noisy_copies(batch.images, batch.ids, ctx.options.sigmas, ctx.config.seed, ctx.options.clip)
        b, levels = images.shape[:2]
        target = ctx.target(pair.encoder, batch, pair.dataset).repeat_interleave(levels)
        maps = self.method(pair)(pair.encoder, images.flatten(0, 1).to(pair.encoder.device), target)
        return maps.view(b, levels, *maps.shape[1:])

    def score(self, ctx: RunContext, pair: Pair, maps: Tensor, batch: Batch) -> list[Record]:
        sigmas = ctx.options.sigmas
        b, levels = maps.shape[:2]
        normalized = normalize_minmax(maps.flatten(0, 1)).view(maps.shape)
        clean = normalized[:, :1].expand(-1, levels - 1, -1, -1).flatten(0, 1)
        values = ssim(normalized[:, 1:].flatten(0, 1), clean, data_range=1.0).view(b, levels - 1).tolist()
        constant = is_constant(maps[:, 0]).tolist()
        return [{"excluded": CONSTANT_MAP} if constant[i] else
                {"scores": {metric_name(s): v for s, v in zip(sigmas, values[i], strict=True)}} for i in range(b)]
