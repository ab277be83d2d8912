"""Broden loader on a fixture in the real broden1_224 layout (index.csv, label.csv, category.csv, images/)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aft_bench.data.base import DataError, Dataset
from aft_bench.data.broden import Broden, BrodenLabels, parse_categories
from aft_bench.data.transforms import resize_center_crop, resize_center_crop_mask

INDEX_HEADER = ["image", "split", "ih", "iw", "sh", "sw", "color", "object", "part", "material", "scene", "texture"]
CATEGORIES = ["color", "object", "part", "material", "scene", "texture"]
LABELS = [  # number, name, category, frequency, coverage, syns
    (1, "black-c", "color(2)", 2, 10.5, ""),
    (2, "red-c", "color(3)", 3, 20.0, ""),
    (38, "street-s", "scene(1)", 1, 100.0, ""),
    (294, "red", "object(1)", 1, 2.0, ""),
    (300, "wall", "part(1);object(5)", 6, 30.0, "walls"),
    (301, "leg", "part(4)", 4, 3.0, ""),
    (302, "wood", "material(2);object(2)", 4, 8.0, "timber"),
    (313, "blotchy", "texture(1)", 1, 100.0, ""),
    (314, "banded", "texture(1)", 1, 100.0, ""),
]
ADE, SURFACE, DTD = "ade20k/ADE_train_00000001.jpg", "opensurfaces/100.jpg", "dtd/g_0106.jpg"


def encode_ids(ids: np.ndarray) -> np.ndarray:
    rgb = np.zeros((*ids.shape, 3), dtype=np.uint8)
    rgb[..., 0] = ids % 256
    rgb[..., 1] = ids // 256
    return rgb


def label_map(h: int, w: int, value: int, rows: slice) -> np.ndarray:
    ids = np.zeros((h, w), dtype=np.int64)
    ids[rows, 1 : w - 1] = value
    return ids


def make_broden(root: Path) -> dict[str, np.ndarray]:
    """Writes the three tables, three images and their label PNGs (ids >= 256 use G); returns file -> ids."""
    images = root / "images"
    maps = {
        "ade20k/ADE_train_00000001_color.png": label_map(12, 16, 2, slice(0, 6)),
        "ade20k/ADE_train_00000001_object.png": label_map(12, 16, 300, slice(2, 10)),
        "ade20k/ADE_train_00000001_part_1.png": label_map(12, 16, 301, slice(8, 12)),
        "ade20k/ADE_train_00000001_part_2.png": label_map(12, 16, 300, slice(0, 2)),
        "opensurfaces/100_color.png": label_map(10, 10, 1, slice(0, 10)),
        "opensurfaces/100_material.png": label_map(10, 10, 302, slice(3, 7)),
        "dtd/g_0106_color.png": label_map(18, 22, 2, slice(4, 9)),
    }
    for name, ids in maps.items():
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(encode_ids(ids)).save(images / name)
    rng = np.random.default_rng(0)
    for name, (h, w) in ((ADE, (24, 32)), (SURFACE, (20, 20)), (DTD, (18, 22))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / name, quality=95)
    rows = [
        [ADE, "train", 24, 32, 12, 16, "ade20k/ADE_train_00000001_color.png", "ade20k/ADE_train_00000001_object.png",
         "ade20k/ADE_train_00000001_part_1.png;ade20k/ADE_train_00000001_part_2.png", "", "38", ""],
        [SURFACE, "val", 20, 20, 10, 10, "opensurfaces/100_color.png", "", "", "opensurfaces/100_material.png", "", ""],
        [DTD, "train", 18, 22, 18, 22, "dtd/g_0106_color.png", "", "", "", "", "314;313"],
    ]
    write_csv(root / "index.csv", INDEX_HEADER, rows)
    write_csv(root / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"], LABELS)
    write_csv(root / "category.csv", ["name", "first", "last", "count", "frequency"],
              [(c, 1, 314, 2, 3) for c in CATEGORIES])
    return maps


def write_csv(path: Path, header: list[str], rows: list) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def broden(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "broden1_224"
    return root, make_broden(root)


def test_tables_and_listing(broden: tuple[Path, dict]) -> None:
    root, _ = broden
    ds = Broden(16, root=root.parent)  # finds broden1_224 inside
    assert isinstance(ds, Dataset) and ds.classnames == [] and ds.skipped == {}
    assert ds.ids() == [ADE, SURFACE, DTD] and len(ds) == 3
    assert ds.categories == CATEGORIES
    assert ds.label_names[300] == "wall" and ds.label_names[2] == "red-c"
    assert ds.label_categories[300] == ["part", "object"] and ds.label_categories[1] == ["color"]
    assert ds.primary_category[300] == "object" and ds.primary_category[302] == "material"  # tie: first listed
    assert Broden(16, root=root, split="train").ids() == [ADE, DTD]
    assert Broden(16, root=root, split="val").ids() == [SURFACE]
    with pytest.raises(DataError, match="split='test' is not one of \\['train', 'val'\\]"):
        Broden(16, root=root, split="test")


def test_load_image_sample(broden: tuple[Path, dict]) -> None:
    root, _ = broden
    ds = Broden((12, 12), root=root)
    sample = ds.load(ADE)
    assert sample.prompt == "" and sample.label == -1 and sample.mask is None and sample.id == ADE
    stored = torch.from_numpy(np.array(Image.open(root / "images" / ADE).convert("RGB"))).permute(2, 0, 1) / 255
    torch.testing.assert_close(sample.image, resize_center_crop(stored.float(), (12, 12)))


def test_load_labels_decodes_pixel_and_image_labels(broden: tuple[Path, dict]) -> None:
    root, maps = broden
    ds = Broden(16, root=root)
    labels = ds.load_labels(ADE)
    assert isinstance(labels, BrodenLabels)
    assert set(labels.pixel) == set(labels.image) == set(CATEGORIES)
    assert [m.shape for m in labels.pixel["part"]] == [(12, 16), (12, 16)]  # two overlapping part planes
    expected = {"color": ["ade20k/ADE_train_00000001_color.png"], "object": ["ade20k/ADE_train_00000001_object.png"],
                "part": ["ade20k/ADE_train_00000001_part_1.png", "ade20k/ADE_train_00000001_part_2.png"]}
    for category, files in expected.items():
        for got, name in zip(labels.pixel[category], files, strict=True):
            assert got.dtype == torch.int64
            np.testing.assert_array_equal(got.numpy(), maps[name])
    assert set(labels.pixel["object"][0].unique().tolist()) == {0, 300}  # R = 44, G = 1
    assert labels.pixel["material"] == [] and labels.image == {**{c: [] for c in CATEGORIES}, "scene": [38]}
    texture = ds.load_labels(DTD)
    assert texture.image["texture"] == [314, 313] and len(texture.pixel["color"]) == 1
    assert ds.label_shape(SURFACE) == (10, 10)


def test_labels_cropped_like_the_image(broden: tuple[Path, dict]) -> None:
    root, maps = broden
    ds = Broden((8, 8), root=root)
    labels = ds.load_labels(ADE, size=(8, 8))  # 24x32 image, 12x16 labels: both crop the centre square
    stored = torch.from_numpy(maps["ade20k/ADE_train_00000001_object.png"])
    assert torch.equal(labels.pixel["object"][0], resize_center_crop_mask(stored, (8, 8)))
    assert labels.pixel["object"][0].shape == (8, 8) and labels.image["scene"] == [38]


def test_concepts(broden: tuple[Path, dict]) -> None:
    root, _ = broden
    ds = Broden(16, root=root)
    assert ds.concepts() == ["black", "red", "street", "wall", "leg", "wood", "blotchy", "banded"]
    assert ds.concepts(clean=False)[:4] == ["black-c", "red-c", "street-s", "red"]
    assert ds.concepts(categories=["object"]) == ["red", "wall", "wood"]
    with pytest.raises(DataError, match="unknown categories \\['colour'\\]"):
        ds.concepts(categories=["colour"])


def test_parse_categories() -> None:
    assert parse_categories("material(36);object(3)") == {"material": 36, "object": 3}
    assert parse_categories("color") == {"color": 0} and parse_categories("-") == {} and parse_categories("") == {}


def test_corrupt_and_missing_files_name_the_file(broden: tuple[Path, dict]) -> None:
    root, _ = broden
    ds = Broden(16, root=root)
    bad = root / "images" / SURFACE
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="100.jpg"):
        ds.load(SURFACE)
    (root / "images" / "opensurfaces/100_material.png").unlink()
    with pytest.raises(DataError, match="100_material.png: no such file"):
        ds.load_labels(SURFACE)
    wrong = np.zeros((9, 10), dtype=np.int64)
    Image.fromarray(encode_ids(wrong)).save(root / "images" / "dtd/g_0106_color.png")
    message = r"g_0106_color.png is 10x9 \(WxH\) but index.csv gives segmentation size 22x18"
    with pytest.raises(DataError, match=message):
        ds.load_labels(DTD)
    Image.new("RGB", (30, 24)).save(root / "images" / ADE)
    with pytest.raises(DataError, match=r"ADE_train_00000001.jpg is 30x24 \(WxH\) but index.csv says 32x24"):
        ds.load(ADE)
    with pytest.raises(DataError, match="unknown Broden sample id"):
        ds.load("ade20k/none.jpg")


def test_table_errors(broden: tuple[Path, dict]) -> None:
    root, _ = broden
    with pytest.raises(DataError, match="--data-root.*index.csv"):
        Broden(16, root=None)
    with pytest.raises(DataError, match="does not hold the expected files"):
        Broden(16, root=root / "images")
    lines = (root / "index.csv").read_text().splitlines()
    (root / "index.csv").write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(DataError, match=f"index.csv:5: image '{ADE}' listed twice"):
        Broden(16, root=root)
    skipping = Broden(16, root=root, on_error="skip")
    assert skipping.skipped == {"duplicate image": 1} and len(skipping) == 3
    (root / "index.csv").write_text("\n".join([lines[0], lines[1].replace(",24,32,", ",24,x,")]) + "\n")
    with pytest.raises(DataError, match="index.csv:2: column 'iw' is 'x'"):
        Broden(16, root=root)
    (root / "index.csv").write_text(lines[0].replace(",texture", "") + "\n")
    with pytest.raises(DataError, match="no column for categories \\['texture'\\]"):
        Broden(16, root=root)
    (root / "label.csv").write_text("id,name\n1,black\n")
    with pytest.raises(DataError, match="label.csv: header .* lacks columns \\['number', 'category'\\]"):
        Broden(16, root=root)
    (root / "category.csv").unlink()
    with pytest.raises(DataError, match="missing .*category.csv"):
        Broden(16, root=root)
