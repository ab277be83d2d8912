"""Suites as data: the built-in suites resolve into checked run plans with the headline columns the issue names,
a user's own file works, unknown keys and names are refused with a did-you-mean (exit status 2), bad values with a
message naming the file, entry and key (status 1), and the settings of a task run compose as documented (command
line over entry over the suite's defaults over the task's YAML; an entry that pins its dataset keeps it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aft_bench.apps.cli import main
from aft_bench.apps.compare.plan import build_plan
from aft_bench.apps.suites.suite import (
    DatasetSettings,
    SuiteDefaults,
    SuiteTask,
    UnknownSuiteKeyError,
    load_suite,
    parse_suite,
    suite_names,
)
from aft_bench.core.registry import UnknownNameError

ENCODERS = ("toy", "toy-aft", "toy-fare")


def _write(tmp_path: Path, text: str, name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_built_in_suites() -> None:
    assert suite_names() == ["interpretability", "quick", "robustness"]
    for name in suite_names():
        suite = load_suite(name)
        assert suite.name == name and suite.version == 1 and suite.description and suite.source == f"built-in:{name}"


def _columns(suite_name: str) -> list[tuple[str, str | None, str]]:
    plans = build_plan(load_suite(suite_name), ENCODERS, {})
    return [(p.entry.label, method, m.name) for p in plans for method in p.methods for m in p.headline]


def test_interpretability_suite_has_the_papers_headline_columns() -> None:
    columns = _columns("interpretability")
    methods = ("simple_gradient", "smoothgrad", "gradcam")
    expected = [("pointing_game", m, metric) for m in methods for metric in ("pg", "pg_energy")]
    expected += [("sparsity", m, "gini") for m in methods]
    expected += [("ssim_robustness", m, f"ssim@{s}") for m in ("gradcam", "simple_gradient") for s in (1, 3, 5, 7, 9)]
    expected += [(task, m, "auc") for task in ("roar", "road") for m in ("simple_gradient", "gradcam")]
    expected += [("clip_dissect", None, "detectors"), ("network_dissection", None, "detectors")]
    expected += [("zero_shot", None, name) for name in ("clean", "robust@2/255", "robust@4/255")]
    assert columns == expected


def test_robustness_and_quick_suites_resolve() -> None:
    assert _columns("robustness") == [("zero_shot", None, n) for n in ("clean", "robust@2/255", "robust@4/255")]
    quick = build_plan(load_suite("quick"), ENCODERS, {})
    assert {p.entry.task for p in quick} >= {"pointing_game", "zero_shot"}
    assert all(p.config.limit is not None for p in quick)  # a minute on the toy: every task on a subset


def test_a_users_suite_file_and_the_precedence_of_settings(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
        version: 1
        suite: {description: mine}
        defaults: {dataset: shapes, dataset_args: {size: 40}, limit: 20, seed: 3}
        tasks:
          - task: pointing_game
            attributions: gradcam
            options: {tolerance: 2}
            limit: 10
            headline: [pg]
          - task: sparsity
            name: gini_on_val
            dataset: shapes
            dataset_args: {size: 30, split: val}
        """)
    suite = load_suite(str(path))
    assert suite.name == "mine" and suite.source == str(path) and [t.label for t in suite.tasks] == \
        ["pointing_game", "gini_on_val"]
    pg, gini = build_plan(suite, ENCODERS, {"seed": None, "dataset_args": {"size": 50}})
    assert pg.config.attributions == ("gradcam",) and pg.config.options == {"tolerance": 2}
    assert pg.config.limit == 10 and pg.config.seed == 3 and pg.config.encoders == ENCODERS
    assert pg.config.dataset_args == {"size": 50}  # the command line's dataset_args over the suite's
    assert pg.config.batch_size == 16  # the task's YAML
    assert [m.name for m in pg.headline] == ["pg"] and pg.methods == ("gradcam",) and pg.per_sample
    assert gini.config.dataset_args == {"size": 30, "split": "val"}  # pinned: the command line leaves it alone
    assert gini.config.limit == 20 and gini.config.attributions == ("simple_gradient", "smoothgrad", "gradcam")
    assert [m.name for m in gini.headline] == ["gini"]  # no headline: every metric the task reports
    assert pg.stage("toy-aft").encoders == ("toy-aft",)
    assert build_plan(suite, ENCODERS, {"limit": 5})[1].config.limit == 5  # the command line over everything


