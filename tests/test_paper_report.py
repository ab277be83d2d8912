"""``aft-bench paper all`` end to end on the toy world (the real toy CLIP at a tiny recipe in the three roles, tiny
sample counts, one ROAR fraction, a random LLaVA as the toy VLM): every suite reported, tables holding the
stored numbers, panels drawn, a second report that computes nothing, and ``report.html`` in a real headless
browser."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from browser import Browser, browser_fixture, is_png
from conftest import TINY_TOY

from aft_bench.apps.cli import main
from aft_bench.apps.paper.spec import paper_suite_names
from aft_bench.core.registries import ENCODERS, VLMS
from aft_bench.data.shapes import CLASSNAMES
from aft_bench.models.convert import vision_config
from aft_bench.models.encoder import Encoder
from aft_bench.results.files import read_results
from aft_bench.results.table import latest
from aft_bench.toys.clip.store import load_toy_encoder
from aft_bench.toys.vlm.synthetic import LlavaShape, random_llava_folder

RECIPE = dataclasses.replace(TINY_TOY, vision_layers=2)  # two blocks: Grad-CAM's default block is the second last
ROLES = ("toy", "toy-aft", "toy-fare")  # one tiny toy (trained once) under the three names: the names tell them apart
LIGHT_ROAR = "{shapes: {options: {fractions: [0.5], seeds: 1, train_limit: 12, random_baseline: false}}}"
TINY = ["--limit", "4", "--dataset-arg", "size=12", "--set", f"roar_text.per_dataset={LIGHT_ROAR}",
        "--set", f"roar_probe.per_dataset={LIGHT_ROAR}", "--set", "roar_text.attributions=[simple_gradient]",
        "--set", "roar_probe.attributions=[gradcam]"]

browser = browser_fixture()


@pytest.fixture(scope="module")
def toys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A tiny toy as ``toy``, ``toy-aft`` and ``toy-fare``, trained once, on one thread."""
    with pytest.MonkeyPatch.context() as patch, contextlib.ExitStack() as stack:
        patch.setenv("AFT_BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        for name in ROLES:
            stack.enter_context(ENCODERS.temporary(name, lambda device="cpu": load_toy_encoder(device,
                                                                                                  recipe=RECIPE),
                                                   replace=True))
        tower = vision_config(load_toy_encoder(recipe=RECIPE).model.visual)
        llava = random_llava_folder(tmp_path_factory.mktemp("llava"), CLASSNAMES, LlavaShape.for_tower(tower))
        stack.enter_context(VLMS.temporary("toy", lambda: llava, replace=True))  # the real toy VLM trains for minutes
        yield
        torch.set_num_threads(threads)


def _argv(results: Path, report: Path) -> list[str]:
    return ["paper", "all", "--results", str(results), "--out", str(report), *TINY]


@pytest.fixture(scope="module")
def reported(toys: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(results store, report folder) of one ``paper all`` on the tiny toy world."""
    folder = tmp_path_factory.mktemp("paper")
    results, report = folder / "results", folder / "report"
    assert main(_argv(results, report)) == 0
    return results, report


def _facts(report: Path) -> dict:
    return json.loads((report / "report.json").read_text(encoding="utf-8"))


def test_every_suite_is_reported(reported: tuple[Path, Path]) -> None:
    _, report = reported
    statuses = {s["suite"]: s for s in _facts(report)["suites"]}
    assert list(statuses) == paper_suite_names()
    assert statuses["fig5"]["status"] == "partial"  # the eps / steps sweeps need trained checkpoints' cards
    done = [name for name, s in statuses.items() if name != "fig5"]
    assert all(statuses[name]["status"] == "done" for name in done), statuses
    assert all(statuses[name]["stages_run"] + statuses[name]["stages_reused"] > 0 for name in done)
    for name in ("table1", "table2", "table3", "table4", "table5", "table6", "table7", "table8", "table9"):
        assert (report / f"{name}.md").is_file() and (report / f"{name}.csv").is_file()
    text = (report / "report.md").read_text(encoding="utf-8")
    assert "embedded world" in text and "a seeded subset of 4 samples" in text
    assert "(d) concept detectors against the fine-tuning radius: not drawn" in text


def test_tables_hold_the_stored_numbers(reported: tuple[Path, Path]) -> None:
    results, report = reported
    stored = {(r.encoder, r.attribution): r for r in latest(read_results(results / "ssim_robustness"))}
    lines = [line.split(" | ") for line in (report / "table7.md").read_text(encoding="utf-8").splitlines()
             if line.startswith("| w/")]
    assert [line[0] for line in lines] == ["| w/o AFT", "| w/ AFT"]
    for line, spec in zip(lines, ("toy", "toy-aft"), strict=True):
        result = stored[(spec, "gradcam")]
        for cell, metric in zip(line[1:], ("ssim@1", "ssim@3", "ssim@5", "ssim@7", "ssim@9"), strict=True):
            assert cell.startswith(f"{result.metrics[metric]['mean']:.2f} (")
    table8 = (report / "table8.md").read_text(encoding="utf-8")
    assert "| Supervised ViT-B-16 | - (" in table8  # the toy world has no ImageNet-supervised network
    table2 = (report / "table2.md").read_text(encoding="utf-8")
    assert "shapes" in table2.splitlines()[4]  # the measured dataset, after the paper's columns


def test_panels_are_drawn(reported: tuple[Path, Path]) -> None:
    _, report = reported
    figures = sorted(p.name for p in (report / "figures").iterdir())
    for prefix, count in (("fig2__fig2__maps_sg_gc", 2), ("fig3__fig3__roar_text", 3), ("fig3__fig3__roar_probe", 3),
                          ("fig4__fig4__attention", 2), ("fig12__fig12__strengths", 2)):
        assert len([f for f in figures if f.startswith(prefix)]) == count, (prefix, figures)
    assert len([f for f in figures if f.endswith(".hist.png")]) == 2
    assert len([f for f in figures if f.endswith(".top.png")]) == 2
    assert all(is_png(p) for p in (report / "figures").glob("*.png"))


def test_a_second_report_computes_nothing(reported: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    results, report = reported
    stored = {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file() and "stages" not in p.parts}
    tables = {p.name: p.read_text(encoding="utf-8") for p in report.glob("table*.md")}
    calls = []
    original = Encoder.forward
    monkeypatch.setattr(Encoder, "forward", lambda encoder, pixels: calls.append(1) or original(encoder, pixels))
    assert main(_argv(results, report)) == 0
    assert not calls  # no image was embedded again
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file() and "stages" not in p.parts} == stored
    assert all(s["stages_run"] == 0 for s in _facts(report)["suites"])
    assert {p.name: p.read_text(encoding="utf-8") for p in report.glob("table*.md")} == tables


def test_report_html_in_a_browser(reported: tuple[Path, Path], browser: Browser, tmp_path: Path) -> None:
    _, report = reported
    page = report / "report.html"
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "<script" not in text  # self-contained
    browser.open(page)
    assert browser.console_errors() == []
    tables = browser.find_all("table")
    assert len(tables) == 1 + len([p for p in report.glob("*.csv")])  # the statuses, then one per paper table
    assert all(len(t.find_elements("css selector", "tr")) > 1 for t in tables)
    images = browser.find_all("img")
    assert len(images) == len(list((report / "figures").glob("*.png")))
    assert all(img.get_attribute("src").startswith("data:image/png;base64,") for img in images)
    assert browser.script("return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0);")
    sections = [s.get_attribute("id") for s in browser.find_all("section")]
    assert sections == ["run", "suites", *paper_suite_names()]
    assert is_png(browser.screenshot(tmp_path / "report.png"))


def test_given_encoders_fill_the_roles_in_order_or_by_name(tiny48_ckpt: str, tmp_path: Path, one_thread: None,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    results, report = tmp_path / "results", tmp_path / "report"
    argv = ["paper", "table7", "--results", str(results), "--out", str(report), "--limit", "2"]
    assert main([*argv, "--encoders", f"aft@4={tiny48_ckpt}"]) == 0
    facts = _facts(report)
    assert facts["suites"][0]["encoders"] == {"aft@4": tiny48_ckpt} and facts["encoders"] == [f"aft@4={tiny48_ckpt}"]
    lines = (report / "table7.md").read_text(encoding="utf-8").splitlines()
    original, aft = (line for line in lines if line.startswith("| w/"))
    assert original.startswith("| w/o AFT | - (91.18) |")  # no encoder for the original role: the paper's alone
    assert aft.startswith("| w/ AFT | ") and "- (" not in aft and aft.count("†") == 5  # shapes, not ImageNet-S
    assert "- † dataset shapes (paper: imagenet_s)" in lines
    text = (report / "report.md").read_text(encoding="utf-8")
    assert "role w/o AFT (original): no encoder in this run, its cells stay empty" in text
    capsys.readouterr()
    assert main([*argv, "--encoders", tiny48_ckpt]) == 0  # in the roles' order: the original role
    assert _facts(report)["suites"][0]["encoders"] == {"original": tiny48_ckpt}
    assert _facts(report)["suites"][0]["stages_reused"] == 1  # the same stage as before: nothing recomputed
    assert main([*argv, "--encoders", "nope=toy"]) == 1
    assert "suite table7 has no role 'nope'" in _facts(report)["suites"][0]["message"]
