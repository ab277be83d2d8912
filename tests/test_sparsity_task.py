"""The sparsity task end to end on a tiny encoder and the shapes world (Gini index per map)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import task_config

from aft_bench.attributions.simple_gradient import SimpleGradient
from aft_bench.core.registries import ATTRIBUTIONS, DATASETS, TASKS
from aft_bench.data.base import DataError, Sample
from aft_bench.data.shapes import ShapesDataset
from aft_bench.evaluation.runner import run
from aft_bench.tasks.sparsity import Sparsity


@pytest.fixture(autouse=True)
def _registered(registered) -> None:
    registered(TASKS, "sparsity", Sparsity)


def _config(tiny48_ckpt: str, out: Path, **changes):
    return task_config("sparsity", tiny48_ckpt, out, **{"limit": 6, **changes})


def test_gini_of_real_maps(tiny48_ckpt: str, tmp_path: Path) -> None:
    outcome = run(_config(tiny48_ckpt, tmp_path, attributions=["simple_gradient", "gradcam"]))
    assert [r.attribution for r in outcome.results] == ["simple_gradient", "gradcam"]
    for result in outcome.results:
        assert set(result.metrics) == {"gini"} and result.metrics["gini"]["higher_is_better"] is True
        assert result.n + sum(result.excluded.values()) == 6 and result.task_version == 2
        assert 0.0 < result.metrics["gini"]["mean"] < 100.0 * (1 - 1 / 48**2)
    assert "| gini ↑ |" in outcome.markdown


class _Known(SimpleGradient):
    """The k-th map it makes (counting across batches) is one-hot (k % 3 == 0), uniform (1) or all zero (2)."""

    made = 0

    def attribute(self, encoder, images, target):
        maps = torch.zeros(images.shape[0], images.shape[2], images.shape[3])
        for i in range(images.shape[0]):
            kind = type(self).made % 3
            type(self).made += 1
            if kind == 0:
                maps[i, 3, 5] = 2.0
            elif kind == 1:
                maps[i] = 0.7
        return maps


def test_known_answers_and_zero_maps(registered, tiny48_ckpt: str, tmp_path: Path) -> None:
    registered(ATTRIBUTIONS, "simple_gradient", _Known)
    _Known.made = 0
    result = run(_config(tiny48_ckpt, tmp_path, limit=9, batch_size=2)).results[0]
    assert result.excluded == {"zero map": 3} and result.n == 6
    # three one-hot maps (Gini 1 - 1/N, N = 48 * 48) and three uniform maps (Gini 0), in percent
    assert result.metrics["gini"]["mean"] == pytest.approx(100.0 * (1 - 1 / 48**2) / 2, abs=1e-9)


class _NoMasks(ShapesDataset):
    """Shapes without masks and with one unreadable sample."""

    def load(self, sample_id: str) -> Sample:
        if sample_id.endswith("-1"):
            raise DataError(f"image {sample_id}.png is truncated")
        sample = super().load(sample_id)
        return Sample(sample.id, sample.image, sample.prompt, sample.label, None)


def test_runs_without_masks_and_skips_bad_samples(registered, tiny48_ckpt: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    registered(DATASETS, "no_masks", _NoMasks)
    config = _config(tiny48_ckpt, tmp_path, dataset="no_masks", limit=None, on_error="skip", dataset_args={"size": 4})
    result = run(config).results[0]
    assert result.n == 3 and sum(result.skipped.values()) == 1


def test_nan_maps_are_bad_samples(registered, tiny48_ckpt: str, tmp_path: Path) -> None:
    class NaNFirst(SimpleGradient):
        def attribute(self, encoder, images, target):
            maps = super().attribute(encoder, images, target)
            maps[0, 0, 0] = float("nan")
            return maps

    registered(ATTRIBUTIONS, "simple_gradient", NaNFirst)
    with pytest.raises(DataError, match=r"non-finite map \(1 NaN/Inf"):
        run(_config(tiny48_ckpt, tmp_path / "a"))
    result = run(_config(tiny48_ckpt, tmp_path / "b", on_error="skip")).results[0]
    assert result.skipped == {"non-finite map": 2} and result.n == 4


def test_same_numbers_for_any_batch_size(tiny48_ckpt: str, tmp_path: Path) -> None:
    a = run(_config(tiny48_ckpt, tmp_path / "a", batch_size=1, limit=4)).results[0]
    b = run(_config(tiny48_ckpt, tmp_path / "b", batch_size=4, limit=4)).results[0]
    assert a.metrics["gini"]["mean"] == pytest.approx(b.metrics["gini"]["mean"], abs=1e-6)
