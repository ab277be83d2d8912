"""M2IB: the bottleneck's loss falls, an open bottleneck is the normal forward, maps are assembled right."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_VIT_CFG, make_encoder

from aft_bench.attributions.base import upsample
from aft_bench.attributions.m2ib import (
    M2IB,
    MIN_STD,
    apply_bottleneck,
    bottleneck_loss,
    fit_bottleneck,
    gaussian_kl,
    noise_statistics,
    split_resnet,
)
from aft_bench.evaluation.targets.text import TextTarget
from aft_bench.models.encoder import UnsupportedEncoderError


def _inputs(encoder, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, *encoder.image_size, generator=g)
    prompts = ["a red circle", "a blue square", "a green star", "a dog"][:n]
    return images, TextTarget(encoder.encode_text(prompts))


@pytest.fixture(scope="module")
def custom_vit():
    cfg = {**TINY_VIT_CFG, "vision_cfg": {**TINY_VIT_CFG["vision_cfg"], "block_type": "custom"}}
    return make_encoder(cfg, "tiny-custom-vit")


@pytest.fixture(params=["tiny_vit", "tiny_cnn"])
def encoder(request):
    return request.getfixturevalue(request.param)


def test_default_site_scales_block_9_of_12(tiny_vit):
    assert M2IB().split(tiny_vit).patches == slice(1, 17)  # ViT: class token dropped
    for depth, expected in ((12, 9), (24, 18), (2, 1)):
        assert int(0.75 * depth) == expected


def test_bottleneck_loss_falls_over_its_steps(encoder):
    images, target = _inputs(encoder)
    method = M2IB(samples=3)  # the defaults otherwise: 10 Adam steps, lr 1, beta 0.1, alpha 5
    split = method.split(encoder)
    fit = fit_bottleneck(split, split.front(images), target, **method.fit_args)
    assert fit.losses.shape == (10, 3)
    assert (fit.losses[-1] < fit.losses[0] - 0.1).all()
    assert (fit.losses[-3:].mean(0) < fit.losses[:3].mean(0)).all()


@pytest.mark.parametrize(
    ("fixture", "site"),
    [
        ("tiny_vit", {}),
        ("tiny_vit", {"block": 0}),
        ("custom_vit", {"block": 0}),
        ("tiny_cnn", {}),
        ("tiny_cnn", {"stage": 1}),
    ],
)
def test_open_bottleneck_with_beta_zero_is_the_normal_forward(fixture, site, request):
    """Tail after the last block, after an earlier block (class-token-only last block), custom blocks."""
    encoder = request.getfixturevalue(fixture)
    images, target = _inputs(encoder)
    split = M2IB(**site).split(encoder)
    features = split.front(images)
    with torch.no_grad():
        normal = encoder(images)
        torch.testing.assert_close(split.tail(features), normal, atol=1e-6, rtol=1e-5)
        alpha = torch.full_like(features, 100.0)  # sigmoid(100) == 1 in float32: lambda forced to 1
        eps = torch.randn(4, *features.shape[1:])
        stats = noise_statistics(features, "feature")
        loss, _ = bottleneck_loss(split, features, alpha, eps, stats, target, beta=0.0)
    torch.testing.assert_close(loss, -target.score(normal), atol=1e-6, rtol=1e-5)


def test_map_is_the_kl_summed_over_channels_on_the_patch_grid(tiny_vit):
    """One step: the KL at lambda = sigmoid(alpha_init), CLS dropped, patches row by row, upsampled."""
    images, target = _inputs(tiny_vit, n=2)
    method = M2IB(steps=1, samples=2, alpha_init=2.0)
    features = method.split(tiny_vit).front(images).double().numpy()
    lam = 1 / (1 + np.exp(-2.0))
    kl = 0.5 * ((lam * features) ** 2 + (1 - lam) ** 2 - 2 * np.log(1 - lam) - 1)
    expected = kl[:, 1:].sum(-1).reshape(2, 4, 4)
    got = method(tiny_vit, images, target)
    torch.testing.assert_close(got, upsample(torch.from_numpy(expected).float(), (32, 32)), atol=1e-5, rtol=1e-5)


def test_gaussian_kl_known_values():
    torch.testing.assert_close(gaussian_kl(torch.tensor(0.0), torch.tensor(1.0)), torch.tensor(0.0))
    # KL(N(1, 0.25) || N(0, 1)) = (1 + 0.25 - ln 0.25 - 1) / 2
    torch.testing.assert_close(
        gaussian_kl(torch.tensor(1.0), torch.tensor(0.25)), torch.tensor((0.25 - np.log(0.25)) / 2, dtype=torch.float32)
    )
    assert torch.isfinite(gaussian_kl(torch.tensor(0.0), torch.tensor(0.0)))


def _release_style_map(encoder, image, text, *, block, steps, samples, beta=0.1, lr=1.0, alpha_init=5.0, seed=0):
    """One image as Wang et al.'s release fits it: the whole tower runs on ``samples`` copies of the image with
    the block's output R replaced by lam R + (1 - lam) eps, eps ~ N(0, 1), and the KL to N(0, 1) taken on the raw
    features; Adam on alpha; the map is the last forward's KL summed over channels at the patch tokens."""
    tokens, width = encoder.visual.positional_embedding.shape
    alpha = torch.full((1, tokens, width), alpha_init, requires_grad=True)
    optimizer = torch.optim.Adam([alpha], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    seen = {}

    def bottleneck(_module, _inputs, r):
        lam = torch.sigmoid(alpha)
        eps = torch.randn((samples, tokens, width), generator=generator)
        seen["kl"] = 0.5 * ((lam * r) ** 2 + (1 - lam) ** 2 - torch.log((1 - lam) ** 2) - 1)
        return lam * r + (1 - lam) * eps

    handle = encoder.visual.transformer.resblocks[block].register_forward_hook(bottleneck)
    try:
        for _ in range(steps):
            embeddings = encoder(image.expand(samples, -1, -1, -1))
            loss = beta * seen["kl"].mean() - (embeddings @ text).mean()
            (alpha.grad,) = torch.autograd.grad(loss, [alpha])  # no .grad left on the shared model
            optimizer.step()
    finally:
        handle.remove()
    saliency = seen["kl"][0, 1:].sum(-1).detach().reshape(1, *encoder.grid_size)
    return upsample(saliency, encoder.image_size)[0]


def test_default_is_the_release_form_with_standard_normal_noise(tiny_vit):
    """Known answer: the default (noise N(0, 1), KL on the raw features) equals the release's per-image fit.

    A small beta lets the fit term, and so the noise, steer Adam: on a random tiny model the KL's gradient
    decides the sign of every update at beta 0.1, whatever the noise.
    """
    images, target = _inputs(tiny_vit, n=2)
    args = dict(block=0, steps=3, samples=2, beta=1e-3, seed=3)
    maps = M2IB(**args)(tiny_vit, images, target)
    expected = torch.stack(
        [_release_style_map(tiny_vit, images[i : i + 1], target.embeddings[i], **args) for i in range(2)]
    )
    assert expected.abs().max() > 0
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-4)
    feature = M2IB(**args, noise="feature")(tiny_vit, images, target)
    assert not torch.allclose(feature, expected, atol=1e-2, rtol=1e-2)


