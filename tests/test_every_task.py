"""Every registered task, on the toy world: refuses a misspelt option before any model loads, runs with
``--device auto``, resumes after an interruption computing only what is missing, keys its stored work on the
encoder card, and writes results whose metric arrows come from the task's metric objects.

The toy here is the real toy CLIP (architecture, training code, cache) at a tiny recipe that trains in well
under a second, registered as ``toy`` for these tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY_TOY

from aft_bench.apps.cli import main
from aft_bench.core.options import option_keys, parse_options
from aft_bench.core.registries import ENCODERS, TASKS, VLMS
from aft_bench.data.shapes import CLASSNAMES
from aft_bench.evaluation.config import RunConfig, load_task_spec, resolve_config
from aft_bench.evaluation.runner import run
from aft_bench.models.convert import vision_config
from aft_bench.models.encoder import Encoder
from aft_bench.tasks import vlm_attention
from aft_bench.toys.clip.store import load_toy_encoder
from aft_bench.toys.vlm.synthetic import LlavaShape, random_llava_folder

OTHER_TOY = dataclasses.replace(TINY_TOY, seed=1)


@pytest.fixture(scope="module")
def toy_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One cache for the module: each tiny toy trains once."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("cache")
        patch.setenv("AFT_BENCH_CACHE", str(folder))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        for recipe in (TINY_TOY, OTHER_TOY):  # trained now, so that the runs below count only their own work
            load_toy_encoder(recipe=recipe)
        yield folder
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_vlm(toy_cache: Path) -> Path:
    """A random LLaVA whose tower fits the tiny toy (the real toy VLM trains for minutes)."""
    tower = vision_config(load_toy_encoder(recipe=TINY_TOY).model.visual)
    return random_llava_folder(toy_cache / "tiny-llava", CLASSNAMES, LlavaShape.for_tower(tower, feature_layer=-1))


@pytest.fixture
def tiny_toy(toy_cache: Path, tiny_vlm: Path) -> Iterator[None]:
    with ENCODERS.temporary("toy", lambda device="cpu": load_toy_encoder(device, recipe=TINY_TOY), replace=True), \
            VLMS.temporary("toy", lambda: tiny_vlm, replace=True):
        yield


class _Forwards:
    """Counts the images every encoder embeds and the forward calls; raises KeyboardInterrupt at call ``stop``."""

    def __init__(self) -> None:
        self.images = self.calls = 0
        self.stop: int | None = None

    def _counted(self, pixels: torch.Tensor) -> None:
        self.calls += 1
        if self.calls == self.stop:
            raise KeyboardInterrupt
        self.images += pixels.shape[0]

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = Encoder.forward
        original_answers = vlm_attention.answer_maps  # the VLM task runs its tower inside the VLM, not Encoder.forward

        def forward(encoder: Encoder, pixels: torch.Tensor) -> torch.Tensor:
            self._counted(pixels)
            return original(encoder, pixels)

        def answer_maps(vlm: Any, pixels: torch.Tensor, *args: Any) -> Any:
            self._counted(pixels)
            return original_answers(vlm, pixels, *args)

        monkeypatch.setattr(Encoder, "forward", forward)
        monkeypatch.setattr(vlm_attention, "answer_maps", answer_maps)

    def count(self, config: RunConfig, stop: int | None = None) -> tuple[int, Any]:
        self.images, self.calls, self.stop = 0, 0, stop
        try:
            outcome = run(config)
        finally:
            self.stop = None
        return self.images, outcome


def _config(task: str, out: Path) -> RunConfig:
    overrides: dict[str, Any] = dict(encoders=["toy"], limit=6, batch_size=4, device="auto", out=str(out),
                                     dataset_args={"size": 30}, options=load_task_spec(task).quick_check["options"])
    if load_task_spec(task).defaults.get("attributions"):
        overrides["attributions"] = ["simple_gradient"]
    return resolve_config(task, overrides)


def test_every_declared_task_declares_its_quick_check() -> None:
    """A task is covered here by being declared: its YAML's ``quick_check`` gives the options of the runs below."""
    for task in TASKS.names():
        assert isinstance(load_task_spec(task).quick_check.get("options"), dict), f"tasks/{task}.yaml: quick_check"


@pytest.mark.parametrize("task", TASKS.names())
def test_misspelt_option_exits_2_before_any_model_loads(task: str, tmp_path: Path, registered,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    def no_loading(device: str = "cpu") -> Encoder:
        raise AssertionError("an encoder was loaded before the options were checked")

    registered(ENCODERS, "toy", no_loading)
    key = option_keys(TASKS.get(task).Options)[0]
    code = main(["run", "--task", task, "--encoders", "toy", "--out", str(tmp_path), "--option", f"{key}x=1"])
    err = capsys.readouterr().err
    assert code == 2 and f"unknown option '{key}x' for task '{task}'" in err and f"Did you mean '{key}'" in err
    assert "Known options:" in err and not (tmp_path / task).exists()


@pytest.mark.parametrize("task", TASKS.names())
def test_runs_resumes_keys_on_the_card_and_declares_its_metrics(task: str, tmp_path: Path, tiny_toy: None,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    forwards = _Forwards()
    forwards.install(monkeypatch)
    fresh_images, fresh = forwards.count(_config(task, tmp_path / "fresh"))
    calls = forwards.calls
    assert fresh.results and fresh_images > 0 and calls > 1

    # killed at its last forward pass, then resumed: the same numbers, and (where the task stores work) only
    # what is missing recomputed
    with pytest.raises(KeyboardInterrupt):
        forwards.count(_config(task, tmp_path / "resumed"), stop=calls)
    resumed_images, resumed = forwards.count(_config(task, tmp_path / "resumed"))
    if not TASKS.get(task).resumable:
        assert resumed_images == fresh_images
    else:
        assert 0 < resumed_images < fresh_images
    assert [r.run_key for r in resumed.results] == [r.run_key for r in fresh.results]
    for a, b in zip(resumed.results, fresh.results, strict=True):
        assert a.n == b.n and {k: v["mean"] for k, v in a.metrics.items()} == pytest.approx(
            {k: v["mean"] for k, v in b.metrics.items()}, rel=1e-6, abs=1e-9, nan_ok=True)

    # a finished run started again reuses what it stored (ROAR: its ranks and accuracies)
    again_images, again = forwards.count(_config(task, tmp_path / "fresh"))
    if TASKS.get(task).resumable:
        assert again_images < fresh_images

    # another toy under the same name (another card): other run keys, nothing stored is reused
    with ENCODERS.temporary("toy", lambda device="cpu": load_toy_encoder(device, recipe=OTHER_TOY), replace=True):
        other_images, other = forwards.count(_config(task, tmp_path / "fresh"))
    assert not {r.run_key for r in other.results} & {r.run_key for r in fresh.results}
    assert other_images > again_images if TASKS.get(task).resumable else other_images >= fresh_images

    # the metric columns and arrows are the task's metric objects
    config = _config(task, tmp_path / "fresh")
    declared = TASKS.get(task)().metrics(parse_options(TASKS.get(task).Options, config.options, task))
    assert declared
    for result in fresh.results:
        assert result.task_version == load_task_spec(task).version
        for metric in declared:
            assert result.metrics[metric.name]["higher_is_better"] is metric.higher_is_better
            assert f"| {metric.name} {'↑' if metric.higher_is_better else '↓'} |" in fresh.markdown
