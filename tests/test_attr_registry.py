"""Every registered attribution on every tiny encoder kind of every backend (open_clip ViT, ModifiedResNet and timm
ConvNeXt towers; a transformers CLIP vision tower; timm ViT and ResNet classifiers): maps or a clear refusal, and no
side effects."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig

from aft_bench.attributions.base import Attribution
from aft_bench.core.registries import ATTRIBUTIONS
from aft_bench.evaluation.targets.text import TextTarget
from aft_bench.models.backends.timm import TimmEncoder
from aft_bench.models.backends.transformers import HFClipEncoder, random_clip
from aft_bench.models.encoder import Encoder, UnsupportedEncoderError

ENCODER_FIXTURES = ("tiny_vit", "tiny_cnn", "tiny_timm", "hf_vit", "timm_vit", "timm_resnet")


@pytest.fixture(scope="module")
def hf_vit() -> Encoder:
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=16)
    return HFClipEncoder(random_clip(config, seed=0), None, "tiny-hf-vit")


@pytest.fixture(scope="module")
def timm_vit() -> Encoder:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2,
                              num_classes=5, reg_tokens=1)
    return TimmEncoder(model.eval(), "tiny-timm-vit")


@pytest.fixture(scope="module")
def timm_resnet() -> Encoder:
    torch.manual_seed(0)
    return TimmEncoder(timm.create_model("test_resnet", num_classes=5).eval(), "tiny-timm-resnet", image_size=(64, 64))


def make_inputs(encoder: Encoder) -> tuple[torch.Tensor, TextTarget]:
    """Two random images and the zero-shot targets of two prompts (the encoder's own text tower; random unit
    vectors for encoders without one)."""
    images = torch.rand(2, 3, *encoder.image_size, generator=torch.Generator().manual_seed(0))
    if not encoder.has_text:
        with torch.no_grad():
            dim = encoder(images).shape[1]
        return images, TextTarget(F.normalize(torch.randn(2, dim, generator=torch.Generator().manual_seed(1)), dim=-1))
    return images, TextTarget(encoder.encode_text(["a photo of a red circle", "a photo of a blue square"]))


@pytest.mark.parametrize("fixture", ENCODER_FIXTURES)
@pytest.mark.parametrize("name", ATTRIBUTIONS.names())
def test_registered_method_on_encoder_kind(name: str, fixture: str, request: pytest.FixtureRequest) -> None:
    encoder: Encoder = request.getfixturevalue(fixture)
    method = ATTRIBUTIONS.get(name)()
    assert isinstance(method, Attribution) and method.name == name
    images, target = make_inputs(encoder)
    if encoder.kind not in method.supports:
        with pytest.raises(UnsupportedEncoderError) as error:
            method(encoder, images, target)
        assert name in str(error.value) and encoder.name in str(error.value)
        return
    modes = [m.training for m in encoder.modules()]
    maps = method(encoder, images, target)
    assert maps.shape == (2, *encoder.image_size) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all()
    assert all(p.grad is None for p in encoder.parameters()), f"{name} left gradients in the model parameters"
    assert [m.training for m in encoder.modules()] == modes, f"{name} changed the encoder's train/eval mode"


def test_registry_test_covers_the_refusal_path(tiny_cnn: Encoder) -> None:
    """The branch above for methods that refuse an encoder kind, exercised on a ViT-only method."""
    cls = ATTRIBUTIONS.get("simple_gradient")

    class VitOnly(cls):  # type: ignore[misc, valid-type]
        name = "vit_only_gradient"
        supports = frozenset({"vit"})

    images, target = make_inputs(tiny_cnn)
    with pytest.raises(UnsupportedEncoderError, match="'vit_only_gradient'.*'tiny-cnn'"):
        VitOnly()(tiny_cnn, images, target)
