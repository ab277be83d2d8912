"""COCO caption annotations as training data (paper appendix A.4, Tables 4-5): the real file format, one caption
per image per epoch drawn with the run's seed, uncaptioned images left out and counted, and both objectives on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from aft_bench.data.base import DataError
from aft_bench.data.coco_captions import CocoCaptionSource
from aft_bench.training.arguments import run_train
from aft_bench.training.data import ShardedBatches, check_data, make_source

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
    assert isinstance(source, CocoCaptionSource) and len(source) == 4 and source.uncaptioned == 1
    assert [path.name for path, _ in source.items] == [f"{i:012d}.jpg" for i in (1, 2, 5, 7)]
    assert "1 without captions left out" in source.describe() and "no caption" in caplog.text
    image, caption = source.load(0, epoch=3)
    assert image.shape == (3, 16, 16) and caption in CAPTIONS[1]


def test_one_caption_per_image_per_epoch_from_the_seed(coco):
    annotations, images = coco
    source = CocoCaptionSource(annotations, (8, 8), images, seed=4)
    draws = [source.caption(0, epoch) for epoch in range(40)]
    assert set(draws) == set(CAPTIONS[1])  # every caption of image 1 is used over the epochs
    assert draws == [CocoCaptionSource(annotations, (8, 8), images, seed=4).caption(0, e) for e in range(40)]
    assert draws != [CocoCaptionSource(annotations, (8, 8), images, seed=5).caption(0, e) for e in range(40)]
    assert {source.caption(1, epoch) for epoch in range(10)} == {"a dog."}
    # The batches carry the caption drawn for their epoch, and a resumed stream draws the same ones.
    stream = iter(ShardedBatches(source, 2, seed=4))
    seen = [next(stream) for _ in range(6)]  # three epochs of two batches
    for number, batch in enumerate(seen):
        assert batch.captions == [source.caption(i, number // 2) for i in batch.indices]
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
])
def test_malformed_files_are_refused_naming_the_file(coco, write, message):
    annotations, images = coco
    write(annotations)
    with pytest.raises(DataError, match=message) as error:
        CocoCaptionSource(annotations, (8, 8), images)
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
    missing_image = CocoCaptionSource(annotations, (8, 8), tmp_path)  # the wrong root: the image file is named
    with pytest.raises(DataError, match="000000000001.jpg"):
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
