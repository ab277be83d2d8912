"""Imagenette, CUB-200-2011 and Caltech-256 loaders on fixtures written in their real on-disk layouts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from aft_bench.data.base import Batch, DataError, Dataset
from aft_bench.data.caltech256 import Caltech256, caltech_classname, train_count
from aft_bench.data.cub import CUB200, cub_classname
from aft_bench.data.imagenette import Imagenette

COLOURS = ((230, 20, 20), (20, 230, 20), (20, 20, 230), (230, 230, 20))


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (36, 24)) -> Path:
    """A flat-coloured RGB image of size (width, height); JPEG or PNG by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.new("RGB", size, colour).save(path, **options)
    return path


def dominant_channel(image: torch.Tensor) -> int:
    return int(image.mean(dim=(1, 2)).argmax())


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ------------------------------------------------------------------------------------------- Imagenette

WNIDS = ("n01440764", "n02102040", "n03000684")  # tench (0), English springer (217), chain saw (491)
NAMES = ("tench", "English Springer Spaniel", "chainsaw")


def make_imagenette(root: Path) -> None:
    """train/<wnid>/*.JPEG and val/<wnid>/*.JPEG; val lacks the last class; class k is colour k."""
    for k, wnid in enumerate(WNIDS):
        for j in range(3):
            write_image(root / "train" / wnid / f"{wnid}_{j}.JPEG", COLOURS[k])
        if k < 2:
            for j in range(2):
                write_image(root / "val" / wnid / f"ILSVRC2012_val_{10 * k + j:08d}.JPEG", COLOURS[k])


def test_imagenette_splits_labels_and_prompts(tmp_path: Path) -> None:
    make_imagenette(tmp_path / "imagenette2-320")
    val = Imagenette((16, 20), root=tmp_path / "imagenette2-320")  # default split: val
    assert isinstance(val, Dataset) and val.skipped == {}
    assert val.classnames == list(NAMES) and val.wnids == list(WNIDS)  # union of both splits, sorted
    assert len(val) == 4 and val.ids()[0] == f"val/{WNIDS[0]}/ILSVRC2012_val_00000000.JPEG"
    assert val.labels() == [0, 0, 1, 1]
    for sample_id in val.ids():
        sample = val.load(sample_id)
        k = WNIDS.index(sample_id.split("/")[1])
        assert sample.label == k and sample.prompt == f"a photo of a {NAMES[k]}." and sample.mask is None
        assert sample.image.shape == (3, 16, 20) and dominant_channel(sample.image) == k
    train = Imagenette(16, root=tmp_path, split="train", prompt_template="an image of {}")  # archive folder found
    assert len(train) == 9 and train.labels() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert train.load(train.ids()[-1]).prompt == "an image of chainsaw"
    batch = Batch.collate([train.load(i) for i in train.ids()[:3]])
    assert batch.masks is None and batch.labels.tolist() == [0, 0, 0]


def test_imagenette_bad_folder_raises_or_skips(tmp_path: Path) -> None:
    make_imagenette(tmp_path)
    write_image(tmp_path / "val" / "not_a_wnid" / "a.JPEG", COLOURS[3])
    with pytest.raises(DataError, match="not_a_wnid"):
        Imagenette(16, root=tmp_path)
    ds = Imagenette(16, root=tmp_path, on_error="skip")
    assert ds.skipped == {"folder not an ImageNet wnid": 1} and len(ds) == 4


def test_imagenette_root_and_split_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data-root.*train/<wnid>"):
        Imagenette(16, root=None)
    with pytest.raises(DataError, match="not a directory"):
        Imagenette(16, root=tmp_path / "nope")
    with pytest.raises(DataError, match="does not hold the expected files"):
        Imagenette(16, root=tmp_path)
    make_imagenette(tmp_path)
    with pytest.raises(DataError, match="split='test'"):
        Imagenette(16, root=tmp_path, split="test")
    with pytest.raises(ValueError, match="on_error"):
        Imagenette(16, root=tmp_path, on_error="ignore")
    for path in sorted((tmp_path / "val").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (tmp_path / "val").rmdir()
    with pytest.raises(DataError, match=r"has no val/ folder \(found: \['train'\]\)"):
        Imagenette(16, root=tmp_path)


def test_imagenette_corrupt_image_names_file(tmp_path: Path) -> None:
    make_imagenette(tmp_path)
    ds = Imagenette(16, root=tmp_path)
    bad = ds.path(ds.ids()[1])
    truncate(bad)
    with pytest.raises(DataError, match=bad.name):
        ds.load(ds.ids()[1])
    bad.unlink()
    with pytest.raises(DataError, match=f"{bad.name}: no such file"):
        ds.load(ds.ids()[1])
    with pytest.raises(DataError, match="unknown Imagenette sample id"):
        ds.load("val/n01440764/missing.JPEG")


# ------------------------------------------------------------------------------------------- CUB

CUB_CLASSES = {1: "001.Black_footed_Albatross", 2: "002.Laysan_Albatross", 3: "003.Sooty_Albatross"}
# image id -> (class id, is_training_image)
CUB_IMAGES = {1: (1, 1), 2: (1, 0), 3: (2, 1), 4: (2, 0), 5: (3, 0), 6: (3, 1), 7: (3, 0)}


def make_cub(root: Path) -> dict[int, str]:
    """CUB_200_2011/{images,image_class_labels,train_test_split,classes}.txt and images/; returns id -> path."""
    paths = {}
    for image_id, (class_id, _) in CUB_IMAGES.items():
        folder = CUB_CLASSES[class_id]
        species = folder.split(".", 1)[1]
        paths[image_id] = f"{folder}/{species}_{image_id:04d}_{100 + image_id}.jpg"
        write_image(root / "images" / paths[image_id], COLOURS[class_id - 1])
    (root / "images.txt").write_text("".join(f"{i} {p}\n" for i, p in paths.items()))
    (root / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, (c, _) in CUB_IMAGES.items()))
    (root / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, (_, t) in CUB_IMAGES.items()))
    (root / "classes.txt").write_text("".join(f"{c} {n}\n" for c, n in CUB_CLASSES.items()))
    return paths


