"""SmoothGrad: captum's NoiseTunnel on the same noise draws, a known answer, seeding and batching."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from captum.attr import NoiseTunnel, Saliency
from torch import Tensor, nn

from aft_bench.attributions.gradcam import GradCAM
from aft_bench.attributions.simple_gradient import SimpleGradient
from aft_bench.attributions.smoothgrad import SmoothGrad
from aft_bench.evaluation.targets.text import TextTarget
from aft_bench.models.encoder import Encoder, UnsupportedEncoderError


class LinearEncoder(nn.Module):
    """Stand-in encoder: ``normalize(W @ flatten(x))``, whose input gradient is known in closed form."""

    kind = "cnn"
    name = "linear-standin"

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(5, 3 * 4 * 4, generator=torch.Generator().manual_seed(0)))

    def forward(self, pixels: Tensor) -> Tensor:
        return F.normalize(pixels.flatten(1) @ self.weight.T, dim=-1)


def linear_gradient(weight: Tensor, images: Tensor, texts: Tensor) -> Tensor:
    """d cos(Wx, t) / dx = W^T (I - e e^T) t / ||Wx|| with e = Wx / ||Wx||."""
    v = images.flatten(1) @ weight.T
    norm = v.norm(dim=-1, keepdim=True)
    e = v / norm
    return (((texts - (e * texts).sum(-1, keepdim=True) * e) / norm) @ weight).view_as(images)


def random_targets(batch: int, dim: int, seed: int = 1) -> TextTarget:
    generator = torch.Generator().manual_seed(seed)
    return TextTarget(F.normalize(torch.randn(batch, dim, generator=generator), dim=-1))


def random_images(batch: int, size: int, seed: int = 2) -> Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_known_answer_with_given_noise() -> None:
    """Mean over noisy copies of the analytic channel-summed |gradient| of the linear stand-in."""
    encoder = LinearEncoder()
    images = random_images(2, 4)
    target = random_targets(2, 5)
    noise = 0.3 * torch.randn(2, 5, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    weight = encoder.weight.detach()
    expected = torch.stack(
        [linear_gradient(weight, images + noise[:, j], target.embeddings).abs().sum(1) for j in range(noise.shape[1])]
    ).mean(0)
    method = SmoothGrad(chunk_size=3)
    torch.testing.assert_close(
        method.attribute_with_noise(encoder, images, target, noise), expected, rtol=1e-5, atol=1e-7
    )
    # The noise matters: the smoothed map differs from the gradient at the clean image.
    assert not torch.allclose(expected, SimpleGradient()(encoder, images, target), rtol=1e-3)
    assert all(p.grad is None for p in encoder.parameters())


@pytest.mark.parametrize("fixture", ["tiny_vit", "tiny_cnn"])
def test_matches_captum_noise_tunnel_on_the_same_draws(fixture: str, request: pytest.FixtureRequest) -> None:
    """captum draws its own noise; the forward function records the noisy inputs so that ours uses them."""
    encoder = request.getfixturevalue(fixture)
    images = random_images(2, encoder.image_size[0])
    target = random_targets(2, 32)
    n = 4
    seen: list[Tensor] = []

    def forward(pixels: Tensor, texts: Tensor) -> Tensor:
        seen.append(pixels.detach().clone())
        return TextTarget(texts).score(encoder(pixels))

    torch.manual_seed(0)
    reference = NoiseTunnel(Saliency(forward)).attribute(
        images.clone().requires_grad_(True),
        nt_type="smoothgrad",
        nt_samples=n,
        stdevs=0.15,
        abs=True,
        additional_forward_args=(target.embeddings,),
    )
    noisy = torch.cat(seen)  # image-major: captum repeats each image n times in place
    noise = (noisy - images.repeat_interleave(n, dim=0)).view(2, n, *images.shape[1:])
    assert 0.1 < noise.std().item() < 0.2
    maps = SmoothGrad(n_samples=n, chunk_size=2).attribute_with_noise(encoder, images, target, noise)
    torch.testing.assert_close(maps, reference.sum(1), rtol=1e-5, atol=1e-8)


def test_zero_noise_gives_the_inner_map(tiny_cnn: Encoder) -> None:
    images = random_images(2, 64)
    target = random_targets(2, 32)
    for inner in (SimpleGradient(reduce="max"), GradCAM()):
        smoothed = SmoothGrad(n_samples=3, sigma=0.0, inner=inner)(tiny_cnn, images, target)
        torch.testing.assert_close(smoothed, inner(tiny_cnn, images, target), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("fixture", ["tiny_vit", "tiny_cnn"])
def test_batch_of_n_equals_n_batches_of_one(fixture: str, request: pytest.FixtureRequest) -> None:
    encoder = request.getfixturevalue(fixture)
    images = random_images(3, encoder.image_size[0])
    target = random_targets(3, 32)
    method = SmoothGrad(n_samples=5, chunk_size=7)  # chunks of 2 noise samples for 3 images, 7 for 1
    batched = method(encoder, images, target)
    singles = torch.cat(
        [method(encoder, images[i : i + 1], TextTarget(target.embeddings[i : i + 1])) for i in range(3)]
    )
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-5 * singles.abs().max().item())


def test_seed_and_chunking(tiny_vit: Encoder) -> None:
    images = random_images(2, 32)
    target = random_targets(2, 32)
    reference = SmoothGrad(n_samples=4, seed=3)(tiny_vit, images, target)
    torch.testing.assert_close(SmoothGrad(n_samples=4, seed=3, chunk_size=1)(tiny_vit, images, target), reference)
    assert not torch.allclose(SmoothGrad(n_samples=4, seed=4)(tiny_vit, images, target), reference)
    noise = SmoothGrad(n_samples=4, seed=3).sample_noise(images)
    assert noise.shape == (4, 3, 32, 32)
    torch.testing.assert_close(noise, SmoothGrad(n_samples=4, seed=3).sample_noise(images[:1]))


def test_inner_by_name_and_support(tiny_cnn: Encoder) -> None:
    images = random_images(2, 64)
    target = random_targets(2, 32)
    by_name = SmoothGrad(n_samples=2, inner="gradcam")(tiny_cnn, images, target)
    by_instance = SmoothGrad(n_samples=2, inner=GradCAM())(tiny_cnn, images, target)
    torch.testing.assert_close(by_name, by_instance)

    class VitOnly(SimpleGradient):
        supports = frozenset({"vit"})

    method = SmoothGrad(inner=VitOnly())
    assert method.supports == frozenset({"vit"})
    with pytest.raises(UnsupportedEncoderError, match="smoothgrad.*tiny-cnn"):
        method(tiny_cnn, images, target)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_samples": 0}, "n_samples"), ({"sigma": -0.1}, "sigma"), ({"chunk_size": 0}, "chunk_size")],
)
def test_bad_hyperparameters_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SmoothGrad(**kwargs)


def test_bad_noise_shape_is_named() -> None:
    with pytest.raises(ValueError, match="noise of shape"):
        SmoothGrad().attribute_with_noise(
            LinearEncoder(), random_images(2, 4), random_targets(2, 5), torch.zeros(3, 4, 4)
        )
