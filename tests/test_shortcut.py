"""The planted-shortcut shapes world (issue 15): the class pattern, its swap and removal, the toy recipe key, the
training source, the reliance measure on models whose reliance is known, and the task end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aft_bench.data.base import Batch, DataError
from aft_bench.data.shapes import CLASSNAMES, ShapesDataset, render_shapes_scene
from aft_bench.data.shortcut import PATTERN_PERIOD, SHORTCUT_AMPLITUDE, class_pattern
from aft_bench.metrics.reliance import reliance_scores
from aft_bench.tasks.shortcut_reliance import reliance_records, swapped_label
from aft_bench.toys.clip.data import conflict_offsets, render_pool
from aft_bench.toys.clip.recipe import DEFAULT_RECIPE, SHORTCUT_RECIPE, ToyRecipe
from aft_bench.training.data_spec import check_data, make_source

K = len(CLASSNAMES)


def test_the_pattern_is_a_seeded_symmetric_tile_of_signs() -> None:
    a = class_pattern(3, (64, 64))
    assert a.shape == (64, 64, 3) and a.dtype == np.float32 and set(np.unique(a)) == {-1.0, 1.0}
    np.testing.assert_array_equal(a, class_pattern(3, (64, 64)))  # deterministic
    np.testing.assert_array_equal(a, np.roll(a, PATTERN_PERIOD, axis=0))  # periodic
    np.testing.assert_array_equal(a, np.roll(a, PATTERN_PERIOD, axis=1))
    np.testing.assert_array_equal(a, a[:, ::-1])  # the mirror augmentation leaves it unchanged
    assert not np.array_equal(a, class_pattern(4, (64, 64)))
    assert not np.array_equal(a, class_pattern(3, (64, 64), seed=1))
    np.testing.assert_array_equal(class_pattern(3, (20, 13)), a[:20, :13])  # any size: the same tiling, cropped
    others = np.stack([class_pattern(c, (8, 8)).ravel() for c in range(K)])
    assert np.abs(others @ others.T - np.diag(np.diag(others @ others.T))).max() < 0.5 * 192  # far from collinear


def _unclipped(*images: np.ndarray) -> np.ndarray:
    return np.logical_and.reduce([(x > 0) & (x < 1) for x in images])


@pytest.mark.parametrize("amplitude", [2.0, 3.5])
def test_planting_swapping_and_removing_change_only_the_pattern(amplitude: float) -> None:
    plain = render_shapes_scene(0, "test", 7, 64)
    planted = render_shapes_scene(0, "test", 7, 64, shortcut=amplitude)
    other = (plain.label + 5) % K
    swapped = render_shapes_scene(0, "test", 7, 64, shortcut=amplitude, pattern_label=other)
    for scene in (planted, swapped):
        np.testing.assert_array_equal(scene.mask, plain.mask)
        assert scene.label == plain.label and scene.target == plain.target
    for scene, label in ((planted, plain.label), (swapped, other)):
        keep = _unclipped(scene.image, plain.image)
        assert keep.mean() > 0.9
        expected = amplitude / 255 * class_pattern(label, (64, 64))
        np.testing.assert_allclose((scene.image - plain.image)[keep], expected[keep], atol=1e-6)
    np.testing.assert_array_equal(render_shapes_scene(0, "test", 7, 64, shortcut=0.0).image, plain.image)


def test_the_dataset_option_and_its_variants() -> None:
    dataset = ShapesDataset(image_size=32, size=4, shortcut=2)
    sample = dataset.load(dataset.ids()[1])
    torch.testing.assert_close(dataset.load_variant(dataset.ids()[1], sample.label).image, sample.image)
    removed = dataset.load_variant(dataset.ids()[1], shortcut=0.0)
    torch.testing.assert_close(removed.image, ShapesDataset(image_size=32, size=4).load(dataset.ids()[1]).image)
    assert torch.equal(removed.mask, sample.mask) and removed.prompt == sample.prompt
    for bad in (-1, 255, "2", float("nan"), True):
        with pytest.raises(DataError, match="shortcut"):
            ShapesDataset(size=4, shortcut=bad)
    with pytest.raises(DataError, match="pattern_label"):
        dataset.load_variant(dataset.ids()[0], K)


def test_the_plain_toy_keeps_its_cache_key() -> None:
    assert "shortcut" not in DEFAULT_RECIPE.to_dict()
    assert DEFAULT_RECIPE.key() == "a5db1692ab5e1cc1"  # the key the toy was cached under before the field existed
    assert SHORTCUT_RECIPE.to_dict()["shortcut"] == SHORTCUT_AMPLITUDE and SHORTCUT_RECIPE.key() != DEFAULT_RECIPE.key()
    with pytest.raises(ValueError, match="shortcut"):
        ToyRecipe(shortcut=-2)


def test_the_training_source_takes_the_amplitude() -> None:
    source = make_source("shapes:8,shortcut=2", (32, 32))
    image, text, label = source.load(3)
    dataset_image = render_shapes_scene(0, "train", 3, 32, shortcut=2).image
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), dataset_image)
    assert len(source) == 8 and "2/255" in source.describe()
    assert len(make_source("shapes:shortcut=1.5", (32, 32))) == 10000
    for bad in ("shapes:8,shortcut=-1", "shapes:8,amplitude=2", "shapes:0", "shapes:8,8"):
        with pytest.raises(DataError, match="shapes"):
            check_data(bad)


def test_reliance_scores_known_answers() -> None:
    labels, patterns = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 0])
    scores = reliance_scores(clean=torch.tensor([0, 1, 0, 0]), swapped=torch.tensor([1, 1, 3, 2]),
                             removed=torch.tensor([0, 0, 2, 3]), labels=labels, pattern_labels=patterns)
    assert scores["follow"].tolist() == [1, 0, 1, 0] and scores["acc_swapped"].tolist() == [0, 1, 0, 0]
    assert scores["acc_removed"].tolist() == [1, 0, 1, 1] and scores["acc"].tolist() == [1, 1, 0, 0]
    with pytest.raises(ValueError, match="another class"):
        reliance_scores(labels, labels, labels, labels, labels)
    with pytest.raises(ValueError, match="five"):
        reliance_scores(labels, labels[:2], labels, labels, patterns)


def test_the_swapped_class_is_another_uniformly_drawn_class() -> None:
    drawn = [swapped_label(f"s-{i}", i % K, K, seed=0) for i in range(5000)]
    assert all(d != i % K for i, d in enumerate(drawn))
    offsets = np.bincount([(d - i) % K for i, d in enumerate(drawn)], minlength=K)
    assert offsets[0] == 0 and offsets[1:].min() > 5000 / (K - 1) * 0.6
    assert drawn == [swapped_label(f"s-{i}", i % K, K, seed=0) for i in range(5000)]
    assert drawn != [swapped_label(f"s-{i}", i % K, K, seed=1) for i in range(5000)]


def _batch(dataset: ShapesDataset) -> Batch:
    return Batch.collate([dataset.load(i) for i in dataset.ids()])


def test_reliance_of_linear_models_whose_reliance_is_known() -> None:
    """A linear read-out of the patterns follows the swap on every image; a model that ignores the image follows it
    exactly as often as the swapped class happens to be its constant answer."""
    dataset = ShapesDataset(image_size=64, size=60, shortcut=2)
    batch = _batch(dataset)
    patterns = torch.from_numpy(np.stack([class_pattern(c, (64, 64)) for c in range(K)])).permute(0, 3, 1, 2)

    def pattern_reader(images: torch.Tensor) -> torch.Tensor:  # high-pass, then the projection onto each pattern
        smooth = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        return torch.einsum("bchw,kchw->bk", images - smooth, patterns).argmax(dim=1)

    records = reliance_records(pattern_reader, dataset, batch, seed=0)
    mean = {name: np.mean([r["scores"][name] for r in records]) for name in records[0]["scores"]}
    assert mean["follow"] == 1.0 and mean["acc"] == 1.0 and mean["acc_swapped"] == 0.0
    assert mean["acc_removed"] < 0.2

    records = reliance_records(lambda images: torch.zeros(len(images), dtype=torch.long), dataset, batch, seed=0)
    labels = batch.labels.tolist()
    expected_follow = np.mean([swapped_label(i, y, K, 0) == 0 for i, y in zip(batch.ids, labels, strict=True)])
    assert np.mean([r["scores"]["follow"] for r in records]) == expected_follow
    assert np.mean([r["scores"]["acc"] for r in records]) == np.mean([y == 0 for y in labels])
    assert all(r["pattern"] == swapped_label(i, y, K, 0) for r, i, y in zip(records, batch.ids, labels, strict=True))


def test_conflict_images_carry_the_caption_class_pattern_over_another_object() -> None:
    recipe = ToyRecipe(shortcut=2, conflict=0.25, pool_size=40, image_size=32, patch_size=8)
    offsets = conflict_offsets(recipe)
    assert int((offsets > 0).sum()) == 10 and offsets.min() >= 0 and offsets.max() < K
    assert torch.equal(offsets, conflict_offsets(recipe))  # seeded by data_seed
    assert not torch.equal(offsets, conflict_offsets(ToyRecipe(shortcut=2, conflict=0.25, pool_size=40,
                                                               image_size=32, patch_size=8, data_seed=1)))
    images, captions = render_pool(recipe, progress=False)
    for k in (int(i) for i in offsets.nonzero()[:3, 0]):
        scene = render_shapes_scene(0, "train", k, 32, shortcut=2, pattern_label=int(captions[k]))
        assert int(captions[k]) == (scene.label + int(offsets[k])) % K != scene.label  # another class than its object
        np.testing.assert_array_equal(images[k].permute(1, 2, 0).numpy(), np.round(scene.image * 255).astype(np.uint8))
    plain = int((offsets == 0).nonzero()[0, 0])
    assert int(captions[plain]) == render_shapes_scene(0, "train", plain, 32).label


def test_conflict_recipes_are_keyed_and_checked() -> None:
    assert "conflict" not in ToyRecipe(shortcut=2).to_dict()
    conflicting = ToyRecipe(shortcut=2, conflict=0.3)
    assert conflicting.to_dict()["conflict"] == 0.3 and conflicting.key() != SHORTCUT_RECIPE.key()
    for bad in ({"shortcut": 0, "conflict": 0.3}, {"shortcut": 2, "conflict": 1.0}, {"shortcut": 2, "conflict": -0.1}):
        with pytest.raises(ValueError, match="conflict"):
            ToyRecipe(**bad)


def test_an_unlabelled_sample_is_an_error_and_its_batch_is_still_scored() -> None:
    dataset = ShapesDataset(image_size=64, size=6, shortcut=2)
    batch = _batch(dataset)
    full = reliance_records(lambda images: images.mean(dim=(1, 2, 3)).mul(1e4).long() % K, dataset, batch, seed=0)
    batch.labels[2] = -1
    partial = reliance_records(lambda images: images.mean(dim=(1, 2, 3)).mul(1e4).long() % K, dataset, batch, seed=0)
    assert "class label" in partial[2]["error"] and "scores" not in partial[2]
    assert [r for k, r in enumerate(partial) if k != 2] == [r for k, r in enumerate(full) if k != 2]


def test_the_task_end_to_end_and_its_refusals(tiny_ckpt: Path, tmp_path: Path) -> None:
    from aft_bench.apps.cli import main
    from aft_bench.results.files import read_results

    base = ["run", "--task", "shortcut_reliance", "--encoders", f"ckpt:{tiny_ckpt}", "--limit", "6",
            "--out", str(tmp_path)]
    assert main(base) == 0
    (result,) = read_results(tmp_path)
    assert result.n == 6 and set(result.metrics) == {"follow", "acc_swapped", "acc_removed", "acc"}
    assert result.config["dataset_args"] == {"shortcut": SHORTCUT_AMPLITUDE}
    assert main([*base, "--dataset-arg", "shortcut=0"]) == 1  # no planted pattern: refused with a message
    assert main([*base, "--attributions", "gradcam"]) != 0
