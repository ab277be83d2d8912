"""Known answers for the raw attention map, Attention Rollout and Grad-ECLIP on a two-block ViT.

The reference is an independent numpy forward pass of the open_clip ViT (float64, weights read from
the state dict) and, for Grad-ECLIP, a central finite-difference gradient of the cosine with respect
to the class token's attention output. Hand-set weights (zero query/key projections: uniform
attention) give closed-form answers.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import TINY_VIT_CFG, make_encoder
from scipy.special import erf

from aft_bench.attributions.attention_map import AttentionMap
from aft_bench.attributions.base import upsample
from aft_bench.attributions.grad_eclip import GradECLIP, grad_eclip_scores
from aft_bench.attributions.m2ib import M2IB
from aft_bench.attributions.rollout import Rollout, rollout
from aft_bench.evaluation.targets.text import TextTarget
from aft_bench.models.encoder import UnsupportedEncoderError

HEADS, WIDTH, PATCH, GRID = 2, 32, 8, 4


# ---------------------------------------------------------------------------------------- numpy reference
def _params(encoder) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy() for k, v in encoder.model.visual.state_dict().items()}


def _ln(x, p, name):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * p[f"{name}.weight"] + p[f"{name}.bias"]


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_vit(p, pixels, mean, std, override=None):
    """Forward pass; ``override[b]`` replaces block b's attention output at the class token (B x C)."""
    x = (pixels - mean) / std
    batch = x.shape[0]
    patches = x.reshape(batch, 3, GRID, PATCH, GRID, PATCH).transpose(0, 2, 4, 1, 3, 5).reshape(batch, GRID**2, -1)
    x = patches @ p["conv1.weight"].reshape(WIDTH, -1).T
    x = np.concatenate([np.broadcast_to(p["class_embedding"], (batch, 1, WIDTH)), x], 1) + p["positional_embedding"]
    x = _ln(x, p, "ln_pre")
    out = {"probs": [], "q": [], "k": [], "v": []}
    for b in range(2):
        pre = f"transformer.resblocks.{b}."
        h = _ln(x, p, pre + "ln_1")
        q, k, v = np.split(h @ p[pre + "attn.in_proj_weight"].T + p[pre + "attn.in_proj_bias"], 3, axis=-1)
        heads = [t.reshape(batch, -1, HEADS, WIDTH // HEADS).transpose(0, 2, 1, 3) for t in (q, k, v)]
        probs = _softmax(heads[0] @ heads[1].transpose(0, 1, 3, 2) / np.sqrt(WIDTH // HEADS))
        ctx = (probs @ heads[2]).transpose(0, 2, 1, 3).reshape(batch, -1, WIDTH)
        if override is not None and b in override:
            ctx = ctx.copy()
            ctx[:, 0] = override[b]
        x = x + ctx @ p[pre + "attn.out_proj.weight"].T + p[pre + "attn.out_proj.bias"]
        h = _ln(x, p, pre + "ln_2") @ p[pre + "mlp.c_fc.weight"].T + p[pre + "mlp.c_fc.bias"]
        h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
        x = x + h @ p[pre + "mlp.c_proj.weight"].T + p[pre + "mlp.c_proj.bias"]
        for name, value in zip(("probs", "q", "k", "v"), (probs, q, k, v), strict=True):
            out[name].append(value)
        out.setdefault("ctx", []).append(ctx)
    emb = _ln(x, p, "ln_post")[:, 0] @ p["proj"]
    out["emb"] = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
    return out


def _setup(encoder, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 32, 32, generator=g)
    text = torch.nn.functional.normalize(torch.randn(n, 32, generator=g), dim=-1)
    mean, std = (t.double().numpy() for t in (encoder.mean, encoder.std))
    return images, TextTarget(text), (_params(encoder), images.double().numpy(), mean, std)


def _expected(grid: np.ndarray) -> torch.Tensor:
    return upsample(torch.from_numpy(grid.reshape(-1, GRID, GRID)).float(), (32, 32))


# ---------------------------------------------------------------------------------------- known answers
def test_attention_map_matches_numpy(tiny_vit):
    images, target, args = _setup(tiny_vit)
    ref = numpy_vit(*args)
    for block in (0, -1):
        for heads, reduce in (("mean", np.mean), ("max", np.max)):
            got = AttentionMap(block=block, heads=heads)(tiny_vit, images, target)
            expected = reduce(ref["probs"][block], axis=1)[:, 0, 1:]
            torch.testing.assert_close(got, _expected(expected), atol=1e-6, rtol=1e-5)


def test_rollout_matches_numpy(tiny_vit):
    images, target, args = _setup(tiny_vit)
    ref = numpy_vit(*args)
    aug = [a.mean(1) + np.eye(17) for a in ref["probs"]]
    aug = [a / a.sum(-1, keepdims=True) for a in aug]
    torch.testing.assert_close(
        Rollout()(tiny_vit, images, target), _expected((aug[1] @ aug[0])[:, 0, 1:]), atol=1e-6, rtol=1e-5
    )
    torch.testing.assert_close(
        Rollout(start_block=-1)(tiny_vit, images, target), _expected(aug[1][:, 0, 1:]), atol=1e-6, rtol=1e-5
    )


def _fd_gradient(args, text, block, h=1e-5):
    """d cos / d (attention output of ``block`` at the class token), central differences (B x C)."""
    base = numpy_vit(*args)["ctx"][block][:, 0]
    grad = np.zeros_like(base)
    for c in range(WIDTH):
        step = np.zeros_like(base)
        step[:, c] = h
        up = (numpy_vit(*args, override={block: base + step})["emb"] * text).sum(-1)
        down = (numpy_vit(*args, override={block: base - step})["emb"] * text).sum(-1)
        grad[:, c] = (up - down) / (2 * h)
    return grad


def _eclip_scores(ref, grad, block):
    q_cls, keys, values = ref["q"][block][:, 0], ref["k"][block][:, 1:], ref["v"][block][:, 1:]
    cos = (keys @ q_cls[:, :, None])[..., 0] / np.linalg.norm(keys, axis=-1) / np.linalg.norm(q_cls, axis=-1)[:, None]
    lam = (cos - cos.min(-1, keepdims=True)) / (cos.max(-1, keepdims=True) - cos.min(-1, keepdims=True))
    return (grad[:, None] * values).sum(-1) * lam


def test_grad_eclip_matches_numpy_and_finite_differences(tiny_vit):
    """One block: ReLU of the block's scores. Two blocks: each block's map ReLU'd, then summed (the
    authors' image code), which on this input differs from one ReLU of the summed scores (their text code)."""
    images, target, args = _setup(tiny_vit)
    ref = numpy_vit(*args)
    text = target.embeddings.double().numpy()
    np.testing.assert_allclose(ref["emb"], tiny_vit(images).detach().numpy(), atol=1e-5)  # reference is right
    scores = {b: _eclip_scores(ref, _fd_gradient(args, text, b), b) for b in (0, 1)}
    torch.testing.assert_close(
        GradECLIP()(tiny_vit, images, target), _expected(np.maximum(scores[1], 0)), atol=1e-5, rtol=1e-4
    )
    relu_per_block = np.maximum(scores[0], 0) + np.maximum(scores[1], 0)
    relu_of_sum = np.maximum(scores[0] + scores[1], 0)
    opposite = (scores[0] * scores[1] < 0).sum()
    assert opposite > 0 and np.abs(relu_per_block - relu_of_sum).max() > 1e-2, "the two forms must differ here"
    torch.testing.assert_close(
        GradECLIP(blocks=2)(tiny_vit, images, target), _expected(relu_per_block), atol=1e-5, rtol=1e-4
    )


@pytest.fixture(scope="module")
def uniform_vit():
    """Query and key projections zeroed: every attention row is uniform (1/17)."""
    encoder = copy.deepcopy(make_encoder(TINY_VIT_CFG, "uniform-vit", seed=5))
    with torch.no_grad():
        for block in encoder.visual.transformer.resblocks:
            block.attn.in_proj_weight[: 2 * WIDTH] = 0
            block.attn.in_proj_bias[: 2 * WIDTH] = 0
    return encoder


def test_uniform_attention_closed_forms(uniform_vit):
    images, target, _ = _setup(uniform_vit)
    full = torch.full((2, 32, 32), 1 / 17)
    torch.testing.assert_close(AttentionMap()(uniform_vit, images, target), full)
    # (U + I) / 2 per block with U @ U = U: one block gives U/2 + I/2, two give 3U/4 + I/4.
    torch.testing.assert_close(Rollout(start_block=1)(uniform_vit, images, target), full * 0.5)
    torch.testing.assert_close(Rollout()(uniform_vit, images, target), full * 0.75)
    # Equal query-key cosines: the min-max normalised lambda is 0 everywhere, so is the map.
    torch.testing.assert_close(GradECLIP()(uniform_vit, images, target), torch.zeros(2, 32, 32))


def test_grad_eclip_scores_by_hand():
    """lambda is min-max normalised over the patches only (the class token's own key is left out)."""
    s = 2**-0.5
    q = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    k = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [s, s], [-1.0, 0.0]]])  # cos with q_cls: 1 | 0, s, -1
    v = torch.tensor([[[9.0, 9.0], [1.0, 2.0], [3.0, 1.0], [5.0, 5.0]]])
    grad = torch.tensor([[2.0, -1.0]])  # g . v_i = 0, 5, 5
    lam = torch.tensor([1 / (1 + s), 1.0, 0.0])
    expected = torch.tensor([[0.0, 5.0, 5.0]]) * lam
    torch.testing.assert_close(grad_eclip_scores(grad, q, k, v, slice(1, 4)), expected)


def test_rollout_of_identity_attention_is_identity():
    eye = torch.eye(4).expand(2, 4, 4)
    torch.testing.assert_close(rollout([eye, eye, eye]), eye)
    with pytest.raises(ValueError, match="at least one block"):
        rollout([])


# ---------------------------------------------------------------------------------------- contract
ATTENTION_METHODS = [AttentionMap, Rollout, GradECLIP]


@pytest.mark.parametrize("method", [*ATTENTION_METHODS, lambda: GradECLIP(blocks=2)])
def test_batch_of_n_equals_n_batches_of_one(tiny_vit, method):
    images, target, _ = _setup(tiny_vit, n=3, seed=4)
    attribution = method()
    batched = attribution(tiny_vit, images, target)
    singles = torch.cat(
        [attribution(tiny_vit, images[i : i + 1], TextTarget(target.embeddings[i : i + 1])) for i in range(3)]
    )
    torch.testing.assert_close(batched, singles, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", [*ATTENTION_METHODS, M2IB])
@pytest.mark.parametrize("kind", ["vit", "cnn"])
def test_supported_pairs_give_maps_unsupported_pairs_refuse(tiny_vit, tiny_cnn, method, kind):
    encoder = {"vit": tiny_vit, "cnn": tiny_cnn}[kind]
    attribution = method(steps=2, samples=2) if method is M2IB else method()
    images = torch.rand(2, 3, *encoder.image_size, generator=torch.Generator().manual_seed(0))
    target = TextTarget(encoder.encode_text(["a red circle", "a blue square"]))
    if kind in attribution.supports:
        maps = attribution(encoder, images, target)
        assert maps.shape == (2, *encoder.image_size) and torch.isfinite(maps).all()
        assert maps.dtype == torch.float32 and maps.abs().sum() > 0
    else:
        with pytest.raises(UnsupportedEncoderError, match=f"{attribution.name}' supports vit encoders"):
            attribution(encoder, images, target)


@pytest.mark.parametrize("method", [*ATTENTION_METHODS, lambda: M2IB(steps=1, samples=1)])
def test_training_mode_is_kept_and_maps_use_eval_mode(tiny_vit, method):
    encoder = copy.deepcopy(tiny_vit)
    images, target, _ = _setup(encoder)
    expected = method()(encoder, images, target)
    encoder.model.train()
    seen = []
    handle = encoder.visual.transformer.resblocks[0].register_forward_hook(lambda m, i, o: seen.append(m.training))
    try:
        maps = method()(encoder, images, target)
    finally:
        handle.remove()
    assert seen and not any(seen), "blocks ran in training mode"
    assert all(m.training for m in encoder.model.modules())
    torch.testing.assert_close(maps, expected)


def test_bad_hyperparameters_are_refused(tiny_vit):
    with pytest.raises(ValueError, match="unknown head reduction"):
        AttentionMap(heads="median")
    with pytest.raises(ValueError, match="unknown head reduction"):
        Rollout(heads="sum")
    with pytest.raises(ValueError, match="blocks must be >= 1"):
        GradECLIP(blocks=0)
    images, target, _ = _setup(tiny_vit)
    with pytest.raises(ValueError, match="exceeds the 2 blocks"):
        GradECLIP(blocks=3)(tiny_vit, images, target)
    with pytest.raises(ValueError, match="block 4 out of range"):
        AttentionMap(block=4)(tiny_vit, images, target)
