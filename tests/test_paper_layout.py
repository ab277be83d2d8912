"""The paper's layout of Tables 1 and 2, cell by cell, on a results folder built here: every measured number where
the paper prints it (rows, column groups, order, decimals), the paper's number and the difference beside it, and a
mark exactly where the run's protocol differs from the paper's (encoder, dataset, samples, task options)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from aft_bench.apps.paper.layout import build_table
from aft_bench.apps.paper.measure import Measurement
from aft_bench.apps.paper.references import load_reference
from aft_bench.apps.paper.render import MARK, cell_text, table_csv, table_markdown
from aft_bench.apps.paper.spec import load_paper_suite
from aft_bench.results.files import read_results, write_result
from aft_bench.results.result import RunResult

TABLE1_ROLES = {"original": "ViT-B-16:openai", "aft@4": "ViT-B-16:openai@/ckpts/aft4.pt"}
METRICS1 = ("pg", "pg_energy", "pixel_acc", "ap", "mask_iou")


def _result(task: str, encoder: str, method: str, dataset: str, metrics: dict[str, float], n: int,
            options: dict | None = None) -> RunResult:
    summaries = {name: {"mean": value, "ci95": 1.0, "n": n, "higher_is_better": True} for name, value in
                 metrics.items()}
    return RunResult(task=task, task_version=1, dataset=dataset, encoder=encoder, attribution=method,
                     metrics=summaries, n=n, excluded={}, skipped={}, config={"options": options or {}},
                     run_key=f"{encoder}-{method}-{dataset}-{(options or {}).get('target', '')}", seed=0,
                     samples_file="")


def _measurements(folder: Path, roles: dict[str, str], suite_name: str) -> list[Measurement]:
    """The measurements of every result stored under ``folder``, each given the role whose encoder it has."""
    suite = load_paper_suite(suite_name)
    by_spec = {spec: next(r for r in suite.paper.roles if r.name == name) for name, spec in roles.items()}
    out = []
    for task_folder in sorted(p for p in folder.iterdir() if p.is_dir()):
        for result in read_results(task_folder):
            out += [Measurement(result.task, by_spec[result.encoder], result, m) for m in result.metrics]
    return out


def _value(target: str, method: str, role: str, metric: str) -> float:
    """A distinct known number per cell (two decimals at most)."""
    return round(10 * METRICS1.index(metric) + {"simple_gradient": 1, "gradcam": 2, "grad_eclip": 3}[method]
                 + 0.5 * (role == "aft@4") + 0.25 * (target == "probe"), 2)


@pytest.fixture(scope="module")
def table1_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("table1")
    for target, methods in (("text", ("simple_gradient", "gradcam", "grad_eclip")),
                            ("probe", ("simple_gradient", "gradcam"))):
        for role, spec in TABLE1_ROLES.items():
            for method in methods:
                n = 12419 if role == "original" else 500  # the AFT rows: fewer samples than the paper's
                metrics = {m: _value(target, method, role, m) for m in METRICS1}
                write_result(_result("pointing_game", spec, method, "imagenet_s", metrics, n, {"target": target}),
                             folder)
    return folder


def test_table1_layout_cell_by_cell(table1_folder: Path) -> None:
    suite = load_paper_suite("table1")
    reference = load_reference("table1")
    table = build_table(suite.paper, reference, _measurements(table1_folder, TABLE1_ROLES, "table1"))
    # the paper's rows: method then encoder, in its order; its column groups: zero-shot, then linear probing
    assert table.row_headers == ("method", "encoder")
    assert [row.labels for row in table.rows] == [(m, e) for m in ("SG", "GC", "Grad-ECLIP")
                                                  for e in ("w/o AFT", "w/ AFT")]
    assert [(c.group, c.key) for c in table.columns] == [(g, m) for g in ("text", "probe") for m in METRICS1]
    assert [c.label for c in table.columns[:5]] == ["PG", "PG-energy", "Pixel Acc.", "AP", "mask-IoU"]
    assert table.group_labels == {"text": "Zero-shot Classification", "probe": "Linear Probing"}
    assert all(c.decimals == 2 and c.unit == "%" for c in table.columns)
    checked = 0
    for row in table.rows:
        method, role = row.keys["method"], row.keys["encoder"]
        role_name = "aft@4" if role == "aft" else "original"
        for cell, column in zip(row.cells, table.columns, strict=True):
            if method == "grad_eclip" and column.group == "probe":  # the paper prints NA; we did not run it
                assert cell.value is None and cell.reference is None and "NA" in cell.missing
                assert cell_text(cell, 2) == "- (n/a)"
                continue
            expected = _value(column.group, method, role_name, column.key)
            paper = reference.cell(column.key, target=column.group, method=method, encoder=role).value
            assert cell.value == pytest.approx(expected)
            assert cell.reference.value == paper
            assert cell.difference == pytest.approx(expected - paper)
            assert cell.differences == (() if role == "original" else ("500 samples (paper: 12419)",))
            mark = MARK if role == "aft" else ""
            assert cell_text(cell, 2) == f"{expected:.2f} ({paper:.2f}, {expected - paper:+.2f}){mark}"
            checked += 1
    assert checked == 50
    markdown = table_markdown(table)
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert lines[0].split(" | ")[2] == "Zero-shot Classification: PG ↑ (%)"
    assert lines[1].startswith("| SG | w/o AFT | 1.00 (25.77, -24.77) |")  # SG w/o AFT, PG
    assert "- † 500 samples (paper: 12419)" in markdown
    rows = list(csv.DictReader(io.StringIO(table_csv(table))))
    assert len(rows) == 6 * 10
    first = rows[0]
    assert (first["method"], first["encoder"], first["group"], first["column"], first["paper"]) == \
        ("simple_gradient", "original", "text", "pg", "25.77")


ROLES2 = {"original": "ViT-L-14:openai", "aft@1": "ckpt:/runs/aft1", "aft@2": "ckpt:/runs/aft2",
          "aft@4": "ckpt:/runs/aft4"}
DATASETS2 = ("imagenet", "cifar10", "shapes")


def _accuracy(role: str, dataset: str, metric: str) -> float:
    return round(list(ROLES2).index(role) * 10 + DATASETS2.index(dataset) + 0.01 * len(metric), 2)


@pytest.fixture(scope="module")
def table2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("table2")
    for role, spec in ROLES2.items():
        for dataset in DATASETS2:
            metrics = {m: _accuracy(role, dataset, m) for m in ("clean", "robust@2/255", "robust@4/255")}
            options = {"eps": [2, 4], "attacks": ["apgd-ce", "apgd-t"], "steps": 100 if dataset != "cifar10" else 10,
                       "robust_n": 1000}
            write_result(_result("zero_shot", spec, "zero_shot", dataset, metrics, 1000, options), folder)
    return folder


def test_table2_layout_cell_by_cell(table2_folder: Path) -> None:
    suite = load_paper_suite("table2")
    reference = load_reference("table2")
    table = build_table(suite.paper, reference, _measurements(table2_folder, ROLES2, "table2"))
    # the paper's 14 datasets and the average in its order, then the measured dataset the paper lacks
    assert [c.key for c in table.columns] == [c.key for c in reference.columns] + ["shapes"]
    assert [c.label for c in table.columns][:3] == ["ImageNet", "CIFAR10", "STL-10"]
    paper_rows = [(c.row["metric"], c.row["encoder"], c.row["train_eps"]) for c in reference.cells]
    paper_rows = list(dict.fromkeys(paper_rows))
    extra = [("robust@2/255", "aft", 1.0), ("robust@4/255", "aft", 1.0)]  # measured; the paper has no such rows
    assert [tuple(r.keys.values()) for r in table.rows] == paper_rows + extra
    assert table.rows[0].labels == ("clean", "CLIP", "-") and table.rows[3].labels == ("clean", "AFT^4", "4")
    names = {None: "original", 1.0: "aft@1", 2.0: "aft@2", 4.0: "aft@4"}
    for row in table.rows:
        metric, role = row.keys["metric"], names[row.keys["train_eps"]]
        for cell, column in zip(row.cells, table.columns, strict=True):
            measured = column.key in DATASETS2
            assert cell.value == (pytest.approx(_accuracy(role, column.key, metric)) if measured else None)
            in_paper = (metric, row.keys["encoder"], row.keys["train_eps"]) in paper_rows and column.key != "shapes"
            if in_paper:
                paper = reference.cell(column.key, **row.keys).value
                assert cell.reference.value == paper
                if measured:
                    assert cell.difference == pytest.approx(_accuracy(role, column.key, metric) - paper)
            else:
                assert cell.reference is None
            # cifar10 ran 10 attack steps (the paper: 100): marked; imagenet ran the paper's protocol: not marked
            expected = ("zero_shot steps=10 (paper: 100)",) if column.key == "cifar10" and in_paper else ()
            assert cell.differences == expected
    assert table.cell("imagenet", metric="clean", encoder="original", train_eps=None).reference.printed == "74.90"


def test_the_average_zero_shot_column_is_the_mean_of_a_full_row(tmp_path: Path) -> None:
    """Table 2's last column averages the 13 zero-shot datasets: measured only where the row has all of them."""
    suite = load_paper_suite("table2")
    reference = load_reference("table2")
    averaged = suite.paper.layout.averages["average_zero_shot"]
    assert len(averaged) == 13 and "imagenet" not in averaged
    paper_row = reference.cells[0].row  # the paper's own average is the mean of its row (CLIP, clean): 72.95
    assert sum(reference.cell(c, **paper_row).value for c in averaged) / 13 == pytest.approx(72.95, abs=0.005)
    for i, dataset in enumerate(("imagenet", *averaged)):
        metrics = {"clean": 50.0 + i, "robust@2/255": 10.0 + i}
        if dataset != "pcam":  # the robust row misses one dataset: no average for it
            metrics["robust@4/255"] = 1.0
        write_result(_result("zero_shot", ROLES2["original"], "zero_shot", dataset, metrics, 1000,
                             {"eps": [2, 4], "attacks": ["apgd-ce", "apgd-t"], "steps": 100, "robust_n": 1000}),
                     tmp_path)
    table = build_table(suite.paper, reference, _measurements(tmp_path, ROLES2, "table2"))
    cell = table.cell("average_zero_shot", metric="clean", encoder="original", train_eps=None)
    assert cell.value == pytest.approx(50.0 + sum(range(1, 14)) / 13)  # imagenet (i = 0) left out
    assert cell.reference.value == 72.95 and cell.difference == pytest.approx(cell.value - 72.95)
    assert table.cell("average_zero_shot", metric="robust@2/255", encoder="original",
                      train_eps=None).value == pytest.approx(10.0 + 7.0)
    assert table.cell("average_zero_shot", metric="robust@4/255", encoder="original", train_eps=None).value is None
