"""Tests of the generated shapes world (aft_bench.data.shapes)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from aft_bench.data.base import Batch, DataError, Dataset
from aft_bench.data.shapes import (
    CLASSNAMES,
    COLOURS,
    DISTRACTOR_DIAMETER,
    MAX_OCCLUSION,
    SHAPE_SDFS,
    SHAPES,
    TARGET_DIAMETER,
    VOCABULARY,
    ShapesDataset,
    caption,
    class_index,
    generate_batch,
    render_shapes_sample,
    render_shapes_scene,
)

PALETTE = np.array(list(COLOURS.values()))


@pytest.fixture(scope="module")
def scenes():
    return [render_shapes_scene(3, "train", i, (64, 64)) for i in range(120)]


def _digest(image: np.ndarray) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


def test_same_arguments_give_identical_bytes():
    a_img, a_mask, a_label = render_shapes_sample(7, "test", 11, (64, 64))
    b_img, b_mask, b_label = render_shapes_sample(7, "test", 11, (64, 64))
    assert a_img.tobytes() == b_img.tobytes()
    assert a_mask.tobytes() == b_mask.tobytes()
    assert a_label == b_label


def test_seed_and_index_change_the_image():
    base = render_shapes_sample(7, "test", 11, (64, 64))[0]
    assert not np.array_equal(base, render_shapes_sample(8, "test", 11, (64, 64))[0])
    assert not np.array_equal(base, render_shapes_sample(7, "test", 12, (64, 64))[0])


def test_any_subset_in_any_order():
    images, masks, labels = generate_batch(5, "train", 40, 3, (64, 64))
    for offset in (2, 0, 1):
        image, mask, label = render_shapes_sample(5, "train", 40 + offset, (64, 64))
        assert torch.equal(images[offset], torch.from_numpy(image).permute(2, 0, 1))
        assert torch.equal(masks[offset], torch.from_numpy(mask.astype(np.int8)))
        assert int(labels[offset]) == label


def test_train_and_test_splits_are_disjoint():
    train = {_digest(render_shapes_sample(0, "train", i, (32, 32))[0]) for i in range(150)}
    test = {_digest(render_shapes_sample(0, "test", i, (32, 32))[0]) for i in range(150)}
    assert len(train) == 150 and len(test) == 150
    assert not train & test


def test_image_values_and_dtypes(scenes):
    for scene in scenes[:20]:
        assert scene.image.shape == (64, 64, 3) and scene.image.dtype == np.float32
        assert scene.image.min() >= 0.0 and scene.image.max() <= 1.0
        assert scene.mask.shape == (64, 64) and scene.mask.dtype == bool


def test_mask_is_visible_target_only(scenes):
    for scene in scenes:
        drawn = scene.target_alpha >= 0.5
        assert scene.mask.any()
        assert not (scene.mask & ~drawn).any(), "mask pixel where the target was not drawn"
        assert not (scene.mask & (scene.occluder_alpha >= 0.5)).any(), "distractor pixel inside the mask"
        hidden = drawn & (scene.occluder_alpha >= 0.5)
        assert np.array_equal(scene.mask, drawn & ~hidden)
        assert hidden.sum() <= MAX_OCCLUSION * drawn.sum()


def test_target_colour_dominates_mask(scenes):
    for scene in scenes:
        pixels = scene.image[scene.mask]
        nearest = np.argmin(((pixels[:, None] - PALETTE[None]) ** 2).sum(-1), axis=1)
        share = np.mean(nearest == list(COLOURS).index(scene.target.colour))
        assert share > 0.9, f"label {scene.label}: only {share:.2f} of mask pixels have the target colour"


def test_background_is_duller_than_target(scenes):
    for scene in scenes:
        chroma = scene.image.max(-1) - scene.image.min(-1)
        background = (scene.target_alpha == 0) & (scene.occluder_alpha == 0)
        assert np.quantile(chroma[background], 0.99) < np.median(chroma[scene.mask])


def test_distractors_are_smaller_and_of_other_classes(scenes):
    counts = [len(scene.distractors) for scene in scenes]
    assert max(counts) <= 3 and np.mean(counts) >= 1.5
    for scene in scenes:
        assert scene.target.label == scene.label
        target_px = int((scene.target_alpha >= 0.5).sum())
        for obj in scene.distractors:
            assert obj.label != scene.label
            assert obj.radius < scene.target.radius
            assert math.pi * obj.radius**2 < target_px
    assert TARGET_DIAMETER[0] > DISTRACTOR_DIAMETER[1]


def test_classes_captions_and_vocabulary():
    assert len(CLASSNAMES) >= 20 and len(set(CLASSNAMES)) == len(CLASSNAMES)
    assert len(CLASSNAMES) == len(SHAPES) * len(COLOURS)
    assert set(VOCABULARY) == set(SHAPES) | set(COLOURS)
    assert CLASSNAMES[class_index("blue", "star")] == "blue star"
    assert caption(class_index("red", "circle")) == "a photo of a red circle."


def test_every_class_appears():
    labels = generate_batch(1, "train", 0, 500, (16, 16))[2]
    counts = torch.bincount(labels, minlength=len(CLASSNAMES))
    assert len(counts) == len(CLASSNAMES) and int(counts.min()) >= 5


@pytest.mark.parametrize("shape", sorted(SHAPE_SDFS))
def test_shape_geometry_known_answers(shape):
    ys, xs = np.meshgrid(np.arange(200) + 0.5 - 100, np.arange(200) + 0.5 - 100, indexing="ij")
    radius = 60.0
    expected_area = {  # closed forms of the unit shapes, times radius ** 2
        "circle": math.pi * 0.9**2,
        "square": 1.56**2,
        "triangle": 3 * math.sqrt(3) / 4 * 1.12**2,
        "star": 5 * 1.15 * 0.5 * math.sin(math.radians(36)),
        "cross": 2 * (2 * 1.0 * 0.68) - 0.68**2,
    }[shape] * radius**2
    for angle in (0.0, 0.7, 2.0):
        sdf = SHAPE_SDFS[shape](xs.astype(np.float32), ys.astype(np.float32), radius, angle)
        area = np.count_nonzero(sdf <= 0)
        assert abs(area - expected_area) < 0.02 * expected_area, (shape, angle, area, expected_area)
        assert sdf[100, 100] < 0 and sdf[0, 0] > 0
        assert np.all(sdf[np.hypot(xs, ys) > 1.2 * radius] > 0)


def test_circle_signed_distance_is_exact():
    x = np.array([[0.0, 30.0, 45.0]], dtype=np.float32)
    y = np.zeros_like(x)
    np.testing.assert_allclose(SHAPE_SDFS["circle"](x, y, 30.0, 0.0), [[-27.0, 3.0, 18.0]])


def test_dataset_round_trip():
    dataset = ShapesDataset(image_size=(48, 80), split="val", size=6, seed=2, root="/nowhere",
                            on_error="skip")
    assert isinstance(dataset, Dataset)
    assert len(dataset) == 6 and dataset.ids()[4] == "shapes-val-2-4"
    assert dataset.classnames == CLASSNAMES
    sample = dataset.load("shapes-val-2-4")
    image, mask, label = render_shapes_sample(2, "val", 4, (48, 80))
    assert sample.image.shape == (3, 48, 80) and sample.image.dtype == torch.float32
    assert sample.mask.shape == (48, 80) and sample.mask.dtype == torch.int8
    assert set(sample.mask.unique().tolist()) == {0, 1}
    assert torch.equal(sample.image, torch.from_numpy(image).permute(2, 0, 1))
    assert torch.equal(sample.mask.bool(), torch.from_numpy(mask))
    assert sample.label == label and sample.prompt == f"a photo of a {CLASSNAMES[label]}."
    batch = Batch.collate([dataset.load(i) for i in dataset.ids()])
    assert batch.masks is not None and batch.masks.shape == (6, 48, 80)


def test_generate_batch_shapes():
    images, masks, labels = generate_batch(0, "train", 0, 4, (32, 32))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert masks.shape == (4, 32, 32) and masks.dtype == torch.int8
    assert labels.shape == (4,) and labels.dtype == torch.long


@pytest.mark.parametrize(
    "sample_id",
    ["shapes-val-2-6", "shapes-test-2-1", "shapes-val-3-1", "shapes-val-2-x", "shapes-val-2-01", "1"],
)
def test_foreign_ids_are_refused(sample_id):
    with pytest.raises(DataError, match="not in this dataset"):
        ShapesDataset(split="val", size=6, seed=2).load(sample_id)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "holdout"}, "unknown shapes split"),
        ({"seed": -1}, "non-negative"),
        ({"image_size": (8, 64)}, "image_size"),
        ({"size": 0}, "positive integer"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(DataError, match=message):
        ShapesDataset(**kwargs)


def test_default_size_per_split() -> None:
    """Without ``size`` the test split has 200 samples (the default pointing game scores them all), train and val
    500; an explicit size wins."""
    assert [len(ShapesDataset(split=s)) for s in ("test", "train", "val")] == [200, 500, 500]
    assert len(ShapesDataset(split="test", size=7)) == 7
