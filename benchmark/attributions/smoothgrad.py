"""SmoothGrad (Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise").

The map is the mean of a gradient method's maps over ``n`` noisy copies ``x + N(0, sigma^2)`` of each
image. Following captum's ``NoiseTunnel(Saliency(abs=True), nt_type="smoothgrad")``, the inner method's
maps (already magnitudes) are averaged, not the raw gradients. The AFT paper (section 3) shows that its
objective regularises exactly this quantity of the image-text similarity.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from aft_bench.attributions.base import Attribution, Target
from aft_bench.attributions.gradients import check_images
from aft_bench.attributions.simple_gradient import SimpleGradient
from aft_bench.core.registries import ATTRIBUTIONS
from aft_bench.models.encoder import Encoder, EncoderKind


@ATTRIBUTIONS.register("smoothgrad", help="mean simple gradient over noisy copies (Smilkov et al. 2017)")
class SmoothGrad(Attribution):
    """SmoothGrad (Smilkov et al. 2017) around any gradient attribution (default Simple Gradient).

    ``map(x) = 1/n sum_j inner(x + z_j)`` with ``z_j ~ N(0, sigma^2 I)`` in pixel units (pixels in
    [0, 1], so ``sigma=0.15`` is the 15% noise level Smilkov et al. recommend, within their 10-20%).
    Noisy pixels are not clipped to [0, 1] (neither the paper nor captum clips). ``n_samples=16`` is
    a cost/quality compromise for a benchmark; Smilkov et al. see diminishing returns beyond ~50.

    Noise: one ``torch.Generator`` seeded with ``seed`` draws ``n_samples`` noise images on the CPU
    (so CPU and GPU runs see the same noise) for every call, and every image of the batch gets the
    same ``n_samples`` draws. The noise of an image therefore does not depend on its position in the
    batch or on the batch's other images: a batch of N gives the maps of N batches of 1.

    Batching: noisy copies go through the inner method in forwards of about ``chunk_size`` images
    (all images of the batch times a chunk of the noise samples; never fewer than one copy of
    each image). An instance's ``supports`` is its inner method's.

    Args:
        n_samples: Number of noisy copies per image.
        sigma: Noise standard deviation in pixel units ([0, 1] range).
        inner: The gradient attribution to smooth: an instance or a registered name (for example
            "simple_gradient" or "gradcam").
        chunk_size: Target number of noisy images per forward/backward pass.
        seed: Seed of the noise generator.

    Raises:
        ValueError: On a non-positive ``n_samples``/``chunk_size`` or a negative ``sigma``.
    """

    name: ClassVar[str] = "smoothgrad"

    def __init__(
        self,
        n_samples: int = 16,
        sigma: float = 0.15,
        inner: Attribution | str | None = None,
        chunk_size: int = 64,
        seed: int = 0,
    ) -> None:
        if n_samples < 1:
            raise ValueError(f"smoothgrad: n_samples must be >= 1, got {n_samples}")
        if chunk_size < 1:
            raise ValueError(f"smoothgrad: chunk_size must be >= 1, got {chunk_size}")
        if not sigma >= 0:
            raise ValueError(f"smoothgrad: sigma must be >= 0 (pixel units, range [0, 1]), got {sigma}")
        if isinstance(inner, str):
            from aft_bench.core.registries import ATTRIBUTIONS

            inner = ATTRIBUTIONS.get(inner)()
        self.inner: Attribution = SimpleGradient() if inner is None else inner
        self.n_samples, self.sigma, self.chunk_size, self.seed = n_samples, float(sigma), chunk_size, seed
        # An instance serves what its inner method serves (the class attribute lists what is possible).
        self.supports: frozenset[EncoderKind] = self.inner.supports  # type: ignore[misc]

    def __repr__(self) -> str:
        return (
            f"SmoothGrad(n_samples={self.n_samples}, sigma={self.sigma}, inner={self.inner!r}, "
            f"chunk_size={self.chunk_size}, seed={self.seed})"
        )

    def check(self, encoder: Encoder) -> None:
        """Refuses the encoders the inner method refuses (the message names both methods)."""
        super().check(encoder)
        self.inner.check(encoder)

    def sample_noise(self, images: Tensor) -> Tensor:
        """The ``n_samples x C x H x W`` noise (already scaled by ``sigma``) every image receives."""
        generator = torch.Generator().manual_seed(self.seed)
        noise = torch.randn((self.n_samples, *images.shape[1:]), generator=generator) * self.sigma
        return noise.to(device=images.device, dtype=images.dtype)

    def attribute(self, encoder: Encoder, images: Tensor, target: Target) -> Tensor:
        """B x H x W mean of the inner method's maps over the seeded noisy copies."""
        check_images(images)
        return self.attribute_with_noise(encoder, images, target, self.sample_noise(images))

    def attribute_with_noise(self, encoder: Encoder, images: Tensor, target: Target, noise: Tensor) -> Tensor:
        """SmoothGrad with given additive noise (for tests and for callers with their own draws).

        Args:
            encoder: The encoder.
            images: B x C x H x W pixels in [0, 1].
            target: One target per image.
            noise: ``n x C x H x W`` (the same draws for every image) or ``B x n x C x H x W``.

        Returns:
            B x H x W float32 maps: the mean over the ``n`` noisy copies of the inner method's maps.
        """
        check_images(images)
        batch = images.shape[0]
        if noise.ndim == images.ndim:
            noise = noise.unsqueeze(0)
        fits = noise.ndim == images.ndim + 1 and noise.shape[2:] == images.shape[1:]
        if not fits or noise.shape[0] not in (1, batch):
            raise ValueError(
                f"smoothgrad: noise of shape {tuple(noise.shape)} does not fit images of shape "
                f"{tuple(images.shape)}; expected n x C x H x W or B x n x C x H x W"
            )
        noise = noise.expand(batch, *noise.shape[1:])
        n = noise.shape[1]
        per_chunk = max(1, self.chunk_size // batch)  # noise samples per forward
        targets: dict[int, Target] = {}
        total = images.new_zeros((batch, images.shape[2], images.shape[3]), dtype=torch.float32)
        for start in range(0, n, per_chunk):
            stop = min(start + per_chunk, n)
            m = stop - start
            noisy = (images.detach()[:, None] + noise[:, start:stop].to(images.dtype)).flatten(0, 1)
            if m not in targets:
                targets[m] = target.repeat_interleave(m)
            maps = self.inner.attribute(encoder, noisy, targets[m]).detach().float()
            total += maps.view(batch, m, *maps.shape[1:]).sum(dim=1)
        return total / n
