"""ImageNet-S validation loader on a small fixture written in the real on-disk format."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from aft_bench.data.base import Batch, DataError, Dataset
from aft_bench.data.classnames import imagenet_wnids
from aft_bench.data.imagenet_s import ImageNetS
from aft_bench.data.io import read_label_png
from aft_bench.data.transforms import resize_center_crop_mask

# three real ImageNet-1k classes: tench (0), goldfish (1), great white shark (2)
WNIDS = ("n01440764", "n01443537", "n01484850")
NAMES = ("tench", "goldfish", "great white shark")
SIZES = {WNIDS[0]: [(48, 64), (64, 40)], WNIDS[1]: [(50, 50), (36, 72)], WNIDS[2]: [(40, 56), (60, 44)]}
OTHER_ID = 300  # an object of another class; >= 256 so the id needs the G channel
IGNORE_ID = 1000


def encode_ids(ids: np.ndarray) -> np.ndarray:
    rgb = np.zeros((*ids.shape, 3), dtype=np.uint8)
    rgb[..., 0] = ids % 256
    rgb[..., 1] = ids // 256
    return rgb


def fixture_ids(h: int, w: int, own_id: int) -> np.ndarray:
    """Own object left, another class right, an ignored strip between them, background elsewhere."""
    ids = np.zeros((h, w), dtype=np.int64)
    ids[h // 4 : 3 * h // 4, w // 8 : w // 2] = own_id
    ids[h // 4 : 3 * h // 4, 5 * w // 8 : 7 * w // 8] = OTHER_ID
    ids[h // 4 : 3 * h // 4, w // 2 + 1 : 5 * w // 8 - 1] = IGNORE_ID
    return ids


def fixture_image(ids: np.ndarray, own_id: int) -> np.ndarray:
    """Dark background, red own object, green other object."""
    rgb = np.full((*ids.shape, 3), 40, dtype=np.uint8)
    rgb[ids == own_id] = (230, 30, 30)
    rgb[ids == OTHER_ID] = (30, 230, 30)
    return rgb


def make_imagenet_s(root: Path) -> dict[str, np.ndarray]:
    """Writes validation/<wnid>/<name>.JPEG and validation-segmentation/<wnid>/<name>.png; returns id -> ids."""
    written = {}
    for k, wnid in enumerate(WNIDS):
        own_id = k + 1  # 1-based index in the sorted category list
        (root / "validation" / wnid).mkdir(parents=True)
        (root / "validation-segmentation" / wnid).mkdir(parents=True)
        for j, (h, w) in enumerate(SIZES[wnid]):
            name = f"ILSVRC2012_val_{10 * k + j:08d}"
            ids = fixture_ids(h, w, own_id)
            Image.fromarray(fixture_image(ids, own_id)).save(root / "validation" / wnid / f"{name}.JPEG", quality=95)
            Image.fromarray(encode_ids(ids)).save(root / "validation-segmentation" / wnid / f"{name}.png")
            written[f"{wnid}/{name}"] = ids
    return written


def to_mask(ids: np.ndarray, foreground: np.ndarray) -> torch.Tensor:
    mask = np.zeros(ids.shape, dtype=np.int8)
    mask[foreground] = 1
    mask[ids == IGNORE_ID] = -1
    return torch.from_numpy(mask)


@pytest.fixture
def s919(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "imagenet-s" / "ImageNetS919"
    return root, make_imagenet_s(root)


def with_category_table(root: Path) -> Path:
    # the official table lists wnids one per line; ids come from the sorted list
    (root / "ImageNetS_categories_im919.txt").write_text("\n".join(reversed(WNIDS)) + "\n")
    return root


def test_lists_pairs_and_implements_protocol(s919: tuple[Path, dict]) -> None:
    root, written = s919
    ds = ImageNetS(root, (32, 32))
    assert isinstance(ds, Dataset)
    assert ds.ids() == sorted(written) and len(ds) == 6
    assert ds.skipped == {}
    assert len(ds.classnames) == 1000 and ds.classnames[1] == "goldfish"


def test_fixture_masks_decode_to_written_ids(s919: tuple[Path, dict]) -> None:
    root, written = s919
    ds = ImageNetS(root, (32, 32))
    for sample_id, ids in written.items():
        decoded = read_label_png(ds.paths(sample_id)[1])
        np.testing.assert_array_equal(decoded, ids)
        assert {0, OTHER_ID, IGNORE_ID} <= set(np.unique(decoded).tolist())


def test_partial_copy_uses_every_object_as_foreground(s919: tuple[Path, dict]) -> None:
    root, written = s919
    ds = ImageNetS(root, (24, 40))
    assert ds.category_ids is None  # 3 class folders is not a complete ImageNetS919
    for sample_id, ids in written.items():
        sample = ds.load(sample_id)
        objects = (ids != 0) & (ids != IGNORE_ID)
        assert torch.equal(sample.mask, resize_center_crop_mask(to_mask(ids, objects), (24, 40)))


@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
def test_load_with_category_table(s919: tuple[Path, dict], size: tuple[int, int]) -> None:
    root, written = s919
    ds = ImageNetS(with_category_table(root), size)
    assert ds.category_ids == {w: i + 1 for i, w in enumerate(WNIDS)}
    for sample_id, ids in written.items():
        k = WNIDS.index(sample_id.split("/")[0])
        sample = ds.load(sample_id)
        assert sample.id == sample_id
        assert sample.label == k and ds.classnames[sample.label] == NAMES[k]
        assert sample.prompt == f"a photo of a {NAMES[k]}."
        assert sample.image.shape == (3, *size) and sample.image.dtype == torch.uint8  # levels, made float later
        assert sample.mask.shape == size and sample.mask.dtype == torch.int8
        # own class only: the object of id 300 is background
        expected = resize_center_crop_mask(to_mask(ids, ids == k + 1), size)
        assert torch.equal(sample.mask, expected)
        assert set(sample.mask.unique().tolist()) == {-1, 0, 1}


def test_table_named_for_the_subset_wins(s919: tuple[Path, dict], caplog: pytest.LogCaptureFixture) -> None:
    root, _ = s919
    with caplog.at_level(logging.WARNING, logger="aft_bench.data.imagenet_s"):
        assert ImageNetS(root, (32, 32)).category_ids is None
    assert "every annotated object" in caplog.text
    (root / "ImageNetS_categories_im50.txt").write_text("n01484850\n")
    assert ImageNetS(root, (32, 32)).category_ids == {"n01484850": 1}  # the only table
    with_category_table(root)
    assert ImageNetS(root, (32, 32)).category_ids == {w: i + 1 for i, w in enumerate(WNIDS)}


def test_complete_subset_folders_give_class_ids(tmp_path: Path) -> None:
    root = tmp_path / "ImageNetS50"
    written = make_imagenet_s(root)
    for wnid in imagenet_wnids()[3:50]:  # the rest of a 50-class subset (no samples in them)
        (root / "validation-segmentation" / wnid).mkdir()
    ds = ImageNetS(root, (32, 32))
    assert ds.category_ids is not None and ds.category_ids[WNIDS[2]] == 3 and len(ds.category_ids) == 50
    sample_id = sorted(written)[0]
    ids = written[sample_id]
    assert torch.equal(ds.load(sample_id).mask, resize_center_crop_mask(to_mask(ids, ids == 1), (32, 32)))


def test_mask_stays_aligned_with_image_after_resize(s919: tuple[Path, dict]) -> None:
    root, _ = s919
    ds = ImageNetS(with_category_table(root), (32, 32))
    for sample_id in ds.ids():
        sample = ds.load(sample_id)
        red = ((sample.image[0] > 127) & (sample.image[1] < 128)).numpy()
        fg = (sample.mask == 1).numpy()
        boundary = ndimage.binary_dilation(fg) & ~ndimage.binary_erosion(fg, border_value=1)
        assert fg.sum() > 20
        assert not ((red != fg) & ~boundary).any(), sample_id


def test_own_class_absent_falls_back_and_warns(s919: tuple[Path, dict], caplog: pytest.LogCaptureFixture) -> None:
    root, written = s919
    sample_id = sorted(written)[0]
    ids = written[sample_id].copy()
    ids[ids == 1] = 0  # the tench pixels are gone; only the other object is annotated
    mask_path = root / "validation-segmentation" / f"{sample_id}.png"
    Image.fromarray(encode_ids(ids)).save(mask_path)
    ds = ImageNetS(with_category_table(root), (32, 32))
    with caplog.at_level(logging.WARNING, logger="aft_bench.data.imagenet_s"):
        mask = ds.load(sample_id).mask
    assert torch.equal(mask, resize_center_crop_mask(to_mask(ids, ids == OTHER_ID), (32, 32)))
    assert mask_path.name in caplog.text


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_truncated_jpeg_fails_at_load_naming_file(s919: tuple[Path, dict], on_error: str) -> None:
    root, written = s919
    bad_id = sorted(written)[2]
    bad = root / "validation" / f"{bad_id}.JPEG"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    ds = ImageNetS(root, (32, 32), on_error=on_error)
    assert bad_id in ds.ids() and ds.skipped == {}  # listing does not decode; the task skips on load
    with pytest.raises(DataError, match=bad.name) as info:
        ds.load(bad_id)
    assert "--on-error skip" in str(info.value)
    ds.load(sorted(written)[3])  # the others still load


def test_size_mismatch_names_both_files(s919: tuple[Path, dict]) -> None:
    root, written = s919
    sample_id = sorted(written)[1]
    small = encode_ids(np.zeros((10, 12), np.int64))
    Image.fromarray(small).save(root / "validation-segmentation" / f"{sample_id}.png")
    ds = ImageNetS(root, (32, 32))
    name = sample_id.split("/")[1]
    h, w = SIZES[sample_id.split("/")[0]][1]
    with pytest.raises(DataError, match=rf"{name}.png is 12x10.*{name}.JPEG is {w}x{h}"):
        ds.load(sample_id)


def test_image_without_mask(s919: tuple[Path, dict], caplog: pytest.LogCaptureFixture) -> None:
    root, written = s919
    lost = sorted(written)[4]
    (root / "validation-segmentation" / f"{lost}.png").unlink()
    with pytest.raises(DataError, match=rf"{lost.split('/')[1]}.JPEG has no mask.*--on-error skip"):
        ImageNetS(root, (32, 32))
    with caplog.at_level(logging.WARNING, logger="aft_bench.data.imagenet_s"):
        ds = ImageNetS(root, (32, 32), on_error="skip")
    assert ds.skipped == {"image without mask": 1}
    assert lost not in ds.ids() and len(ds) == 5
    assert "1 image without mask" in caplog.text


def test_mask_without_image_and_stray_folder(s919: tuple[Path, dict]) -> None:
    root, written = s919
    lost = sorted(written)[0]
    (root / "validation" / f"{lost}.JPEG").unlink()
    with pytest.raises(DataError, match=rf"{lost.split('/')[1]}.png has no image"):
        ImageNetS(root, (32, 32))
    (root / "validation" / "not_a_wnid").mkdir()
    (root / "validation" / "not_a_wnid" / "x.JPEG").write_bytes(b"")
    ds = ImageNetS(root, (32, 32), on_error="skip")
    assert ds.skipped == {"mask without image": 1, "folder not an ImageNet wnid": 1}
    assert len(ds) == 5


def test_root_errors(tmp_path: Path, s919: tuple[Path, dict]) -> None:
    with pytest.raises(DataError, match="ImageNet-S needs --data-root pointing at"):
        ImageNetS(None, (32, 32))
    with pytest.raises(DataError, match="nowhere.*is not a directory.*validation-segmentation"):
        ImageNetS(tmp_path / "nowhere", (32, 32))
    root, _ = s919
    with pytest.raises(DataError, match=r"ImageNetS919.*pass one of them"):
        ImageNetS(root.parent, (32, 32))  # the folder above the subset
    (root / "validation-segmentation").rename(root / "segs")
    with pytest.raises(DataError, match="has no validation-segmentation/ folder"):
        ImageNetS(root, (32, 32))


def test_empty_layout_and_bad_arguments(tmp_path: Path, s919: tuple[Path, dict]) -> None:
    (tmp_path / "e" / "validation").mkdir(parents=True)
    (tmp_path / "e" / "validation-segmentation").mkdir()
    with pytest.raises(DataError, match="no image/mask pairs"):
        ImageNetS(tmp_path / "e", (32, 32))
    root, _ = s919
    with pytest.raises(ValueError, match="on_error"):
        ImageNetS(root, (32, 32), on_error="ignore")
    with pytest.raises(ValueError, match="prompt_template"):
        ImageNetS(root, (32, 32), prompt_template="a photo")
    with pytest.raises(DataError, match="unknown ImageNet-S sample id 'n01440764/nope'"):
        ImageNetS(root, (32, 32)).load("n01440764/nope")


def test_custom_template_and_collate(s919: tuple[Path, dict]) -> None:
    root, _ = s919
    ds = ImageNetS(root, (32, 32), prompt_template="itap of a {}")
    batch = Batch.collate([ds.load(i) for i in ds.ids()])
    assert batch.images.shape == (6, 3, 32, 32) and batch.masks.shape == (6, 32, 32)
    assert batch.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert batch.prompts[2] == "itap of a goldfish"


def test_merged_class_takes_the_id_of_its_target(s919: tuple[Path, dict]) -> None:
    root, _ = s919
    ds = ImageNetS(with_category_table(root), (32, 32))
    ds.category_ids = {"n04355933": 7}  # sunglass; ImageNet-S919 merges sunglasses (n04356056) into it
    ids = np.array([[7, 0], [1000, 300]])
    expected = np.array([[1, 0], [-1, 0]], dtype=np.int8)
    np.testing.assert_array_equal(ds.target_mask(ids, "n04356056", Path("m.png")), expected)
    np.testing.assert_array_equal(ds.target_mask(ids, "n04355933", Path("m.png")), expected)


def test_the_data_version_is_part_of_the_run_key_only_where_a_dataset_declares_one(tiny_vit, monkeypatch) -> None:
    from aft_bench.data.imagenet_s import ImageNetS
    from aft_bench.data.shapes import ShapesDataset
    from aft_bench.evaluation.config import RunConfig
    from aft_bench.evaluation.context import RunContext

    def key(dataset: str) -> str:
        return RunContext.local(RunConfig(task="pointing_game", dataset=dataset)).run_key("e", tiny_vit)

    before = {name: key(name) for name in ("imagenet_s", "shapes")}
    monkeypatch.setattr(ImageNetS, "data_version", ImageNetS.data_version + 1)
    assert key("imagenet_s") != before["imagenet_s"]  # newer pixels: stored scores are not reused
    assert key("shapes") == before["shapes"] and not hasattr(ShapesDataset, "data_version")
