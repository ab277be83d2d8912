"""Every registered attribution on every tiny encoder kind (ViT, ModifiedResNet, timm ConvNeXt): maps or a
clear refusal, and no side effects."""

from __future__ import annotations

import pytest
import torch

from aft_bench.attributions.base import Attribution, TextTarget
from aft_bench.encoder import Encoder, UnsupportedEncoderError
from aft_bench.registries import ATTRIBUTIONS

ENCODER_FIXTURES = ("tiny_vit", "tiny_cnn", "tiny_timm")
REFUSED_ON_TIMM = {"m2ib"}  # a CNN method that knows only ModifiedResNet's stages refuses timm towers by name


def make_inputs(encoder: Encoder) -> tuple[torch.Tensor, TextTarget]:
    """Two random images and the zero-shot targets of two prompts (the encoder's own text tower)."""
    images = torch.rand(2, 3, *encoder.image_size, generator=torch.Generator().manual_seed(0))
    return images, TextTarget(encoder.encode_text(["a photo of a red circle", "a photo of a blue square"]))


@pytest.mark.parametrize("fixture", ENCODER_FIXTURES)
@pytest.mark.parametrize("name", ATTRIBUTIONS.names())
def test_registered_method_on_encoder_kind(name: str, fixture: str, request: pytest.FixtureRequest) -> None:
    encoder: Encoder = request.getfixturevalue(fixture)
    method = ATTRIBUTIONS.get(name)()
    assert isinstance(method, Attribution) and method.name == name
    images, target = make_inputs(encoder)
    if encoder.kind not in method.supports or (fixture == "tiny_timm" and name in REFUSED_ON_TIMM):
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
