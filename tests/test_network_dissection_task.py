"""Network Dissection end to end: the shapes world's concept labels, tiny checkpoints on shapes, and a
Broden fixture in the real format (also used for CLIP-Dissect's default Broden concepts)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CNN_CFG, TINY_VIT_CFG, make_encoder
from PIL import Image

from aft_bench.core.registries import DATASETS, TASKS
from aft_bench.core.registry import UnknownNameError
from aft_bench.data.base import DataError
from aft_bench.data.broden import Broden
from aft_bench.data.concept_labels import ShapesConcepts
from aft_bench.data.shapes import COLOURS, SHAPES, ShapesDataset, render_shapes_scene
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.runner import run
from aft_bench.models.loading import save_encoder
from aft_bench.tasks import network_dissection
from aft_bench.tasks.clip_dissect import ClipDissect
from aft_bench.tasks.network_dissection import NetworkDissection


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("enc")
    vit = save_encoder(make_encoder(TINY_VIT_CFG, "tiny-vit"), folder / "vit", {"model_cfg": TINY_VIT_CFG})
    cnn = save_encoder(make_encoder(TINY_CNN_CFG, "tiny-cnn"), folder / "cnn", {"model_cfg": TINY_CNN_CFG})
    return {"vit": f"ckpt:{vit}", "cnn": f"ckpt:{cnn}"}


@pytest.fixture(autouse=True)
def _registered(registered) -> None:
    registered(TASKS, "network_dissection", NetworkDissection)
    registered(TASKS, "clip_dissect", ClipDissect)
    registered(DATASETS, "broden", Broden)


def _config(encoders: list[str], out: Path, task: str = "network_dissection", **changes):
    overrides = {"encoders": encoders, "limit": 16, "batch_size": 8, "out": str(out)}
    overrides.update(changes)
    return resolve_config(task, overrides)


def _rows(result_path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(result_path.with_suffix(".units.csv").open()))


def test_shapes_concepts_cover_every_object() -> None:
    dataset = ShapesDataset(image_size=48, size=6)
    concepts = ShapesConcepts(dataset)
    assert concepts.label_names == ["-", *SHAPES, *COLOURS]
    for index, sample_id in enumerate(dataset.ids()):
        scene = render_shapes_scene(0, "test", index, 48)
        labels = concepts.labels(sample_id, (48, 48))
        shape_map, colour_map = labels[0][0], labels[1][0]
        objects = torch.from_numpy((scene.target_alpha >= 0.5) | (scene.occluder_alpha >= 0.5))
        assert torch.equal(shape_map > 0, objects) and torch.equal(colour_map > 0, objects)
        target = torch.from_numpy(scene.mask)
        assert torch.all(shape_map[target] == 1 + SHAPES.index(scene.target.shape))
        assert torch.all(colour_map[target] == 1 + len(SHAPES) + list(COLOURS).index(scene.target.colour))
        for obj in scene.distractors:  # every distractor is labelled somewhere (they are drawn on top)
            assert (shape_map == 1 + SHAPES.index(obj.shape)).any()
    assert concepts.labels(dataset.ids()[0], (24, 24))[0].shape == (1, 24, 24)


def test_end_to_end_on_shapes(ckpts: dict[str, str], tmp_path: Path) -> None:
    outcome = run(_config([ckpts["vit"], ckpts["cnn"]], tmp_path))
    assert [r.attribution for r in outcome.results] == ["block:-2", "stage:4"]
    for path, result in zip(outcome.paths, outcome.results, strict=True):
        assert result.n == 16 and result.task_version == 2
        assert result.extra["quantile"] == 0.95  # the shapes world's default (Broden: 0.995)
        assert set(result.metrics) == {"detectors", "unique_concepts", "mean_iou", "detectors_shape",
                                       "unique_shape", "detectors_colour", "unique_colour"}
        rows = _rows(path)
        assert len(rows) == result.extra["units"] == result.metrics["mean_iou"]["n"]
        ious = [float(r["iou"]) for r in rows]
        detectors = [r for r in rows if r["detector"] == "1"]
        assert all(float(r["iou"]) > 0.04 for r in detectors)
        assert result.metrics["detectors"]["mean"] == len(detectors)
        assert result.metrics["detectors_shape"]["mean"] + result.metrics["detectors_colour"]["mean"] == len(detectors)
        assert result.metrics["unique_concepts"]["mean"] == len({r["concept"] for r in detectors})
        assert {r["category"] for r in detectors} <= {"shape", "colour"}
        assert result.extra["figure_unit"]["iou"] == pytest.approx(max(ious), abs=1e-6)
        with Image.open(path.with_suffix(".top.png")) as png:
            assert png.format == "PNG"


def test_batch_size_cache_and_chosen_unit(ckpts: dict[str, str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    b = run(_config([ckpts["cnn"]], tmp_path / "b", batch_size=16, limit=10))  # pass 2 reads pass 1's cache
    monkeypatch.setattr(network_dissection, "ACTIVATION_CACHE_BYTES", 0)  # pass 2 runs the encoder again
    a = run(_config([ckpts["cnn"]], tmp_path / "a", batch_size=3, limit=10, options={"unit": 5, "top_images": 3}))
    assert _rows(a.paths[0]) == _rows(b.paths[0])  # streamed counts depend neither on batching nor on caching
    assert a.results[0].extra["figure_unit"]["unit"] == 5
    exact = run(_config([ckpts["cnn"]], tmp_path / "q", limit=10, options={"quantile": 0.995})).results[0]
    assert exact.extra["quantile"] == 0.995
    assert exact.metrics["mean_iou"]["mean"] != pytest.approx(b.results[0].metrics["mean_iou"]["mean"])
    with pytest.raises(ValueError, match="unit 999 out of range"):
        run(_config([ckpts["cnn"]], tmp_path / "c", limit=2, options={"unit": 999}))
    with pytest.raises(UnknownNameError, match="unknown option 'threshold'.*Did you mean 'iou_threshold'"):
        run(_config([ckpts["cnn"]], tmp_path / "c", options={"threshold": 0.1}))
    with pytest.raises(ValueError, match="unknown concept 'circl'; did you mean one of \\['circle'\\]"):
        run(_config([ckpts["cnn"]], tmp_path / "c", limit=2, options={"concept": "circl"}))
    with pytest.raises(ValueError, match="not both"):
        run(_config([ckpts["cnn"]], tmp_path / "c", options={"concept": "circle", "unit": 1}))


# ---------------------------------------------------------------------------------------- Broden fixture
LABELS = [(0, "-", "-"), (1, "red-c", "color(3)"), (2, "dog", "object(2)"), (3, "street-s", "scene(2)"),
          (4, "cat", "object(1);part(1)")]


def _label_png(path: Path, labels: np.ndarray) -> str:
    rgb = np.stack([labels % 256, labels // 256, np.zeros_like(labels)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path.name


def write_broden(root: Path, count: int = 4) -> Path:
    """A tiny Broden in the real layout: 40x40 images, 20x20 colour/object maps, a scene label."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    with (root / "label.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["number", "name", "category", "frequency", "coverage", "syns"])
        writer.writerows([[n, name, cat, 1, 0.1, ""] for n, name, cat in LABELS])
    (root / "category.csv").write_text("name,first,last,count,frequency\ncolor,1,1,1,3\nobject,2,4,2,3\n"
                                       "part,4,4,1,1\nscene,3,3,1,2\n")
    with (root / "index.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "split", "ih", "iw", "sh", "sw", "color", "object", "part", "scene"])
        for i in range(count):
            image = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
            Image.fromarray(image).save(root / "images" / f"img{i}.png")
            colour = np.where(rng.random((20, 20)) > 0.5, 1, 0)
            objects = np.zeros((20, 20), dtype=np.int64)
            objects[5:15, 2:12] = 2 if i % 2 else 4
            writer.writerow([f"img{i}.png", "train", 40, 40, 20, 20,
                             _label_png(root / "images" / f"img{i}_color.png", colour),
                             _label_png(root / "images" / f"img{i}_object.png", objects), "",
                             "3" if i % 2 else ""])
    return root


def test_end_to_end_on_broden(ckpts: dict[str, str], tmp_path: Path) -> None:
    root = write_broden(tmp_path / "broden1_224")
    outcome = run(_config([ckpts["vit"]], tmp_path / "out", dataset="broden", data_root=str(tmp_path), limit=None,
                          options={"concept": "cat"}))
    result = outcome.results[0]
    assert result.extra["figure_unit"]["concept"] == "cat"
    assert result.extra["quantile"] == 0.995  # Bau et al.'s threshold on Broden
    assert result.n == 4 and result.dataset == "broden"
    for category in ("color", "object", "part", "scene"):
        assert f"detectors_{category}" in result.metrics and f"unique_{category}" in result.metrics
    rows = _rows(outcome.paths[0])
    names = {name: cat.split("(")[0] for _, name, cat in LABELS[1:]}
    for row in rows:
        assert row["concept"] == "-" or names[row["concept"]] == row["category"]
    # with labels aligned to the images, some unit overlaps some concept
    assert max(float(r["iou"]) for r in rows) > 0
    clip = run(_config([ckpts["vit"]], tmp_path / "clip", task="clip_dissect", dataset="broden",
                       data_root=str(root), limit=None, options={"top_k": 2})).results[0]
    assert clip.extra["concepts"] == 4  # Broden's label names, suffixes dropped: red, dog, street, cat


def test_dataset_without_concept_labels_is_refused(registered, ckpts: dict[str, str], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    class Plain:
        classnames: list[str] = []

        def __init__(self, image_size, root=None, on_error="raise"):
            self.inner = ShapesDataset(image_size=image_size, size=4)

        def __len__(self) -> int:
            return 4

        def ids(self) -> list[str]:
            return self.inner.ids()

        def load(self, sample_id: str):
            return self.inner.load(sample_id)

    registered(DATASETS, "plain", Plain)
    with pytest.raises(DataError, match="'plain' has no pixel concept labels"):
        run(_config([ckpts["vit"]], tmp_path, dataset="plain"))
    with pytest.raises(DataError, match="'plain' names no concepts"):
        run(_config([ckpts["vit"]], tmp_path, task="clip_dissect", dataset="plain"))
