"""The caption file dataset: CSV (with a header) and JSONL rows of (image path, caption), paths relative to the
file's folder or ``--data-root``, every row a sample, malformed files refused naming the file and row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import DataError, Dataset
from aft_bench.data.caption_file import CaptionFile
from aft_bench.data.io import read_image
from aft_bench.data.transforms import resize_center_crop


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    for i, name in enumerate(["a.png", "sub/b.jpg", "c.webp"]):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((18, 26, 3), 60 * i + 20, dtype=np.uint8)).save(folder / name)
    return folder


def test_csv_rows_in_file_order(tmp_path, images):
    caps = tmp_path / "caps.csv"
    caps.write_text(f'path,caption,extra\nimages/a.png,a dark one,1\n{images / "sub/b.jpg"},"light, with a comma",2\n'
                    "images/a.png,again the first,3\n", encoding="utf-8")
    data = CaptionFile((8, 8), file=caps)
    assert data.ids() == ["2:images/a.png", f"3:{images / 'sub/b.jpg'}", "4:images/a.png"]
    assert [text for _, text in data.items] == ["a dark one", "light, with a comma", "again the first"]
    assert [path for path, _ in data.items] == [images / "a.png", images / "sub/b.jpg", images / "a.png"]
    sample = data.load("3:" + str(images / "sub/b.jpg"))
    assert sample.prompt == "light, with a comma" and sample.label == -1 and sample.mask is None
    assert torch.equal(sample.image, resize_center_crop(read_image(images / "sub/b.jpg"), (8, 8)))
    assert data.source_files("4:images/a.png") == [images / "a.png"]
    assert isinstance(data, Dataset) and data.classnames == [] and DATASETS.get("caption_file") is CaptionFile


def test_jsonl_rows_with_another_root(tmp_path, images):
    rows = [{"image": "a.png", "text": "dark"}, {"image": "c.webp", "text": ""}, {"image": "sub/b.jpg", "text": "é ✓"}]
    caps = tmp_path / "meta" / "caps.JSONL"
    caps.parent.mkdir()
    caps.write_text(json.dumps(rows[0]) + "\n\n" + "\n".join(json.dumps(r) for r in rows[1:]) + "\n", encoding="utf-8")
    data = CaptionFile((8, 8), root=images, file=caps)
    assert data.ids() == ["1:a.png", "2:c.webp", "3:sub/b.jpg"]  # rows counted without the blank line
    assert [data.load(i).prompt for i in data.ids()] == ["dark", "", "é ✓"]
    assert data.items[1][0] == images / "c.webp"


@pytest.mark.parametrize(("name", "text", "message"), [
    ("bad.csv", "file_name,label\nx.png,1\n", r"no column among \('path', 'image'"),
    ("bad.csv", "path,caption\n,empty path\n", r"bad.csv, row 2: empty 'path' or missing 'caption'"),
    ("bad.csv", "path,caption\nx.png\n", r"row 2: empty 'path' or missing 'caption'"),
    ("bad.csv", "path,caption\n", "has no rows"),
    ("bad.jsonl", '{"path": "x.png", "caption": "a"}\n{not json\n', r"bad.jsonl, line 2: not valid JSON"),
    ("bad.jsonl", '{"path": "x.png", "caption": "a"}\n["x.png", "b"]\n', r"line 2: not a JSON object"),
    ("bad.txt", "path,caption\nx.png,a\n", r"give a .csv file \(with a header\) or a .jsonl file"),
])
def test_malformed_files_are_refused_naming_the_file(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=message) as error:
        CaptionFile((8, 8), file=tmp_path / name)
    assert str(tmp_path / name) in str(error.value)


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="needs --dataset-arg file="):
        CaptionFile((8, 8))
    with pytest.raises(DataError, match="does not exist"):
        CaptionFile((8, 8), file=tmp_path / "none.csv")
    (tmp_path / "caps.csv").write_text("path,caption\nmissing.png,x\n")
    data = CaptionFile((8, 8), file=tmp_path / "caps.csv")
    with pytest.raises(DataError, match="missing.png: no such file"):
        data.load("2:missing.png")
    with pytest.raises(DataError, match="unknown caption file sample id"):
        data.load("3:missing.png")
