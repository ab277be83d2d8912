"""What the toy CLIP and the toy VLM share: the recipe base and its keys, the step loop, the schedule, the store."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from conftest import TINY_TOY

from aft_bench.core.cache import ENV_CACHE
from aft_bench.toys.clip.recipe import DEFAULT_RECIPE, SHORTCUT_RECIPE, TRAINER_VERSION, ToyRecipe
from aft_bench.toys.fit import Loop, Step, decay_groups, fit_steps, toy_training, warmup_cosine
from aft_bench.toys.recipe import Recipe
from aft_bench.toys.store import toy_artefact
from aft_bench.toys.vlm.recipe import DEFAULT_VLM_RECIPE, VLM_TRAINER_VERSION, VlmRecipe
from aft_bench.training.schedule import WarmupCosine


# ---------------------------------------------------------------------------------------- recipes and keys
def test_the_default_recipes_keep_the_cache_keys_of_caches_built_before() -> None:
    """Users' caches hold toys under these names: a change here would train every toy again."""
    assert DEFAULT_RECIPE.cache_key() == "toy-a5db1692ab5e1cc1-8d4b4b9e"
    assert SHORTCUT_RECIPE.cache_key() == "toy-ca6aad462576ddb6-d49db630"
    assert DEFAULT_VLM_RECIPE.cache_key() == "toy-vlm-b847e78f17f6935d"
    assert TINY_TOY.key() == "5e153f112a9cec5b"


@pytest.mark.parametrize(("recipe", "version"), [(DEFAULT_RECIPE, TRAINER_VERSION), (SHORTCUT_RECIPE, TRAINER_VERSION),
                                                 (DEFAULT_VLM_RECIPE, VLM_TRAINER_VERSION)])
def test_key_is_the_short_sha256_of_the_trainer_version_and_the_data(recipe: Recipe, version: int) -> None:
    payload = json.dumps({"trainer": version, **recipe.to_dict()}, sort_keys=True)
    assert recipe.key() == hashlib.sha256(payload.encode()).hexdigest()[:16]
    assert json.loads(json.dumps(recipe.to_dict())) == recipe.to_dict()  # JSON-ready as it is


def test_to_dict_names_a_nested_recipe_by_its_cache_key_and_leaves_zero_fields_out() -> None:
    vlm = DEFAULT_VLM_RECIPE.to_dict()
    assert list(vlm)[0] == "toy" and vlm["toy"] == DEFAULT_RECIPE.cache_key()
    assert list(vlm)[1:] == [f.name for f in dataclasses.fields(VlmRecipe)][1:]
    plain = DEFAULT_RECIPE.to_dict()
    assert "shortcut" not in plain and "conflict" not in plain and plain["mimetic"] == [0.7, 0.7, 0.4, 0.4]
    assert SHORTCUT_RECIPE.to_dict()["shortcut"] == SHORTCUT_RECIPE.shortcut > 0
    assert list(plain) == [f.name for f in dataclasses.fields(ToyRecipe) if f.name not in ("shortcut", "conflict")]


def test_the_cache_keys_follow_the_nested_recipe() -> None:
    other = dataclasses.replace(DEFAULT_VLM_RECIPE, toy=dataclasses.replace(DEFAULT_RECIPE, seed=1))
    assert other.key() != DEFAULT_VLM_RECIPE.key() and other.cache_key() == f"toy-vlm-{other.key()}"
    assert DEFAULT_RECIPE.cache_key().startswith(f"toy-{DEFAULT_RECIPE.key()}-")


@pytest.mark.parametrize("recipe", [TINY_TOY, VlmRecipe(steps=4, warmup=1, batch_size=4, pool_size=8)])
def test_recipes_refuse_a_warmup_longer_than_the_run(recipe: Recipe) -> None:
    with pytest.raises(ValueError, match=rf"{type(recipe).__name__}: warmup=9 must be in 0\.\.steps"):
        dataclasses.replace(recipe, warmup=9, steps=4)
    with pytest.raises(ValueError, match=f"{type(recipe).__name__}: steps=0 must be positive"):
        dataclasses.replace(recipe, steps=0, warmup=0)


