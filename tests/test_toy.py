"""The toy CLIP: recipe, training determinism, checkpoint round trip, cached use, fine-tunes, zero-shot accuracy."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import TINY_TOY
from safetensors.torch import load_file
from torch import Tensor, nn

from aft_bench.core.registries import ENCODERS
from aft_bench.data.shapes import CLASSNAMES, caption, generate_batch
from aft_bench.models.loading import load_encoder
from aft_bench.toys.clip import finetunes
from aft_bench.toys.clip.data import dihedral
from aft_bench.toys.clip.fit import CHECKPOINT_NAME, TRAINING_THREADS, fit_toy, train_toy
from aft_bench.toys.clip.loss import deduplicated_clip_loss
from aft_bench.toys.clip.model import build_toy_model
from aft_bench.toys.clip.recipe import ToyRecipe, world_fingerprint
from aft_bench.toys.clip.store import load_toy_encoder
from aft_bench.toys.clip.zero_shot import zero_shot_accuracy
from aft_bench.training.config import TrainConfig
from aft_bench.training.presets import PRESETS
from aft_bench.training.trainer import TRAINER_VERSION

TINY = TINY_TOY


# ---------------------------------------------------------------------------------------- recipe
def test_recipe_key_changes_with_every_field() -> None:
    base = ToyRecipe()
    assert base.key() == ToyRecipe().key()
    assert len(base.key()) == 16 and int(base.key(), 16) >= 0
    changes = {"steps": base.steps + 1, "lr": base.lr * 2, "vision_width": 96, "seed": 1, "data_seed": 3,
               "mean": (0.4, 0.5, 0.5)}
    keys = {dataclasses.replace(base, **{name: value}).key() for name, value in changes.items()}
    assert len(keys) == len(changes) and base.key() not in keys


def test_recipe_rejects_inconsistent_shapes() -> None:
    with pytest.raises(ValueError, match="patch_size"):
        ToyRecipe(image_size=60, patch_size=8)
    with pytest.raises(ValueError, match="heads"):
        ToyRecipe(vision_width=66, vision_heads=4)
    with pytest.raises(ValueError, match="steps"):
        ToyRecipe(steps=0)
    with pytest.raises(ValueError, match="augment"):
        ToyRecipe(augment="rotate")


def test_model_cfg_builds_the_declared_vit() -> None:
    cfg = ToyRecipe().model_cfg()
    assert cfg["vision_cfg"]["image_size"] // cfg["vision_cfg"]["patch_size"] == 8  # an 8 x 8 token grid
    assert cfg["vision_cfg"]["width"] // cfg["vision_cfg"]["head_width"] == ToyRecipe().vision_heads


def test_mimetic_init_sets_the_attention_products() -> None:
    torch.manual_seed(0)
    recipe = dataclasses.replace(TINY, vision_width=32, vision_heads=2, mimetic=(0.0, 0.5, 0.0, 0.25))
    visual = build_toy_model(recipe).visual
    width, head_dim = 32, 16
    for block in visual.transformer.resblocks:
        w_q, w_k, w_v = block.attn.in_proj_weight.detach().split(width)
        # alpha = 0: V·O is exactly -beta I; per head Q^T K is the rank-head_dim part of beta I.
        assert torch.allclose(w_v.T @ block.attn.out_proj.weight.detach().T, -0.25 * torch.eye(width), atol=1e-5)
        for head in range(2):
            rows = slice(head * head_dim, (head + 1) * head_dim)
            product = w_q[rows].T @ w_k[rows]
            assert torch.allclose(product, product.T, atol=1e-5)
            assert torch.allclose(product @ product, 0.5 * product, atol=1e-5)  # beta times a projection
            assert torch.trace(product).item() == pytest.approx(0.5 * head_dim, rel=1e-4)


# ---------------------------------------------------------------------------------------- training
def _probe_embeddings(encoder: nn.Module) -> tuple[Tensor, Tensor]:
    images, _, _ = generate_batch(5, "test", 0, 4, TINY.image_size)
    with torch.no_grad():
        return encoder(images), encoder.encode_text([caption(0), caption(7)])


def test_short_training_is_deterministic_and_reloads_exactly(tmp_path: Path) -> None:
    rng_before = torch.get_rng_state()
    encoder, metrics = fit_toy(TINY, progress=False)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is left as it was
    assert metrics["steps"] == TINY.steps and 0.0 <= metrics["zero_shot_accuracy"] <= 1.0

    written = train_toy(TINY, tmp_path / "a", progress=False)  # trains again from the same recipe
    path = tmp_path / "a" / CHECKPOINT_NAME
    state = load_file(str(path))
    assert all(torch.equal(state[k], v) for k, v in encoder.model.state_dict().items())

    reloaded = load_encoder(f"ckpt:{path}")
    assert reloaded.name == "toy" and reloaded.kind == "vit" and reloaded.grid_size == (4, 4)
    for original, loaded in zip(_probe_embeddings(encoder), _probe_embeddings(reloaded), strict=True):
        assert torch.equal(original, loaded)
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["recipe_key"] == TINY.key() and card["recipe"] == TINY.to_dict()
    assert card["cache_key"] == TINY.cache_key()
    assert card["zero_shot_accuracy"] == written["zero_shot_accuracy"] == metrics["zero_shot_accuracy"]
    assert zero_shot_accuracy(reloaded, n=TINY.eval_size, seed=TINY.eval_seed) == pytest.approx(
        card["zero_shot_accuracy"], abs=1e-4)
    assert {"torch", "open_clip_torch"} <= set(card["versions"])


def test_different_seed_gives_different_weights() -> None:
    a, _ = fit_toy(dataclasses.replace(TINY, steps=1), progress=False)
    b, _ = fit_toy(dataclasses.replace(TINY, steps=1, seed=1), progress=False)
    assert not torch.equal(a.model.visual.conv1.weight, b.model.visual.conv1.weight)


def test_load_toy_encoder_trains_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFT_BENCH_CACHE", str(tmp_path))
    first = load_toy_encoder(recipe=TINY)
    assert (tmp_path / TINY.cache_key() / CHECKPOINT_NAME).is_file()
    assert TINY.cache_key().startswith(f"toy-{TINY.key()}-")

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached toy was trained again")

    monkeypatch.setattr("aft_bench.toys.clip.store.train_toy", no_training)
    second = load_toy_encoder(recipe=TINY)
    for a, b in zip(_probe_embeddings(first), _probe_embeddings(second), strict=True):
        assert torch.equal(a, b)
    assert ENCODERS.get("toy") is load_toy_encoder


def test_world_fingerprint_follows_the_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    before = world_fingerprint(TINY)
    assert before == world_fingerprint(TINY) and len(before) == 8
    assert world_fingerprint(dataclasses.replace(TINY, data_seed=1)) != before

    def darker(*args: object) -> tuple[Tensor, Tensor, Tensor]:
        images, masks, labels = generate_batch(*args)
        return images * 0.5, masks, labels

    monkeypatch.setattr("aft_bench.toys.clip.recipe.generate_batch", darker)  # a changed world retrains the toy
    assert world_fingerprint(TINY) != before


def test_builds_with_different_available_threads_give_identical_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """The toy trains on TRAINING_THREADS threads whatever torch's setting and the CPUs, and records the count."""
    before = torch.get_num_threads()
    builds = []
    for threads in (2, 1):
        monkeypatch.setattr("aft_bench.training.threads.available_cpus", lambda n=threads: n)
        torch.set_num_threads(threads)
        seen: list[int] = []

        def loss(*args: Tensor, seen: list[int] = seen) -> Tensor:
            seen.append(torch.get_num_threads())
            return deduplicated_clip_loss(*args)

        monkeypatch.setattr("aft_bench.toys.clip.fit.deduplicated_clip_loss", loss)
        encoder, metrics = fit_toy(TINY, progress=False)
        assert torch.get_num_threads() == threads  # restored
        assert set(seen) == {TRAINING_THREADS} and metrics["threads"] == TRAINING_THREADS == 2
        builds.append(encoder.model.state_dict())
    torch.set_num_threads(before)
    assert builds[0].keys() == builds[1].keys()
    assert all(torch.equal(builds[0][k], builds[1][k]) for k in builds[0])


