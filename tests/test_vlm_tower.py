"""The encoder under test as a LLaVA vision tower: after the swap the VLM's image features are the encoder's own
hidden states at the feature layer (open_clip and transformers encoders); encoders that do not fit are refused by
name, before any work."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import TINY_VIT_CFG, make_encoder

from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.runner import run
from aft_bench.models.backends.transformers import HFClipEncoder
from aft_bench.models.convert import open_clip_to_hf, vision_config
from aft_bench.models.encoder import Encoder, UnsupportedEncoderError
from aft_bench.models.loading import save_encoder
from aft_bench.models.vlm.loading import VLM, load_vlm
from aft_bench.models.vlm.tower import check_tower, install_tower
from aft_bench.toys.vlm.synthetic import LlavaShape, random_llava_folder

TOL = 1e-5
CFG = copy.deepcopy(TINY_VIT_CFG)
CFG["vision_cfg"]["layers"] = 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shape = LlavaShape(vision_layers=3)
    return random_llava_folder(tmp_path_factory.mktemp("vlm") / "llava", ["circle", "square"], shape)


@pytest.fixture(scope="module")
def vlm(folder: Path, one_thread) -> VLM:
    return load_vlm(str(folder))


def _encoder(seed: int = 3) -> Encoder:
    encoder = make_encoder(CFG, "tiny3", seed=seed)
    with torch.no_grad():  # non-trivial layer norms and biases, so that every mapped tensor matters
        for name, value in encoder.visual.named_parameters():
            if name.endswith("bias") or ".ln_" in name or "ln_pre" in name:
                value.add_(0.1 * torch.randn_like(value))
    return encoder


def _own_hidden_state(encoder: Encoder, pixels: torch.Tensor, block: int) -> torch.Tensor:
    """The encoder's own output of ``block`` (B x T x C), read with a forward hook."""
    seen = {}
    handle = encoder.blocks[block].register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    with torch.no_grad():
        encoder(pixels)
    handle.remove()
    return encoder.batch_first(seen["out"])


def _pixels() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("backend", ["open_clip", "transformers"])
def test_image_features_are_the_encoders_hidden_states_at_the_feature_layer(vlm: VLM, backend: str) -> None:
    own = _encoder()
    encoder = own if backend == "open_clip" else HFClipEncoder(open_clip_to_hf(own.visual), None, "tiny3-hf",
                                                               own.mean.flatten().tolist(), own.std.flatten().tolist())
    install_tower(encoder, vlm)
    pixels = _pixels()
    expected = _own_hidden_state(own, pixels, vlm.feature_layer - 1)[:, 1:]  # feature layer -2: block 1's output
    with torch.no_grad():
        hidden = vlm.vision_tower(encoder.normalize(pixels), output_hidden_states=True).hidden_states
        features = vlm.model.get_image_features(pixel_values=encoder.normalize(pixels)).pooler_output
    assert vlm.feature_layer == 2
    assert (hidden[vlm.feature_layer][:, 1:] - expected).abs().max() <= TOL
    projected = vlm.model.model.multi_modal_projector(expected)
    assert (torch.stack(list(features)) - projected).abs().max() <= TOL


def test_a_shape_made_for_an_encoders_tower_fits_it(tmp_path: Path, tiny_vit: Encoder) -> None:
    shape = LlavaShape.for_tower(vision_config(tiny_vit.model.visual), feature_layer=-1)
    vlm = load_vlm(str(random_llava_folder(tmp_path / "fit", ["a", "b"], shape)))
    install_tower(tiny_vit, vlm)
    assert vlm.feature_layer == 2 and len(vlm.vision_attention_modules()) == 2  # 2 layers; -1: after the last one


def test_another_encoder_changes_the_features(vlm: VLM) -> None:
    pixels = _pixels()
    outs = []
    for seed in (3, 4):
        install_tower(_encoder(seed), vlm)
        with torch.no_grad():
            outs.append(vlm.vision_tower(pixels, output_hidden_states=True).hidden_states[2])
    assert (outs[0] - outs[1]).abs().max() > 1e-3


def test_mismatching_encoders_are_refused_naming_what_differs(vlm: VLM, tiny_cnn: Encoder) -> None:
    wide = copy.deepcopy(CFG)
    wide["vision_cfg"].update(width=64, layers=2, image_size=48)
    with pytest.raises(UnsupportedEncoderError, match="hidden_size 64 != 32.*num_hidden_layers 2 != 3.*image_size 48"):
        check_tower(make_encoder(wide, "wide"), vlm)
    with pytest.raises(UnsupportedEncoderError, match="'tiny-cnn'.*cnn"):
        check_tower(tiny_cnn, vlm)
    quick = {**CFG, "quick_gelu": True}
    with pytest.raises(UnsupportedEncoderError, match="hidden_act 'quick_gelu' != 'gelu'"):
        install_tower(make_encoder(quick, "quick"), vlm)


def test_the_task_refuses_before_any_work(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = save_encoder(_encoder(), tmp_path / "good", {"model_cfg": CFG, "name": "good"})
    wide = copy.deepcopy(CFG)
    wide["vision_cfg"]["width"] = 64
    bad = save_encoder(make_encoder(wide, "bad"), tmp_path / "bad", {"model_cfg": wide, "name": "bad"})
    calls = []
    monkeypatch.setattr("aft_bench.tasks.vlm_attention.answer_maps", lambda *a, **k: calls.append(1))
    config = resolve_config("vlm_attention", dict(encoders=[f"ckpt:{good}", f"ckpt:{bad}"], dataset="shapes",
                                                  dataset_args={"size": 4}, out=str(tmp_path / "out"),
                                                  options={"vlm": str(folder)}))
    with pytest.raises(UnsupportedEncoderError, match="bad.*hidden_size 64 != 32"):
        run(config)
    assert not calls and not list((tmp_path / "out").rglob("*.jsonl"))
