"""bf16 autocast of attribution forwards on the CPU against fp32: the forwards really run in bfloat16, maps come
back fp32 and close to the fp32 maps (tolerances below), and the precision is part of a bf16 run's key only.

Tolerances: bfloat16 keeps 8 significant bits (a relative rounding of 2**-9 per operation), which a random-weight
network amplifies, most in pixel-level gradients of a CNN. Per map, against the fp32 map of the same images: cosine
similarity >= ``COSINE`` and mean absolute difference of the min-max normalised maps <= ``MEAN_DIFF`` (measured:
ViT methods >= 0.998 and <= 0.006; the CNN's >= 0.984 and <= 0.053)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aft_bench.core.registries import ATTRIBUTIONS
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.precision import attribution_precision
from aft_bench.evaluation.targets.text import TextTarget
from aft_bench.models.encoder import Encoder

TOLERANCE = {"vit": (0.995, 0.02), "cnn": (0.97, 0.08)}  # (COSINE, MEAN_DIFF) per encoder kind


def _normalised(maps: torch.Tensor) -> torch.Tensor:
    lo, hi = maps.amin(dim=(1, 2), keepdim=True), maps.amax(dim=(1, 2), keepdim=True)
    return (maps - lo) / (hi - lo).clamp_min(1e-12)


def _inputs(encoder: Encoder) -> tuple[torch.Tensor, TextTarget]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, *encoder.image_size, generator=generator)
    with torch.no_grad():
        dim = encoder(images).shape[1]
    text = nn.functional.normalize(torch.randn(3, dim, generator=generator), dim=1)
    return images, TextTarget(text)


CASES = [("vit", m) for m in ("simple_gradient", "smoothgrad", "gradcam", "rollout", "grad_eclip", "m2ib")] + [
    ("cnn", m) for m in ("simple_gradient", "gradcam")]


@pytest.mark.parametrize(("kind", "method"), CASES)
def test_bf16_maps_are_fp32_and_close_to_the_fp32_maps(kind: str, method: str, tiny_vit: Encoder, tiny_cnn: Encoder,
                                                      one_thread: None) -> None:
    encoder = tiny_vit if kind == "vit" else tiny_cnn
    images, target = _inputs(encoder)
    attribution = ATTRIBUTIONS.get(method)()
    torch.manual_seed(0)
    full = attribution(encoder, images, target)
    torch.manual_seed(0)
    with attribution_precision("bf16", images.device):
        half = attribution(encoder, images, target)
    cosine, mean_diff = TOLERANCE[kind]
    assert half.dtype == torch.float32 and half.shape == full.shape
    assert not torch.equal(half, full)  # the forwards did run in bfloat16
    blank = (full.flatten(1).abs().amax(dim=1) == 0) & (half.flatten(1).abs().amax(dim=1) == 0)  # a ReLU'd map
    similar = nn.functional.cosine_similarity(full.flatten(1), half.flatten(1))
    assert torch.where(blank, 1.0, similar).min() >= cosine
    assert (_normalised(full) - _normalised(half)).abs().mean(dim=(1, 2)).max() <= mean_diff


def test_autocast_runs_the_layers_in_bf16_and_keeps_input_gradients_fp32(tiny_vit: Encoder) -> None:
    images, target = _inputs(tiny_vit)
    seen: list[torch.dtype] = []
    linear = next(m for name, m in tiny_vit.visual.named_modules() if name.endswith("mlp.c_fc"))  # called as a module
    handle = linear.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    try:
        for precision in ("fp32", "bf16"):
            pixels = images.clone().requires_grad_(True)
            with attribution_precision(precision, pixels.device):
                target.score(tiny_vit(pixels)).sum().backward()
            assert pixels.grad is not None and pixels.grad.dtype == torch.float32
    finally:
        handle.remove()
    assert seen == [torch.float32, torch.bfloat16]
    with pytest.raises(ValueError, match="precision 'fp16'"):
        with attribution_precision("fp16", "cpu"):
            pass


def test_bf16_changes_the_run_key_and_fp32_keys_stay_as_they_were() -> None:
    fp32 = resolve_config("pointing_game", {})
    bf16 = resolve_config("pointing_game", {"precision": "bf16"})
    assert fp32.precision == "fp32" and "precision" not in fp32.numbers_key()
    assert bf16.numbers_key() == {**fp32.numbers_key(), "precision": "bf16"}
    with pytest.raises(ValueError, match="--precision 'fp16'"):
        resolve_config("pointing_game", {"precision": "fp16"})
