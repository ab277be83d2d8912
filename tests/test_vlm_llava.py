"""A tiny random LLaVA (built from a config, saved with save_pretrained, loaded by path, word-level tokenizer built
locally): the prompt's image tokens, the attention rows the one forward keeps against ``output_attentions=True``
(eager) on the same input, the per-token maps against the composite of those eager attentions, and clear errors
for specs that are not a LLaVA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_VIT_CFG, make_encoder
from transformers import LlavaForConditionalGeneration

from aft_bench.models.checkpoints import CheckpointError
from aft_bench.models.vlm.answer import MapChoices, answer_maps, attention_rows, generate
from aft_bench.models.vlm.composite import composite_weights, grid_to_image, llm_image_weights, vision_patch_matrix
from aft_bench.models.vlm.loading import VLM, load_vlm
from aft_bench.models.vlm.prompt import class_question
from aft_bench.models.vlm.rows import IMPLEMENTATION
from aft_bench.models.vlm.tower import install_tower
from aft_bench.toys.vlm.synthetic import LlavaShape, random_llava_folder

CLASSES = ["circle", "square", "triangle"]
TOL = 1e-5


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_llava_folder(tmp_path_factory.mktemp("vlm") / "llava", CLASSES, LlavaShape(vision_layers=2))


@pytest.fixture(scope="module")
def models(folder: Path, one_thread) -> tuple[VLM, VLM]:
    """The VLM with the row-keeping attention and the same model with eager attention, the same tower in both."""
    vlm = load_vlm(str(folder))
    eager = VLM("eager", folder, LlavaForConditionalGeneration.from_pretrained(folder, attn_implementation="eager"),
                vlm.tokenizer)
    encoder = make_encoder(TINY_VIT_CFG, "tiny", seed=2)
    for model in (vlm, eager):
        install_tower(encoder, model)
    return vlm, eager


def _pixels(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_prompt_expands_the_placeholder_to_one_token_per_patch(models) -> None:
    vlm, _ = models
    prompt = vlm.prompt_ids(class_question(CLASSES))
    positions = vlm.image_positions(prompt)
    assert vlm.grid == (4, 4) and vlm.image_tokens == 16 and len(positions) == 16
    assert positions.tolist() == list(range(int(positions[0]), int(positions[0]) + 16))
    assert int(prompt[0]) == vlm.tokenizer.bos_token_id
    assert vlm.config.text_config._attn_implementation == IMPLEMENTATION


@pytest.mark.parametrize("choices", [MapChoices(query="own"), MapChoices(llm_layers=(1,), query="predicting")])
def test_kept_rows_equal_the_eager_attentions(models, choices: MapChoices) -> None:
    vlm, eager = models
    prompt = vlm.prompt_ids(class_question(CLASSES))
    answers = [[7, 8, 9], [10, 11, 12]]
    pixels = _pixels()
    collector = attention_rows(vlm, pixels, prompt, answers, choices)
    sequences = torch.cat([prompt[None].expand(2, -1), torch.tensor(answers)], dim=1)
    with torch.no_grad():
        out = eager.model(input_ids=sequences, pixel_values=pixels, output_attentions=True)
        tower = eager.vision_tower(pixels, output_attentions=True)
    rows = torch.arange(3) + len(prompt) + (0 if choices.query == "own" else -1)
    layers = choices.llm_layers or (0, 1)
    kept = collector.llm_rows()
    assert kept.shape == (2, len(layers), 3, len(prompt) + 3)
    for k, layer in enumerate(layers):
        assert (kept[:, k] - out.attentions[layer][:, :, rows].mean(dim=1)).abs().max() <= TOL
    assert len(collector.vision_layers()) == vlm.feature_layer == 1
    assert (collector.vision_layers()[0] - tower.attentions[0].mean(dim=1)).abs().max() <= TOL


def test_the_row_keeping_forward_changes_no_output(models) -> None:
    vlm, eager = models
    prompt = vlm.prompt_ids(class_question(CLASSES))[None].expand(2, -1)
    with torch.no_grad():
        a = vlm.model(input_ids=prompt, pixel_values=_pixels()).logits
        b = eager.model(input_ids=prompt, pixel_values=_pixels()).logits
    assert (a - b).abs().max() <= TOL


@pytest.mark.parametrize("vision", [True, False])
def test_per_token_maps_are_the_composite_of_the_eager_attentions(models, vision: bool) -> None:
    vlm, eager = models
    prompt = vlm.prompt_ids(class_question(CLASSES))
    pixels = _pixels()
    answers = answer_maps(vlm, pixels, prompt, 4, MapChoices(vision=vision), (32, 32))
    assert [a.token_ids for a in answers] == generate(eager, pixels, prompt, 4)  # greedy: the same answers
    assert all(answer.token_ids for answer in answers)
    for b, answer in enumerate(answers):
        assert answer.maps.shape == (len(answer.token_ids), 32, 32) and len(answer.tokens) == len(answer.token_ids)
        sequence = torch.cat([prompt, torch.tensor(answer.token_ids, dtype=prompt.dtype)])[None]
        with torch.no_grad():
            out = eager.model(input_ids=sequence, pixel_values=pixels[b : b + 1], output_attentions=True)
            tower = eager.vision_tower(pixels[b : b + 1], output_attentions=True)
        matrix = vision_patch_matrix([tower.attentions[0][0]]) if vision else None
        for t in range(len(answer.token_ids)):
            rows = torch.stack([a[0, :, len(prompt) + t - 1] for a in out.attentions])
            expected = grid_to_image(composite_weights(llm_image_weights(rows, vlm.image_positions(prompt)), matrix),
                                     (4, 4), (32, 32))
            assert (answer.maps[t] - expected).abs().max() <= TOL


def test_llm_layers_out_of_range_are_refused(models) -> None:
    vlm, _ = models
    vlm.check_llm_layers((0, -2))
    with pytest.raises(ValueError, match=r"has 2 LLM layers.*\[2\] are out of range"):
        vlm.check_llm_layers((0, 2))


def test_specs_that_are_not_a_llava_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="vlm=nowhere/at-all.*registered VLM"):
        load_vlm("nowhere/at-all")
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(CheckpointError, match="model_type 'clip'.*LlavaForConditionalGeneration"):
        load_vlm(str(clip))


def test_stacked_weights_give_the_maps_of_each_row() -> None:
    weights = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.5]])
    maps = grid_to_image(weights, (2, 2), (8, 8))
    assert maps.shape == (2, 8, 8)
    for row, single in zip(weights, maps, strict=True):
        torch.testing.assert_close(single, grid_to_image(row, (2, 2), (8, 8)))
    with pytest.raises(ValueError, match="patch grid"):
        grid_to_image(torch.ones(2, 5), (2, 2), (8, 8))
