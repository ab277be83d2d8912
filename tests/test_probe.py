"""Linear probes on frozen embeddings (training, cache) and the probe target, also through pointing_game."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_VIT_CFG, make_encoder

from aft_bench.core.options import parse_options
from aft_bench.core.registries import TARGETS, TASKS
from aft_bench.core.registry import UnknownNameError
from aft_bench.data.base import Batch, DataError
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.probe import store as probe_module
from aft_bench.evaluation.probe.linear import LinearProbe, accuracy, fit_linear
from aft_bench.evaluation.probe.options import ProbeSetup
from aft_bench.evaluation.probe.store import clear_probe_memo, get_probe, weights_fingerprint
from aft_bench.evaluation.runner import run
from aft_bench.evaluation.targets.probe import ProbeTarget, probe_target
from aft_bench.models.loading import save_encoder

CFG48 = copy.deepcopy(TINY_VIT_CFG)
CFG48["vision_cfg"]["image_size"] = 48


@pytest.fixture(autouse=True)
def _isolated(registered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFT_BENCH_CACHE", str(tmp_path / "cache"))
    registered(TARGETS, "probe", probe_target)
    clear_probe_memo()


@pytest.fixture(scope="module")
def encoder():
    return make_encoder(CFG48, "tiny48")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory, encoder) -> str:
    path = save_encoder(encoder, tmp_path_factory.mktemp("enc") / "tiny48", {"model_cfg": CFG48, "name": "tiny48"})
    return f"ckpt:{path}"


def _separable(n_per_class: int = 20, classes: int = 4, dim: int = 8, seed: int = 0, noise_seed: int = 0):
    """Unit-norm points around ``classes`` random unit centres (drawn from ``seed``), noise from ``noise_seed``."""
    centres = torch.nn.functional.normalize(torch.randn(classes, dim, generator=torch.Generator().manual_seed(seed)))
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    noise = 0.1 * torch.randn(len(labels), dim, generator=torch.Generator().manual_seed(1000 + noise_seed))
    return torch.nn.functional.normalize(centres[labels] + noise, dim=1), labels


# ---------------------------------------------------------------------------------------- training
def test_separable_embeddings_are_classified_perfectly() -> None:
    features, labels = _separable()
    linear, loss = fit_linear(features, labels, 4, weight_decay=1e-4, steps=20)
    assert accuracy(linear, features, labels) == 1.0 and loss < 0.1
    test_features, test_labels = _separable(noise_seed=5)  # fresh samples
    assert accuracy(linear, test_features, test_labels) == 1.0


def test_training_is_deterministic() -> None:
    features, labels = _separable(classes=3, seed=1)
    a, loss_a = fit_linear(features, labels, 3, steps=20)
    b, loss_b = fit_linear(features, labels, 3, steps=20)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias) and loss_a == loss_b


def test_weight_decay_shrinks_the_weights() -> None:
    features, labels = _separable(classes=3, seed=2)
    loose, _ = fit_linear(features, labels, 3, weight_decay=1e-4, steps=20)
    tight, _ = fit_linear(features, labels, 3, weight_decay=1e-1, steps=20)
    assert tight.weight.norm() < loose.weight.norm()


# ---------------------------------------------------------------------------------------- target
def _probe(classes: int = 3, dim: int = 5) -> LinearProbe:
    gen = torch.Generator().manual_seed(3)
    return LinearProbe(torch.randn(classes, dim, generator=gen), torch.randn(classes, generator=gen),
                       [f"c{i}" for i in range(classes)])


def test_target_gradient_is_the_weight_row() -> None:
    probe = _probe()
    classes = torch.tensor([2, 0, 2])
    embeddings = torch.randn(3, 5, requires_grad=True)
    target = ProbeTarget(probe, classes)
    scores = target.score(embeddings)
    assert torch.allclose(scores, probe.logits(embeddings)[torch.arange(3), classes])
    scores.sum().backward()
    assert torch.equal(embeddings.grad, probe.weight[classes])
    repeated = target.repeat_interleave(2)
    assert repeated.classes.tolist() == [2, 2, 0, 0, 2, 2] and repeated.probe is probe


def _config(tiny_ckpt: str, out: Path, **options):
    return resolve_config("pointing_game", dict(
        encoders=[tiny_ckpt], attributions=["simple_gradient"], limit=4, batch_size=4, out=str(out),
        dataset_args={"size": 40}, options={"target": "probe", **options},
    ))


def _setup(config) -> ProbeSetup:
    """The probe setup the run context builds from the task's parsed options."""
    options = parse_options(TASKS.get(config.task).Options, config.options, config.task)
    return RunContext.local(config, options).probe_setup()