# ---------------------------------------------------------------------------------------- the schedule
def _toy_clips_former_schedule(steps: int, warmup: int, step: int) -> float:
    """The toy CLIP's own schedule before it used WarmupCosine (its trained weights depend on these values)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@pytest.mark.parametrize(("steps", "warmup"), [(1400, 50), (600, 30), (3, 1), (5, 0), (4, 4), (1, 1)])
def test_warmup_cosine_gives_the_toy_clips_former_schedule_bit_for_bit(steps: int, warmup: int) -> None:
    schedule = WarmupCosine(steps, warmup)
    for step in range(steps + 3):  # LambdaLR also asks past the end
        assert schedule(step) == _toy_clips_former_schedule(steps, warmup, step)
    assert [type(s.lr_lambdas[0]) for s in warmup_cosine([_sgd(), _sgd()], steps, warmup)] == [WarmupCosine] * 2


# ---------------------------------------------------------------------------------------- the step loop
def _sgd() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def _run(losses: list[float], loop: Loop, first: int = 0, checkpoint: Callable[[int], None] | None = None,
         after: dict[str, float] | None = None) -> tuple[dict[str, float], torch.nn.Parameter, list[tuple]]:
    """Runs the loop on a one-weight model whose loss at step i is ``losses[i] * w`` (w starts at 1; SGD, lr 1)."""
    weight = torch.nn.Parameter(torch.ones(1))
    optimiser = torch.optim.SGD([weight], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda _: 1.0)
    events: list[tuple] = []

    def step(number: int, item: int) -> Step:
        events.append(("step", number, item, weight.item()))

        def after_update() -> Mapping[str, float]:
            events.append(("after", number, weight.item()))
            return after or {}

        return Step(losses[number] * weight.sum(), after_update)

    averages = fit_steps(range(first, len(losses)), step, [optimiser], [scheduler], loop, len(losses) - first, first,
                         progress=False, checkpoint=checkpoint)
    return averages, weight, events


def test_the_loop_steps_after_each_backward_and_averages_from_the_first_value() -> None:
    loop = Loop("toy", "toy: test", 1.0, {"loss": ".3f", "acc": ".2f"}, decay=0.5, weight=0.25)
    averages, weight, events = _run([2.0, 4.0, 8.0], loop, after={"acc": 1.0})
    assert weight.item() == 1.0 - 2.0 - 4.0 - 8.0  # SGD: w -= dloss/dw at every step
    assert [e[:2] for e in events] == [("step", 0), ("after", 0), ("step", 1), ("after", 1), ("step", 2), ("after", 2)]
    assert events[1][2] == -1.0  # after_update sees the updated weight
    losses = [2.0 * 1.0, 4.0 * -1.0, 8.0 * -5.0]
    expected = losses[0]
    for value in losses[1:]:
        expected = 0.5 * expected + 0.25 * value
    assert averages == {"loss": expected, "acc": 0.5 * (0.5 * 1.0 + 0.25 * 1.0) + 0.25 * 1.0}


def test_the_loop_checkpoints_every_n_steps_and_after_the_last_and_resumes() -> None:
    seen: list[int] = []
    loop = Loop("toy VLM", "toy VLM: test", 1.0, {"loss": ".4f"}, checkpoint_every=2)
    _run([1.0] * 5, loop, checkpoint=seen.append)
    assert seen == [2, 4, 5]
    seen.clear()
    averages, _, events = _run([3.0] * 5, loop, first=3, checkpoint=seen.append)
    assert seen == [4, 5] and [e[1:3] for e in events if e[0] == "step"] == [(3, 3), (4, 4)]
    assert averages["loss"] == 0.9 * 3.0 + 0.1 * -6.0  # the first step of a resumed run starts the average


def test_a_run_of_no_steps_reports_zero() -> None:
    averages, weight, events = _run([1.0, 1.0], Loop("toy", "t", 1.0, {"loss": ".3f"}), first=2)
    assert averages == {"loss": 0.0} and events == [] and weight.item() == 1.0


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_the_learning_rate() -> None:
    with pytest.raises(FloatingPointError, match=r"toy VLM training: non-finite loss nan at step 1; .*lr \(0\.003\)"):
        _run([1.0, math.nan], Loop("toy VLM", "t", 0.003, {"loss": ".4f"}))


def test_toy_training_restores_the_threads_and_the_rng_and_seeds_inside() -> None:
    before_threads, before_rng = torch.get_num_threads(), torch.get_rng_state()
    with toy_training(1, "testing", seed=5):
        assert torch.get_num_threads() == 1
        inside = torch.rand(3)
    assert torch.get_num_threads() == before_threads and torch.equal(torch.get_rng_state(), before_rng)
    torch.manual_seed(5)
    assert torch.equal(inside, torch.rand(3))
    torch.set_rng_state(before_rng)


def test_decay_groups_decay_matrices_only_in_order() -> None:
    model = torch.nn.Sequential(torch.nn.Embedding(4, 2), torch.nn.Linear(2, 3), torch.nn.LayerNorm(3))
    groups = decay_groups(model.named_parameters(), 0.1, exempt="0.")
    assert [len(g["params"]) for g in groups] == [1, 4] and [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert groups[0]["params"][0] is model[1].weight and groups[1]["params"][0] is model[0].weight


# ---------------------------------------------------------------------------------------- the store
@dataclasses.dataclass(frozen=True)
class _Recipe(Recipe):
    size: int = 1
    steps: int = 1
    warmup: int = 0

    trainer_version: ClassVar[int] = 7
    cache_prefix: ClassVar[str] = "test-toy"


def test_the_store_builds_a_recipe_once_under_its_cache_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CACHE, str(tmp_path))
    calls: list[Path] = []

    def build(directory: Path) -> None:
        calls.append(directory)
        (directory / "artefact").write_text("built")

    recipe = _Recipe()
    folder = toy_artefact(recipe, "test toy", build)
    assert folder == tmp_path / f"test-toy-{recipe.key()}" and (folder / "artefact").read_text() == "built"
    assert toy_artefact(recipe, "test toy", build) == folder and len(calls) == 1
    assert toy_artefact(_Recipe(size=2), "test toy", build) != folder and len(calls) == 2


def test_a_resumable_build_keeps_its_work_folder_when_it_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CACHE, str(tmp_path))

    def stopped(directory: Path) -> None:
        (directory / "checkpoint").write_text("step 2")
        raise KeyboardInterrupt

    recipe = _Recipe(size=3)
    with pytest.raises(KeyboardInterrupt):
        toy_artefact(recipe, "test toy", stopped, resumable=True)
    seen: list[str] = []
    folder = toy_artefact(recipe, "test toy", lambda d: seen.append((d / "checkpoint").read_text()), resumable=True)
    assert seen == ["step 2"] and folder.is_dir()


def test_the_toy_cards_provenance_strings_stay_as_cards_built_before_hold_them() -> None:
    """The card of the toy CLIP and that of the positive control are hashed into every run key of their encoders:
    their provenance strings are data, not documentation, and name the modules as they were when the first caches
    were built."""
    from aft_bench.toys.clip.fit import toy_card
    from aft_bench.toys.clip.recipe import DEFAULT_RECIPE

    card = toy_card(DEFAULT_RECIPE, {})
    assert card["objective"] == "clip, identical captions merged (aft_bench.toy.deduplicated_clip_loss)"
    assert card["cache_key"] == "toy-a5db1692ab5e1cc1-8d4b4b9e"
    source = (Path(__file__).resolve().parent.parent / "benchmark/toys/controls/mask_gated.py").read_text()
    assert '"control": "embedding depends only on the pixels inside each shapes sample\'s mask (aft_bench.controls)"' \
        in source
