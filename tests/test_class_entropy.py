"""The class_entropy task (paper Table 8) and its category tables: Eshed's ImageNet table, the shapes world's, a
user's CSV; known answers from hand-built probes, exclusions, resuming, and the real probe on ImageNet folders."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from test_labelled_datasets import COLOURS, write_image

from aft_bench.apps.cli import main
from aft_bench.data.base import DataError
from aft_bench.data.categories import assign, dataset_categories, imagenet_table, parse_table, read_table, shapes_table
from aft_bench.data.classnames import imagenet_classnames, imagenet_wnids
from aft_bench.data.shapes import CLASSNAMES, SHAPES, ShapesDataset, class_index
from aft_bench.data.shapes import COLOURS as SHAPE_COLOURS
from aft_bench.evaluation import classifiers
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.probe.linear import LinearProbe
from aft_bench.evaluation.runner import run
from aft_bench.models.encoder import Encoder
from aft_bench.results.store import SampleStore

BIG = 200.0
WORLD = {"size": 30}  # the shapes world's first 30 test images (all 25 classes are likely; labels are read back)


class _Classes:
    """A stand-in dataset: only what the category tables read."""

    def __init__(self, classnames: list[str], folders: list[str] | None = None) -> None:
        self.classnames = classnames
        if folders is not None:
            self.folders = folders


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    monkeypatch.setenv("AFT_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "class-entropy-cache"))


# ---------------------------------------------------------------------------------------- tables
def test_the_shipped_table_is_eshed_2020_with_66_scored_categories() -> None:
    table = imagenet_table()
    assert "Eshed 2020" in table.source and set(table.categories) == set(imagenet_wnids())
    assert len(set(table.categories.values())) == 67
    assert (table.categories["n01440764"], table.categories["n01484850"]) == ("fish", "shark")
    imagenet = dataset_categories(_Classes(imagenet_classnames()))  # ImageNet-S: classes are the 1000, in order
    assert len(imagenet.names) == 66 and "other" not in imagenet.names
    assert sum(c == -1 for c in imagenet.category_of) == 19 == list(imagenet.class_category).count("other")
    assert imagenet.class_category.count("dog") == 119
    assert imagenet.exclusion(999) == "excluded category 'other'" and imagenet.exclusion(0) is None


def test_folder_classes_map_by_wordnet_id_whatever_their_names() -> None:
    data = _Classes(["my shark", "my tench", "wool"], folders=["n01484850", "n01440764", "n15075141"])
    categories = dataset_categories(data)
    assert categories.class_category == ("shark", "fish", "other")
    assert categories.names == ("shark", "fish") and categories.category_of == (0, 1, -1)
    kept = dataset_categories(data, exclude=())
    assert kept.names == ("shark", "fish", "other") and kept.category_of == (0, 1, 2)


def test_the_shapes_world_categories_are_its_shapes() -> None:
    categories = dataset_categories(ShapesDataset(16, size=1))
    assert categories.names == SHAPES and "shapes world" in categories.source
    for colour in SHAPE_COLOURS:
        for shape in SHAPES:
            assert categories.class_category[class_index(colour, shape)] == shape
    assert shapes_table().categories == dict(zip(CLASSNAMES, categories.class_category, strict=True))


def test_a_users_table_by_name_or_wordnet_id(tmp_path: Path) -> None:
    path = tmp_path / "cats.csv"
    path.write_text("\ufeff# my grouping\nClass, Category ,note\nred circle,round,x\nn01440764,water\n"
                    "\nblue star,pointy\n", encoding="utf-8")
    table = read_table(path)
    assert table.categories == {"red circle": "round", "n01440764": "water", "blue star": "pointy"}
    assert assign(["blue star", "red circle"], None, table).names == ("pointy", "round")
    by_id = assign(["a fish"], ["n01440764"], table)
    assert by_id.class_category == ("water",)
    assert read_table(path).digest == table.digest != parse_table("class,category\nx,y\n", "other").digest


@pytest.mark.parametrize(("text", "message"), [
    ("class,category\nred circle,round\n", "no row for 1 class\\(es\\) of the dataset: 'blue star'"),
    ("class,category\nblue star,a\nblue star,b\n", "'blue star' is in category 'a' \\(row 2\\) and 'b' \\(row 3\\)"),
    ("name,group\nblue star,a\n", "needs a 'category' column and a 'class'"),
    ("class,category\nblue star,\n", "row 2: no category"),
    ("# only a comment\n", "is empty"),
    ("class,category\nblue star,other\n", "every class of the dataset is in an excluded category"),
])
def test_table_errors_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        dataset_categories(_Classes(["blue star"]), read_table(path))


def test_no_built_in_table_for_other_classes_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no built-in category table .* --option categories=FILE"):
        dataset_categories(_Classes(["cat", "dog"]))
    with pytest.raises(DataError, match="cannot read the category table .*missing.csv"):
        read_table(tmp_path / "missing.csv")


# ---------------------------------------------------------------------------------------- the task
def _config(encoder: str, out: Path, **changes):
    overrides = dict(encoders=[encoder], limit=8, batch_size=4, out=str(out), dataset_args=WORLD,
                     options={"probe_steps": 5})
    overrides.update(changes)
    return resolve_config("class_entropy", overrides)


def _hand_built(monkeypatch: pytest.MonkeyPatch, bias: torch.Tensor) -> None:
    """Every encoder's probe: zero weights and ``bias``, so every image gets the logits ``bias``."""

    def probe(encoder: Encoder, *args: object) -> LinearProbe:
        dim = int(encoder.model.text_projection.shape[1])
        return LinearProbe(torch.zeros(len(CLASSNAMES), dim), bias, list(CLASSNAMES), {"train_accuracy": 0.5})

    monkeypatch.setattr(classifiers, "get_probe", probe)


