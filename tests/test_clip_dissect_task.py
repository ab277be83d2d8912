"""CLIP-Dissect end to end on the shapes world with tiny checkpoints, plus the neuron readout of
aft_bench.models.activations (CLS token of a block, spatial mean of a CNN stage, hooks removed)."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import torch
from conftest import TINY_CNN_CFG, TINY_VIT_CFG, make_encoder
from PIL import Image

from aft_bench.core.registries import TASKS
from aft_bench.core.registry import UnknownNameError
from aft_bench.data.base import DataError
from aft_bench.data.shapes import VOCABULARY
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.runner import run
from aft_bench.models.activations import (
    LayerSpec,
    forward_with_layer,
    neuron_activations,
    resolve_layer,
    spatial_activations,
)
from aft_bench.models.encoder import UnsupportedEncoderError
from aft_bench.models.loading import save_encoder
from aft_bench.results.files import read_results
from aft_bench.tasks.clip_dissect import ClipDissect, read_concepts


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("enc")
    vit = save_encoder(make_encoder(TINY_VIT_CFG, "tiny-vit"), folder / "vit", {"model_cfg": TINY_VIT_CFG})
    cfg = copy.deepcopy(TINY_VIT_CFG)
    tuned = save_encoder(make_encoder(cfg, "tuned", seed=1), folder / "tuned",
                         {"model_cfg": cfg, "name": "tuned", "base_encoder": f"ckpt:{vit}"})
    cnn = save_encoder(make_encoder(TINY_CNN_CFG, "tiny-cnn"), folder / "cnn", {"model_cfg": TINY_CNN_CFG})
    return {"vit": f"ckpt:{vit}", "tuned": f"ckpt:{tuned}", "cnn": f"ckpt:{cnn}"}


@pytest.fixture(autouse=True)
def _registered(registered) -> None:
    registered(TASKS, "clip_dissect", ClipDissect)


def _config(encoders: list[str], out: Path, **options):
    return resolve_config("clip_dissect", {"encoders": encoders, "limit": 24, "batch_size": 8, "out": str(out),
                                           "options": {"top_k": 10, **options}})


def test_end_to_end_outputs(ckpts: dict[str, str], tmp_path: Path) -> None:
    outcome = run(_config([ckpts["vit"], ckpts["cnn"]], tmp_path))
    assert [r.attribution for r in outcome.results] == ["block:-1", "stage:4"]
    units = {"block:-1": 32, "stage:4": 256}  # ViT width 32; ModifiedResNet stage 4: 8 * 32 channels
    for path, result in zip(outcome.paths, outcome.results, strict=True):
        assert result.n == 24 and result.task == "clip_dissect" and result.task_version == 1
        assert set(result.metrics) == {"detectors", "unique_concepts", "mean_score"}
        assert all(m["higher_is_better"] for m in result.metrics.values())
        assert result.extra["units"] == units[result.attribution] == result.metrics["mean_score"]["n"]
        assert result.extra["concepts"] == len(VOCABULARY) and result.extra["top_k"] == 10
        assert result.extra["probe_encoder"] == result.encoder  # no origin on the card: the encoder itself
        rows = list(csv.DictReader(path.with_suffix(".neurons.csv").open()))
        assert [int(r["unit"]) for r in rows] == list(range(result.extra["units"]))
        assert {r["concept"] for r in rows} <= set(VOCABULARY)
        scores = torch.tensor([float(r["score"]) for r in rows])
        assert result.metrics["detectors"]["mean"] == int((scores > 0).sum())
        assert result.metrics["mean_score"]["mean"] == pytest.approx(scores.mean().item(), abs=1e-4)
        # the score is at most log(units): a neuron cannot carry more than all of a concept's mass
        assert scores.max().item() <= torch.log(torch.tensor(float(len(rows)))).item() + 1e-6
        with Image.open(path.with_suffix(".hist.png")) as png:
            assert png.format == "PNG" and png.size[0] > 100
    assert len(read_results(tmp_path)) == 2  # side files are not mistaken for results
    assert "detectors" in outcome.markdown


def test_probe_defaults_to_the_cards_origin(ckpts: dict[str, str], tmp_path: Path) -> None:
    result = run(_config([ckpts["tuned"]], tmp_path / "a")).results[0]
    assert result.extra["probe_encoder"] == ckpts["vit"]
    explicit = run(_config([ckpts["tuned"]], tmp_path / "b", probe_encoder=ckpts["tuned"])).results[0]
    assert explicit.extra["probe_encoder"] == ckpts["tuned"]
    # the same neurons scored against another probe give other numbers
    assert result.metrics["mean_score"]["mean"] != pytest.approx(explicit.metrics["mean_score"]["mean"])


def test_concept_file(ckpts: dict[str, str], tmp_path: Path) -> None:
    file = tmp_path / "concepts.txt"
    file.write_text("red\n\n  circle \nred\nblue star\n\n", encoding="utf-8")
    assert read_concepts(file) == ["red", "circle", "blue star"]
    result = run(_config([ckpts["vit"]], tmp_path / "out", concepts=str(file), layer="block:0")).results[0]
    assert result.extra["concepts"] == 3 and result.attribution == "block:0"
    rows = list(csv.DictReader(Path(str(run(_config([ckpts["vit"]], tmp_path / "o2", concepts=str(file)))
                                        .paths[0]).replace(".json", ".neurons.csv")).open()))
    assert {r["concept"] for r in rows} <= {"red", "circle", "blue star"}
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.txt holds no concept"):
        read_concepts(empty)
    with pytest.raises(FileNotFoundError, match="missing.txt does not exist"):
        run(_config([ckpts["vit"]], tmp_path / "x", concepts=str(tmp_path / "missing.txt")))
    with pytest.raises(UnknownNameError, match="unknown option 'topk' for task 'clip_dissect'. Did you mean 'top_k'"):
        run(_config([ckpts["vit"]], tmp_path / "x", topk=3))


def test_neuron_readouts_and_hooks(tiny_vit, tiny_cnn) -> None:
    pixels = torch.rand(3, 3, 32, 32)
    layer = resolve_layer(tiny_vit, None, {"vit": "block:-1", "cnn": "stage:4"})
    assert layer == LayerSpec("block", -1)
    block = tiny_vit.visual.transformer.resblocks[-1]
    seen = []
    handle = block.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        embeddings = tiny_vit(pixels)
    handle.remove()
    cls = neuron_activations(tiny_vit, pixels, layer)
    assert torch.allclose(cls, seen[0][:, 0])
    got_embeddings, _ = forward_with_layer(tiny_vit, pixels, layer)
    assert torch.allclose(got_embeddings, embeddings)
    assert spatial_activations(tiny_vit, pixels, layer).shape == (3, 32, 4, 4)
    assert not block._forward_hooks  # every hook is removed after use

    images = torch.rand(2, 3, 64, 64)
    stage = resolve_layer(tiny_cnn, "stage:3", {"vit": "block:-1", "cnn": "stage:4"})
    maps = spatial_activations(tiny_cnn, images, stage)
    assert maps.shape == (2, 128, 4, 4)  # stage 3 of the tiny ModifiedResNet: 16 * 8 channels at 1/16
    assert torch.allclose(neuron_activations(tiny_cnn, images, stage), maps.mean(dim=(2, 3)))
    assert not tiny_cnn.visual.layer3._forward_hooks


def test_layer_specs_are_checked(tiny_vit, tiny_cnn) -> None:
    defaults = {"vit": "block:-1", "cnn": "stage:4"}
    with pytest.raises(UnsupportedEncoderError, match="name a block"):
        resolve_layer(tiny_vit, "stage:4", defaults)
    with pytest.raises(UnsupportedEncoderError, match="name a stage"):
        resolve_layer(tiny_cnn, "block:-1", defaults)
    with pytest.raises(ValueError, match="out of range"):
        resolve_layer(tiny_vit, "block:5", defaults)
    with pytest.raises(ValueError, match="'block:I'"):
        LayerSpec.parse("layer4")
    with pytest.raises(ValueError, match="integer"):
        LayerSpec.parse("block:last")
    assert str(LayerSpec.parse("stage:2")) == "stage:2"
