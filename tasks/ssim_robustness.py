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
from pathlib import Path

import torch
from torch import Tensor

from aft_bench.attributions.base import Attribution
from aft_bench.config import RunConfig
from aft_bench.data.base import Batch
from aft_bench.encoder import Encoder
from aft_bench.evaluation import MapTask, Record
from aft_bench.metrics.ssim import CONSTANT_MAP, is_constant, normalize_minmax, ssim
from aft_bench.tasks.options import parse_levels, sample_seed

DEFAULT_SIGMAS: tuple[float, ...] = (1, 3, 5, 7, 9)


def _sigmas(config: RunConfig) -> tuple[float, ...]:
    return parse_levels(config.options.get("sigmas", DEFAULT_SIGMAS), "sigmas")


def metric_name(sigma: float) -> str:
    """The result column of noise level ``sigma`` (1/255 units): ``ssim@1``, ``ssim@0.5``."""
    return f"ssim@{sigma:g}"


def sample_noise(seed: int, sample_id: str, sigma: float, shape: Sequence[int]) -> Tensor:
    """Gaussian noise of std ``sigma / 255`` for one image (CPU float32), a pure function of its arguments."""
    generator = torch.Generator().manual_seed(sample_seed(seed, sample_id, float(sigma)))
    return torch.randn(tuple(shape), generator=generator) * (float(sigma) / 255.0)


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


class SsimRobustness(MapTask):
    """SSIM between the map of each clean image and its maps under Gaussian noise, one column per sigma.

    Options: ``sigmas`` (list, 1/255 units; default 1, 3, 5, 7, 9), ``clip`` (default true). One
    attribution call per batch covers the clean and all noisy images (``batch_size * (1 + S)``
    images: lower ``--batch-size`` for large encoders). A sample whose clean map is constant has no
    structure to compare and is excluded as ``"constant map"``.
    """

    scale = 100.0

    def run(self, config: RunConfig) -> list[Path]:
        self.metrics = {metric_name(s): True for s in _sigmas(config)}
        return super().run(config)

    def maps(self, encoder: Encoder, method: Attribution, batch: Batch, config: RunConfig) -> Tensor:
        """B x (1 + S) x H x W maps: the clean image's, then one per noise level."""
        clip = bool(config.options.get("clip", True))
        images = noisy_copies(batch.images, batch.ids, _sigmas(config), config.seed, clip)
        b, levels = images.shape[:2]
        target = self.target(encoder, batch, config).repeat_interleave(levels)
        maps = method(encoder, images.flatten(0, 1).to(encoder.device), target)
        return maps.view(b, levels, *maps.shape[1:])

    def score(self, maps: Tensor, batch: Batch, config: RunConfig) -> list[Record]:
        sigmas = _sigmas(config)
        b, levels = maps.shape[:2]
        finite = torch.isfinite(maps).flatten(1).all(dim=1)
        safe = torch.where(finite[:, None, None, None], maps, torch.zeros_like(maps))
        normalized = normalize_minmax(safe.flatten(0, 1)).view(safe.shape)
        clean = normalized[:, :1].expand(-1, levels - 1, -1, -1).flatten(0, 1)
        values = ssim(normalized[:, 1:].flatten(0, 1), clean, data_range=1.0).view(b, levels - 1).tolist()
        constant = is_constant(safe[:, 0]).tolist()
        records: list[Record] = []
        for i in range(b):
            if not bool(finite[i]):
                bad = int((~torch.isfinite(maps[i])).sum())
                records.append({"error": f"non-finite map: {bad} NaN/Inf values"})
            elif constant[i]:
                records.append({"excluded": CONSTANT_MAP})
            else:
                records.append({"scores": {metric_name(s): v for s, v in zip(sigmas, values[i], strict=True)}})
        return records
