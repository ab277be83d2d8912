"""ROAR and ROAD end to end on the shapes world with a tiny encoder checkpoint: results, figures, cached
saliency, resume, the random baseline, retrainers, targets, skips; and the removed images themselves."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_VIT_CFG, make_encoder

from aft_bench.attributions.simple_gradient import SimpleGradient
from aft_bench.core.registries import ATTRIBUTIONS, DATASETS, TARGETS, TASKS
from aft_bench.core.registry import UnknownNameError
from aft_bench.data.base import DataError, Sample
from aft_bench.data.shapes import ShapesDataset
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.removal.data import RemovedSplit, Split, ensure_ranks
from aft_bench.evaluation.removal.retrainers import ProbeRetrainer
from aft_bench.evaluation.runner import check_names, run
from aft_bench.evaluation.targets.probe import probe_target
from aft_bench.metrics.removal import curve_auc, pixel_ranks, removal_count, replace_with_mean
from aft_bench.models.loading import save_encoder
from aft_bench.results.files import read_results
from aft_bench.tasks.road import Road
from aft_bench.tasks.roar import Roar, RoarOptions

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _setup(registered, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    registered(TASKS, "roar", Roar)
    registered(TASKS, "road", Road)
    registered(TARGETS, "probe", probe_target)
    monkeypatch.setenv("AFT_BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny problems: threads only add overhead on a busy machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    cfg = copy.deepcopy(TINY_VIT_CFG)
    encoder = make_encoder(cfg, "tiny32")
    path = save_encoder(encoder, tmp_path_factory.mktemp("enc") / "tiny32", {"model_cfg": cfg, "name": "tiny32"})
    return f"ckpt:{path}"


def _config(task: str, tiny_ckpt: str, out: Path, options: dict | None = None, **changes):
    overrides = dict(encoders=[tiny_ckpt], attributions=["simple_gradient"], limit=10, batch_size=8, out=str(out),
                     dataset_args={"size": 30})
    base = {"fractions": [0.25, 0.5, 0.75], "seeds": 2, "train_limit": 20} if task == "roar" else \
        {"fractions": [0.25, 0.75]}
    overrides.update(changes)
    overrides["options"] = {**base, **(options or {})}
    return resolve_config(task, overrides)


class _Counting(SimpleGradient):
    images = 0

    def attribute(self, encoder, images, target):
        type(self).images += images.shape[0]
        return super().attribute(encoder, images, target)


@pytest.fixture
def counting(registered) -> type[_Counting]:
    registered(ATTRIBUTIONS, "simple_gradient", _Counting)
    _Counting.images = 0
    return _Counting


@pytest.fixture
def retrains(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, list[int]]]:
    calls: list[tuple[float, list[int]]] = []
    original = ProbeRetrainer.evaluate

    def evaluate(self, train, test, seeds, subsample):
        calls.append((train.fraction, list(seeds)))
        return original(self, train, test, seeds, subsample)

    monkeypatch.setattr(ProbeRetrainer, "evaluate", evaluate)
    return calls


# ---------------------------------------------------------------------------------------- ROAR
def test_roar_results_figure_cache_and_resume(tiny_ckpt: str, tmp_path: Path, counting, retrains) -> None:
    outcome = run(_config("roar", tiny_ckpt, tmp_path))
    assert [r.attribution for r in outcome.results] == ["simple_gradient", "random"]
    assert counting.images == 20 + 10  # maps once per train and test image, not per fraction or seed
    assert sorted(retrains) == sorted([(0.0, [0, 1])] + [(f, [0, 1]) for f in (0.25, 0.5, 0.75)] * 2)
    for result in outcome.results:
        assert set(result.metrics) == {"acc@25", "acc@50", "acc@75", "auc"}
        assert all(s["higher_is_better"] is False and s["n"] == 2 for s in result.metrics.values())
        assert result.n == 10 and result.extra["train_images"] == 20 and result.skipped == {}
        curves = np.array(result.extra["curves"])
        assert curves.shape == (2, 3) and ((curves >= 0) & (curves <= 1)).all()
        assert result.metrics["acc@50"]["mean"] == pytest.approx(100 * curves[:, 1].mean())
        assert result.metrics["auc"]["mean"] == pytest.approx(100 * curve_auc([0.25, 0.5, 0.75], curves.mean(0)))
        assert result.extra["clean_accuracy"]["n"] == 2 and result.extra["retrain"] == "probe"
        figure = tmp_path / "roar" / result.extra["figure"]
        assert figure.read_bytes()[:8] == PNG_MAGIC
    assert "| acc@25 ↓ |" in outcome.markdown and "| auc ↓ |" in outcome.markdown
    # a finished run started again retrains and attributes nothing, gives the same numbers, and so writes no
    # second copy of its results
    counting.images, retrains[:] = 0, []
    again = run(_config("roar", tiny_ckpt, tmp_path))
    assert counting.images == 0 and retrains == []
    assert [r.metrics for r in again.results] == [r.metrics for r in outcome.results]
    assert len(read_results(tmp_path / "roar")) == 2 and again.reused == again.paths
    # a new fraction reuses the cached saliency and the stored accuracies of the others
    more = run(_config("roar", tiny_ckpt, tmp_path, {"fractions": [0.25, 0.5, 0.75, 0.9]})).results
    assert counting.images == 0 and sorted(retrains) == [(0.9, [0, 1])] * 2
    assert more[0].metrics["acc@50"] == outcome.results[0].metrics["acc@50"]


def _maps(images: torch.Tensor) -> torch.Tensor:
    return images[:, 0] - 0.5 * images[:, 2]


def test_removed_images_follow_the_cached_ranks(tmp_path: Path) -> None:
    dataset = ShapesDataset((24, 24), "train", size=6)
    streamed = Split("train", dataset, dataset.ids(), (24, 24), "raise", batch_size=4)
    cached = Split("train", dataset, dataset.ids(), (24, 24), "raise", batch_size=4)
    assert cached.preload(1e9) and not streamed.preload(0)
    ranks = ensure_ranks(tmp_path / "train.npy", streamed, lambda batch: _maps(batch.images))
    assert ranks.ranks.dtype == np.uint16 and ranks.valid.all()
    assert ensure_ranks(tmp_path / "train.npy", cached, lambda b: 1 / 0).ranks.shape == (6, 24, 24)  # from disk
    images = torch.stack([dataset.load(i).image for i in dataset.ids()])
    expected_ranks = pixel_ranks(_maps(images))
    assert torch.equal(torch.from_numpy(np.asarray(ranks.ranks).astype(np.int64)), expected_ranks)
    mean = streamed.channel_mean()
    assert torch.allclose(mean, cached.channel_mean()) and torch.allclose(mean, images.double().mean(dim=(0, 2, 3)))
    k = removal_count(24 * 24, 0.3)
    top = expected_ranks < k
    for split in (streamed, cached):
        removed = RemovedSplit(split, ranks, 0.3, "morf", lambda x, m: replace_with_mean(x, m, mean))
        out = torch.cat([images for images, _ in removed.batches()])
        assert torch.equal(out.permute(0, 2, 3, 1)[~top], images.permute(0, 2, 3, 1)[~top])
        assert torch.allclose(out.permute(0, 2, 3, 1)[top], mean.float().expand(6 * k, 3))


def test_roar_lerf_cnn_and_probe_target(tiny_ckpt: str, tmp_path: Path, counting) -> None:
    lerf = run(_config("roar", tiny_ckpt, tmp_path, {"order": "lerf", "fractions": [0.5], "seeds": 1},
                       attributions=["simple_gradient"])).results
    assert all(s["higher_is_better"] is True for r in lerf for s in r.metrics.values())
    calls = counting.images
    cnn = run(_config("roar", tiny_ckpt, tmp_path, {"retrain": "cnn", "cnn_epochs": 1, "fractions": [0.5]},
                      attributions=["simple_gradient"])).results
    assert counting.images == calls  # same maps: the retrained model does not change the saliency cache
    assert cnn[0].extra["retrain"] == "cnn" and cnn[0].extra["subsample"] == 1.0
    again = run(_config("roar", tiny_ckpt, tmp_path / "b", {"retrain": "cnn", "cnn_epochs": 1, "fractions": [0.5]},
                        attributions=["simple_gradient"])).results
    assert again[0].extra["curves"] == cnn[0].extra["curves"]  # CPU training is deterministic per seed
    calls = counting.images
    probe = run(_config("roar", tiny_ckpt, tmp_path, {"target": "probe", "fractions": [0.5], "seeds": 1,
                                                      "random_baseline": False})).results
    assert [r.attribution for r in probe] == ["simple_gradient"] and probe[0].extra["target"] == "probe"
    assert counting.images == calls + 30  # new target, new maps


class _Flawed(ShapesDataset):
    def load(self, sample_id: str) -> Sample:
        if sample_id.endswith("-3") and self.split == "train":
            raise DataError(f"{sample_id}.png: truncated image; re-generate it")
        return super().load(sample_id)


def test_roar_bad_samples_and_bad_options(registered, tiny_ckpt: str, tmp_path: Path) -> None:
    registered(DATASETS, "flawed", _Flawed)
    options = {"fractions": [0.5], "seeds": 1, "random_baseline": False, "train_limit": 30}
    with pytest.raises(DataError, match=r"sample shapes-train-0-3: .*truncated image.*--on-error skip"):
        run(_config("roar", tiny_ckpt, tmp_path, options, dataset="flawed"))
    result = run(_config("roar", tiny_ckpt, tmp_path, options, dataset="flawed", on_error="skip")).results[0]
    assert result.skipped == {"truncated image": 1} and result.extra["train_images"] == 29
    registered(DATASETS, "nosplit", lambda image_size, root, on_error, size: ShapesDataset(
        image_size, size=size))
    with pytest.raises(DataError, match="train_split"):
        run(_config("roar", tiny_ckpt, tmp_path, options, dataset="nosplit"))
    for bad, error, match in (({"fractions": [0.5, 1.5]}, ValueError, "fractions"),
                              ({"retrain": "svm"}, UnknownNameError, "retrainer 'svm'"),
                              ({"order": "up"}, ValueError, "order"), ({"seeds": 0}, ValueError, "seeds"),
                              ({"target": "nope"}, UnknownNameError, "nope"),
                              ({"cnn_epochz": 2}, UnknownNameError, "cnn_epochs"),
                              ({"train_split": "test", "test_split": "test"}, ValueError, "both 'test'")):
        with pytest.raises(error, match=match):
            check_names(_config("roar", tiny_ckpt, tmp_path, bad))
    assert isinstance(check_names(_config("roar", tiny_ckpt, tmp_path, {"cnn_epochs": 2})), RoarOptions)


# ---------------------------------------------------------------------------------------- ROAD
def test_road_results_figure_and_resume(tiny_ckpt: str, tmp_path: Path, counting) -> None:
    outcome = run(_config("road", tiny_ckpt, tmp_path, attributions=["simple_gradient", "gradcam"]))
    assert [r.attribution for r in outcome.results] == ["simple_gradient", "gradcam", "random"]
    for result in outcome.results:
        assert set(result.metrics) == {"acc@25", "acc@75", "auc"} and result.n == 10
        assert all(s["higher_is_better"] is False for s in result.metrics.values())
        assert 0 <= result.metrics["auc"]["mean"] <= 100
        assert result.extra["classifier"] == "zero_shot" and result.extra["clean_accuracy"]["n"] == 10
        assert (tmp_path / "road" / result.extra["figure"]).read_bytes()[:8] == PNG_MAGIC
    assert counting.images == 10
    run(_config("road", tiny_ckpt, tmp_path, attributions=["simple_gradient", "gradcam"]))
    assert counting.images == 10  # every sample is stored: nothing recomputed


def test_road_batch_independent_and_options(tiny_ckpt: str, tmp_path: Path) -> None:
    options = {"noise": 0.05, "random_baseline": False}
    a = run(_config("road", tiny_ckpt, tmp_path / "a", options, batch_size=1, limit=5)).results[0]
    b = run(_config("road", tiny_ckpt, tmp_path / "b", options, batch_size=5, limit=5)).results[0]
    assert a.metrics == b.metrics
    probe = run(_config("road", tiny_ckpt, tmp_path / "c", {**options, "classifier": "probe", "probe_limit": 20},
                        limit=5)).results[0]
    assert probe.extra["classifier"] == "probe" and probe.n == 5
    with pytest.raises(ValueError, match="below 1"):
        run(_config("road", tiny_ckpt, tmp_path, {"fractions": [0.5, 1.0]}))
