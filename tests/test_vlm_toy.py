"""The toy VLM: recipe key, tokenizer round trip, cached and resumable build, the saved folder through transformers,
the converted tower, determinism by seed and the card's answer accuracy."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TOY
from safetensors.torch import load_file
from transformers import AutoProcessor, LlavaForConditionalGeneration, LlavaProcessor

from aft_bench.core.cache import ENV_CACHE
from aft_bench.data.shapes import CLASSNAMES, generate_batch
from aft_bench.models.vlm.prompt import class_question, llava_conversation
from aft_bench.toys.clip.store import load_toy_encoder
from aft_bench.toys.vlm import folder as toy_vlm
from aft_bench.toys.vlm.accuracy import answer_accuracy, held_out_accuracy
from aft_bench.toys.vlm.fit import answer_logits, answer_loss, answer_tokens, encode_text, question
from aft_bench.toys.vlm.folder import CARD_NAME, build_toy_vlm_folder, toy_vlm_folder
from aft_bench.toys.vlm.model import build_toy_processor, build_toy_vlm, tower_features
from aft_bench.toys.vlm.recipe import IMAGE_TOKEN_ID, VlmRecipe
from aft_bench.toys.vlm.tokenizer import build_toy_tokenizer
from aft_bench.training.checkpoint import CHECKPOINT_NAME, ResumeError, load_checkpoint

# Two vision blocks, so that the feature layer (-2) is a block's output and not the embeddings.
TOY = dataclasses.replace(TINY_TOY, vision_layers=2)
TINY = VlmRecipe(toy=TOY, text_width=16, text_layers=1, text_heads=2, text_mlp=32, steps=4, batch_size=4,
                 warmup=1, pool_size=8, checkpoint_every=2, eval_size=6, max_new_tokens=3)
WEIGHTS = "model.safetensors"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny recipe's folder, built once into a cache of its own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_CACHE, str(tmp_path_factory.mktemp("cache")))
        return toy_vlm_folder(TINY)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / WEIGHTS)


# ---------------------------------------------------------------------------------------- recipe and tokenizer
def test_recipe_key_follows_the_recipe_and_the_toy_clip() -> None:
    assert TINY.key() == dataclasses.replace(TINY).key()
    assert TINY.to_dict()["toy"] == TOY.cache_key()
    changed = [dataclasses.replace(TINY, seed=1), dataclasses.replace(TINY, text_width=32),
               dataclasses.replace(TINY, toy=dataclasses.replace(TOY, seed=3))]
    assert len({TINY.key(), *(r.key() for r in changed)}) == 4
    assert TINY.cache_key() == f"toy-vlm-{TINY.key()}"
    assert (TINY.image_seq_length, VlmRecipe().image_seq_length) == (16, 64)


@pytest.mark.parametrize("bad", [{"text_width": 15}, {"steps": 0}, {"batch_size": 9}, {"eval_size": 0}])
def test_recipe_rejects_inconsistent_values(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        dataclasses.replace(TINY, **bad)


def test_tokenizer_round_trips_the_prompt_and_the_class_names() -> None:
    tokenizer = build_toy_tokenizer(CLASSNAMES)
    prompt = llava_conversation(class_question(CLASSNAMES))
    ids = tokenizer(prompt).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids.count(IMAGE_TOKEN_ID) == 1
    assert tokenizer.convert_ids_to_tokens(IMAGE_TOKEN_ID) == "<image>" == tokenizer.image_token
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids[1:]) == prompt
    for name in CLASSNAMES:
        answer = tokenizer(f"{prompt} {name}").input_ids
        assert answer[: len(ids)] == ids and tokenizer.decode(answer[len(ids):]) == f" {name}"
    assert tokenizer("a giraffe", add_special_tokens=False).input_ids.count(tokenizer.unk_token_id) == 2


def test_processor_keeps_toy_sized_images_and_centre_crops_others() -> None:
    processor = build_toy_processor(TINY, CLASSNAMES)
    images, _, _ = generate_batch(0, "test", 0, 2, TOY.image_size)
    arrays = list((images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    out = processor(images=arrays, text=[question()] * 2, return_tensors="pt")
    expected = (torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    assert torch.allclose(out["pixel_values"], expected, atol=1e-6)
    assert (out["input_ids"] == IMAGE_TOKEN_ID).sum(dim=1).tolist() == [TINY.image_seq_length] * 2
    wide = np.zeros((TOY.image_size, 2 * TOY.image_size, 3), dtype=np.uint8)
    wide[:, TOY.image_size // 2 : 3 * TOY.image_size // 2] = 255  # the centre square is white
    pixels = processor.image_processor(wide, return_tensors="pt")["pixel_values"]
    assert pixels.shape[-2:] == (TOY.image_size, TOY.image_size) and torch.allclose(pixels, torch.ones_like(pixels))


# ---------------------------------------------------------------------------------------- the built folder
def test_folder_loads_with_transformers_and_its_card_is_honest(built: Path) -> None:
    model = LlavaForConditionalGeneration.from_pretrained(built).eval()
    processor = AutoProcessor.from_pretrained(built)
    assert isinstance(processor, LlavaProcessor)
    assert model.config.vision_feature_layer == -2 and model.config.vision_feature_select_strategy == "default"
    assert model.config.image_seq_length == TINY.image_seq_length
    card = json.loads((built / CARD_NAME).read_text())
    assert card["recipe_key"] == TINY.key() and card["toy_clip_cache_key"] == TOY.cache_key()
    assert card["answer_n"] == TINY.eval_size and card["answer_split"] == "test" and 0 < card["build_cpu_seconds"]
    accuracy, answers = held_out_accuracy(model, processor, question(), TINY.eval_size, TINY.eval_seed,
                                          TOY.image_size, TINY.max_new_tokens)
    assert card["answer_accuracy"] == round(accuracy, 4) and card["answers_seen"] == sorted(set(answers))
    assert not (built / CHECKPOINT_NAME).exists()


def test_tower_features_are_the_toy_clips_hidden_states(built: Path, cache: Path) -> None:
    """Image features = the toy CLIP's block -2 output without the class token; the projector reads exactly those."""
    model = LlavaForConditionalGeneration.from_pretrained(built).eval()
    encoder = load_toy_encoder("cpu", TOY)
    images, _, _ = generate_batch(0, "test", 0, 3, TOY.image_size)
    seen: dict[str, torch.Tensor] = {}
    hook = encoder.blocks[-2].register_forward_hook(lambda _m, _i, out: seen.setdefault("tokens", out))
    with torch.no_grad():
        encoder(images)
        hook.remove()
        expected = encoder.batch_first(seen["tokens"])[:, 1:]
        pixels = encoder.normalize(images)
        features = tower_features(model, pixels)
        projected = torch.stack(list(model.model.get_image_features(pixel_values=pixels).pooler_output))
    assert features.shape == (3, TINY.image_seq_length, TOY.vision_width)
    assert (features - expected).abs().max() <= 1e-5
    assert torch.equal(projected, model.model.multi_modal_projector(features))