def test_cub_classnames_splits_and_labels(tmp_path: Path) -> None:
    paths = make_cub(tmp_path / "CUB_200_2011")
    assert cub_classname("001.Black_footed_Albatross") == "Black footed Albatross"
    test = CUB200((20, 20), root=tmp_path)  # finds CUB_200_2011 inside; default split: test
    assert test.classnames == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    assert test.ids() == [paths[i] for i in (2, 4, 5, 7)] and test.labels() == [0, 1, 2, 2]
    train = CUB200(20, root=tmp_path / "CUB_200_2011", split="train")
    assert train.ids() == [paths[i] for i in (1, 3, 6)] and train.labels() == [0, 1, 2]
    assert len(CUB200(20, root=tmp_path, split="all")) == 7
    sample = test.load(paths[4])
    assert sample.label == 1 and sample.prompt == "a photo of a Laysan Albatross." and sample.mask is None
    assert sample.image.shape == (3, 20, 20) and dominant_channel(sample.image) == 1
    with pytest.raises(DataError, match="split='val'"):
        CUB200(20, root=tmp_path, split="val")


def test_cub_listing_problems(tmp_path: Path) -> None:
    root = tmp_path / "CUB_200_2011"
    paths = make_cub(root)
    (root / "images" / paths[5]).unlink()
    with (root / "image_class_labels.txt").open("a") as f:
        f.write("8 9\n")  # an image whose class does not exist (and that images.txt lacks)
    with (root / "images.txt").open("a") as f:
        f.write("8 003.Sooty_Albatross/extra.jpg\n")
    with (root / "train_test_split.txt").open("a") as f:
        f.write("8 0\n")
    with pytest.raises(DataError, match=paths[5].split("/")[1]):
        CUB200(20, root=root)
    ds = CUB200(20, root=root, on_error="skip")
    assert ds.skipped == {"missing image": 1, "unknown class": 1}
    assert ds.ids() == [paths[i] for i in (2, 4, 7)]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("classes.txt", "1 001.Black_footed_Albatross\nx Laysan\n", r"classes.txt:2: expected '<integer id> <value>'"),
        ("train_test_split.txt", "1 1\n1 0\n", r"train_test_split.txt:2: id 1 listed twice"),
        ("train_test_split.txt", "".join(f"{i} 2\n" for i in CUB_IMAGES), r"is_training_image=2"),
    ],
)
def test_cub_malformed_tables_name_file_and_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    make_cub(tmp_path)
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        CUB200(20, root=tmp_path)


def test_cub_missing_table_and_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not hold the expected files.*images.txt"):
        CUB200(20, root=tmp_path)
    make_cub(tmp_path)
    (tmp_path / "train_test_split.txt").unlink()
    with pytest.raises(DataError, match="missing .*train_test_split.txt"):
        CUB200(20, root=tmp_path)


# ------------------------------------------------------------------------------------------- Caltech-256

CALTECH_FOLDERS = {"001.ak47": 5, "022.buddha-101": 4, "063.electric-guitar-101": 7, "121.kangaroo_101": 2,
                   "257.clutter": 3}


def make_caltech(root: Path) -> None:
    """256_ObjectCategories/NNN.name/NNN_XXXX.jpg plus a stray non-image file."""
    for k, (folder, count) in enumerate(CALTECH_FOLDERS.items()):
        number = folder.split(".")[0]
        for j in range(count):
            write_image(root / folder / f"{number}_{j + 1:04d}.jpg", COLOURS[k % 4])
    (root / "001.ak47" / "RENAME2").write_text("not an image")


def test_caltech_classnames() -> None:
    assert caltech_classname("063.electric-guitar-101") == "electric guitar"
    assert caltech_classname("022.buddha-101") == "buddha"
    assert caltech_classname("121.kangaroo_101") == "kangaroo 101"  # only the '-101' suffix is dropped
    assert caltech_classname("002.american-flag") == "american flag"