def _labels(out: Path) -> dict[str, dict]:
    (path,) = (out / "class_entropy" / "samples").glob("*.jsonl")
    world = ShapesDataset(48, size=WORLD["size"])
    return {i: {**r, "label": world.load(i).label} for i, r in SampleStore(path)._records.items()}


def test_uniform_logits_give_ln_classes_and_ln_category_size(tiny48_ckpt: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _hand_built(monkeypatch, torch.zeros(len(CLASSNAMES)))
    (result,) = run(_config(tiny48_ckpt, tmp_path)).results
    assert result.attribution == "probe" and result.n == 8 and not result.excluded
    assert result.metrics["entropy_entire"]["mean"] == pytest.approx(math.log(25), abs=1e-9)
    assert result.metrics["entropy_category"]["mean"] == pytest.approx(math.log(5), abs=1e-9)
    assert result.metrics["entropy_entire"]["higher_is_better"] is True
    assert result.extra["categories"] == 5 and "shapes world" in result.extra["categories_source"]


@pytest.mark.parametrize("colours", [["red"], ["red", "green"]], ids=["one-hot", "two-class tie"])
def test_one_hot_and_tied_logits(colours: list[str], tiny48_ckpt: str, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe puts all its mass on red circles (or splits it between red and green circles)."""
    top = [class_index(colour, "circle") for colour in colours]
    bias = torch.zeros(len(CLASSNAMES))
    bias[top] = BIG
    _hand_built(monkeypatch, bias)
    run(_config(tiny48_ckpt, tmp_path, limit=None))
    records = _labels(tmp_path)
    assert len(records) == WORLD["size"]
    spread = math.log(len(top))  # 0 for one-hot, ln 2 for the tie
    for record in records.values():
        circle = CLASSNAMES[record["label"]].endswith("circle")  # a circle's category holds the top classes
        assert record["scores"]["entropy_entire"] == pytest.approx(spread, abs=1e-9)
        assert record["scores"]["entropy_category"] == pytest.approx(spread if circle else math.log(5), abs=1e-9)
        assert record["correct"] is (record["label"] == top[0])  # argmax picks the first of a tie


def test_a_category_of_one_class_and_excluded_categories(tiny48_ckpt: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _hand_built(monkeypatch, torch.zeros(len(CLASSNAMES)))
    def category(name: str) -> str:
        return "alone" if name == "red circle" else "skip" if name.startswith("green") else "rest"

    rows = ["class,category"] + [f"{name},{category(name)}" for name in CLASSNAMES]
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    options = {"probe_steps": 5, "categories": str(tmp_path / "table.csv"), "exclude": ["skip"]}
    (result,) = run(_config(tiny48_ckpt, tmp_path / "out", limit=None, options=options)).results
    records = _labels(tmp_path / "out")
    green = [r for r in records.values() if CLASSNAMES[r["label"]].startswith("green")]
    assert green and all(r["excluded"] == "excluded category 'skip'" for r in green)
    assert result.excluded == {"excluded category 'skip'": len(green)} and result.n == WORLD["size"] - len(green)
    for record in records.values():
        if "scores" in record:
            expected = 0.0 if record["label"] == class_index("red", "circle") else math.log(19)
            assert record["scores"]["entropy_category"] == pytest.approx(expected, abs=1e-9)


def test_resumes_and_reuses_what_it_stored(tiny48_ckpt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hand_built(monkeypatch, torch.linspace(-2, 2, len(CLASSNAMES)))
    batches: list[int] = []
    stop = {"at": 2}
    forward = Encoder.forward

    def counting(encoder: Encoder, pixels: torch.Tensor) -> torch.Tensor:
        batches.append(len(pixels))
        if len(batches) == stop["at"]:
            raise KeyboardInterrupt  # killed in the second batch
        return forward(encoder, pixels)

    monkeypatch.setattr(Encoder, "forward", counting)
    with pytest.raises(KeyboardInterrupt):
        run(_config(tiny48_ckpt, tmp_path))
    stop["at"], batches[:] = 0, []
    (resumed,) = run(_config(tiny48_ckpt, tmp_path)).results
    assert batches == [4] and resumed.n == 8  # only the second batch of 4 was left
    (again,) = run(_config(tiny48_ckpt, tmp_path)).results
    assert batches == [4] and again.metrics == resumed.metrics  # all stored: nothing embedded again
    (fresh,) = run(_config(tiny48_ckpt, tmp_path / "fresh")).results
    assert resumed.metrics == fresh.metrics


@pytest.mark.parametrize(("args", "message"), [
    (["--option", "categories=nowhere.csv"], "option categories='nowhere.csv': cannot read the category table"),
    (["--option", "exclude=[1]"], "option exclude=\\[1\\]: give a list of category names"),
    (["--attributions", "gradcam"], "not attribution maps"),
])
def test_bad_options_exit_1_before_any_probe(tiny48_ckpt: str, tmp_path: Path, args: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--task", "class_entropy", "--encoders", tiny48_ckpt, "--out", str(tmp_path), *args])
    assert code == 1 and re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "class_entropy" / "samples").exists()


def test_the_real_probe_on_imagenet_class_folders(tiny48_ckpt: str, tmp_path: Path) -> None:
    """ImageNet folders (two fish, a shark, an 'other' class): Eshed's table by WordNet id, a real cached probe."""
    wnids = ("n01440764", "n01443537", "n01484850", "n15075141")
    for split in ("train", "val"):
        for k, wnid in enumerate(wnids):
            for j in range(3):
                write_image(tmp_path / "data" / split / wnid / f"{j}.png", COLOURS[k])
    config = resolve_config("class_entropy", dict(
        encoders=[tiny48_ckpt], dataset="image_folder", data_root=str(tmp_path / "data"), batch_size=6,
        out=str(tmp_path / "out"), dataset_args={"split": "val"}, options={"probe_steps": 20, "probe_holdout": 0}))
    (result,) = run(config).results
    assert result.excluded == {"excluded category 'other'": 3} and result.n == 9
    assert 0 <= result.metrics["entropy_entire"]["mean"] <= math.log(4)
    records = SampleStore(next((tmp_path / "out" / "class_entropy" / "samples").glob("*.jsonl")))._records
    for sample_id, record in records.items():
        if sample_id.startswith("val/n01484850"):  # the only shark: a category of one class
            assert record["scores"]["entropy_category"] == 0.0
        elif "scores" in record:  # the two fish
            assert 0 < record["scores"]["entropy_category"] <= math.log(2)
    assert result.extra["categories_source"].endswith("(Eshed 2020)") and result.extra["probe_train_accuracy"] > 0.5