def _batch(labels: list[int], images: torch.Tensor | None = None) -> Batch:
    images = torch.rand(len(labels), 3, 48, 48) if images is None else images
    return Batch(ids=[str(i) for i in range(len(labels))], images=images, prompts=["a"] * len(labels),
                 labels=torch.tensor(labels), masks=None)


def test_probe_is_trained_once_and_cached(encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config("tiny", tmp_path, probe_steps=30)
    spec = _setup(config).spec
    assert spec.dataset == "shapes" and spec.split == "train" and dict(spec.dataset_args) == {"size": 40,
                                                                                              "split": "train"}
    calls = []
    original = probe_module.train_probe
    monkeypatch.setattr(probe_module, "train_probe", lambda *a, **k: calls.append(1) or original(*a, **k))
    first = get_probe(encoder, spec)
    second = get_probe(encoder, spec)
    assert len(calls) == 1 and torch.equal(first.weight, second.weight)
    (folder,) = [p for p in (tmp_path / "cache" / "probes").glob("probe-*") if p.is_dir()]
    card = json.loads((folder / "probe.json").read_text())
    assert card["n_train"] == 36 and card["n_holdout"] == 4 and card["num_classes"] == 25
    assert 0.0 <= card["train_accuracy"] <= 1.0 and card["split"] == "train" and card["encoder"] == "tiny48"
    assert card["weights"] == weights_fingerprint(encoder.visual)
    # other weights, other options: other probes
    get_probe(make_encoder(CFG48, "tiny48", seed=1), spec)
    get_probe(encoder, _setup(_config("tiny", tmp_path, probe_steps=30, probe_weight_decay=0.01)).spec)
    assert len(calls) == 3 and len([p for p in (tmp_path / "cache" / "probes").glob("probe-*") if p.is_dir()]) == 3


def test_target_classes(encoder, tmp_path: Path) -> None:
    images = torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    setup = _setup(_config("tiny", tmp_path, probe_steps=20))
    target = probe_target(encoder, _batch([4, 0, 24], images), setup)
    assert target.classes.tolist() == [4, 0, 24]
    top1 = probe_target(encoder, _batch([-1, -1, -1], images),
                        _setup(_config("tiny", tmp_path, probe_steps=20, probe_class="top1")))
    with torch.no_grad():
        assert top1.classes.tolist() == target.probe.logits(encoder(images)).argmax(1).tolist()
    with pytest.raises(DataError, match="probe_class=true needs a class label"):
        probe_target(encoder, _batch([-1]), setup)
    with pytest.raises(ValueError, match="needs the run's probe setup"):
        probe_target(encoder, _batch([0]), None)


def test_bad_options_are_refused(encoder, tmp_path: Path) -> None:
    for options, error, message in (
            ({"probe_class": "best"}, ValueError, "probe_class='best'"),
            ({"probe_stepz": 3}, UnknownNameError, "unknown option 'probe_stepz'.*Did you mean 'probe_steps'"),
            ({"probe_holdout": 1.0}, ValueError, "probe_holdout"), ({"probe_limit": 1}, ValueError, "probe_limit"),
            ({"probe_dataset": "shapez"}, UnknownNameError, "Did you mean 'shapes'")):
        with pytest.raises(error, match=message):
            _setup(_config("tiny", tmp_path, **options))
    with pytest.raises(DataError, match="rejects the arguments"):
        probe_target(encoder, _batch([0]), _setup(_config("tiny", tmp_path, probe_split="train",
                                                          probe_dataset_args={"colour": "red"})))


# ---------------------------------------------------------------------------------------- end to end
def test_pointing_game_with_probe_target(tiny_ckpt: str, tmp_path: Path) -> None:
    result = run(_config(tiny_ckpt, tmp_path, probe_steps=30)).results[0]
    assert result.n == 4 and set(result.metrics) == {"pg", "pg_energy", "pixel_acc", "ap", "ap_two_class",
                                                         "mask_iou", "pixel_acc_pooled", "miou_pooled"}
    assert result.config["options"]["target"] == "probe"
    text = run(resolve_config("pointing_game", dict(
        encoders=[tiny_ckpt], attributions=["simple_gradient"], limit=4, batch_size=4, out=str(tmp_path / "t"),
        dataset_args={"size": 40}))).results[0]
    assert text.metrics["ap"]["mean"] != result.metrics["ap"]["mean"]  # another target, other maps


def test_pointing_game_with_top1_probe_target(tiny_ckpt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(_config(tiny_ckpt, tmp_path, probe_steps=30, probe_class="top1")).results[0]
    assert result.n == 4 and result.config["options"]["probe_class"] == "top1"