def test_training_loss_is_the_models_own_loss_on_pixels(built: Path) -> None:
    """The training path (cached tower features merged into the prompt) = LLaVA's forward on pixels and token ids."""
    model = LlavaForConditionalGeneration.from_pretrained(built).eval()
    processor = AutoProcessor.from_pretrained(built)
    prompt_ids = encode_text(processor, question(), TOY.image_size)
    answers = answer_tokens(processor, prompt_ids, TOY.image_size)[torch.tensor([3, 7])]
    images, _, _ = generate_batch(0, "test", 0, 2, TOY.image_size)
    pixels = (images - 0.5) / 0.5
    ids = torch.cat([prompt_ids.expand(2, -1), answers], dim=1)
    labels = torch.cat([torch.full_like(prompt_ids.expand(2, -1), -100), answers], dim=1)
    with torch.no_grad():
        expected = model(input_ids=ids, pixel_values=pixels, labels=labels).loss
        got = answer_loss(model, tower_features(model, pixels), prompt_ids, answers)
    assert answers.shape[1] == 3 and (answers[:, -1] == processor.tokenizer.eos_token_id).all()
    assert abs(got.item() - expected.item()) <= 1e-5
    embeds = torch.randn(2, 20, model.config.text_config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(inputs_embeds=embeds).logits
        assert torch.allclose(answer_logits(model, embeds, 15, 4), full[:, 15:19], atol=1e-5)


def test_only_the_projector_and_the_language_model_train(cache: Path) -> None:
    encoder = load_toy_encoder("cpu", TOY)
    model = build_toy_vlm(TINY, encoder.visual, len(build_toy_tokenizer(CLASSNAMES)))
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {name for name, _ in model.named_parameters() if name.startswith("model.vision_tower.")}
    assert frozen and model.generation_config.eos_token_id == model.config.text_config.eos_token_id


def test_cached_by_recipe(built: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = toy_vlm_folder(TINY)
    assert first.name == TINY.cache_key() and (first / WEIGHTS).is_file()
    calls: list[VlmRecipe] = []
    real = toy_vlm.build_toy_vlm_folder
    monkeypatch.setattr(toy_vlm, "build_toy_vlm_folder", lambda recipe, folder: calls.append(recipe) or
                        real(recipe, folder))
    assert toy_vlm_folder(TINY) == first and calls == []
    other = dataclasses.replace(TINY, seed=1)
    second = toy_vlm_folder(other)
    assert calls == [other] and second != first
    assert _weights(first).keys() == _weights(built).keys()
    assert all(torch.equal(v, _weights(built)[k]) for k, v in _weights(first).items())  # same seed: same weights
    changed = [k for k, v in _weights(second).items() if not torch.equal(v, _weights(first)[k])]
    assert changed and not any(k.startswith("model.vision_tower.") for k in changed)  # the tower is the toy's


def test_interrupted_build_resumes_to_the_same_weights(built: Path, cache: Path) -> None:
    work = cache / f".{TINY.cache_key()}.partial"
    assert build_toy_vlm_folder(TINY, work, progress=False, stop_at_step=2) is None
    assert load_checkpoint(work / CHECKPOINT_NAME)["step"] == 2 and not (work / WEIGHTS).exists()
    folder = toy_vlm_folder(TINY)
    card = json.loads((folder / CARD_NAME).read_text())
    assert card["resumed_from_step"] == 2 and card["steps_done"] == TINY.steps
    resumed, uninterrupted = _weights(folder), _weights(built)
    assert resumed.keys() == uninterrupted.keys() and all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


def test_resume_refuses_another_recipes_checkpoint(tmp_path: Path, cache: Path) -> None:
    build_toy_vlm_folder(TINY, tmp_path, progress=False, stop_at_step=2)
    with pytest.raises(ResumeError, match="toy VLM recipe"):
        build_toy_vlm_folder(dataclasses.replace(TINY, lr=1e-2), tmp_path, progress=False)


# ---------------------------------------------------------------------------------------- accuracy
def test_answer_accuracy_known_answers() -> None:
    names = ["red circle", "blue star", "green cross"]
    answers = [" red circle", "blue star ", "red circle", "", "blue  star", "green cross"]
    labels = [0, 1, 1, 2, 1, 2]
    assert answer_accuracy(answers, labels, names) == pytest.approx(3 / 6)
    assert answer_accuracy(answers, torch.tensor(labels), names) == pytest.approx(3 / 6)
    assert answer_accuracy(["green cross"], [2], names) == 1.0 and answer_accuracy(["red"], [0], names) == 0.0


@pytest.mark.parametrize(("answers", "labels"), [([], []), (["red circle"], [0, 1])])
def test_answer_accuracy_rejects_empty_or_unpaired(answers: list[str], labels: list[int]) -> None:
    with pytest.raises(ValueError, match="answer_accuracy"):
        answer_accuracy(answers, labels, ["red circle", "blue star"])
