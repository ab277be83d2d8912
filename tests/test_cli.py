"""The command line: fast help, listings, exit codes (unknown names 2, user errors one line, bugs with their
traceback and "internal error"; ``train`` too), a run and the leaderboard rebuild."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from conftest import TINY_VIT_CFG, make_encoder

from aft_bench.apps.cli import LISTS, main
from aft_bench.core.errors import UserError
from aft_bench.core.registries import DATASETS, ENCODERS, TASKS
from aft_bench.data.base import DataError, Sample
from aft_bench.data.shapes import ShapesDataset
from aft_bench.evaluation import config as config_module
from aft_bench.evaluation import runner as runner_module
from aft_bench.evaluation.config import TaskSpec
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.task import Task
from aft_bench.models.loading import save_encoder
from aft_bench.results.result import RunResult


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    cfg = copy.deepcopy(TINY_VIT_CFG)
    cfg["vision_cfg"]["image_size"] = 48
    path = save_encoder(make_encoder(cfg, "cli48"), tmp_path_factory.mktemp("enc") / "cli48",
                        {"model_cfg": cfg, "name": "cli48"})
    return f"ckpt:{path}"


def test_help_and_ls_do_not_import_torch() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from aft_bench.apps.cli import main\n"
        "from aft_bench.apps.cli import LISTS\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for what in LISTS:\n        assert main(['ls', what]) == 0\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_ls_lists_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "attributions"]) == 0
    out = capsys.readouterr().out
    assert "simple_gradient" in out and "smoothgrad" in out and "gradcam" in out
    assert main(["ls", "encoders"]) == 0
    assert "ARCH:TAG" in capsys.readouterr().out


def test_unknown_names_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["run", "--attributions", "gradcma", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown attribution 'gradcma'" in err and "Did you mean 'gradcam'" in err
    assert main(["run", "--task", "pointing_gme", "--out", str(tmp_path)]) == 2
    assert main(["run", "--encoders", "toyy", "--out", str(tmp_path)]) == 2
    assert "Did you mean 'toy'" in capsys.readouterr().err


def test_bad_input_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_ckpt: str) -> None:
    code = main(["run", "--encoders", tiny_ckpt, "--dataset", "imagenet_s", "--data-root", str(tmp_path / "nope"),
                 "--out", str(tmp_path)])
    assert code == 1
    assert str(tmp_path / "nope") in capsys.readouterr().err
    assert main(["run", "--option", "tolerance", "--out", str(tmp_path)]) == 1
    assert "--option expects key=value" in capsys.readouterr().err


def test_run_then_table(capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_ckpt: str) -> None:
    out = tmp_path / "res"
    code = main(["run", "--task", "pointing_game", "--encoders", tiny_ckpt, "--attributions", "simple_gradient",
                 "gradcam", "--limit", "6", "--batch-size", "3", "--seed", "1", "--device", "cpu", "--out", str(out),
                 "--option", "tolerance=2", "--attr-arg", "gradcam.block=-1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| pg ↑ |" in printed and printed.count("cli48") == 2
    results = sorted((out / "pointing_game").glob("*.json"))
    assert len(results) == 2
    (out / "pointing_game" / "leaderboard.md").unlink()
    assert main(["table", str(out), "--format", "csv"]) == 0
    csv_text = capsys.readouterr().out
    assert csv_text.splitlines()[0].startswith("task,task_version,dataset,data_root,dataset_args,encoder,attribution,"
                                               "attribution_args,options,seed,limit,n,excluded,skipped")
    assert len(csv_text.splitlines()) == 4 and "tolerance=2" in csv_text  # two results and their chance row
    assert ",chance,random map (exact)," in csv_text.splitlines()[-1]
    assert (out / "leaderboard.md").exists() and (out / "leaderboard.csv").exists()
    assert main(["table", str(tmp_path / "missing")]) == 1


@pytest.fixture(scope="module")
def default_toy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path, str]:
    """The embedded default's pointing game on the toy CLIP (trained into the user cache on first use, then reused):
    the command, its output folder and what it printed."""
    out = tmp_path_factory.mktemp("default") / "toy"
    args = ["run", "--encoders", "toy", "--limit", "8", "--batch-size", "4", "--out", str(out)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(args) == 0
    return args, out, printed.getvalue()


def test_default_world_on_the_toy(default_toy_run: tuple[list[str], Path, str],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The embedded default end to end: every gradient method, resume of a finished run, and the leaderboard."""
    args, out, first = default_toy_run
    for method in ("simple_gradient", "smoothgrad", "gradcam"):
        assert f"| toy | {method} | 8 | 0 |" in first
    assert main(args) == 0  # everything stored: recomputes nothing, same numbers, the stored result files stand
    assert capsys.readouterr().out.splitlines()[:6] == first.splitlines()[:6]
    assert len(list((out / "pointing_game").glob("*.json"))) == 3