def test_feature_noise_is_iba_with_the_kl_on_standardised_features():
    """One image, two tokens, one channel: R = (0, 2) has mean 1 and std 1, so R standardised is (-1, 1)."""
    features = torch.tensor([[[0.0], [2.0]]])
    lam = torch.full_like(features, 0.5)
    stats = noise_statistics(features, "feature")
    z, kl = apply_bottleneck(features, lam, torch.ones_like(features), stats)
    # KL( N(0.5 * (+-1), 0.25) || N(0, 1) ) = (0.25 + 0.25 - ln 0.25 - 1) / 2 at both tokens
    torch.testing.assert_close(kl, torch.full_like(features, (np.log(4.0) - 0.5) / 2))
    torch.testing.assert_close(z, torch.tensor([[[1.0], [2.0]]]))  # 0.5 R + 0.5 (mean + std * 1)
    # The KL is measured against the noise distribution, so an affine change of the features leaves it alone.
    moved = 3.0 * features - 7.0
    torch.testing.assert_close(
        apply_bottleneck(moved, lam, torch.ones_like(features), noise_statistics(moved, "feature"))[1], kl
    )
    # N(0, 1) noise (the default) keeps the KL on the raw features: (0 + 0.25 + ln 4 - 1) / 2, (1 + 0.25 + ln 4 - 1) / 2
    _, raw = apply_bottleneck(features, lam, torch.ones_like(features), noise_statistics(features, "standard"))
    torch.testing.assert_close(raw, torch.tensor([[[np.log(4.0) - 0.75], [np.log(4.0) + 0.25]]]).float() / 2)