def test_the_toy_presets_train_on_the_toys_fixed_threads_outside_the_recipe() -> None:
    for preset in ("toy-aft", "toy-fare", "toy-tecoa", "toy-pmg-aft"):
        config = TrainConfig(**PRESETS[preset], preset=preset)
        assert config.threads == TRAINING_THREADS == 2 and "threads" not in config.recipe()


def test_dihedral_codes_cover_the_eight_symmetries() -> None:
    image = torch.arange(9.0).view(1, 1, 3, 3)
    outs = {tuple(dihedral(image, torch.tensor([code])).flatten().tolist()) for code in range(8)}
    assert len(outs) == 8
    assert torch.equal(dihedral(image, torch.tensor([1])), image.flip(-1))
    assert torch.equal(dihedral(image, torch.tensor([4])), image.transpose(-1, -2))


def test_deduplicated_loss_matches_clip_without_duplicates() -> None:
    torch.manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    scale = torch.tensor(2.0)
    logits = scale.exp() * image @ text.T
    target = torch.arange(4)
    clip = (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2
    assert deduplicated_clip_loss(image, text, target, scale) == pytest.approx(clip.item(), rel=1e-6)


def test_deduplicated_loss_uses_soft_targets_for_repeated_captions() -> None:
    # Two images of caption 0 and one of caption 1, all embeddings identical: every softmax is uniform.
    # Image-to-text: log 2. Text-to-image: KL(soft target || uniform over 3) = log 3 - log 2 for caption 0
    # (target 1/2, 1/2 on its two images), log 3 for caption 1.
    image = torch.ones(3, 2) / 2**0.5
    text = torch.ones(2, 2) / 2**0.5
    loss = deduplicated_clip_loss(image, text, torch.tensor([0, 0, 1]), torch.tensor(0.0))
    log2, log3 = math.log(2), math.log(3)
    assert loss.item() == pytest.approx((log2 + (log3 - log2 + log3) / 2) / 2)


def test_deduplicated_loss_is_zero_at_a_perfect_fit() -> None:
    text = torch.eye(3)
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    loss = deduplicated_clip_loss(text[labels], text, labels, torch.tensor(math.log(100.0)))
    assert 0.0 <= loss.item() < 1e-6


# ---------------------------------------------------------------------------------------- fine-tunes
def test_toy_finetunes_train_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """toy-aft is the trainer run on its preset from the toy, cached under preset, trainer version, recipe and toy."""
    monkeypatch.setenv("AFT_BENCH_CACHE", str(tmp_path))
    small = {**PRESETS["toy-aft"], "data": "shapes:8", "batch_size": 4, "max_steps": 2, "pgd_steps": 1, "save_every": 1}
    monkeypatch.setitem(PRESETS, "toy-aft", small)
    with ENCODERS.temporary("toy", lambda device="cpu": load_toy_encoder(device, recipe=TINY), replace=True):
        trained = finetunes.load_toy_aft()
        recipe_hash = TrainConfig(**small, preset="toy-aft").recipe_hash()
        folder = tmp_path / f"toy-aft-v{TRAINER_VERSION}-{recipe_hash}-{TINY.cache_key()}"
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "encoder.json", "encoder.safetensors",
                                                             "metrics.jsonl"]  # the checkpoint is dropped
        card = json.loads((folder / "encoder.json").read_text())
        assert (trained.name, card["name"], card["preset"], card["train_steps"]) == ("toy-aft", "toy-aft", "toy-aft", 2)

        def no_training(config: TrainConfig) -> None:
            raise AssertionError("the cached fine-tune was trained again")

        monkeypatch.setattr(finetunes, "train", no_training)
        again = finetunes.load_toy_aft()
    for a, b in zip(_probe_embeddings(trained), _probe_embeddings(again), strict=True):
        assert torch.equal(a, b)
    assert ENCODERS.get("toy-aft") is finetunes.load_toy_aft and ENCODERS.get("toy-fare") is finetunes.load_toy_fare
    assert ENCODERS.get("toy-tecoa") is finetunes.load_toy_tecoa
    assert ENCODERS.get("toy-pmg-aft") is finetunes.load_toy_pmg_aft


