"""``aft-bench compare`` end to end on the toy world (the real toy CLIP at a tiny recipe, as in test_every_task):
the scorecard's layout checked cell by cell against the result files the compare wrote, the paired table's tests
recomputed here from the stored per-sample scores, Holm's correction over the table, and a second compare that
recomputes nothing (no encoder forward pass, no new result file), CLIP-Dissect included, which keeps no
per-sample state."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TOY
from PIL import Image
from scipy import stats

from aft_bench.apps.cli import main
from aft_bench.core.registries import ENCODERS
from aft_bench.data.base import select_ids
from aft_bench.data.shapes import ShapesDataset
from aft_bench.metrics.paired import holm, mcnemar_exact_p
from aft_bench.models.encoder import Encoder
from aft_bench.results.files import read_result_files
from aft_bench.results.store import SampleStore
from aft_bench.results.table import format_number, latest
from aft_bench.toys.clip.store import load_toy_encoder

OTHER_TOY = dataclasses.replace(TINY_TOY, seed=1)
SUITE = """\
version: 1
suite: {name: tiny, description: a compare in seconds}
defaults: {dataset_args: {size: 30}, limit: 16}
tasks:
  - task: pointing_game
    attributions: [simple_gradient, gradcam]
    attribution_args: {gradcam: {block: -1}}   # the tiny toy has one block
    headline: [pg, pg_energy, miou_pooled]
  - task: zero_shot
    options: {steps: 2, robust_n: 8, n_targets: 1, eps: [4]}
  - task: clip_dissect
    options: {top_k: 3}
    headline: [detectors]
"""
COLUMNS = [("pointing_game", m, metric) for m in ("simple_gradient", "gradcam")
           for metric in ("pg", "pg_energy", "miou_pooled")]
COLUMNS += [("zero_shot", None, "clean"), ("zero_shot", None, "robust@4/255"), ("clip_dissect", None, "detectors")]


@pytest.fixture(scope="module")
def toys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Two tiny toys (other seeds, other cards) as ``toy`` and ``toy-b``, trained once, on one thread."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFT_BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        with ENCODERS.temporary("toy", lambda device="cpu": load_toy_encoder(device, recipe=TINY_TOY),
                                replace=True), \
                ENCODERS.temporary("toy-b", lambda device="cpu": load_toy_encoder(device, recipe=OTHER_TOY)):
            yield
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def compared(toys: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The results folder of one compare of ``toy-b`` against ``toy`` on the tiny suite."""
    folder = tmp_path_factory.mktemp("compare")
    suite = folder / "tiny.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    out = folder / "results"
    assert main(_argv(suite, out)) == 0
    return out


def _argv(suite: Path, out: Path) -> list[str]:
    return ["compare", "--suite", str(suite), "--encoders", "toy", "toy-b", "--out", str(out), "--resamples", "300",
            "--batch-size", "4"]


def _newest(out: Path, task: str, encoder: str, attribution: str | None, limit: int = 16):
    """The newest result of a row (the suite's --limit unless a compare gave another)."""
    return next(r for r in latest(r for _, r in read_result_files(out / task)) if r.encoder == encoder
                and attribution in (None, r.attribution) and r.config["limit"] == limit)


def _markdown_rows(path: Path) -> list[list[str]]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if not line.startswith("|---")]


def test_scorecard_layout_cell_by_cell(compared: Path) -> None:
    folder = compared / "reports" / "compare" / "tiny"
    header, *rows = _markdown_rows(folder / "scorecard.md")
    labels = [" · ".join(p for p in column if p) for column in COLUMNS]
    assert header == ["encoder", *(f"{label} ↑" for label in labels)]
    assert [row[0] for row in rows] == ["toy (baseline)", "toy-b"]
    means = {(e, label): _newest(compared, task, e, method).metrics[metric]["mean"]
             for e in ("toy", "toy-b") for label, (task, method, metric) in zip(labels, COLUMNS, strict=True)}
    for row, encoder in zip(rows, ("toy", "toy-b"), strict=True):
        for cell, label in zip(row[1:], labels, strict=True):
            best = max(means[("toy", label)], means[("toy-b", label)])
            text = format_number(means[(encoder, label)])
            assert re.sub("[▲▼]$", "", cell) == (f"**{text}**" if means[(encoder, label)] == best else text), label

    with open(folder / "scorecard.csv", encoding="utf-8") as fh:
        table = list(csv.reader(fh))
    assert table[0][:6] == ["encoder", "baseline", f"{labels[0]} ↑", f"{labels[0]} ci95", f"{labels[0]} n",
                            f"{labels[0]} best"]
    for line, encoder in zip(table[1:], ("toy", "toy-b"), strict=True):
        assert line[:2] == [encoder, str(encoder == "toy")]
        assert [float(line[2 + 4 * j]) for j in range(len(labels))] == [means[(encoder, lab)] for lab in labels]

    card = json.loads((folder / "scorecard.json").read_text(encoding="utf-8"))
    assert card["baseline"] == "toy" and [c["label"] for c in card["columns"]] == labels
    assert all(c["higher_is_better"] for c in card["columns"])
    for row in card["rows"]:
        assert {lab: cell["mean"] for lab, cell in row["cells"].items()} == {lab: means[(row["encoder"], lab)]
                                                                            for lab in labels}
    with Image.open(folder / "scorecard.png") as image:
        assert image.format == "PNG" and image.width > 600 and image.height > 200


