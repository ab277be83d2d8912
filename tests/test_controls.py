"""The positive control (issue 15): an encoder that sees only the pixels inside each shapes sample's mask, and
the oracle that tells it which sample an image is."""

import pytest
import torch

from aft_bench.core.registries import ATTRIBUTIONS, ENCODERS
from aft_bench.data.shapes import caption, generate_batch
from aft_bench.evaluation.targets.text import TextTarget
from aft_bench.metrics.pointing import pointing_game
from aft_bench.models.attention_recorder import AttentionRecorder
from aft_bench.models.encoder import UnsupportedEncoderError
from aft_bench.toys.controls.mask_gated import CONTROL_NAME, TokenGate, load_mask_control
from aft_bench.toys.controls.mask_oracle import MaskOracle, ShapesWorld, UnknownImageError

N = 40


@pytest.fixture(scope="module")
def control():
    return load_mask_control()


@pytest.fixture(scope="module")
def samples():
    images, masks, labels = generate_batch(0, "test", 0, N, 64)
    return images, masks, labels


@pytest.fixture(scope="module")
def small_oracle():
    return MaskOracle(ShapesWorld(size=60))


def test_oracle_matches_each_sample_and_its_noisy_copies(small_oracle, samples):
    images, masks, _ = samples
    assert torch.equal(small_oracle.match(images), torch.arange(N))
    noisy = images + 0.15 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(small_oracle.match(noisy), torch.arange(N))
    assert torch.equal(small_oracle.masks_of(images), masks.bool())


@pytest.mark.parametrize("foreign", ["other split", "random", "size"])
def test_oracle_refuses_images_it_does_not_know(small_oracle, foreign):
    images = {"other split": generate_batch(0, "val", 0, 4, 64)[0],
              "random": torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1)),
              "size": torch.rand(4, 3, 32, 32)}[foreign]
    with pytest.raises(UnknownImageError, match="shapes"):
        small_oracle.match(images)


def test_control_is_registered_and_refuses_to_be_saved(control, tmp_path):
    assert CONTROL_NAME in ENCODERS
    with pytest.raises(UnsupportedEncoderError, match="cannot be saved"):
        control.save(tmp_path / "c.safetensors", {})


def test_embedding_depends_only_on_pixels_inside_the_mask(control, samples):
    images, masks, _ = samples
    inside = masks.bool()[:, None].expand_as(images)
    noise = 0.2 * torch.randn(images.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        base = control(images)
        outside_changed = control(torch.where(inside, images, (images + noise).clamp(0, 1)))
        inside_changed = control(torch.where(inside, (images + noise).clamp(0, 1), images))
    torch.testing.assert_close(outside_changed, base, rtol=0, atol=1e-6)
    assert (inside_changed - base).norm(dim=1).min() > 1e-3


def test_class_token_never_attends_to_a_dropped_patch(control, samples):
    images, _, _ = samples
    with AttentionRecorder(control, keep=("probs",)) as recorder, torch.no_grad():
        control(images[:8])
    keep = control.model.visual.gate.keep
    for block in range(control.num_blocks):
        cls_row = recorder.probs(block)[:, :, 0]  # B x heads x N
        assert torch.all(cls_row.masked_select(~keep[:, None, :].expand_as(cls_row)) == 0)
        assert torch.allclose(cls_row.sum(-1), torch.ones_like(cls_row[..., 0]))


def test_gate_repeats_for_copies_and_refuses_other_batches():
    gate = TokenGate()
    with pytest.raises(RuntimeError, match="embedded"):
        gate.tokens_for(2)
    gate.keep = torch.tensor([[True, False], [True, True]])
    assert torch.equal(gate.tokens_for(4), torch.tensor([[True, False]] * 2 + [[True, True]] * 2))
    with pytest.raises(RuntimeError, match="3 sequences"):
        gate.tokens_for(3)


POINTING = ["simple_gradient", "smoothgrad", "gradcam", "attention_map", "rollout", "m2ib"]


@pytest.mark.parametrize("method", POINTING)
def test_every_method_points_inside_the_mask(control, samples, method):
    images, masks, labels = samples
    target = TextTarget(control.encode_text([caption(int(label)) for label in labels]))
    maps = ATTRIBUTIONS.get(method)()(control, images, target)
    hits = pointing_game(maps, masks)
    assert hits.mean() >= 0.95, f"{method}: PG {100 * hits.mean():.1f}% on the positive control"


def test_grad_eclip_points_inside_the_mask_wherever_it_points(control, samples):
    images, masks, labels = samples
    target = TextTarget(control.encode_text([caption(int(label)) for label in labels]))
    maps = ATTRIBUTIONS.get("grad_eclip")()(control, images, target)
    flat = maps.flatten(1)
    pointing = flat.amax(1) > flat.amin(1)  # an all-zero map (every token's evidence negative) points nowhere
    assert pointing.sum() >= N // 4
    assert pointing_game(maps[pointing], masks[pointing]).mean() == 1.0
