"""The SSIM robustness task: seeded noise, known answers, and the run end to end on a tiny encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from skimage.metrics import structural_similarity

from aft_bench.attributions.simple_gradient import SimpleGradient
from aft_bench.core.options import parse_levels
from aft_bench.core.registries import ATTRIBUTIONS, TASKS
from aft_bench.data.shapes import ShapesDataset
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.runner import run
from aft_bench.metrics.ssim import normalize_minmax
from aft_bench.tasks.ssim_robustness import SsimRobustness, metric_name, noisy_copies, sample_noise


@pytest.fixture(autouse=True)
def _registered(registered) -> None:
    registered(TASKS, "ssim_robustness", SsimRobustness)


def _config(tiny48_ckpt: str, out: Path, **changes):
    overrides = dict(encoders=[tiny48_ckpt], attributions=["simple_gradient"], limit=4, batch_size=2, out=str(out),
                     options={"sigmas": [1, 9]})
    overrides.update(changes)
    return resolve_config("ssim_robustness", overrides)


# ---------------------------------------------------------------------------------------- noise
def test_noise_is_independent_of_batch_position() -> None:
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    ids = ["a", "b", "c"]
    full = noisy_copies(images, ids, (1, 5), seed=7)
    part = noisy_copies(images[[2, 0]], ["c", "a"], (5,), seed=7)  # other order, other batch, fewer sigmas
    assert full.shape == (3, 3, 3, 8, 8) and torch.equal(full[:, 0], images)
    assert torch.equal(part[0, 1], full[2, 2]) and torch.equal(part[1, 1], full[0, 2])


def test_noise_depends_on_seed_id_and_sigma() -> None:
    base = sample_noise(0, "a", 3, (3, 64, 64))
    assert torch.equal(base, sample_noise(0, "a", 3.0, (3, 64, 64)))
    for other in (sample_noise(1, "a", 3, (3, 64, 64)), sample_noise(0, "b", 3, (3, 64, 64)),
                  sample_noise(0, "a", 5, (3, 64, 64)) * 3 / 5):
        assert not torch.allclose(base, other)
    assert float(base.std()) == pytest.approx(3 / 255, rel=0.05) and abs(float(base.mean())) < 3e-4


def test_noisy_images_are_clipped_unless_asked() -> None:
    images = torch.cat([torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)])
    clipped = noisy_copies(images, ["x", "y"], (9,), seed=0)
    raw = noisy_copies(images, ["x", "y"], (9,), seed=0, clip=False)
    assert clipped.min() == 0 and clipped.max() == 1
    assert raw.min() < 0 < raw[0, 1].max() and raw.max() > 1
    assert torch.equal(clipped, raw.clamp(0, 1))


def test_sigma_option_parsing() -> None:
    assert parse_levels([1, 3, 5], "sigmas") == (1.0, 3.0, 5.0) and parse_levels(2, "sigmas") == (2.0,)
    assert [metric_name(s) for s in parse_levels([1, 0.5], "sigmas")] == ["ssim@1", "ssim@0.5"]
    for bad in ([], [0], [1, 1], ["x"], [float("nan")]):
        with pytest.raises(ValueError, match="sigmas"):
            parse_levels(bad, "sigmas")


# ---------------------------------------------------------------------------------------- known answers
class _RedChannel(SimpleGradient):
    """The map is the image's red channel: SSIM of maps = SSIM of clean and noisy red channels."""

    def attribute(self, encoder, images, target):
        return images[:, 0].float().clone()


def test_maps_compare_noisy_with_clean_as_skimage(registered, tiny48_ckpt: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    registered(ATTRIBUTIONS, "simple_gradient", _RedChannel)
    result = run(_config(tiny48_ckpt, tmp_path, options={"sigmas": [3, 9]})).results[0]
    assert list(result.metrics) == ["ssim@3", "ssim@9"] and result.n == 4
    dataset = ShapesDataset(image_size=(48, 48))
    chosen = [json.loads(line)["id"] for line in _samples_file(tmp_path).read_text().splitlines()]
    images = torch.stack([dataset.load(i).image for i in chosen])
    copies = noisy_copies(images, chosen, (3, 9), seed=0)
    for level, sigma in enumerate((3, 9), start=1):
        clean, noisy = normalize_minmax(copies[:, 0, 0]), normalize_minmax(copies[:, level, 0])
        expected = [structural_similarity(n.numpy(), c.numpy(), data_range=1.0)
                    for n, c in zip(noisy, clean, strict=True)]
        assert result.metrics[f"ssim@{sigma}"]["mean"] == pytest.approx(100 * sum(expected) / 4, abs=1e-4)
    assert result.metrics["ssim@3"]["mean"] > result.metrics["ssim@9"]["mean"]


def _samples_file(out: Path) -> Path:
    (path,) = (out / "ssim_robustness" / "samples").glob("*.jsonl")
    return path


class _Steady(SimpleGradient):
    """A fixed non-constant map whatever the input (SSIM 1), or a constant one for the first image of a batch."""

    def attribute(self, encoder, images, target):
        maps = torch.linspace(0, 1, images.shape[2] * images.shape[3]).view(1, *images.shape[2:])
        maps = maps.repeat(images.shape[0], 1, 1)
        maps[0] = 0.25  # the clean map of the batch's first image (index 0 of its 1 + S copies)
        return maps


def test_identical_maps_score_100_and_constant_clean_maps_are_excluded(registered, 
        tiny48_ckpt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registered(ATTRIBUTIONS, "simple_gradient", _Steady)
    result = run(_config(tiny48_ckpt, tmp_path)).results[0]
    assert result.excluded == {"constant map": 2} and result.n == 2  # 2 batches of 2
    for summary in result.metrics.values():
        assert summary["mean"] == pytest.approx(100.0, abs=1e-9)


# ---------------------------------------------------------------------------------------- end to end
def test_real_maps_end_to_end(tiny48_ckpt: str, tmp_path: Path) -> None:
    outcome = run(_config(tiny48_ckpt, tmp_path, attributions=["gradcam", "simple_gradient"]))
    assert [r.attribution for r in outcome.results] == ["gradcam", "simple_gradient"]
    for result in outcome.results:
        assert list(result.metrics) == ["ssim@1", "ssim@9"]
        assert result.n + sum(result.excluded.values()) == 4
        for summary in result.metrics.values():
            assert summary["higher_is_better"] is True and -100.0 <= summary["mean"] <= 100.0
        assert result.config["options"]["sigmas"] == [1, 9]
    assert "| ssim@1 ↑ |" in outcome.markdown


def test_same_numbers_for_any_batch_size(tiny48_ckpt: str, tmp_path: Path) -> None:
    a = run(_config(tiny48_ckpt, tmp_path / "a", batch_size=1, limit=3)).results[0]
    b = run(_config(tiny48_ckpt, tmp_path / "b", batch_size=3, limit=3)).results[0]
    for metric in a.metrics:
        assert a.metrics[metric]["mean"] == pytest.approx(b.metrics[metric]["mean"], rel=1e-6)  # float32 batching