def _stored(out: Path, task: str, encoder: str, attribution: str | None, limit: int = 16) -> dict:
    result = _newest(out, task, encoder, attribution, limit)
    store = SampleStore(out / task / result.samples_file)
    return {i: store.get(i) for i in store.ids()}


def test_paired_table_recomputed_from_the_stores(compared: Path) -> None:
    folder = compared / "reports" / "compare" / "tiny"
    rows = json.loads((folder / "paired.json").read_text(encoding="utf-8"))["differences"]
    assert [(r["task"], r["method"], r["metric"]) for r in rows] == COLUMNS
    assert all(r["encoder"] == "toy-b" for r in rows)
    by = {(r["task"], r["method"], r["metric"]): r for r in rows}

    a, b = _stored(compared, "pointing_game", "toy", "simple_gradient"), \
        _stored(compared, "pointing_game", "toy-b", "simple_gradient")
    both = [i for i in a if "scores" in a[i] and "scores" in b.get(i, {})]
    hits_a = np.array([a[i]["scores"]["pg"] for i in both])
    hits_b = np.array([b[i]["scores"]["pg"] for i in both])
    pg = by[("pointing_game", "simple_gradient", "pg")]
    assert pg["test"] == "McNemar exact" and pg["n"] == len(both) == 16
    assert pg["p"] == pytest.approx(mcnemar_exact_p(int(((hits_a == 1) & (hits_b == 0)).sum()),
                                                    int(((hits_a == 0) & (hits_b == 1)).sum())))
    assert pg["difference"] == pytest.approx(100 * (hits_b.mean() - hits_a.mean()))
    assert pg["ci95_low"] <= pg["difference"] <= pg["ci95_high"]

    energy = by[("pointing_game", "simple_gradient", "pg_energy")]
    ea = np.array([a[i]["scores"]["pg_energy"] for i in both])
    eb = np.array([b[i]["scores"]["pg_energy"] for i in both])
    assert energy["test"] == "Wilcoxon signed-rank"
    assert energy["p"] == pytest.approx(stats.wilcoxon(eb - ea).pvalue)
    assert energy["baseline_value"] == pytest.approx(100 * ea.mean())

    assert by[("pointing_game", "gradcam", "miou_pooled")]["test"] == "bootstrap"
    assert by[("zero_shot", None, "clean")]["test"] == "McNemar exact"
    robust = by[("zero_shot", None, "robust@4/255")]
    assert robust["n"] == 8 and robust["baseline_only"] == robust["other_only"] == 0  # the same attacked subset
    detectors = by[("clip_dissect", None, "detectors")]
    assert detectors["test"] == "no test" and detectors["p"] is None and detectors["n"] is None
    assert detectors["difference"] == _newest(compared, "clip_dissect", "toy-b", None).metrics["detectors"]["mean"] \
        - _newest(compared, "clip_dissect", "toy", None).metrics["detectors"]["mean"]

    tested = [r for r in rows if r["p"] is not None]
    assert [r["p_holm"] for r in tested] == pytest.approx(holm([r["p"] for r in tested]))
    assert all(r["significant"] == (r["p_holm"] < 0.05) for r in tested)
    header = _markdown_rows(folder / "paired.md")[0]
    assert header[:5] == ["column", "encoder", "test", "n", "left out"]


def test_a_second_compare_recomputes_nothing(compared: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    suite = compared.parent / "tiny.yaml"
    folder = compared / "reports" / "compare" / "tiny"
    before = {p: p.stat().st_mtime_ns for p in compared.rglob("*.json") if "reports" not in p.parts}
    scorecard = (folder / "scorecard.md").read_text(encoding="utf-8")
    calls = []
    original = Encoder.forward
    monkeypatch.setattr(Encoder, "forward", lambda encoder, pixels: calls.append(1) or original(encoder, pixels))
    capsys.readouterr()
    assert main(_argv(suite, compared)) == 0
    assert not calls  # no image was embedded again
    assert {p: p.stat().st_mtime_ns for p in compared.rglob("*.json") if "reports" not in p.parts} == before
    assert "0 stages run, 6 reused" in capsys.readouterr().out
    assert (folder / "scorecard.md").read_text(encoding="utf-8") == scorecard


def test_a_store_shared_with_a_larger_limit_is_cut_to_the_runs_selection(compared: Path) -> None:
    # the pointing-game stores hold the 16 samples of the first compare; a compare at --limit 8 scores its own
    # seeded subset and pairs exactly those (the selection rebuilt from the dataset)
    suite = compared.parent / "tiny.yaml"
    assert main([*_argv(suite, compared), "--limit", "8"]) == 0
    rows = json.loads((compared / "reports" / "compare" / "tiny" / "paired.json").read_text(encoding="utf-8"))
    pg = next(r for r in rows["differences"] if r["column"] == "pointing_game · gradcam · pg")
    stored = _stored(compared, "pointing_game", "toy", "gradcam", limit=8)
    assert pg["n"] == 8 and len(stored) > 8
    selected = select_ids(ShapesDataset(size=30, image_size=(32, 32)).ids(), 8, 0)
    assert set(selected) < set(stored) and _newest(compared, "pointing_game", "toy", "gradcam", limit=8).n == 8
