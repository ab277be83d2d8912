"""The explicit attention path equals the fused path and records what attention methods need."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_VIT_CFG, make_encoder
from test_attr_registry import hf_vit, timm_vit  # noqa: F401 (fixtures)
from torch import nn

from aft_bench.models.attention_recorder import AttentionRecorder, reduce_heads
from aft_bench.models.backends.open_clip import _mha_forward
from aft_bench.models.encoder import UnsupportedEncoderError


def _vit_cfg(**vision: object) -> dict:
    return {**TINY_VIT_CFG, "vision_cfg": {**TINY_VIT_CFG["vision_cfg"], **vision}}


@pytest.fixture(scope="module")
def custom_vit():
    """open_clip's CustomResidualAttentionBlock with its own Attention (QK norm, head scale, inner LN)."""
    cfg = _vit_cfg(block_type="custom", qk_norm=True, scale_heads=True, scale_attn_inner=True)
    encoder = make_encoder(cfg, "tiny-custom-vit", seed=3)
    with torch.no_grad():  # make head scales non-trivial so that their handling is checked
        for block in encoder.blocks:
            block.attn.head_scale.uniform_(0.5, 1.5)
    return encoder


def _images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("which", ["tiny_vit", "custom_vit"])
def test_explicit_path_gives_the_fused_embeddings(which, request):
    encoder = request.getfixturevalue(which)
    images = _images()
    with torch.no_grad():
        fused = encoder(images)
        with AttentionRecorder(encoder, keep=("probs", "q", "k", "v", "context")) as rec:
            explicit = encoder(images)
    torch.testing.assert_close(explicit, fused, atol=2e-6, rtol=1e-5)
    assert sorted(rec.records) == [0, 1]
    probs = rec.probs(-1)
    assert probs.shape == (3, 2, 17, 17)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 2, 17))
    for field in ("q", "k", "v", "context"):
        assert rec.get(0, field).shape == (3, 17, 32)


def test_explicit_path_gives_the_fused_input_gradient(tiny_vit):
    images = _images()
    text = torch.nn.functional.normalize(torch.randn(3, 32, generator=torch.Generator().manual_seed(1)), dim=-1)

    def input_grad() -> torch.Tensor:
        pixels = images.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((tiny_vit(pixels) * text).sum(), pixels)  # no .grad left on the shared model
        return grad

    fused = input_grad()
    with AttentionRecorder(tiny_vit):
        explicit = input_grad()
    torch.testing.assert_close(explicit, fused, atol=1e-6, rtol=1e-4)


