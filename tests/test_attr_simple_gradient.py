"""Simple Gradient: a known answer on a linear encoder, captum's Saliency, batching and side effects."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from captum.attr import Saliency
from torch import Tensor, nn

from aft_bench.attributions.simple_gradient import CHANNEL_REDUCERS, SimpleGradient
from aft_bench.evaluation.targets.text import TextTarget


class LinearEncoder(nn.Module):
    """Stand-in encoder: ``normalize(W @ flatten(x))``, whose input gradient is known in closed form."""

    kind = "cnn"
    name = "linear-standin"

    def __init__(self, dim: int = 5, shape: tuple[int, int, int] = (3, 4, 6), seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(dim, shape[0] * shape[1] * shape[2], generator=generator))

    def forward(self, pixels: Tensor) -> Tensor:
        return F.normalize(pixels.flatten(1) @ self.weight.T, dim=-1)


def analytic_gradient(encoder: LinearEncoder, images: Tensor, texts: Tensor) -> Tensor:
    """d cos(Wx, t) / dx = W^T (I - e e^T) t / ||Wx|| with e = Wx / ||Wx|| (t unit-norm)."""
    w = encoder.weight.detach()
    v = images.flatten(1) @ w.T
    norm = v.norm(dim=-1, keepdim=True)
    e = v / norm
    projected = texts - (e * texts).sum(-1, keepdim=True) * e
    return ((projected / norm) @ w).view_as(images)


def random_targets(batch: int, dim: int, seed: int = 1) -> TextTarget:
    generator = torch.Generator().manual_seed(seed)
    return TextTarget(F.normalize(torch.randn(batch, dim, generator=generator), dim=-1))


def random_images(batch: int, size: int, seed: int = 2) -> Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("reduce", sorted(CHANNEL_REDUCERS))
def test_known_gradient_of_linear_encoder(reduce: str) -> None:
    encoder = LinearEncoder()
    images = torch.rand(3, 3, 4, 6, generator=torch.Generator().manual_seed(3))
    target = random_targets(3, 5)
    grad = analytic_gradient(encoder, images, target.embeddings)
    expected = {"sum": grad.abs().sum(1), "max": grad.abs().amax(1), "l2": grad.pow(2).sum(1).sqrt()}[reduce]
    maps = SimpleGradient(reduce=reduce)(encoder, images, target)
    assert maps.shape == (3, 4, 6)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-7)


def test_gradient_is_zero_when_embedding_is_the_target() -> None:
    """At the maximum of the cosine (embedding == target) the gradient vanishes."""
    encoder = LinearEncoder()
    images = torch.rand(2, 3, 4, 6, generator=torch.Generator().manual_seed(4))
    target = TextTarget(encoder(images).detach())
    maps = SimpleGradient()(encoder, images, target)
    assert maps.abs().max() < 1e-5


@pytest.mark.parametrize("fixture", ["tiny_vit", "tiny_cnn"])
def test_matches_captum_saliency(fixture: str, request: pytest.FixtureRequest) -> None:
    encoder = request.getfixturevalue(fixture)
    size = encoder.image_size[0]
    images = random_images(2, size)
    target = random_targets(2, 32)

    def forward(pixels: Tensor, texts: Tensor) -> Tensor:
        return TextTarget(texts).score(encoder(pixels))

    inputs = images.clone().requires_grad_(True)
    reference = Saliency(forward).attribute(inputs, abs=True, additional_forward_args=(target.embeddings,))
    for reduce in ("sum", "max"):
        maps = SimpleGradient(reduce=reduce)(encoder, images, target)
        torch.testing.assert_close(maps, CHANNEL_REDUCERS[reduce](reference), rtol=1e-5, atol=1e-8)
    assert all(p.grad is None for p in encoder.parameters())


@pytest.mark.parametrize("fixture", ["tiny_vit", "tiny_cnn"])
def test_batch_of_n_equals_n_batches_of_one(fixture: str, request: pytest.FixtureRequest) -> None:
    encoder = request.getfixturevalue(fixture)
    images = random_images(3, encoder.image_size[0])
    target = random_targets(3, 32)
    method = SimpleGradient()
    batched = method(encoder, images, target)
    singles = torch.cat(
        [method(encoder, images[i : i + 1], TextTarget(target.embeddings[i : i + 1])) for i in range(3)]
    )
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-5 * singles.abs().max().item())


def test_train_mode_is_restored_and_ignored(tiny_cnn: nn.Module) -> None:
    """Maps are computed in eval mode (batch norm uses running stats) and the caller's mode returns."""
    images = random_images(2, 64)
    target = random_targets(2, 32)
    expected = SimpleGradient()(tiny_cnn, images, target)
    tiny_cnn.train()
    try:
        maps = SimpleGradient()(tiny_cnn, images, target)
        assert all(m.training for m in tiny_cnn.modules())
    finally:
        tiny_cnn.eval()
    torch.testing.assert_close(maps, expected)


def test_runs_under_no_grad_and_refuses_inference_mode(tiny_vit: nn.Module) -> None:
    images = random_images(1, 32)
    target = random_targets(1, 32)
    with torch.no_grad():
        maps = SimpleGradient()(tiny_vit, images, target)
    assert maps.abs().sum() > 0
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        SimpleGradient()(tiny_vit, images, target)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="'median'"):
        SimpleGradient(reduce="median")
    encoder = LinearEncoder()
    with pytest.raises(ValueError, match="uint8"):
        SimpleGradient()(encoder, torch.zeros(1, 3, 4, 6, dtype=torch.uint8), random_targets(1, 5))

    class SummedTarget(TextTarget):
        def score(self, embeddings: Tensor) -> Tensor:
            return super().score(embeddings).sum()

    with pytest.raises(ValueError, match="one target per image"):
        SimpleGradient()(encoder, torch.rand(2, 3, 4, 6), SummedTarget(random_targets(2, 5).embeddings))
