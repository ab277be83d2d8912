"""Image/label readers, CLIP resize + center crop for images and masks, ImageNet class tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from aft_bench.data.base import DataError
from aft_bench.data.classnames import (
    imagenet_classname,
    imagenet_classnames,
    imagenet_index,
    imagenet_wnids,
    is_imagenet_wnid,
)
from aft_bench.data.io import read_image, read_label_png
from aft_bench.data.transforms import resize_center_crop, resize_center_crop_mask, resized_shape


def encode_ids(ids: np.ndarray) -> np.ndarray:
    """H x W class ids -> H x W x 3 uint8 with R = id % 256, G = id // 256 (ImageNet-S / Broden)."""
    rgb = np.zeros((*ids.shape, 3), dtype=np.uint8)
    rgb[..., 0] = ids % 256
    rgb[..., 1] = ids // 256
    return rgb


def random_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------- read_image


def test_read_image_png_is_exact(tmp_path: Path) -> None:
    rgb = random_rgb(7, 11)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.shape == (3, 7, 11) and image.dtype == torch.float32 and image.is_contiguous()
    torch.testing.assert_close(image, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, rtol=0, atol=0)


def test_read_image_jpeg_close_to_source(tmp_path: Path) -> None:
    rgb = np.zeros((16, 24, 3), dtype=np.uint8)
    rgb[:, :12] = (200, 30, 60)
    rgb[:, 12:] = (10, 220, 90)
    Image.fromarray(rgb).save(tmp_path / "a.JPEG", quality=98)
    image = read_image(tmp_path / "a.JPEG")
    assert image.shape == (3, 16, 24)
    assert 0.0 <= image.min() and image.max() <= 1.0
    # away from the colour edge JPEG reproduces flat colour within a few levels
    assert torch.allclose(image[:, :, :8], torch.tensor([200, 30, 60]).view(3, 1, 1) / 255, atol=6 / 255)