def test_default_world_scores_match_the_records_before_the_layout_change(
        default_toy_run: tuple[list[str], Path, str]) -> None:
    """Every per-sample record of the default run (scores, pooled counts, chance levels) equals, float for float, the
    one the code wrote before the package was split into layers (``tests/data/default_run_toy.json``)."""
    golden = json.loads((Path(__file__).parent / "data" / "default_run_toy.json").read_text(encoding="utf-8"))
    if golden["torch"] != torch.__version__:
        pytest.skip(f"the records were written with torch {golden['torch']}; this is torch {torch.__version__}, "
                    "whose kernels may round differently")
    _, out, _ = default_toy_run
    stores = {path.name.split("__")[1]: sorted((json.loads(line) for line in path.read_text().splitlines()),
                                                key=lambda record: record["id"])
              for path in (out / "pointing_game" / "samples").glob("*.jsonl")}
    assert sorted(stores) == sorted(golden["records"])
    for method, records in golden["records"].items():
        assert stores[method] == records, method


# ---------------------------------------------------------------------------------------- error handling
class _Boom(Task):
    """Raises ``error`` as soon as it runs (before yielding any result)."""

    error: BaseException = RuntimeError("boom")

    def run(self, ctx: RunContext) -> Iterator[RunResult]:
        raise self.error
        yield  # a generator, as real tasks are


def _boom_task(error: BaseException) -> type[Task]:
    return type("BoomTask", (_Boom,), {"error": error})