def test_recorded_probs_match_torch_attention_weights(tiny_vit):
    """Cross-check against nn.MultiheadAttention's own (non-fused) weights on the same block input."""
    block = tiny_vit.blocks[1]
    seen = {}
    handle = block.ln_1.register_forward_hook(lambda m, i, o: seen.setdefault("x", o.detach()))
    images = _images()
    try:
        with torch.no_grad(), AttentionRecorder(tiny_vit, blocks=[1], keep=("probs", "context")) as rec:
            tiny_vit(images)
    finally:
        handle.remove()
    x = seen["x"]
    with torch.no_grad():
        out, weights = block.attn(x, x, x, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(rec.probs(1), weights, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(block.attn.out_proj(rec.get(1, "context")), out, atol=1e-6, rtol=1e-5)


def test_probs_match_independent_numpy(tiny_vit):
    """softmax(Q K^T / sqrt(d)) per head from the recorded q and k, computed in numpy."""
    with torch.no_grad(), AttentionRecorder(tiny_vit, blocks=[0], keep=("probs", "q", "k")) as rec:
        tiny_vit(_images(2))
    q = rec.get(0, "q").numpy().astype(np.float64).reshape(2, 17, 2, 16).transpose(0, 2, 1, 3)
    k = rec.get(0, "k").numpy().astype(np.float64).reshape(2, 17, 2, 16).transpose(0, 2, 1, 3)
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(16)
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(rec.probs(0).numpy(), expected, atol=1e-6)


def test_fused_path_is_restored_on_exit_and_on_error(tiny_vit):
    attn = tiny_vit.blocks[0].attn
    with AttentionRecorder(tiny_vit, blocks=[0]):
        assert "forward" in attn.__dict__
    assert "forward" not in attn.__dict__
    with pytest.raises(ZeroDivisionError), AttentionRecorder(tiny_vit, blocks=[0]):
        _ = 1 / 0
    assert "forward" not in attn.__dict__


def test_only_chosen_blocks_and_fields_are_recorded(tiny_vit):
    with torch.no_grad(), AttentionRecorder(tiny_vit, blocks=[-1], keep=("probs",)) as rec:
        tiny_vit(_images(1))
    assert list(rec.records) == [1]
    with pytest.raises(KeyError, match="keep containing 'q'"):
        rec.get(1, "q")
    with pytest.raises(KeyError, match="blocks containing 0"):
        rec.probs(0)


def test_bad_arguments_are_refused(tiny_vit, tiny_cnn):
    with pytest.raises(ValueError, match="cannot record"):
        AttentionRecorder(tiny_vit, keep=("weights",))
    with pytest.raises(ValueError, match="block 5 out of range"):
        AttentionRecorder(tiny_vit, blocks=[5])
    with pytest.raises(UnsupportedEncoderError, match="is a cnn"):
        AttentionRecorder(tiny_cnn)
    with pytest.raises(ValueError, match="unknown head reduction"):
        reduce_heads(torch.zeros(1, 1, 2, 2), "median")


def test_scaled_cosine_attention_is_refused():
    encoder = make_encoder(_vit_cfg(block_type="custom", scaled_cosine_attn=True), "cosine-vit")
    with pytest.raises(UnsupportedEncoderError, match="scaled cosine"):
        AttentionRecorder(encoder)


def test_head_reductions_known_answer():
    probs = torch.tensor([[[[0.2, 0.8]], [[0.6, 0.4]]]])  # B=1, heads=2, 1 query, 2 keys
    torch.testing.assert_close(reduce_heads(probs, "mean"), torch.tensor([[[0.4, 0.6]]]))
    torch.testing.assert_close(reduce_heads(probs, "max"), torch.tensor([[[0.6, 0.8]]]))
    torch.testing.assert_close(reduce_heads(probs, "min"), torch.tensor([[[0.2, 0.4]]]))


class _Store:
    def __init__(self) -> None:
        self.seen: dict = {}

    def __call__(self, **tensors: torch.Tensor) -> None:
        self.seen[0] = tensors


def test_sequence_first_attention_with_a_boolean_mask_matches_torch():
    """Old open_clip runs blocks sequence-first; masks may be boolean (True = masked)."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=False).eval()
    x = torch.randn(5, 3, 8)  # N x B x C
    mask = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1)
    with torch.no_grad():
        expected, weights = mha(x, x, x, attn_mask=mask, need_weights=True, average_attn_weights=False)
        store = _Store()
        out, probs = _mha_forward(store, 0)(mha, x, x, x, attn_mask=mask, average_attn_weights=False)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(probs, weights, atol=1e-6, rtol=1e-5)
    assert store.seen[0]["context"].shape == (3, 5, 8)
    with pytest.raises(UnsupportedEncoderError, match="only self-attention"):
        _mha_forward(store, 0)(mha, x, x.clone(), x)


# ---------------------------------------------------------------------------------------- other backends
@pytest.fixture(scope="module")
def timm_qk_vit():
    """A timm ViT with QK norm and a register token (a prefix token besides the class token)."""
    import timm

    from aft_bench.models.backends.timm import TimmEncoder

    torch.manual_seed(2)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2,
                              num_classes=5, qk_norm=True, reg_tokens=1)
    return TimmEncoder(model.eval(), "tiny-timm-qk-vit")


@pytest.mark.parametrize("which", ["hf_vit", "timm_vit", "timm_qk_vit"])
def test_explicit_path_equals_the_fused_path_on_every_backend(which, request):
    encoder = request.getfixturevalue(which)
    images = _images()
    text = torch.nn.functional.normalize(torch.randn(3, encoder(images[:1]).shape[1]), dim=-1)

    def forward_and_grad():
        pixels = images.clone().requires_grad_(True)
        embeddings = encoder(pixels)
        (grad,) = torch.autograd.grad((embeddings * text).sum(), pixels)
        return embeddings.detach(), grad

    fused = forward_and_grad()
    with AttentionRecorder(encoder, keep=("probs", "q", "k", "v", "context")) as rec:
        explicit = forward_and_grad()
    torch.testing.assert_close(explicit[0], fused[0], atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(explicit[1], fused[1], atol=1e-6, rtol=1e-4)
    tokens = encoder.num_prefix_tokens + 16
    assert rec.probs(-1).shape == (3, 2, tokens, tokens) and rec.get(0, "context").shape == (3, tokens, 32)
    torch.testing.assert_close(rec.probs(0).sum(-1), torch.ones(3, 2, tokens))
    assert all("forward" not in block.__dict__ for block in encoder.model.modules())


def test_hf_probs_match_transformers_eager_attention_weights(request):
    """Cross-check against transformers' own eager attention, which returns its probabilities."""
    encoder = request.getfixturevalue("hf_vit")
    images = _images(2)
    vision = encoder.model.vision_model
    vision.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            reference = vision(pixel_values=encoder.normalize(images), output_attentions=True).attentions
            with AttentionRecorder(encoder, keep=("probs",)) as rec:
                encoder(images)
    finally:
        vision.config._attn_implementation = "sdpa"
    for block, weights in enumerate(reference):
        torch.testing.assert_close(rec.probs(block), weights, atol=1e-6, rtol=1e-5)