def test_caltech_split_is_stratified_disjoint_and_complete(tmp_path: Path) -> None:
    make_caltech(tmp_path / "256_ObjectCategories")
    train = Caltech256(16, root=tmp_path, split="train", train_fraction=0.5, split_seed=3)
    test = Caltech256(16, root=tmp_path, split="test", train_fraction=0.5, split_seed=3)
    everything = Caltech256(16, root=tmp_path, split="all")
    assert train.classnames == ["ak47", "buddha", "electric guitar", "kangaroo 101"]  # clutter excluded
    assert set(train.ids()).isdisjoint(test.ids())
    assert sorted(train.ids() + test.ids()) == sorted(everything.ids()) and len(everything) == 18
    for label, n in enumerate((5, 4, 7, 2)):  # round half up, at least one image per side
        assert train.labels().count(label) == train_count(n, 0.5) == {5: 3, 4: 2, 7: 4, 2: 1}[n]
        assert test.labels().count(label) == n - train_count(n, 0.5)
    assert "001.ak47/RENAME2" not in everything.ids()


def test_caltech_split_is_deterministic_and_seeded(tmp_path: Path) -> None:
    make_caltech(tmp_path)
    first = Caltech256(16, root=tmp_path, split="train", train_fraction=0.5, split_seed=0).ids()
    assert Caltech256(16, root=tmp_path, split="train", train_fraction=0.5, split_seed=0).ids() == first
    seeds = {tuple(Caltech256(16, root=tmp_path, split="train", train_fraction=0.5, split_seed=s).ids())
             for s in range(6)}
    assert len(seeds) > 1
    # a class's split does not depend on the other classes
    (tmp_path / "999.extra").mkdir()
    write_image(tmp_path / "999.extra" / "999_0001.jpg", COLOURS[0])
    again = Caltech256(16, root=tmp_path, split="train", train_fraction=0.5, split_seed=0).ids()
    assert [i for i in again if not i.startswith("999.")] == first
    assert train_count(1, 0.8) == 1 and train_count(1, 0.2) == 0 and train_count(2, 0.99) == 1
    assert train_count(10, 0.25) == 3  # 2.5 rounds up


def test_caltech_clutter_load_and_options(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_caltech(tmp_path)
    with caplog.at_level(logging.INFO, logger="aft_bench.data.caltech256"):
        Caltech256(16, root=tmp_path)
    assert "257.clutter" in caplog.text
    ds = Caltech256((12, 18), root=tmp_path, split="all", include_clutter=True)
    assert ds.classnames[-1] == "clutter" and ds.folders[-1] == "257.clutter"
    sample = ds.load("063.electric-guitar-101/063_0003.jpg")
    assert sample.label == 2 and sample.prompt == "a photo of a electric guitar." and sample.mask is None
    assert sample.image.shape == (3, 12, 18) and dominant_channel(sample.image) == 2
    for bad in (0.0, 1.0, "0.5", True):
        with pytest.raises(ValueError, match="train_fraction"):
            Caltech256(16, root=tmp_path, train_fraction=bad)
    with pytest.raises(ValueError, match="split_seed"):
        Caltech256(16, root=tmp_path, split_seed=1.5)


def test_caltech_listing_and_load_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="256_ObjectCategories folder"):
        Caltech256(16, root=tmp_path)
    make_caltech(tmp_path)
    (tmp_path / "notes").mkdir()
    (tmp_path / "1.ak47-copy").mkdir()
    with pytest.raises(DataError, match="'001.ak47' and '1.ak47-copy' .* share a number"):
        Caltech256(16, root=tmp_path)
    ds = Caltech256(16, root=tmp_path, on_error="skip", split="all")
    assert ds.skipped == {"not a class folder": 1, "duplicate class number": 1}
    bad = tmp_path / "022.buddha-101" / "022_0002.jpg"
    truncate(bad)
    with pytest.raises(DataError, match="022_0002.jpg"):
        ds.load("022.buddha-101/022_0002.jpg")


# ------------------------------------------------------------------------------------------- through the registry

@pytest.mark.parametrize(
    ("name", "entry", "make", "args", "length"),
    [
        ("imagenette", "aft_bench.data.imagenette:Imagenette", make_imagenette, {"split": "train"}, 9),
        ("cub", "aft_bench.data.cub:CUB200", make_cub, {"split": "all"}, 7),
        ("caltech256", "aft_bench.data.caltech256:Caltech256", make_caltech,
         {"split": "train", "train_fraction": 0.5, "split_seed": 1}, 10),
    ],
)
def test_built_by_the_task_runner(
    registered, tmp_path: Path, name: str, entry: str, make, args: dict, length: int
) -> None:
    from aft_bench.core.registries import DATASETS
    from aft_bench.evaluation.config import RunConfig
    from aft_bench.evaluation.context import RunContext

    make(tmp_path)
    registered(DATASETS, name, entry)  # the lazy entry the registry gets
    config = RunConfig(task="pointing_game", dataset=name, data_root=str(tmp_path), dataset_args=args)
    ds = RunContext.local(config).dataset((16, 16))
    assert len(ds) == length and ds.load(ds.ids()[0]).image.shape == (3, 16, 16)