@pytest.fixture
def boom_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tasks/boom.yaml`` for the fake task: a version and no defaults (other tasks read their real YAML)."""
    real = config_module.load_task_spec

    def load(task: str) -> TaskSpec:
        return TaskSpec(task, 1, {}) if task == "boom" else real(task)

    monkeypatch.setattr(config_module, "load_task_spec", load)
    monkeypatch.setattr(runner_module, "load_task_spec", load)


def _no_loading(device: str = "cpu") -> None:
    raise AssertionError("an encoder was loaded")


@pytest.mark.parametrize("error", [RuntimeError("boom in the task"), TypeError("boom in the task"),
                                   KeyError("boom in the task"), AssertionError("boom in the task")])
def test_unexpected_exception_prints_traceback_and_internal_error(
        error: BaseException, boom_spec: None, registered, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    registered(TASKS, "boom", _boom_task(error))
    assert main(["run", "--task", "boom", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback (most recent call last)" in err and f"{type(error).__name__}: " in err
    assert "boom in the task" in err and "in run" in err  # the task's frame is in the traceback
    last = err.strip().splitlines()[-1]
    assert "internal error" in last and err.index("Traceback") < err.index("internal error")
    assert captured.out == ""


@pytest.mark.parametrize("error", [DataError("sample s-3: mask of the wrong size"),
                                   FileNotFoundError("/nowhere/x.png does not exist"),
                                   UserError("non-finite loss at step 3")])
def test_user_error_in_a_task_is_one_line(error: BaseException, boom_spec: None, registered, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    registered(TASKS, "boom", _boom_task(error))
    assert main(["run", "--task", "boom", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"aft-bench: error: {error}"]
    with pytest.raises(type(error)):  # -vv shows the traceback: the error propagates
        main(["-vv", "run", "--task", "boom", "--out", str(tmp_path)])


def _messages(err: str) -> list[str]:
    """The lines of ``err`` without the progress bars (tqdm's, which a real run draws on stderr)."""
    return [line for line in err.splitlines() if line.strip() and not re.search(r"\d+/\d+ \[", line)]


class _BrokenShapes(ShapesDataset):
    """Shapes whose sample 1 cannot be read."""

    def load(self, sample_id: str) -> Sample:
        if sample_id.endswith("-1"):
            raise DataError(f"{sample_id}.png: cannot decode image")
        return super().load(sample_id)


def test_bad_sample_in_a_real_run_is_one_line_and_skip_counts_it(registered, tmp_path: Path, tiny_ckpt: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    registered(DATASETS, "broken_shapes", _BrokenShapes)
    args = ["run", "--task", "pointing_game", "--encoders", tiny_ckpt, "--attributions", "simple_gradient",
            "--dataset", "broken_shapes", "--dataset-arg", "size=4", "--batch-size", "2", "--out", str(tmp_path)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert _messages(err) == ["aft-bench: error: sample shapes-test-0-1: shapes-test-0-1.png: cannot decode image "
                     "(pass --on-error skip to skip and count such samples)"]
    assert main([*args, "--on-error", "skip"]) == 0
    assert "| 3 |" in capsys.readouterr().out  # n = 3 of the 4 samples


def test_misspelt_option_exits_2_before_any_encoder_loads(registered, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    registered(ENCODERS, "toy", _no_loading)
    base = ["run", "--task", "pointing_game", "--encoders", "toy", "--out", str(tmp_path)]
    assert main([*base, "--option", "tolerence=15"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aft-bench: error: unknown option 'tolerence' for task 'pointing_game'.")
    assert "Did you mean 'tolerance'" in err and "AssertionError" not in err
    assert main([*base, "--option", "tolerance=-1"]) == 1  # a bad value, also before loading
    assert capsys.readouterr().err.splitlines() == ["aft-bench: error: option tolerance=-1: give a number >= 0"]
    # the control: with a valid option the run reaches the encoder, which raises
    assert main([*base, "--option", "tolerance=15"]) == 1
    err = capsys.readouterr().err
    assert "AssertionError: an encoder was loaded" in err and "internal error" in err
    assert not (tmp_path / "pointing_game").exists() or not list((tmp_path / "pointing_game").glob("*.json"))


# ---------------------------------------------------------------------------------------- train
def test_train_bad_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--no-such-flag"])
    assert info.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_train_bad_value_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", "--batch-size", "0", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == ["aft-bench: error: invalid training option: --batch-size 0 must be "
                                                    "positive"]


def test_train_missing_data_folder_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                               tiny_ckpt: str) -> None:
    missing = tmp_path / "no-such-folder"
    assert main(["train", "--encoder", tiny_ckpt, "--data", str(missing), "--device", "cpu",
                 "--out", str(tmp_path / "run")]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"aft-bench: error: --data '{missing}': not 'shapes[:N]'")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_train_unknown_objective_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", "--objective", "far", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown objective 'far'" in err and "Did you mean 'fare'" in err


# ---------------------------------------------------------------------------------------- ls
@pytest.mark.parametrize(("what", "names"), [
    ("classifiers", ["probe", "zero_shot"]),
    ("retrainers", ["cnn", "probe"]),
    ("attacks", ["apgd-ce", "apgd-t"]),
    ("regularizers", ["box", "box-pixelnorm", "elastic-net", "group-patch", "group-pixel"]),
])
def test_ls_new_registries(what: str, names: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """``ls`` lists a registry's names alphabetically, each with its declared help line."""
    assert main(["ls", what]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == names
    registry = LISTS[what]
    for name, line in zip(names, lines, strict=True):
        assert registry.help(name) and line.split(None, 1)[1] == registry.help(name)


# ---------------------------------------------------------------------------------------- logging and threads
class _Probe(Task):
    """Records the package's logging level and torch's thread count while it runs."""

    seen: ClassVar[list[tuple[int, int]]] = []

    def run(self, ctx: RunContext) -> Iterator[RunResult]:
        import torch

        self.seen.append((logging.getLogger("aft_bench").getEffectiveLevel(), torch.get_num_threads()))
        return iter(())


@pytest.mark.parametrize(("flags", "level"), [
    ([], logging.WARNING), (["-v"], logging.INFO), (["-vv"], logging.DEBUG), (["-v", "-v"], logging.DEBUG),
    (["-q"], logging.ERROR), (["--verbose", "--quiet"], logging.WARNING),
])
@pytest.mark.parametrize("where", ["before", "after"])
def test_verbosity_flags_anywhere(flags: list[str], level: int, where: str, boom_spec: None, registered,
                                  tmp_path: Path) -> None:
    registered(TASKS, "boom", _Probe)
    _Probe.seen.clear()
    args = ["run", "--task", "boom", "--out", str(tmp_path)]
    assert main([*flags, *args] if where == "before" else [*args, *flags]) == 0
    assert _Probe.seen[0][0] == level


def test_train_logs_info_by_default_and_run_warnings() -> None:
    from aft_bench.apps.cli import log_level, split_verbosity

    assert log_level("train", 0) == logging.INFO and log_level("run", 0) == logging.WARNING
    assert log_level("train", 1) == logging.DEBUG and log_level("train", -1) == logging.WARNING
    assert log_level("ls", -9) == logging.CRITICAL and log_level("figure", 9) == logging.DEBUG
    assert split_verbosity(["train", "--steps", "3", "-q", "-vv", "--", "-v"]) == (1, ["train", "--steps", "3",
                                                                                       "--", "-v"])


def test_threads_apply_to_the_run_and_are_restored(boom_spec: None, registered, tmp_path: Path) -> None:
    import torch

    registered(TASKS, "boom", _Probe)
    _Probe.seen.clear()
    before = torch.get_num_threads()
    assert main(["run", "--task", "boom", "--threads", "3", "--out", str(tmp_path)]) == 0
    assert _Probe.seen[0][1] == 3 and torch.get_num_threads() == before


@pytest.mark.parametrize(("flags", "progress_shown"), [([], True), (["-v"], True), (["-q"], False)])
def test_progress_lines_show_by_default_and_hide_with_quiet(monkeypatch: pytest.MonkeyPatch, flags: list[str],
                                                            progress_shown: bool) -> None:
    import logging

    from aft_bench.apps import cli

    seen: list[bool] = []
    monkeypatch.setattr(cli, "cmd_ls", lambda args: seen.append(cli.PROGRESS_LOG.isEnabledFor(logging.INFO)) or 0)
    assert main([*flags, "ls", "tasks"]) == 0
    assert seen == [progress_shown]
