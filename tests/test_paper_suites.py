"""The paper's suites as data: every built-in file parses through the compare's suite loader plus its ``paper``
section, names what it reproduces and needs (``aft-bench paper list``), and gives its roles encoders as the command
line says; a compare suite still refuses the ``paper`` key, and bad paper sections are refused by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aft_bench.apps.paper.measure import assign_roles, is_toy_world
from aft_bench.apps.paper.references import reference_ids
from aft_bench.apps.paper.spec import load_paper_suite, paper_suite_names
from aft_bench.apps.suites.suite import UnknownSuiteKeyError, load_suite, parse_suite
from aft_bench.core.registries import TASKS
from aft_bench.core.registry import UnknownNameError

ITEMS = ["Table 1", "Table 2", "Table 3", "Table 4", "Table 5", "Table 6", "Table 7", "Table 8", "Table 9", "Fig. 2",
         "Fig. 3 / Fig. 11", "Fig. 4", "Fig. 5", "Fig. 6", "Figs. 12-15"]


def test_every_paper_item_has_a_suite_in_the_papers_order() -> None:
    suites = [load_paper_suite(name) for name in paper_suite_names()]
    assert [s.paper.item for s in suites] == ITEMS
    for suite in suites:
        assert suite.paper.reference is None or suite.paper.reference in reference_ids()
        assert suite.paper.roles and suite.paper.needs.encoders and suite.paper.needs.gpu_hours > 0
        # every task is registered except the ones the suite declares it needs (Table 3's VLM attention)
        assert all(t.task in TASKS or t.task in suite.paper.needs.tasks for t in suite.suite.tasks)
        assert suite.paper.reference is not None or suite.paper.figures  # a table, or a figure's panels
    assert load_paper_suite("table3").paper.needs.tasks == ("vlm_attention",)


def test_paper_list_names_items_and_needs() -> None:
    # in a fresh interpreter: listing the suites imports no torch
    code = ("import sys; from aft_bench.apps.cli import main; status = main(['paper', 'list']); "
            "print('TORCH', 'torch' in sys.modules); sys.exit(status)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    out = done.stdout
    assert "TORCH False" in out
    for name, item in zip(paper_suite_names(), ITEMS, strict=True):
        assert f"{name:<9}{item}: " in out
    assert out.count("GPU hours") == len(ITEMS) and "tasks vlm_attention" in out
    assert "embedded world: original=toy, aft@4=toy-aft" in out


def test_compare_suites_still_refuse_a_paper_section(tmp_path: Path) -> None:
    data = {"version": 1, "tasks": [{"task": "sparsity"}], "paper": {"item": "Table 1"}}
    with pytest.raises(UnknownSuiteKeyError, match="'paper'"):
        parse_suite(data, "mine.yaml", "mine")
    assert load_suite("quick").sections == {}


def _write(tmp_path: Path, paper: str) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(f"version: 1\ntasks:\n  - task: sparsity\n    name: gini\npaper:\n{paper}", encoding="utf-8")
    return path


def test_bad_paper_sections_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="encoder role"):
        load_paper_suite(str(_write(tmp_path, "  item: X\n  roles: [{role: orignal}]\n")))
    with pytest.raises(UnknownSuiteKeyError, match="Did you mean 'roles'"):
        load_paper_suite(str(_write(tmp_path, "  item: X\n  roles: [{role: aft}]\n  rolse: []\n")))
    with pytest.raises(UnknownNameError, match="entry of suite"):
        load_paper_suite(str(_write(tmp_path, "  item: X\n  roles: [{role: aft}]\n"
                                              "  figures: [{name: a, kind: removal, entry: roar}]\n")))
    with pytest.raises(ValueError, match="a role appears twice"):
        load_paper_suite(str(_write(tmp_path, "  item: X\n  roles: [{role: aft}, {role: aft}]\n")))
    suite = load_paper_suite(str(_write(tmp_path, "  item: Mine\n  roles: [{role: aft, train_eps: 2}]\n")))
    assert suite.paper.roles[0].name == "aft@2" and suite.suite.tasks[0].label == "gini"


def test_roles_get_encoders_in_order_by_name_or_from_the_toy_world() -> None:
    suite = load_paper_suite("table2")
    assert assign_roles(suite, [], toy_world=True) == {"original": "toy", "aft@4": "toy-aft"}
    assert assign_roles(suite, ["ViT-L-14:openai", "ckpt:/a1"], toy_world=False) == \
        {"original": "ViT-L-14:openai", "aft@1": "ckpt:/a1"}
    assert assign_roles(suite, ["aft@4=ckpt:/a4", "original=ViT-L-14:openai"], toy_world=False) == \
        {"aft@4": "ckpt:/a4", "original": "ViT-L-14:openai"}
    with pytest.raises(ValueError, match="has no role 'aft@3'"):
        assign_roles(suite, ["aft@3=ckpt:/a3"], toy_world=False)
    with pytest.raises(ValueError, match="4 roles"):
        assign_roles(suite, ["a", "b", "c", "d", "e"], toy_world=False)
    assert is_toy_world([], {"dataset": None}) and not is_toy_world([], {"dataset": "imagenet"})
    assert not is_toy_world(["toy"], {})