# ---------------------------------------------------------------------------------------- zero-shot
class OracleEncoder(nn.Module):
    """Embeds each prompt as a one-hot vector and each known image as the one-hot of a chosen class."""

    def __init__(self, images: Tensor, answers: Tensor) -> None:
        super().__init__()
        self.lookup = {img.numpy().tobytes(): int(a) for img, a in zip(images, answers, strict=True)}
        self.image_size = tuple(images.shape[-2:])
        self.device = torch.device("cpu")
        self.prompts = [caption(c) for c in range(len(CLASSNAMES))]

    def encode_text(self, texts: list[str]) -> Tensor:
        return torch.eye(len(CLASSNAMES))[[self.prompts.index(t) for t in texts]]

    def forward(self, images: Tensor) -> Tensor:
        return torch.eye(len(CLASSNAMES))[[self.lookup[img.numpy().tobytes()] for img in images]]


@pytest.mark.parametrize("rule", ["right", "wrong", "right_below_10"])
def test_zero_shot_accuracy_known_answers(rule: str) -> None:
    n, seed = 12, 3
    images, _, labels = generate_batch(seed, "test", 0, n, 32)
    answers = {
        "right": labels,
        "wrong": (labels + 1) % len(CLASSNAMES),
        "right_below_10": torch.where(labels < 10, labels, (labels + 1) % len(CLASSNAMES)),
    }[rule]
    expected = (answers == labels).float().mean().item()
    encoder = OracleEncoder(images, answers)
    assert zero_shot_accuracy(encoder, n=n, seed=seed, batch_size=5) == pytest.approx(expected)
    assert encoder.training  # the mode is restored


def test_zero_shot_accuracy_rejects_empty() -> None:
    with pytest.raises(ValueError, match="n=0"):
        zero_shot_accuracy(OracleEncoder(torch.zeros(1, 3, 32, 32), torch.zeros(1)), n=0)
