"""The image tree dataset: every image below a folder (recursive, any image suffix, pathlib order), labelled by
sub-folder only when every image lies directly in one; the listing ``aft-bench train --data FOLDER`` has always
used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import DataError, Dataset
from aft_bench.data.image_folder import ImageFolder
from aft_bench.data.image_tree import IMAGE_SUFFIXES, ImageTree, folder_classname
from aft_bench.data.io import read_image
from aft_bench.data.transforms import resize_center_crop

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP", ".gif": "GIF",
           ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PPM"}


def _save(path: Path, value: int, size: tuple[int, int] = (20, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((*size, 3), value, dtype=np.uint8)
    pixels[::3, ::2] = 255 - value  # some structure, so resizing has something to do
    Image.fromarray(pixels).save(path, format=FORMATS[path.suffix.lower()])


def test_every_image_below_the_folder_in_path_order(tmp_path):
    names = ["z.jpeg", "a/x.png", "a/b/y.JPG", "a-b/x.PNG", "deep/er/p.webp", "g.gif", "t.TIF", "q.ppm", "w.bmp",
             ".hidden.png", ".dot/h.tiff"]
    for i, name in enumerate(names):
        _save(tmp_path / name, 20 * i)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    tree = ImageTree((8, 8), root=tmp_path)
    # pathlib order compares part by part: "a" < "a-b" although the string "a-b/x.PNG" < "a/b/y.JPG".
    assert tree.ids() == [".dot/h.tiff", ".hidden.png", "a/b/y.JPG", "a/x.png", "a-b/x.PNG", "deep/er/p.webp",
                          "g.gif", "q.ppm", "t.TIF", "w.bmp", "z.jpeg"]
    assert len(tree) == 11 and tree.classnames == [] and tree.labels() == [-1] * 11
    sample = tree.load("a/x.png")
    assert sample.label == -1 and sample.prompt == "" and sample.mask is None
    assert torch.equal(sample.image, resize_center_crop(read_image(tmp_path / "a/x.png"), (8, 8)))
    assert tree.source_files("g.gif") == [tmp_path / "g.gif"]
    assert isinstance(tree, Dataset) and DATASETS.get("image_tree") is ImageTree


def test_class_folders_label_the_tree_folder_by_folder(tmp_path):
    for folder, names in {"n01440764": ["1.JPEG", "0.webp"], "my_dog": ["a.png", ".b.bmp"], "cat": ["x.gif"],
                          ".cache": ["k.png"]}.items():
        for i, name in enumerate(names):
            _save(tmp_path / folder / name, 30 * i)
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "readme.txt").write_text("x")
    tree = ImageTree((8, 8), root=tmp_path)
    # Only folders holding an image are classes; a wnid gets CLIP's name even beside other folder names.
    assert tree.folders == [".cache", "cat", "my_dog", "n01440764"]
    assert tree.classnames == [".cache", "cat", "my dog", "tench"]
    assert tree.ids() == [".cache/k.png", "cat/x.gif", "my_dog/.b.bmp", "my_dog/a.png", "n01440764/0.webp",
                          "n01440764/1.JPEG"]
    assert tree.labels() == [0, 1, 2, 2, 3, 3] and tree.label("my_dog/a.png") == 2
    assert tree.load("n01440764/0.webp").prompt == "a photo of a tench."
    assert folder_classname("n01443537") == "goldfish" and folder_classname("A_b") == "A b"


def test_an_imagenet_train_layout_gives_the_image_folder_samples(tmp_path):
    """On ImageNet's own layout (wnid folders of .JPEG files) the tree and the evaluation's class folders agree."""
    for wnid in ("n01440764", "n01443537"):
        for k in range(2):
            _save(tmp_path / wnid / f"{wnid}_{k}.JPEG", 50 * k + 10, (24, 18))
    tree, folder = ImageTree((8, 8), root=tmp_path), ImageFolder((8, 8), root=tmp_path)
    assert tree.ids() == folder.ids() and tree.classnames == folder.classnames == ["tench", "goldfish"]
    assert tree.labels() == folder.labels() == [0, 0, 1, 1]
    for sample_id in tree.ids():
        a, b = tree.load(sample_id), folder.load(sample_id)
        assert torch.equal(a.image, b.image) and a.prompt == b.prompt and a.label == b.label


def test_files_beside_the_class_folders_make_the_tree_unlabelled(tmp_path):
    _save(tmp_path / "cat" / "x.png", 10)
    _save(tmp_path / "cat" / "kitten" / "y.png", 20)
    assert ImageTree((8, 8), root=tmp_path).classnames == []


def test_refusals_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="needs --data-root"):
        ImageTree((8, 8))
    with pytest.raises(DataError, match="not a directory"):
        ImageTree((8, 8), root=tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=f"{tmp_path}: no image files .*found below it"):
        ImageTree((8, 8), root=tmp_path)
    _save(tmp_path / "a.png", 1)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    tree = ImageTree((8, 8), root=tmp_path)
    with pytest.raises(DataError, match="bad.jpg"):
        tree.load("bad.jpg")
    with pytest.raises(DataError, match="unknown image tree sample id"):
        tree.load("c.png")
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm"} == IMAGE_SUFFIXES
