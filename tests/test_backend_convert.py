"""open_clip ViT <-> transformers CLIP vision tower: the same embeddings, the same maps of every attribution method
through both backends, and exact round trips of the state dicts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_VIT_CFG, make_encoder

from aft_bench.core.registries import ATTRIBUTIONS
from aft_bench.evaluation.targets.text import TextTarget
from aft_bench.models.backends.transformers import HFClipEncoder
from aft_bench.models.convert import hf_to_open_clip, open_clip_to_hf, open_clip_to_hf_state
from aft_bench.models.encoder import Encoder, UnsupportedEncoderError

EMBED_TOL, MAP_TOL = 1e-5, 1e-4


def _twin(encoder: Encoder) -> HFClipEncoder:
    """The open_clip encoder's image tower converted to transformers, with the same normalisation."""
    model = open_clip_to_hf(encoder.visual)
    return HFClipEncoder(model, None, f"{encoder.name}-hf", encoder.mean.flatten().tolist(),
                         encoder.std.flatten().tolist(), {"converted_from": encoder.name}).eval()


@pytest.fixture(scope="module", params=["gelu", "quick_gelu"])
def pair(request: pytest.FixtureRequest) -> tuple[Encoder, HFClipEncoder]:
    cfg = {**TINY_VIT_CFG, "quick_gelu": request.param == "quick_gelu"}
    encoder = make_encoder(cfg, f"tiny-vit-{request.param}", seed=5)
    with torch.no_grad():  # non-trivial layer norms and biases, so that every converted tensor matters
        for name, value in encoder.visual.named_parameters():
            if name.endswith(("bias", "ln_pre.weight", "ln_post.weight")) or ".ln_" in name:
                value.add_(0.1 * torch.randn_like(value))
    return encoder, _twin(encoder)


def _images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - low) / (high - low).clamp_min(1e-12)).view_as(maps)


def test_converted_tower_gives_the_same_embeddings(pair) -> None:
    open_clip_encoder, hf_encoder = pair
    images = _images(4)
    with torch.no_grad():
        expected, got = open_clip_encoder(images), hf_encoder(images)
    assert (got - expected).abs().max() <= EMBED_TOL
    assert hf_encoder.grid_size == open_clip_encoder.grid_size and len(hf_encoder.blocks) == 2


@pytest.mark.parametrize("name", ATTRIBUTIONS.names())
def test_every_method_gives_the_same_maps_through_both_backends(pair, name: str) -> None:
    open_clip_encoder, hf_encoder = pair
    images = _images()
    target = TextTarget(F.normalize(torch.randn(2, 32, generator=torch.Generator().manual_seed(1)), dim=-1))
    method = ATTRIBUTIONS.get(name)()
    expected = _minmax(method(open_clip_encoder, images, target))
    got = _minmax(method(hf_encoder, images, target))
    assert (got - expected).abs().max() <= MAP_TOL, name


def test_state_dicts_round_trip_exactly(pair) -> None:
    open_clip_encoder, hf_encoder = pair
    original = open_clip_encoder.visual.state_dict()
    back = hf_to_open_clip(hf_encoder.model).state_dict()
    assert set(back) == set(original) and all(torch.equal(back[k], original[k]) for k in original)
    hf_state = {k: v for k, v in hf_encoder.model.state_dict().items()}
    again = open_clip_to_hf(hf_to_open_clip(hf_encoder.model)).state_dict()
    assert set(again) == set(hf_state) and all(torch.equal(again[k], hf_state[k]) for k in hf_state)


def test_fused_in_projection_is_split_into_q_k_v() -> None:
    """Known answer: the rows of in_proj_weight are q, then k, then v (nn.MultiheadAttention's layout)."""
    encoder = make_encoder(TINY_VIT_CFG, "tiny", seed=0)
    state = encoder.visual.state_dict()
    converted = open_clip_to_hf_state(state, 2)
    fused = state["transformer.resblocks.1.attn.in_proj_weight"]
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        part = converted[f"vision_model.encoder.layers.1.self_attn.{name}.weight"]
        assert torch.equal(part, fused[32 * i:32 * (i + 1)])
    assert torch.equal(converted["visual_projection.weight"], state["proj"].T)


@pytest.mark.parametrize("vision", [{"block_type": "custom"}, {"attentional_pool": True}, {"pool_type": "avg"},
                                    {"ls_init_value": 0.1}])
def test_towers_without_a_transformers_counterpart_are_refused(vision: dict) -> None:
    cfg = {**TINY_VIT_CFG, "vision_cfg": {**TINY_VIT_CFG["vision_cfg"], **vision}}
    encoder = make_encoder(cfg, "odd")
    with pytest.raises(UnsupportedEncoderError, match="no transformers CLIP counterpart"):
        open_clip_to_hf(encoder.visual)


def test_a_cnn_tower_is_refused(tiny_cnn: Encoder) -> None:
    with pytest.raises(UnsupportedEncoderError, match="ModifiedResNet"):
        open_clip_to_hf(tiny_cnn.visual)
