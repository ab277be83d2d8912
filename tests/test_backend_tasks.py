"""Every task that applies, on a transformers CLIP and on timm ViT and ResNet classifiers: the map tasks explain the
classifier's own head for timm models (``target=head``), the classifier tasks use a linear probe, CLIP-Dissect
reads the neurons of a timm model with a CLIP probe (paper Fig. 5's supervised baseline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_backend_models import TIMM_RESNET, TIMM_VIT, save_hf_clip, save_timm

from aft_bench.evaluation.config import load_task_spec, resolve_config
from aft_bench.evaluation.runner import run

pytestmark = pytest.mark.usefixtures("one_thread")

MAP_TASKS = ("pointing_game", "sparsity", "ssim_robustness", "roar", "road")
ENCODER_TASKS = ("zero_shot", "class_entropy", "clip_dissect", "network_dissection")
# What a model without a text tower is given instead of the zero-shot target and head.
NO_TEXT: dict[str, dict[str, Any]] = {
    **{task: {"target": "head", "probe_class": "top1"} for task in MAP_TASKS},
    "road": {"target": "head", "probe_class": "top1", "classifier": "probe", "probe_limit": 16, "probe_steps": 5},
    "zero_shot": {"classifier": "probe", "probe_limit": 16, "probe_steps": 5},
    "class_entropy": {"classifier": "probe", "probe_limit": 16, "probe_steps": 5},
    "clip_dissect": {},  # the probe CLIP is the run's transformers CLIP (added below)
    "network_dissection": {},
}


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("backends")
    vit = save_timm(folder / "vit" / "w.safetensors", *TIMM_VIT)
    resnet = save_timm(folder / "resnet" / "w.safetensors", *TIMM_RESNET)
    return {"hf": f"hf:{save_hf_clip(folder / 'hf')}", "timm_vit": f"timm:{TIMM_VIT[0]}@{vit}",
            "timm_resnet": f"timm:{TIMM_RESNET[0]}@{resnet}"}


@pytest.mark.parametrize("task", MAP_TASKS + ENCODER_TASKS)
@pytest.mark.parametrize("backend", ["hf", "timm_vit", "timm_resnet"])
def test_task_runs_on_backend(task: str, backend: str, specs: dict[str, str], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFT_BENCH_CACHE", str(tmp_path / "cache"))
    options = dict(load_task_spec(task).quick_check["options"])
    if backend != "hf":
        options.update(NO_TEXT[task])
        if task == "clip_dissect":
            options["probe_encoder"] = specs["hf"]
        if task == "network_dissection" and backend == "timm_resnet":
            options["layer"] = "stage:4"
    overrides: dict[str, Any] = dict(encoders=[specs[backend]], limit=4, batch_size=2, out=str(tmp_path / "out"),
                                     options=options)
    if task in MAP_TASKS:
        overrides["attributions"] = ["simple_gradient"]
    outcome = run(resolve_config(task, overrides))
    assert outcome.results and all(result.n == 4 for result in outcome.results)
    assert all(result.encoder == specs[backend] for result in outcome.results)


@pytest.mark.parametrize(("backend", "labels"), [
    ("hf", ["head", "block1", "block0", "stem"]),
    ("timm_vit", ["head", "block1", "block0", "stem"]),
    ("timm_resnet", ["head", "stage3", "stage2", "stage1", "stage0", "stem"]),
])
def test_sanity_checks_units_and_run_on_backend(backend: str, labels: list[str], specs: dict[str, str],
                                                 tmp_path: Path) -> None:
    """The model-parameter randomisation test re-draws every backend's tower unit by unit (stem: what runs before
    the first block; head: what runs after the last)."""
    from aft_bench.models.loading import load_encoder
    from aft_bench.models.randomisation import tower_units

    encoder = load_encoder(specs[backend])
    units = tower_units(encoder)
    keys = [k for u in units for k in u.keys]
    assert [u.label for u in units] == labels
    assert len(keys) == len(set(keys)) and set(keys) == set(encoder.visual.state_dict())
    stem = next(u for u in units if u.label == "stem").keys
    assert stem and all("block" not in k and "layers" not in k and "layer1" not in k for k in stem)
    options = dict(load_task_spec("sanity_checks").quick_check["options"],
                   **({} if backend == "hf" else {"target": "head", "probe_class": "top1"}))
    outcome = run(resolve_config("sanity_checks", dict(encoders=[specs[backend]], limit=2, batch_size=2,
                                                       attributions=["simple_gradient"], out=str(tmp_path / "out"),
                                                       options={**options, "samples": 2})))
    assert outcome.results and all(r.n == 2 for r in outcome.results)
