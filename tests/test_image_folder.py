"""The generic class-folder dataset on fixtures in the layouts of ImageNet val/-R and EuroSAT."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_labelled_datasets import COLOURS, dominant_channel, write_image

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import DataError, Dataset
from aft_bench.data.image_folder import ImageFolder
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.runner import run

WNIDS = ("n01440764", "n02102040", "n03000684")  # tench, English springer, chain saw


def make_folders(root: Path, folders: tuple[str, ...], per_class: int = 2) -> None:
    """Class folders of flat images; the class that sorts k-th has colour k (mod 3)."""
    for folder in folders:
        for j in range(per_class):
            write_image(root / folder / f"img_{j}.jpg", COLOURS[sorted(folders).index(folder) % 3])


def test_imagenet_wnid_folders_get_clip_names(tmp_path: Path) -> None:
    make_folders(tmp_path, WNIDS[::-1])  # created in another order: classes are sorted
    data = ImageFolder((12, 12), root=tmp_path)
    assert isinstance(data, Dataset) and DATASETS.get("image_folder") is ImageFolder
    assert data.folders == list(WNIDS) and data.classnames == ["tench", "English Springer Spaniel", "chainsaw"]
    assert data.ids()[:2] == [f"{WNIDS[0]}/img_0.jpg", f"{WNIDS[0]}/img_1.jpg"] and data.labels() == [0, 0, 1, 1, 2, 2]
    sample = data.load(f"{WNIDS[2]}/img_1.jpg")
    assert sample.label == 2 and sample.prompt == "a photo of a chainsaw." and sample.mask is None
    assert tuple(sample.image.shape) == (3, 12, 12) and dominant_channel(sample.image) == 2 % 3


def test_other_folders_split_and_prompt_template(tmp_path: Path) -> None:
    make_folders(tmp_path / "test", ("AnnualCrop", "Herbaceous_Vegetation"))
    make_folders(tmp_path / "train", ("AnnualCrop",))
    data = ImageFolder(8, root=tmp_path, split="test", prompt_template="a satellite photo of {}.")
    assert data.classnames == ["AnnualCrop", "Herbaceous Vegetation"] and len(data) == 4
    assert data.ids()[0] == "test/AnnualCrop/img_0.jpg"
    assert data.load(data.ids()[-1]).prompt == "a satellite photo of Herbaceous Vegetation."


@pytest.mark.parametrize("text", [
    "AnnualCrop\tannual crop land\nForest\tforest\n",
    "Forest,forest\nAnnualCrop,annual crop land\n",
    "annual crop land\nforest\n",
])
def test_classnames_file_forms(tmp_path: Path, text: str) -> None:
    make_folders(tmp_path / "data", ("AnnualCrop", "Forest"))
    (tmp_path / "names.txt").write_text(text)
    data = ImageFolder(8, root=tmp_path / "data", classnames=tmp_path / "names.txt")
    assert data.classnames == ["annual crop land", "forest"]


@pytest.mark.parametrize(("text", "message"), [
    ("one\ntwo\nthree\n", "3 names for 2 class folders"),
    ("AnnualCrop\tannual crop land\nAnnualCrop\tagain\n", "names folder 'AnnualCrop' twice"),
    ("AnnualCrop\tannual crop land\nRiver\triver\n", r"no name for the class folder\(s\) \['Forest'\]"),
])
def test_bad_classnames_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    make_folders(tmp_path / "data", ("AnnualCrop", "Forest"))
    (tmp_path / "names.txt").write_text(text)
    with pytest.raises(DataError, match=message):
        ImageFolder(8, root=tmp_path / "data", classnames=tmp_path / "names.txt")


def test_bad_roots_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs --data-root"):
        ImageFolder(8)
    with pytest.raises(DataError, match="is not a directory"):
        ImageFolder(8, root=tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    write_image(tmp_path / "flat" / "a.jpg", COLOURS[0])
    with pytest.raises(DataError, match="has no class folders"):
        ImageFolder(8, root=tmp_path / "flat")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="no images found"):
        ImageFolder(8, root=tmp_path / "empty")
    make_folders(tmp_path / "split", ("a", "b"))
    with pytest.raises(DataError, match=r"sub-folders of the root: \['a', 'b'\]"):
        ImageFolder(8, root=tmp_path / "split", split="val")


def test_zero_shot_runs_on_an_image_folder(tiny48_ckpt: str, tmp_path: Path) -> None:
    make_folders(tmp_path / "data", ("ant", "bee", "cat", "dog"), per_class=2)
    config = resolve_config("zero_shot", dict(
        encoders=[tiny48_ckpt], dataset="image_folder", data_root=str(tmp_path / "data"), limit=None,
        batch_size=4, out=str(tmp_path / "out"), options={"eps": [4], "steps": 2, "n_targets": 2, "robust_n": 3}))
    (result,) = run(config).results
    assert result.dataset == "image_folder" and result.n == 8
    assert result.metrics["clean"]["n"] == 8 and result.metrics["robust@4/255"]["n"] == 3


def test_a_files_list_selects_a_split_like_dtd(tmp_path: Path) -> None:
    make_folders(tmp_path / "dtd" / "images", ("banded", "bubbly"), per_class=3)
    listing = tmp_path / "dtd" / "labels" / "test1.txt"
    listing.parent.mkdir(parents=True)
    listing.write_text("banded/img_2.jpg\nbubbly/img_0.jpg\n\nbubbly/img_1.jpg\n")
    data = ImageFolder(8, root=tmp_path / "dtd" / "images", files=listing)
    assert data.ids() == ["banded/img_2.jpg", "bubbly/img_0.jpg", "bubbly/img_1.jpg"] and data.labels() == [0, 1, 1]
    listing.write_text("banded/img_2.jpg\nbanded/missing.jpg\nstray.jpg\n")
    with pytest.raises(DataError, match="missing.jpg.*does not exist"):
        ImageFolder(8, root=tmp_path / "dtd" / "images", files=listing)
    skipping = ImageFolder(8, root=tmp_path / "dtd" / "images", files=listing, on_error="skip")
    assert len(skipping) == 1 and skipping.skipped == {"image missing": 1, "listed outside the class folders": 1}
