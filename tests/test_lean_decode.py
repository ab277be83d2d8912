"""The lean decode path: one read per file, uint8 resize, masks indexed without float, and the draft-mode bound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from aft_bench.data import io as data_io
from aft_bench.data.base import float_pixels
from aft_bench.data.imagenet_s import ImageNetS, write_synthetic
from aft_bench.data.io import read_image, read_image_uint8, read_label_png
from aft_bench.data.transforms import (
    _crop_box,
    resize_center_crop,
    resize_center_crop_mask,
    resize_center_crop_uint8,
    resized_shape,
)

SIZE = (224, 224)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three textured 900 x 1200 images (JPEG, draft mode applies at 224 px) with masks."""
    return write_synthetic(tmp_path_factory.mktemp("large") / "ImageNetS10", 3, size=(900, 1200), seed=1)


def _jpegs(root: Path) -> list[Path]:
    return sorted((root / "validation").glob("*/*.JPEG"))


def test_uint8_reader_gives_the_float_readers_pixels(large: Path) -> None:
    path = _jpegs(large)[0]
    pixels, stored = read_image_uint8(path)
    assert pixels.dtype == torch.uint8 and stored == (900, 1200) and tuple(pixels.shape) == (3, 900, 1200)
    assert torch.equal(pixels.float() / 255, read_image(path))


def test_uint8_resize_is_the_float_resize_up_to_its_rounding(large: Path) -> None:
    for path in _jpegs(large):
        pixels, _ = read_image_uint8(path)
        levels = resize_center_crop_uint8(pixels, SIZE)
        assert levels.dtype == torch.uint8 and levels.is_contiguous()
        lean = float_pixels(levels)
        reference = resize_center_crop(pixels.float() / 255, SIZE)
        assert lean.dtype == torch.float32 and lean.shape == reference.shape
        difference = (lean - reference).abs()
        assert float(difference.mean()) <= 0.5 / 255 and float(difference.max()) <= 2 / 255


def test_draft_decode_stays_within_the_stated_bound(large: Path) -> None:
    for path in _jpegs(large):
        full, stored = read_image_uint8(path)
        draft, stored_too = read_image_uint8(path, draft=SIZE)
        assert stored_too == stored and draft.shape[1] < full.shape[1]  # decoded smaller
        assert min(draft.shape[1:]) >= data_io.DRAFT_MARGIN * SIZE[0]
        difference = (float_pixels(resize_center_crop_uint8(full, SIZE))
                      - float_pixels(resize_center_crop_uint8(draft, SIZE, stored))).abs()
        assert float(difference.mean()) <= 1 / 255 and float(difference.max()) <= 8 / 255


def test_no_draft_below_the_margin(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path / "ImageNetS10", 1, size=(375, 500))
    path = _jpegs(root)[0]
    assert torch.equal(read_image_uint8(path, draft=SIZE)[0], read_image_uint8(path)[0])  # 375 < 2 x 224


@pytest.mark.parametrize(("h", "w", "size"), [(375, 500, (224, 224)), (333, 500, (224, 224)), (64, 40, (48, 48)),
                                               (50, 50, (48, 64)), (17, 300, (32, 32)), (224, 224, (224, 224)),
                                               (40, 30, (96, 80))])
def test_mask_indexing_equals_torch_nearest_exact(h: int, w: int, size: tuple[int, int]) -> None:
    mask = torch.randint(-1, 2, (h, w), generator=torch.Generator().manual_seed(h * w)).to(torch.int8)
    out = resize_center_crop_mask(mask, size)
    new_h, new_w = resized_shape(h, w, size)
    full = F.interpolate(mask.float()[None, None], size=(new_h, new_w), mode="nearest-exact")[0, 0].to(torch.int8)
    top, left = _crop_box(new_h, new_w, size)
    assert out.dtype == torch.int8 and torch.equal(out, full[top : top + size[0], left : left + size[1]])


def test_label_ids_in_uint16_equal_int64(large: Path) -> None:
    path = sorted((large / "validation-segmentation").glob("*/*.png"))[0]
    wide, narrow = read_label_png(path), read_label_png(path, np.uint16)
    assert wide.dtype == np.int64 and narrow.dtype == np.uint16 and np.array_equal(wide, narrow)


def test_each_file_is_read_once(large: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    original = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.suffix) or original(self))
    opened: list[object] = []
    original_open = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: opened.append(fp) or original_open(fp, *a, **k))
    dataset = ImageNetS(large, SIZE)
    sample = dataset.load(dataset.ids()[0])
    assert sorted(reads) == [".JPEG", ".png"]  # one read of each file
    assert all(not isinstance(fp, (str, Path)) for fp in opened)  # PIL parses the bytes read, never the path
    assert sample.image.dtype == torch.uint8 and sample.mask.dtype == torch.int8


def test_draft_is_opt_in_and_keeps_the_geometry(large: Path) -> None:
    plain, drafted = ImageNetS(large, SIZE), ImageNetS(large, SIZE, draft=True)
    sample_id = plain.ids()[0]
    a, b = plain.load(sample_id), drafted.load(sample_id)
    assert torch.equal(a.mask, b.mask) and a.image.shape == b.image.shape
    assert 0 < float((float_pixels(a.image) - float_pixels(b.image)).abs().mean()) <= 1 / 255
