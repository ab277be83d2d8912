"""ImageNet-Segmentation loader on a MATLAB v7.3 (HDF5) fixture laid out like gtsegs_ijcv.mat."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from aft_bench.data.base import Batch, DataError, Dataset, Sample, float_pixels
from aft_bench.data.imagenet_seg import DEFAULT_PROMPT, ImageNetSegmentation, decode_matlab_chars
from aft_bench.data.transforms import resize_center_crop, resize_center_crop_mask, resize_center_crop_uint8

# tench (ImageNet-1k index 0), a synset outside ImageNet-1k, chainsaw (491)
NAMES = ("n01440764_18", "n09999999_3", "n03000684_7")
SHAPES = ((20, 32), (30, 18), (24, 24))  # (H, W): non-square both ways, so a wrong transpose fails


def make_arrays(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An H x W x 3 uint8 image with a bright object in its top-left part and the H x W object mask."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 80, size=(h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[2 : h // 2, 3 : 2 * w // 3] = 1
    image[mask == 1] = (250, 200, 40)
    return image, mask


def matlab_chars(text: str) -> np.ndarray:
    """A MATLAB 1 x N char array as v7.3 stores it: uint16 code units, transposed to N x 1."""
    return np.array([[ord(c)] for c in text], dtype=np.uint16)


def write_mat(
    path: Path,
    images: list[np.ndarray],
    masks: list[np.ndarray],
    names: list[str] | None = None,
    nested_gt: bool = True,
) -> Path:
    """Writes ``value.img`` / ``value.gt`` / ``value.id`` cell arrays the way MATLAB v7.3 does.

    Every array is stored transposed (column-major): images 3 x W x H (grey W x H), masks W x H. Cells
    are N x 1 datasets of object references into ``#refs#``; each gt element is itself a 1 x 1 cell.
    """
    n = len(images)
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        value = f.create_group("value")
        cells = {key: np.empty((n, 1), dtype=h5py.ref_dtype) for key in ("img", "gt", "id")}
        for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
            stored = image.transpose(2, 1, 0) if image.ndim == 3 else image.T
            cells["img"][i, 0] = refs.create_dataset(f"img{i}", data=stored).ref
            gt = refs.create_dataset(f"gt{i}", data=mask.T)
            if nested_gt:
                gt = refs.create_dataset(f"gtcell{i}", data=np.array([[gt.ref]], dtype=h5py.ref_dtype))
            cells["gt"][i, 0] = gt.ref
            if names is not None:
                chars = refs.create_dataset(f"id{i}", data=matlab_chars(names[i]))
                chars.attrs["MATLAB_class"] = np.bytes_(b"char")
                cells["id"][i, 0] = chars.ref
        for key in ("img", "gt", "id") if names is not None else ("img", "gt"):
            value.create_dataset(key, data=cells[key]).attrs["MATLAB_class"] = np.bytes_(b"cell")
    with path.open("r+b") as f:  # MATLAB's text header lives in the HDF5 user block
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2014 HDF5 schema 1.00 .")
    return path


@pytest.fixture
def fixture_file(tmp_path: Path) -> tuple[Path, list[np.ndarray], list[np.ndarray]]:
    arrays = [make_arrays(h, w, seed) for seed, (h, w) in enumerate(SHAPES)]
    images, masks = [a[0] for a in arrays], [a[1] for a in arrays]
    return write_mat(tmp_path / "gtsegs_ijcv.mat", images, masks, list(NAMES)), images, masks


def test_reads_transposed_arrays_exactly(fixture_file: tuple[Path, list, list]) -> None:
    path, images, masks = fixture_file
    ds = ImageNetSegmentation((16, 16), root=path)
    assert isinstance(ds, Dataset) and len(ds) == 3 and ds.skipped == {}
    assert ds.ids() == ["imagenet_seg/0", "imagenet_seg/1", "imagenet_seg/2"]
    for sample_id, image, mask in zip(ds.ids(), images, masks, strict=True):
        got_image, got_mask = ds.read(sample_id)
        assert got_image.shape == image.shape and got_mask.shape == mask.shape
        np.testing.assert_array_equal(np.round(got_image * 255).astype(np.uint8), image)
        np.testing.assert_array_equal(got_mask, mask == 1)


@pytest.mark.parametrize("size", [(16, 16), (12, 20)])
def test_load_resizes_image_and_mask_together(fixture_file: tuple[Path, list, list], size: tuple[int, int]) -> None:
    path, images, masks = fixture_file
    ds = ImageNetSegmentation(size, root=path.parent)  # the folder holding the file
    for sample_id, image, mask in zip(ds.ids(), images, masks, strict=True):
        sample = ds.load(sample_id)
        pixels = torch.from_numpy(image).permute(2, 0, 1)
        expected_image = resize_center_crop_uint8(pixels, size)  # the stored uint8, resized in uint8
        expected_mask = resize_center_crop_mask(torch.from_numpy(mask.astype(np.int8)), size)
        torch.testing.assert_close(sample.image, expected_image, rtol=0, atol=0)
        # within the uint8 resize's rounding (and the float path's clamped overshoot) of the float resize
        assert (float_pixels(sample.image) - resize_center_crop(pixels.float() / 255, size)).abs().mean() <= 1 / 255
        assert sample.mask.dtype == torch.int8 and torch.equal(sample.mask, expected_mask)
        assert set(sample.mask.unique().tolist()) == {0, 1}
    batch = Batch.collate([ds.load(i) for i in ds.ids()])
    assert batch.masks is not None and batch.masks.shape == (3, *size)


def test_labels_and_prompts_from_image_names(fixture_file: tuple[Path, list, list]) -> None:
    path, _, _ = fixture_file
    ds = ImageNetSegmentation(16, root=path)
    assert ds.image_names == list(NAMES) and len(ds.classnames) == 1000
    samples = [ds.load(i) for i in ds.ids()]
    assert [s.label for s in samples] == [0, -1, 491]
    assert [s.prompt for s in samples] == ["a photo of a tench.", DEFAULT_PROMPT, "a photo of a chainsaw."]
    generic = ImageNetSegmentation(16, root=path, use_labels=False, prompt="a photo.")
    assert [generic.label(i) for i in generic.ids()] == [-1, -1, -1]
    assert generic.load("imagenet_seg/0").prompt == "a photo."


def test_single_level_cells_grey_image_and_no_names(tmp_path: Path) -> None:
    image, mask = make_arrays(14, 22, 0)
    grey = image[..., 0]
    mask = mask * 255  # any nonzero value is the object
    path = write_mat(tmp_path / "gt.mat", [image, grey], [mask, mask], names=None, nested_gt=False)
    ds = ImageNetSegmentation(8, root=path)
    assert ds.image_names == ["", ""] and ds.load("imagenet_seg/0").label == -1
    got, got_mask = ds.read("imagenet_seg/1")
    assert got.shape == (14, 22, 3)
    np.testing.assert_array_equal(np.round(got[..., 2] * 255).astype(np.uint8), grey)
    np.testing.assert_array_equal(got_mask, mask > 0)


def test_handle_is_reopened_per_process_and_pickles(fixture_file: tuple[Path, list, list]) -> None:
    path, _, _ = fixture_file
    ds = ImageNetSegmentation(16, root=path)
    first = ds.load("imagenet_seg/2")
    assert ds._handle is not None
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._handle is None and torch.equal(copy.load("imagenet_seg/2").image, first.image)
    ds._pid = -1  # as seen from a forked worker: the inherited handle is not used
    inherited = ds._handle
    assert torch.equal(ds.load("imagenet_seg/2").mask, first.mask)
    assert ds._handle is not inherited
    inherited.close()
    # DataLoader workers forked after the parent opened the file read through their own handles
    workers = torch.utils.data.DataLoader(_ById(ds), batch_size=None, num_workers=2, multiprocessing_context="fork")
    loaded = {s.id: s for s in workers}
    assert sorted(loaded) == ds.ids() and torch.equal(loaded["imagenet_seg/2"].image, first.image)
    ds.close()
    assert ds._handle is None


class _ById(torch.utils.data.Dataset):
    """Map-style view for a DataLoader."""

    def __init__(self, ds: ImageNetSegmentation) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> Sample:
        return self.ds.load(self.ds.ids()[index])


def test_root_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data-root.*gtsegs_ijcv.mat"):
        ImageNetSegmentation(16, root=None)
    with pytest.raises(DataError, match="does not exist"):
        ImageNetSegmentation(16, root=tmp_path / "missing.mat")
    (tmp_path / "other.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    with pytest.raises(DataError, match=r"no gtsegs_ijcv.mat .*other.mat"):
        ImageNetSegmentation(16, root=tmp_path)
    with pytest.raises(DataError, match="other.mat: cannot open as HDF5"):
        ImageNetSegmentation(16, root=tmp_path / "other.mat")
    with h5py.File(tmp_path / "empty.mat", "w") as f:
        f.create_group("value")
    with pytest.raises(DataError, match="no cell array /value/img"):
        ImageNetSegmentation(16, root=tmp_path / "empty.mat")


def test_inconsistent_contents(tmp_path: Path) -> None:
    image, mask = make_arrays(10, 16, 0)
    path = write_mat(tmp_path / "a.mat", [image, image], [mask, mask[:, :12]])
    ds = ImageNetSegmentation(8, root=path)
    ds.load("imagenet_seg/0")
    with pytest.raises(DataError, match=r"a.mat image 1: mask is 12x10 \(WxH\) but the image is 16x10"):
        ds.load("imagenet_seg/1")
    for bad in ("imagenet_seg/2", "imagenet_seg/x", "imagenet_seg/01", "0"):
        with pytest.raises(DataError, match="unknown ImageNet-Segmentation sample id"):
            ds.load(bad)
    ds.close()
    with h5py.File(path, "r+") as f:
        del f["value/gt"]
        f["value"].create_dataset("gt", data=np.array([[f["#refs#/gt0"].ref]], dtype=h5py.ref_dtype))
    with pytest.raises(DataError, match="2 images but 1 masks"):
        ImageNetSegmentation(8, root=path)


def test_decode_matlab_chars() -> None:
    assert decode_matlab_chars(matlab_chars("n01440764_18")) == "n01440764_18"
    assert decode_matlab_chars(np.array([[110, 0, 49]], dtype=np.uint16)) == "n1"