def test_noise_statistics_are_per_image_and_channel():
    features = torch.tensor([[[0.0, 1.0], [2.0, 1.0]], [[4.0, -1.0], [4.0, 3.0]]])
    mean, std = noise_statistics(features, "feature")
    torch.testing.assert_close(mean, torch.tensor([[[1.0, 1.0]], [[4.0, 1.0]]]))
    # Constant channels get IBA's floor on the std.
    torch.testing.assert_close(std, torch.tensor([[[1.0, MIN_STD]], [[MIN_STD, 2.0]]]))
    mean, std = noise_statistics(features, "standard")
    assert mean.abs().sum() == 0 and (std == 1).all()
    with pytest.raises(ValueError, match="unknown noise"):
        noise_statistics(features, "uniform")


@pytest.mark.parametrize("noise", ["feature", "standard"])
def test_batch_of_n_equals_n_batches_of_one(encoder, noise):
    images, target = _inputs(encoder, n=2)
    method = M2IB(steps=3, samples=2, noise=noise, seed=7)
    batched = method(encoder, images, target)
    singles = torch.cat(
        [method(encoder, images[i : i + 1], TextTarget(target.embeddings[i : i + 1])) for i in range(2)]
    )
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=1e-4)


def test_seed_fixes_the_noise(tiny_vit):
    images, target = _inputs(tiny_vit, n=2)
    split = M2IB().split(tiny_vit)
    features = split.front(images)
    args = dict(beta=0.1, steps=3, lr=1.0, samples=2, noise="feature", alpha_init=5.0)
    first = fit_bottleneck(split, features, target, seed=1, **args)
    again = fit_bottleneck(split, features, target, seed=1, **args)
    other = fit_bottleneck(split, features, target, seed=2, **args)
    assert torch.equal(again.losses, first.losses) and torch.equal(again.kl, first.kl)
    assert not torch.allclose(other.losses, first.losses)


def test_cnn_stage_and_refusals(tiny_vit, tiny_cnn):
    images, target = _inputs(tiny_cnn, n=1)
    assert M2IB(stage=2).split(tiny_cnn).grid == (8, 8)  # 64 px: stem /4, stage 2 /2
    assert M2IB(stage=2, steps=1, samples=1)(tiny_cnn, images, target).shape == (1, 64, 64)
    with pytest.raises(ValueError, match="stage 5 out of range"):
        M2IB(stage=5).split(tiny_cnn)
    with pytest.raises(UnsupportedEncoderError, match="ModifiedResNets"):
        split_resnet(tiny_vit, None)
    with pytest.raises(ValueError, match="block 7 out of range"):
        M2IB(block=7).split(tiny_vit)
    with pytest.raises(ValueError, match="steps and samples must be >= 1"):
        M2IB(steps=0)
    with pytest.raises(ValueError, match="unknown noise"):
        M2IB(noise="pink")
