"""Grad-CAM: a known answer on a conv + linear encoder, captum's LayerGradCam (CNN and ViT), batching."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from torch import Tensor, nn

from aft_bench.attributions.base import upsample
from aft_bench.attributions.gradcam import GradCAM
from aft_bench.evaluation.targets.text import TextTarget
from aft_bench.models.encoder import Encoder


class ConvLinearEncoder(nn.Module):
    """Stand-in encoder: ``normalize(V @ flatten(conv(x)))``; Grad-CAM's layer is ``conv``."""

    kind = "cnn"
    name = "conv-linear-standin"

    def __init__(self, channels: int = 4, dim: int = 6, grid: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, channels, kernel_size=4, stride=4)
        self.head = nn.Linear(channels * grid * grid, dim, bias=False)

    def forward(self, pixels: Tensor) -> Tensor:
        return F.normalize(self.head(self.conv(pixels).flatten(1)), dim=-1)

    def feature_layer(self, block: int | None = None) -> nn.Module:
        return self.conv

    def to_spatial(self, activation: Tensor) -> Tensor:
        return activation


def random_targets(batch: int, dim: int, seed: int = 1) -> TextTarget:
    generator = torch.Generator().manual_seed(seed)
    return TextTarget(F.normalize(torch.randn(batch, dim, generator=generator), dim=-1))


def random_images(batch: int, size: int, seed: int = 2) -> Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("relu", [True, False])
def test_known_answer_on_conv_linear_encoder(relu: bool) -> None:
    encoder = ConvLinearEncoder()
    images = random_images(2, 12)
    target = random_targets(2, 6)
    with torch.no_grad():
        acts = encoder.conv(images)  # 2 x 4 x 3 x 3
        v = acts.flatten(1) @ encoder.head.weight.T
    norm = v.norm(dim=-1, keepdim=True)
    e = v / norm
    t = target.embeddings
    grad = (((t - (e * t).sum(-1, keepdim=True) * e) / norm) @ encoder.head.weight.detach()).view_as(acts)
    cam = (grad.mean(dim=(2, 3), keepdim=True) * acts).sum(1)
    expected = upsample(cam.clamp_min(0) if relu else cam, (12, 12))
    maps = GradCAM(relu=relu)(encoder, images, target)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-7)
    assert (maps < 0).any() != relu  # the signed map of this example has negative evidence
    assert all(p.grad is None for p in encoder.parameters())


def score_function(encoder: Encoder):
    def forward(pixels: Tensor, texts: Tensor) -> Tensor:
        return TextTarget(texts).score(encoder(pixels))

    return forward


def test_matches_captum_layer_gradcam_on_cnn(tiny_cnn: Encoder) -> None:
    images = random_images(3, 64)
    target = random_targets(3, 32)
    layer = tiny_cnn.feature_layer()
    reference = LayerGradCam(score_function(tiny_cnn), layer).attribute(
        images, additional_forward_args=(target.embeddings,), relu_attributions=True
    )[:, 0]
    assert reference.abs().sum() > 0
    method = GradCAM()
    torch.testing.assert_close(method.layer_maps(tiny_cnn, images, target), reference, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(method(tiny_cnn, images, target), upsample(reference, (64, 64)), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("block", [None, 0])
def test_matches_captum_layer_gradcam_on_vit(tiny_vit: Encoder, block: int | None) -> None:
    """captum needs a B x C x h x w layer output; a hook on the block routes the patch tokens
    through an identity module laid out on the grid (values unchanged), which captum then explains."""
    images = random_images(3, 32)
    target = random_targets(3, 32)
    spatial = nn.Identity()
    gh, gw = tiny_vit.grid_size

    def route_through_grid(_module: nn.Module, _inputs: tuple, tokens: Tensor) -> Tensor:
        prefix = tokens.shape[1] - gh * gw
        grid = spatial(tiny_vit.to_spatial(tokens))  # B x C x gh x gw
        return torch.cat([tokens[:, :prefix], grid.flatten(2).transpose(1, 2)], dim=1)

    handle = tiny_vit.feature_layer(block).register_forward_hook(route_through_grid)
    try:
        reference = LayerGradCam(score_function(tiny_vit), spatial).attribute(
            images, additional_forward_args=(target.embeddings,), relu_attributions=True
        )[:, 0]
    finally:
        handle.remove()
    maps = GradCAM(block=block).layer_maps(tiny_vit, images, target)
    assert maps.shape == (3, gh, gw) and reference.abs().sum() > 0
    torch.testing.assert_close(maps, reference, rtol=1e-5, atol=1e-7)


def test_vit_default_block_is_second_to_last(tiny_vit: Encoder) -> None:
    images = random_images(2, 32)
    target = random_targets(2, 32)
    default = GradCAM()(tiny_vit, images, target)
    torch.testing.assert_close(default, GradCAM(block=tiny_vit.num_blocks - 2)(tiny_vit, images, target))
    assert default.abs().max() > 0
    with pytest.raises(ValueError, match="block 7 out of range"):
        GradCAM(block=7)(tiny_vit, images, target)


def test_vit_last_block_gives_zero_maps(tiny_vit: Encoder) -> None:
    """The embedding is the CLS token after the last block, so that block's patch tokens get no gradient."""
    maps = GradCAM(block=-1, relu=False)(tiny_vit, random_images(2, 32), random_targets(2, 32))
    assert torch.equal(maps, torch.zeros_like(maps))


@pytest.mark.parametrize("fixture", ["tiny_vit", "tiny_cnn"])
def test_batch_of_n_equals_n_batches_of_one(fixture: str, request: pytest.FixtureRequest) -> None:
    encoder = request.getfixturevalue(fixture)
    images = random_images(3, encoder.image_size[0])
    target = random_targets(3, 32)
    method = GradCAM()
    batched = method(encoder, images, target)
    singles = torch.cat(
        [method(encoder, images[i : i + 1], TextTarget(target.embeddings[i : i + 1])) for i in range(3)]
    )
    assert singles.abs().max() > 0
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-5 * singles.abs().max().item())


def test_frozen_weights_still_give_maps(tiny_cnn: Encoder) -> None:
    """The layer output joins the graph through the pixels even when no parameter requires grad."""
    images = random_images(2, 64)
    target = random_targets(2, 32)
    expected = GradCAM()(tiny_cnn, images, target)
    flags = [p.requires_grad for p in tiny_cnn.parameters()]
    tiny_cnn.requires_grad_(False)
    try:
        maps = GradCAM()(tiny_cnn, images, target)
    finally:
        for p, flag in zip(tiny_cnn.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    torch.testing.assert_close(maps, expected)
