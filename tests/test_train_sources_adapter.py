"""Training reads the data/ datasets through one adapter: the samples, their order and the card's descriptions are
those of the former training sources (known answers recorded from them), uint8 datasets give float pixels, and a
dataset that changes per epoch is asked for each epoch's sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from aft_bench.data.base import DataError, Sample
from aft_bench.data.shapes import CLASSNAMES, caption, render_shapes_sample
from aft_bench.training.batches import ShardedBatches
from aft_bench.training.data_spec import DEFAULT_SHAPES_SIZE, make_source
from aft_bench.training.sources import TrainSource

# The first two epochs of ShardedBatches over the shapes world, as the former ShapesSource gave them.
SHAPES16 = {
    "indices": [[2, 11, 3, 10], [0, 4, 7, 5], [14, 12, 6, 9], [13, 8, 1, 15], [11, 0, 10, 7], [4, 1, 15, 9],
                [3, 14, 6, 13], [8, 12, 2, 5]],
    "labels": [[19, 22, 2, 24], [20, 15, 2, 2], [23, 12, 22, 5], [16, 0, 22, 12], [22, 20, 24, 2], [15, 22, 12, 5],
               [2, 23, 22, 16], [0, 12, 19, 2]],
    "captions": ["a photo of a yellow cross.", "a photo of a purple triangle.", "a photo of a red triangle.",
                 "a photo of a purple cross."],
    "means": [0.5164669, 0.50635356, 0.54103143, 0.47221376, 0.47999368, 0.51076991, 0.51271356, 0.53258851],
    "pixels": (0.6311553716659546, 0.44935551285743713),
}
SHORTCUT12 = {
    "indices": [[9, 11, 1, 3, 2, 4], [6, 7, 0, 10, 5, 8], [6, 9, 5, 8, 2, 4], [7, 0, 11, 10, 3, 1]],
    "labels": [[5, 22, 22, 2, 19, 15], [22, 2, 20, 24, 2, 0], [22, 5, 2, 0, 19, 15], [2, 20, 22, 24, 2, 22]],
    "captions": ["a photo of a green circle.", "a photo of a purple triangle.", "a photo of a purple triangle.",
                 "a photo of a red triangle.", "a photo of a yellow cross.", "a photo of a yellow circle."],
    "means": [0.50726878, 0.48860286, 0.51240804, 0.4834636],
    "pixels": (0.4368893802165985, 0.2999074161052704),
}


@pytest.mark.parametrize(("spec", "size", "batch", "seed", "expected", "described"), [
    ("shapes:16", (32, 32), 4, 0, SHAPES16, "shapes:16 (seed 0, train split, 32x32)"),
    ("shapes:12,shortcut=3", (24, 40), 6, 5, SHORTCUT12,
     "shapes:12 (seed 0, train split, 24x40, class pattern at 3/255)"),
])
def test_shapes_batches_are_the_former_ones(spec, size, batch, seed, expected, described):
    source = make_source(spec, size)
    assert source.describe() == described and source.classnames == tuple(CLASSNAMES)
    batches = ShardedBatches(source, batch, seed=seed)
    stream = iter(batches)
    seen = [next(stream) for _ in range(2 * batches.batches_per_epoch)]
    assert [b.indices for b in seen] == expected["indices"]
    assert [b.labels.tolist() for b in seen] == expected["labels"]
    assert seen[0].captions == expected["captions"] and seen[0].classnames == tuple(CLASSNAMES)
    assert [b.images.double().mean().item() for b in seen] == pytest.approx(expected["means"], abs=1e-7)
    assert (seen[0].images[0, 1, 5, 7].item(), seen[0].images[1, 2, 10, 3].item()) == pytest.approx(
        expected["pixels"], abs=1e-6)
    # Each sample is the renderer's, to the bit.
    image, _, label = render_shapes_sample(0, "train", seen[0].indices[0], size, float(spec.partition("=")[2] or 0))
    assert torch.equal(seen[0].images[0], torch.from_numpy(image).permute(2, 0, 1))
    assert seen[0].labels[0].item() == label and seen[0].captions[0] == caption(label)


def test_the_default_shapes_size():
    assert len(make_source("shapes", (16, 16))) == DEFAULT_SHAPES_SIZE == 10000


def test_folder_caption_and_class_sources_describe_themselves_as_before(tmp_path):
    for name in ("cls/a/1.png", "cls/b/2.png", "cls/b/3.png", "tree/x.png", "tree/y/z.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((12, 10, 3), 90, dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "caps.jsonl").write_text(json.dumps({"path": "tree/x.png", "caption": "x"}))
    classes = make_source(str(tmp_path / "cls"), (8, 8))
    assert classes.describe() == f"{tmp_path / 'cls'} (3 images in 2 class folders)"
    assert classes.classnames == ("a", "b") and classes.load(2)[1:] == (None, 1)  # class prompts are no captions
    tree = make_source(str(tmp_path / "tree"), (8, 8))
    assert tree.describe() == f"{tmp_path / 'tree'} (2 images)" and tree.classnames is None
    captions = make_source(str(tmp_path / "caps.jsonl"), (8, 8))
    assert captions.describe() == f"{tmp_path / 'caps.jsonl'} (1 captioned images)"
    batch = next(iter(ShardedBatches(tree, 2)))
    assert batch.labels is None and batch.classnames is None and batch.captions == [None, None]


class _Levels:
    """A dataset of uint8 samples whose prompt names the epoch it was loaded for (when asked per epoch)."""

    classnames = ["dark", "light"]

    def __init__(self, per_epoch: bool) -> None:
        self.per_epoch = per_epoch
        if per_epoch:
            self.load_epoch = self._load_epoch

    def __len__(self) -> int:
        return 4

    def ids(self) -> list[str]:
        return ["s0", "s1", "s2", "s3"]

    def _load_epoch(self, sample_id: str, epoch: int) -> Sample:
        i = int(sample_id[1:])
        if i == 3:
            raise DataError("s3.png: unreadable")
        return Sample(id=sample_id, image=torch.full((3, 2, 2), 60 * i + epoch, dtype=torch.uint8),
                      prompt=f"{sample_id} in epoch {epoch}", label=i % 2)

    def load(self, sample_id: str) -> Sample:
        return self._load_epoch(sample_id, 0)


def test_uint8_samples_become_float_pixels_and_epochs_reach_the_dataset():
    source = TrainSource(_Levels(per_epoch=True), "levels", captions=True)
    image, text, label = source.load(2, epoch=5)
    assert image.dtype == torch.float32 and torch.equal(image, torch.full((3, 2, 2), 125 / 255))
    assert (text, label) == ("s2 in epoch 5", 0) and source.classnames == ("dark", "light")
    assert TrainSource(_Levels(per_epoch=False), "levels", captions=True).load(2, epoch=5)[1] == "s2 in epoch 0"
    assert TrainSource(_Levels(per_epoch=True), "levels", captions=False).load(1)[1] is None
    stream = ShardedBatches(source, 2, seed=1, on_error="skip")
    batches = iter(stream)
    seen = [next(batches) for _ in range(4)]  # two epochs; sample s3 is skipped each time it comes up
    assert stream.skipped == 2 and sorted(i for b in seen[:2] for i in b.indices) == [0, 1, 2]
    assert all(t.endswith(f"epoch {n // 2}") for n, b in enumerate(seen) for t in b.captions)
    failing = iter(ShardedBatches(source, 2, seed=1))
    with pytest.raises(DataError, match="s3.png"):
        for _ in range(4):
            next(failing)