def test_dataset_settings_come_as_one() -> None:
    defaults = SuiteDefaults(dataset="imagenet_s", data_root="/data/s", dataset_args={"split": "val"})
    free, pinned = SuiteTask(task="sparsity"), SuiteTask(task="sparsity", dataset="broden", data_root="/b")
    assert free.overrides(defaults, {})["data_root"] == "/data/s"
    assert free.overrides(defaults, {"data_root": "/elsewhere"})["data_root"] == "/elsewhere"
    other = free.overrides(defaults, {"dataset": "shapes"})  # another dataset: the suite's root and args go
    assert other["dataset"] == "shapes" and "data_root" not in other and "dataset_args" not in other
    kept = pinned.overrides(defaults, {"dataset": "shapes", "data_root": "/x", "limit": 4})
    assert (kept["dataset"], kept["data_root"], kept["limit"]) == ("broden", "/b", 4)


@pytest.mark.parametrize("text, message", [
    ("version: 1\ntaks: []\n", "unknown key 'taks'. Did you mean 'tasks'?"),
    ("version: 1\ntasks:\n  - task: sparsity\n    attributons: [gradcam]\n",
     "tasks[0]: unknown key 'attributons'. Did you mean 'attributions'"),
    ("version: 1\ndefaults: {limt: 3}\ntasks:\n  - task: sparsity\n", "defaults: unknown key 'limt'"),
    ("version: 1\nsuite: {nme: x}\ntasks:\n  - task: sparsity\n", "suite: unknown key 'nme'"),
])
def test_unknown_keys_are_refused_with_a_did_you_mean(tmp_path: Path, text: str, message: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(UnknownSuiteKeyError, match="Known keys"):
        load_suite(str(path))
    assert main(["compare", "--suite", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, message", [
    ("version: 2\ntasks:\n  - task: sparsity\n", "version=2"),
    ("tasks:\n  - task: sparsity\n", "version=None"),
    ("version: 1\ntasks: []\n", "at least one task entry"),
    ("version: 1\ntasks:\n  - name: x\n", "tasks[0]: the key 'task' is required"),
    ("version: 1\ntasks:\n  - task: sparsity\n    limit: -2\n", "tasks[0]: option limit=-2: give a positive integer"),
    ("version: 1\ntasks:\n  - task: sparsity\n    options: [1]\n", "tasks[0]: options=[1]: give a mapping"),
    ("version: 1\ntasks:\n  - task: sparsity\n  - task: sparsity\n", "two entries are labelled 'sparsity'"),
    ("version: 1\ntasks: [\n", "is not valid YAML"),
])
def test_bad_values_exit_1_naming_file_entry_and_key(tmp_path: Path, text: str, message: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, text)
    assert main(["compare", "--suite", str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert message in err and str(path) in err


def test_unknown_names_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--suite", "interpretabilty", "--out", str(tmp_path)]) == 2
    assert "unknown suite 'interpretabilty'. Did you mean 'interpretability'?" in capsys.readouterr().err
    bad = [("version: 1\ntasks:\n  - task: sparsty\n", "unknown task 'sparsty'"),
           ("version: 1\ntasks:\n  - task: sparsity\n    attributions: [gradcma]\n", "unknown attribution 'gradcma'"),
           ("version: 1\ntasks:\n  - task: sparsity\n    options: {targt: text}\n", "unknown option 'targt'"),
           ("version: 1\ntasks:\n  - task: sparsity\n    headline: [gin]\n", "Did you mean 'gini'?")]
    for i, (text, message) in enumerate(bad):
        path = _write(tmp_path, text, f"bad{i}.yaml")
        assert main(["compare", "--suite", str(path), "--out", str(tmp_path / "out")]) == 2
        assert message in capsys.readouterr().err
    assert main(["compare", "--encoders", "toyy", "--out", str(tmp_path / "out")]) == 2
    assert "Did you mean 'toy'" in capsys.readouterr().err
    assert main(["compare", "--suite", str(tmp_path / "missing.yaml")]) == 1
    assert "suite file" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_parse_suite_refuses_a_non_mapping() -> None:
    with pytest.raises(ValueError, match="a suite file is a mapping"):
        parse_suite([1, 2], "x.yaml", "x")


def test_list_shows_the_suites_without_importing_torch() -> None:
    code = ("import sys\nfrom aft_bench.apps.cli import main\nassert main(['compare', '--list']) == 0\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert lines[-1] == "False"
    for name in suite_names():
        assert any(line.startswith(name) and load_suite(name).description in line for line in lines)
    assert "tasks: pointing_game, sparsity, ssim_robustness, roar, road, clip_dissect, network_dissection, " \
           "zero_shot" in out


def test_set_and_skip_change_a_suite_from_the_command_line() -> None:
    suite = load_suite("interpretability")
    changed = suite.with_settings({"network_dissection": {"dataset": "broden", "data_root": "/data/broden"},
                                   "roar": {"limit": 100}}).without(["zero_shot", "road"])
    assert [t.label for t in changed.tasks] == ["pointing_game", "sparsity", "ssim_robustness", "roar",
                                                "clip_dissect", "network_dissection"]
    dissection = changed.tasks[-1]
    assert (dissection.dataset, dissection.data_root, dissection.headline) == ("broden", "/data/broden",
                                                                              ("detectors",))
    assert changed.tasks[3].limit == 100 and suite.tasks[3].limit is None  # a new suite; the loaded one is kept
    with pytest.raises(UnknownNameError, match="Did you mean 'roar'"):
        suite.without(["roarr"])
    with pytest.raises(UnknownSuiteKeyError, match="--set roar: unknown key 'limt'"):
        suite.with_settings({"roar": {"limt": 3}})
    with pytest.raises(ValueError, match="--set roar: option limit=0"):
        suite.with_settings({"roar": {"limit": 0}})
    with pytest.raises(ValueError, match="task and name stay"):
        suite.with_settings({"roar": {"task": "road"}})
    with pytest.raises(ValueError, match="leaves no task"):
        load_suite("robustness").without(["zero_shot"])


def test_set_and_skip_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--set", "roar=3", "--out", str(tmp_path)]) == 1
    assert "--set expects ENTRY.KEY=VALUE" in capsys.readouterr().err
    assert main(["compare", "--skip", "zero_shoot", "--out", str(tmp_path)]) == 2
    assert "unknown entry of suite 'interpretability' 'zero_shoot'. Did you mean 'zero_shot'?" in \
        capsys.readouterr().err


def test_per_dataset_settings_apply_only_on_their_dataset(tmp_path: Path) -> None:
    (zero_shot,) = build_plan(load_suite("interpretability").without(
        [t.label for t in load_suite("interpretability").tasks if t.task != "zero_shot"]), ENCODERS, {})
    assert zero_shot.config.dataset == "shapes" and zero_shot.config.options["robust_n"] == 25
    real = build_plan(load_suite("interpretability"), ENCODERS, {"dataset": "cifar10"})[-1]
    assert "robust_n" not in real.config.options  # the task's default: 1000, as the paper
    entry = SuiteTask(task="sparsity", options={"target": "text"}, dataset_args={"size": 20},
                      per_dataset={"shapes": DatasetSettings(options={"target": "probe"}, dataset_args={"size": 30},
                                                             limit=7)})
    on_shapes = entry.overrides(SuiteDefaults(limit=3), {"dataset_args": {"split": "val"}})
    assert on_shapes["options"] == {"target": "probe"} and on_shapes["limit"] == 7
    assert on_shapes["dataset_args"] == {"size": 30, "split": "val"}
    assert entry.overrides(SuiteDefaults(), {"limit": 2})["limit"] == 2  # the command line over everything
    path = _write(tmp_path, "version: 1\ntasks:\n  - task: sparsity\n    per_dataset: {shapes: {limt: 3}}\n")
    with pytest.raises(UnknownSuiteKeyError, match=r"tasks\[0\] per_dataset.shapes: unknown key 'limt'"):
        load_suite(str(path))
    path = _write(tmp_path, "version: 1\ntasks:\n  - task: sparsity\n    per_dataset: {shapes: {limit: 0}}\n")
    with pytest.raises(ValueError, match=r"tasks\[0\]: per_dataset.shapes: option limit=0"):
        load_suite(str(path))
