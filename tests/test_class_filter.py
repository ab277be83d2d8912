"""The class filter (``--dataset-arg classes=...``): parsing, which samples it keeps, the relabelling, and the run's
hook on a real-format ImageNet-S fixture and on the shapes world."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from aft_bench.data.base import DataError, Sample
from aft_bench.data.class_filter import ClassFilter, ClassList
from aft_bench.data.classnames import imagenet_classname, imagenet_wnids
from aft_bench.data.imagenet_s import write_synthetic
from aft_bench.data.imagenette import IMAGENETTE_CLASSES, IMAGENETTE_WNIDS
from aft_bench.data.shapes import CLASSNAMES, ShapesDataset
from aft_bench.evaluation.config import RunConfig
from aft_bench.evaluation.context import RunContext, check_arguments


class _Labelled:
    """A dataset of the 1000 ImageNet classes whose sample ``k`` has class ``labels[k]``; counts its loads."""

    def __init__(self, labels: list[int], with_label: bool = True) -> None:
        self.classnames = [f"class {i}" for i in range(1000)]
        self.labels_ = labels
        self.loads = 0
        if with_label:
            self.label = lambda sample_id: self.labels_[int(sample_id.split("-")[1])]

    def __len__(self) -> int:
        return len(self.labels_)

    def ids(self) -> list[str]:
        return [f"s-{k}" for k in range(len(self.labels_))]

    def load(self, sample_id: str) -> Sample:
        self.loads += 1
        k = int(sample_id.split("-")[1])
        return Sample(sample_id, torch.zeros(3, 2, 2), f"prompt {k}", self.labels_[k])


def test_parse_named_comma_and_list_forms() -> None:
    named = ClassList.parse("imagenette")
    assert named.keys == IMAGENETTE_WNIDS and named.names == IMAGENETTE_CLASSES
    assert ClassList.parse("n01440764, circle").keys == ("n01440764", "circle")
    assert ClassList.parse("n01440764, circle").names == (imagenet_classname("n01440764"), "circle")
    assert ClassList.parse(["red square", "blue circle"]).names == ("red square", "blue circle")
    with pytest.raises(ValueError, match="named list"):
        ClassList.parse(" , ")
    with pytest.raises(ValueError, match="twice"):
        ClassList.parse("circle,Circle")


def test_keeps_listed_wnids_in_dataset_order_relabelled_by_the_list() -> None:
    wnids = imagenet_wnids()
    labels = [5, 0, 7, 5, 3, 0]
    dataset = _Labelled(labels)
    filtered = ClassFilter(dataset, ClassList.parse([wnids[5], wnids[0]]))
    assert filtered.ids() == ["s-0", "s-1", "s-3", "s-5"] and len(filtered) == 4
    assert filtered.classnames == [imagenet_classname(wnids[5]), imagenet_classname(wnids[0])]
    assert [filtered.load(i).label for i in filtered.ids()] == [0, 1, 0, 1] == filtered.labels()
    assert filtered.load("s-1").prompt == "prompt 1" and filtered.wnids == [wnids[5], wnids[0]]
    assert dataset.loads == 5  # labels came from label(id): only the five loads above
    with pytest.raises(DataError, match="not in the filtered classes"):
        filtered.load("s-2")


def test_without_label_method_samples_are_loaded_once_to_read_their_class() -> None:
    dataset = _Labelled([1, 2, 1], with_label=False)
    filtered = ClassFilter(dataset, ClassList.parse([imagenet_wnids()[1]]))
    assert filtered.ids() == ["s-0", "s-2"] and dataset.loads == 3


def test_missing_classes_warn_and_no_match_fails(caplog: pytest.LogCaptureFixture) -> None:
    dataset = _Labelled([0, 1])
    with caplog.at_level(logging.WARNING):
        filtered = ClassFilter(dataset, ClassList.parse("imagenette"))  # only the tench (n01440764 = class 0)
    assert filtered.ids() == ["s-0"] and filtered.load("s-0").label == 0 and "no sample of" in caplog.text
    with pytest.raises(DataError, match="no sample of the dataset"):
        ClassFilter(dataset, ClassList.parse([imagenet_wnids()[9]]))


def test_run_hook_on_an_imagenet_s_fixture(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path / "ImageNetS50", n=12, size=(40, 48), classes=4)
    wnids = imagenet_wnids()[:4]
    config = RunConfig(task="pointing_game", encoders=(), attributions=(), dataset="imagenet_s", data_root=str(root),
                       dataset_args={"classes": [wnids[2], wnids[0]]})
    check_arguments(config)  # the filter's key is the run's, not the dataset's: accepted
    dataset = RunContext.local(config).dataset((32, 32))
    assert dataset.ids() and all(i.split("/")[0] in (wnids[0], wnids[2]) for i in dataset.ids())
    sample = dataset.load(dataset.ids()[0])
    assert sample.label == (0 if sample.id.startswith(wnids[2]) else 1) and sample.mask is not None
    assert len(dataset) == 6  # 12 images over 4 classes: 3 a class
    with pytest.raises(ValueError, match="named list"):
        check_arguments(RunConfig(task="pointing_game", encoders=(), attributions=(), dataset="shapes",
                                  dataset_args={"classes": ""}))


def test_by_class_name_on_the_shapes_world() -> None:
    shapes = ShapesDataset(image_size=(16, 16), size=40)
    keep = [CLASSNAMES[3], CLASSNAMES[1].upper()]
    filtered = ClassFilter(shapes, ClassList.parse(keep))
    expected = [i for i in shapes.ids() if shapes.load(i).label in (3, 1)]
    assert filtered.ids() == expected and filtered.classnames == keep
    assert {filtered.load(i).label for i in filtered.ids()} <= {0, 1}
