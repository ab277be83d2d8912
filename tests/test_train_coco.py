"""COCO caption annotations as training data (paper appendix A.4, Tables 4-5): the real file format, one caption
per image per epoch drawn with the run's seed, uncaptioned images left out and counted, and both objectives on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import DataError, Dataset
from aft_bench.data.coco_captions import CocoCaptions
from aft_bench.data.io import read_image
from aft_bench.data.transforms import resize_center_crop
from aft_bench.training.arguments import run_train
from aft_bench.training.batches import ShardedBatches
from aft_bench.training.data_spec import check_data, make_source

pytestmark = pytest.mark.usefixtures("one_thread")
CAPTIONS = {1: ["a red cube.", "a cube on grass.", "red block.", "a small cube.", "one cube."],
            2: ["a dog."], 5: ["two cats.", "cats on a sofa."], 7: ["a bus.", "a yellow bus.", "bus stop."]}


@pytest.fixture
def coco(tmp_path: Path) -> tuple[Path, Path]:
    """A COCO captions_train2017.json (with its info/licenses sections) and its image folder; image 9 has no
    caption."""
    images = tmp_path / "train2017"
    images.mkdir()
    entries = []
    for image_id in (1, 2, 5, 7, 9):
        name = f"{image_id:012d}.jpg"
        Image.new("RGB", (40, 30), (20 * image_id, 100, 50)).save(images / name)
        entries.append({"license": 1, "file_name": name, "coco_url": "", "height": 30, "width": 40,
                        "date_captured": "2013-11-14 17:02:52", "flickr_url": "", "id": image_id})
    annotations = [{"image_id": image_id, "id": 100 * image_id + k, "caption": caption}
                   for image_id, captions in CAPTIONS.items() for k, caption in enumerate(captions)]
    annotation_file = tmp_path / "annotations" / "captions_train2017.json"
    annotation_file.parent.mkdir()
    annotation_file.write_text(json.dumps({"info": {"year": 2017}, "licenses": [], "images": entries,
                                           "annotations": annotations}))
    return annotation_file, images


def test_the_file_gives_captioned_images_and_counts_the_rest(coco, caplog):
    annotations, images = coco
    source = make_source(f"coco:{annotations}", (16, 16), root=str(images))
    dataset = source.dataset
    assert isinstance(dataset, CocoCaptions) and len(source) == 4 and dataset.uncaptioned == 1
    assert dataset.ids() == [f"{i:012d}.jpg" for i in (1, 2, 5, 7)]
    assert source.describe() == (f"coco:{annotations} (4 captioned images under {images}, 1 without captions "
                                 "left out)")
    assert "no caption" in caplog.text and source.classnames is None
    image, caption, label = source.load(0, epoch=3)
    assert image.shape == (3, 16, 16) and caption in CAPTIONS[1] and label == -1
    assert caption == dataset.caption(dataset.ids()[0], 3)


def test_the_annotation_file_is_an_evaluation_dataset_too(coco):
    """``coco_captions`` (registered) gives each captioned image with the caption of epoch 0 as its prompt."""
    annotations, images = coco
    dataset = DATASETS.get("coco_captions")(image_size=(16, 16), root=str(images), on_error="raise",
                                            annotations=str(annotations), seed=4)
    assert isinstance(dataset, Dataset) and dataset.classnames == []
    sample = dataset.load("000000000005.jpg")
    assert sample.prompt == dataset.caption("000000000005.jpg", 0) and sample.label == -1 and sample.mask is None
    assert torch.equal(sample.image, resize_center_crop(read_image(images / "000000000005.jpg"), (16, 16)))
    assert dataset.load_epoch("000000000005.jpg", 7).prompt == dataset.caption("000000000005.jpg", 7)
    assert dataset.source_files("000000000002.jpg") == [images / "000000000002.jpg"]
    with pytest.raises(DataError, match="unknown COCO captions sample id"):
        dataset.load("000000000009.jpg")  # uncaptioned: left out
    with pytest.raises(DataError, match="annotations="):
        CocoCaptions((8, 8), root=images)
    with pytest.raises(DataError, match="--data-root"):
        CocoCaptions((8, 8), annotations=annotations)


def test_one_caption_per_image_per_epoch_from_the_seed(coco):
    annotations, images = coco
    dataset = CocoCaptions((8, 8), images, annotations=annotations, seed=4)
    first, dog = dataset.ids()[:2]
    draws = [dataset.caption(first, epoch) for epoch in range(40)]
    assert set(draws) == set(CAPTIONS[1])  # every caption of image 1 is used over the epochs
    assert draws == [CocoCaptions((8, 8), images, annotations=annotations, seed=4).caption(first, e) for e in range(40)]
    assert draws != [CocoCaptions((8, 8), images, annotations=annotations, seed=5).caption(first, e) for e in range(40)]
    assert {dataset.caption(dog, epoch) for epoch in range(10)} == {"a dog."}
    # Known answers (the draws of the former training source): default_rng([seed, e, i]) over the captions.
    assert draws[:6] == ["a small cube.", "red block.", "a cube on grass.", "a cube on grass.", "a cube on grass.",
                         "a red cube."]
    # The batches carry the caption drawn for their epoch, and a resumed stream draws the same ones.
    source = make_source(f"coco:{annotations}", (8, 8), root=str(images), run_seed=4)
    stream = iter(ShardedBatches(source, 2, seed=4))
    seen = [next(stream) for _ in range(6)]  # three epochs of two batches
    for number, batch in enumerate(seen):
        assert batch.captions == [dataset.caption(dataset.ids()[i], number // 2) for i in batch.indices]
    resumed = ShardedBatches(source, 2, seed=4)
    resumed.load_state_dict({"epoch": 1, "batch": 1, "skipped": 0})
    assert [b.captions for b in [next(iter(resumed))]] == [seen[3].captions]


@pytest.mark.parametrize(("write", "message"), [
    (lambda f: f.write_text("{not json"), "not valid JSON"),
    (lambda f: f.write_text(json.dumps({"images": []})), "'images' and 'annotations'"),
    (lambda f: f.write_text(json.dumps({"images": [{"id": 1}], "annotations": [{"image_id": 1, "caption": "x"}]})),
     "image 0 has no id and file_name"),
    (lambda f: f.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}],
                                        "annotations": [{"image_id": 1}]})), "annotation 0 has no image_id"),
    (lambda f: f.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": []})),
     "no image has a caption"),
    (lambda f: f.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "a.jpg"}],
                                        "annotations": [{"image_id": 1, "caption": "x"},
                                                        {"image_id": 2, "caption": "y"}]})), r"\['a.jpg'\] stand"),
])
def test_malformed_files_are_refused_naming_the_file(coco, write, message):
    annotations, images = coco
    write(annotations)
    with pytest.raises(DataError, match=message) as error:
        CocoCaptions((8, 8), images, annotations=annotations)
    assert str(annotations) in str(error.value)


def test_the_spec_is_checked_before_any_model_loads(coco, tmp_path):
    annotations, images = coco
    check_data(f"coco:{annotations}", str(images))
    with pytest.raises(DataError, match="needs --data-root"):
        check_data(f"coco:{annotations}")
    with pytest.raises(DataError, match="does not exist"):
        check_data(f"coco:{tmp_path / 'missing.json'}", str(images))
    with pytest.raises(DataError, match="not a folder"):
        check_data(f"coco:{annotations}", str(tmp_path / "nowhere"))
    missing_image = make_source(f"coco:{annotations}", (8, 8), root=str(tmp_path))  # the wrong root: the image
    with pytest.raises(DataError, match="000000000001.jpg"):  # file is named
        missing_image.load(0)


def test_supervised_and_unsupervised_aft_train_on_the_same_images(coco, tiny_ckpt, tmp_path):
    annotations, images = coco
    ckpt = tiny_ckpt
    cards = {}
    for objective in ("aft-supervised", "aft"):
        out = tmp_path / objective
        argv = ["--encoder", f"ckpt:{ckpt}", "--objective", objective, "--data", f"coco:{annotations}",
                "--data-root", str(images), "--batch-size", "2", "--max-steps", "3", "--pgd-steps", "1",
                "--threads", "1", "--out", str(out)]
        assert run_train(argv) == 0
        cards[objective] = json.loads((out / "encoder.json").read_text())
    assert cards["aft-supervised"]["data"] == cards["aft"]["data"]
    assert "4 captioned images" in cards["aft"]["data"] and cards["aft-supervised"]["train_steps"] == 3