def test_read_image_grey_rgba_palette_16bit(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    out = read_image(tmp_path / "grey.png")
    assert out.shape == (3, 3, 4)
    for c in range(3):
        torch.testing.assert_close(out[c], torch.from_numpy(grey).float() / 255)

    rgba = np.dstack([random_rgb(3, 4), np.full((3, 4), 7, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    torch.testing.assert_close(
        read_image(tmp_path / "rgba.png"), torch.from_numpy(rgba[..., :3]).permute(2, 0, 1).float() / 255
    )

    pal = Image.fromarray(np.array([[0, 1], [1, 0]], dtype=np.uint8), mode="P")
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.save(tmp_path / "pal.png")
    out = read_image(tmp_path / "pal.png")
    assert torch.allclose(out[:, 0, 1], torch.tensor([200.0, 100.0, 50.0]) / 255)
    assert torch.allclose(out[:, 0, 0], torch.tensor([10.0, 20.0, 30.0]) / 255)

    deep = np.array([[0, 65535]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    out = read_image(tmp_path / "deep.png")
    assert out[:, 0, 0].tolist() == [0.0] * 3 and out[:, 0, 1].tolist() == [1.0] * 3


def test_truncated_jpeg_raises_naming_file(tmp_path: Path) -> None:
    Image.fromarray(random_rgb(64, 64)).save(tmp_path / "full.JPEG", quality=90)
    data = (tmp_path / "full.JPEG").read_bytes()
    bad = tmp_path / "cut.JPEG"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.JPEG") as info:
        read_image(bad)
    assert "--on-error skip" in str(info.value) and "re-download" in str(info.value)


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 30])
def test_garbage_files_raise(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    with pytest.raises(DataError, match="bad.png"):
        read_image(bad)
    with pytest.raises(DataError, match="bad.png"):
        read_label_png(bad)


def test_png_with_broken_crc_raises(tmp_path: Path) -> None:
    Image.fromarray(random_rgb(8, 8)).save(tmp_path / "ok.png")
    data = bytearray((tmp_path / "ok.png").read_bytes())
    idat = data.index(b"IDAT")
    data[idat + 10] ^= 0xFF  # flip a compressed byte: chunk CRC no longer matches
    (tmp_path / "flip.png").write_bytes(bytes(data))
    with pytest.raises(DataError, match="flip.png"):
        read_image(tmp_path / "flip.png")


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.JPEG"):
        read_image(tmp_path / "nope.JPEG")


# ------------------------------------------------------------------------------------ read_label_png


def test_read_label_png_decodes_r_plus_256g(tmp_path: Path) -> None:
    ids = np.array([[0, 1, 255, 256], [300, 919, 1000, 65535]], dtype=np.int64)
    Image.fromarray(encode_ids(ids)).save(tmp_path / "m.png")
    out = read_label_png(tmp_path / "m.png")
    assert out.dtype == np.int64 and out.shape == (2, 4)
    np.testing.assert_array_equal(out, ids)


def test_read_label_png_palette_and_rgba(tmp_path: Path) -> None:
    ids = np.array([[0, 300], [1000, 3]])
    rgb = encode_ids(ids)
    Image.fromarray(np.dstack([rgb, np.full(ids.shape, 255, np.uint8)]), mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "a.png"), ids)
    Image.fromarray(rgb).quantize(colors=4, method=Image.Quantize.MAXCOVERAGE).save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_array_equal(read_label_png(tmp_path / "p.png"), ids)


def test_read_label_png_refuses_grey_and_jpeg(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4), np.uint8), mode="L").save(tmp_path / "grey.png")
    with pytest.raises(DataError, match="grey.png.*single-channel"):
        read_label_png(tmp_path / "grey.png")
    Image.fromarray(encode_ids(np.ones((4, 4), np.int64))).save(tmp_path / "m.jpg")
    with pytest.raises(DataError, match="m.jpg.*PNG"):
        read_label_png(tmp_path / "m.jpg")


# ----------------------------------------------------------------------------------------- transforms


@pytest.mark.parametrize(
    ("hw", "size", "expected"),
    [((100, 200), (50, 50), (50, 100)), ((200, 100), (50, 50), (100, 50)), ((37, 51), (32, 32), (32, 44)),
     ((40, 40), (30, 60), (60, 60)), ((80, 20), (30, 60), (240, 60))],
)
def test_resized_shape(hw: tuple[int, int], size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert resized_shape(*hw, size) == expected


@pytest.mark.parametrize(("h", "w", "s"), [(37, 51, 32), (51, 37, 32), (20, 26, 48), (64, 64, 32), (33, 90, 33)])
def test_resize_center_crop_matches_torchvision(h: int, w: int, s: int) -> None:
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(h * w))
    ours = resize_center_crop(image, (s, s))
    ref = TF.resize(image, [s], interpolation=InterpolationMode.BICUBIC, antialias=True)
    ref = TF.center_crop(ref, [s, s]).clamp(0, 1)
    assert ours.shape == (3, s, s) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_resize_center_crop_identity_and_clamp() -> None:
    image = torch.rand(3, 9, 9)
    assert torch.equal(resize_center_crop(image, (9, 9)), image)
    checker = (torch.arange(16).view(4, 4) + torch.arange(16).view(4, 4).T) % 2
    up = resize_center_crop(checker.float().expand(3, 4, 4), (13, 13))  # bicubic overshoots
    assert up.min() >= 0.0 and up.max() <= 1.0


def test_resize_center_crop_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="C x H x W"):
        resize_center_crop(torch.rand(1, 3, 4, 4), (2, 2))
    with pytest.raises(ValueError, match="positive"):
        resize_center_crop(torch.rand(3, 4, 4), (0, 2))
    with pytest.raises(ValueError, match="integer mask"):
        resize_center_crop_mask(torch.rand(4, 4), (2, 2))


def test_mask_resize_keeps_values_and_dtype() -> None:
    mask = torch.randint(-1, 2, (23, 41), dtype=torch.int8, generator=torch.Generator().manual_seed(0))
    out = resize_center_crop_mask(mask, (16, 16))
    assert out.dtype == torch.int8 and out.shape == (16, 16)
    assert set(out.unique().tolist()) <= {-1, 0, 1}
    assert torch.equal(resize_center_crop_mask(mask, (23, 41)), mask)


def _blob(h: int, w: int) -> np.ndarray:
    """A disc, a bar and a thin stripe at known places (binary)."""
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - 0.45 * h) ** 2 + (xx - 0.4 * w) ** 2 < (0.22 * min(h, w)) ** 2
    bar = (np.abs(yy - 0.75 * h) < 0.06 * h) & (xx > 0.2 * w) & (xx < 0.9 * w)
    stripe = (xx >= int(0.8 * w)) & (xx < int(0.8 * w) + max(3, w // 12)) & (yy < 0.6 * h)
    return disc | bar | stripe


@pytest.mark.parametrize(
    ("h", "w", "size"),
    [(120, 90, (32, 32)), (90, 160, (48, 48)), (30, 40, (64, 64)), (77, 61, (24, 40)), (64, 64, (64, 64))],
)
def test_mask_stays_aligned_with_image(h: int, w: int, size: tuple[int, int]) -> None:
    shape = _blob(h, w)
    image = torch.from_numpy(shape).float().expand(3, h, w).clone()
    mask = torch.from_numpy(shape.astype(np.int8))
    from_image = (resize_center_crop(image, size)[0] > 0.5).numpy()
    moved = resize_center_crop_mask(mask, size).numpy().astype(bool)
    assert moved.shape == size and moved.any()
    # pixels within one pixel of the resized mask's boundary may differ, no others
    boundary = ndimage.binary_dilation(moved) & ~ndimage.binary_erosion(moved, border_value=1)
    disagree = from_image != moved
    assert not (disagree & ~boundary).any()
    assert disagree.sum() <= 0.5 * boundary.sum()


def test_mask_shift_would_be_caught() -> None:
    """The alignment check above is sensitive: a one-pixel shift of the mask breaks it."""
    shape = _blob(120, 90)
    image = torch.from_numpy(shape).float().expand(3, 120, 90).clone()
    from_image = (resize_center_crop(image, (32, 32))[0] > 0.5).numpy()
    moved = np.roll(resize_center_crop_mask(torch.from_numpy(shape.astype(np.int8)), (32, 32)).numpy(), 2, axis=1)
    moved = moved.astype(bool)
    boundary = ndimage.binary_dilation(moved) & ~ndimage.binary_erosion(moved, border_value=1)
    assert ((from_image != moved) & ~boundary).any()


# ----------------------------------------------------------------------------------------- classnames


def test_imagenet_tables() -> None:
    wnids, names = imagenet_wnids(), imagenet_classnames()
    assert len(wnids) == len(names) == 1000 == len(set(wnids))
    assert wnids == sorted(wnids)
    assert (wnids[0], names[0]) == ("n01440764", "tench")
    assert imagenet_index("n01443537") == 1 and imagenet_classname("n01443537") == "goldfish"
    assert imagenet_classname("n01484850") == "great white shark"
    assert imagenet_index("n15075141") == 999 and imagenet_classname("n15075141") == "toilet paper"
    assert is_imagenet_wnid("n01440764") and not is_imagenet_wnid("n99999999")


def test_unknown_wnid_suggests_close_ids() -> None:
    with pytest.raises(DataError, match="n01440765.*n01440764"):
        imagenet_index("n01440765")
    with pytest.raises(DataError, match="'cat'"):
        imagenet_classname("cat")


def test_mask_nearest_samples_pixel_centres() -> None:
    """Downscaling by 3 takes each 3x3 block's centre pixel (the block's centre in image geometry)."""
    mask = torch.zeros(9, 12, dtype=torch.int8)
    mask[1::3, 1::3] = 1
    mask[4, 4] = -1
    out = resize_center_crop_mask(mask, (3, 4))
    expected = torch.ones(3, 4, dtype=torch.int8)
    expected[1, 1] = -1
    assert torch.equal(out, expected)
