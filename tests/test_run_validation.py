"""Bad run settings are refused before any encoder loads, each with one line naming the value and what to do; a
run scores the whole dataset unless ``--limit`` subsamples it, and its results say which."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from aft_bench.apps.cli import build_parser, main
from aft_bench.core.registries import ENCODERS, TASKS
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.runner import run
from aft_bench.tasks.roar import RoarOptions
from aft_bench.tasks.zero_shot import ZeroShotOptions


def _no_loading(device: str = "cpu") -> None:
    raise AssertionError("an encoder was loaded")


@pytest.fixture
def no_encoder(registered) -> list[str]:
    """A run of the pointing game whose encoder ``toy`` must never load."""
    registered(ENCODERS, "toy", _no_loading)
    return ["run", "--task", "pointing_game", "--encoders", "toy"]


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "an encoder was loaded" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("aft-bench: error: "), err
    return lines[0]


@pytest.mark.parametrize(("args", "code", "expected"), [
    (["--attributions", "simple_gradient", "--attr-arg", "gradcam.block=-1"], 1,
     ["'gradcam' is not one of the run's --attributions (simple_gradient)", "gradcam.block"]),
    (["--attributions", "smoothgrad", "--attr-arg", "smoothgrad.sigmaa=0.1"], 2,
     ["unknown smoothgrad hyperparameter 'sigmaa'", "Did you mean 'sigma'", "n_samples"]),
    (["--attributions", "smoothgrad", "--attr-arg", "smoothgrad.n=50"], 2,
     ["unknown smoothgrad hyperparameter 'n'", "n_samples"]),
    (["--dataset-arg", "sise=10"], 2, ["unknown shapes dataset argument 'sise'", "Did you mean 'size'"]),
    (["--dataset-arg", "image_size=10"], 1, ["--dataset-arg image_size=...: the run sets image_size itself"]),
    (["--option", "tolerance=abc"], 1, ["option tolerance='abc': give a finite number"]),
    (["--limit", "0"], 1, ["--limit 0: give a positive number of samples, or leave --limit out for all"]),
    (["--limit", "-5"], 1, ["--limit -5: give a positive number of samples, or leave --limit out for all"]),
    (["--batch-size", "0"], 1, ["--batch-size 0: give a positive number of samples per batch"]),
    (["--num-workers", "-1"], 1, ["--num-workers -1: give 0"]),
    (["--threads", "0"], 1, ["--threads 0: give a positive number of CPU threads"]),
])
def test_bad_settings_are_one_line_before_any_encoder_loads(args: list[str], code: int, expected: list[str],
                                                            no_encoder: list[str], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*no_encoder, "--out", str(tmp_path), *args]) == code
    line = _one_line(capsys)
    for text in expected:
        assert text in line
    assert not (tmp_path / "pointing_game").exists()


def test_the_control_reaches_the_encoder(no_encoder: list[str], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Valid settings of the same kinds get past every check (to the encoder, which raises here)."""
    args = ["--attributions", "smoothgrad", "--attr-arg", "smoothgrad.n_samples=2", "--attr-arg",
            "smoothgrad.sigma=0.1", "--dataset-arg", "size=4", "--limit", "2", "--threads", "1", "--out", str(tmp_path)]
    assert main([*no_encoder, *args]) == 1
    assert "AssertionError: an encoder was loaded" in capsys.readouterr().err


def test_help_example_of_attr_arg_is_a_real_hyperparameter(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "smoothgrad.n_samples=50" in text and "smoothgrad.n=50" not in text
    assert "default: all samples of the dataset" in text and "--threads N" in text


@pytest.mark.parametrize("out", ["somefile.txt/results", "somefile.txt/deeper/results"])
def test_out_under_a_file_is_refused_before_any_work(out: str, no_encoder: list[str], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "somefile.txt").write_text("not a folder")
    assert main([*no_encoder, "--out", str(tmp_path / out)]) == 1
    line = _one_line(capsys)
    assert f"--out {tmp_path / out}: {tmp_path / 'somefile.txt'} is a file, not a folder" in line


def test_out_in_an_unwritable_place_is_refused(no_encoder: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*no_encoder, "--out", "/proc/aft-bench-results"]) == 1  # /proc refuses new folders, even to root
    assert "--out /proc/aft-bench-results: cannot create folders in /proc" in _one_line(capsys)


# ---------------------------------------------------------------------------------------- whole datasets
@pytest.mark.parametrize("task", sorted(TASKS.names()))
def test_no_task_limits_its_samples_by_default(task: str) -> None:
    assert resolve_config(task, {}).limit is None


def test_paper_protocol_defaults() -> None:
    assert resolve_config("zero_shot", {}).options.get("robust_n") is None  # the option's default: 1000
    assert ZeroShotOptions().robust_n == 1000
    assert resolve_config("roar", {}).options["train_limit"] is None and RoarOptions().train_limit is None


def test_shapes_keeps_a_small_size_through_its_own_defaults() -> None:
    from aft_bench.data.shapes import ShapesDataset

    assert len(ShapesDataset()) == 200 and len(ShapesDataset(split="train")) == 500
    assert dict(resolve_config("pointing_game", {}).dataset_args) == {}
    assert dict(resolve_config("zero_shot", {}).dataset_args) == {"size": 100}  # the toy's run stays short
    assert dict(resolve_config("zero_shot", {"dataset_args": {"size": 30}}).dataset_args) == {"size": 30}
    assert dict(resolve_config("zero_shot", {"dataset": "cifar10"}).dataset_args) == {}  # shapes only


def test_results_record_the_dataset_size_and_subsampling(tiny48_ckpt: str, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    def extra(limit: int | None, out: str) -> dict:
        config = resolve_config("sparsity", {"encoders": [tiny48_ckpt], "attributions": ["simple_gradient"],
                                             "dataset_args": {"size": 6}, "limit": limit, "out": str(tmp_path / out)})
        (result,) = run(config).results
        return {k: result.extra[k] for k in ("dataset_size", "selected", "subsampled")} | {"n": result.n}

    with caplog.at_level(logging.INFO, logger="aft_bench"):
        assert extra(None, "all") == {"dataset_size": 6, "selected": 6, "subsampled": False, "n": 6}
        assert "dataset 'shapes': scoring 6 of its 6 samples" in caplog.text
        assert extra(4, "some") == {"dataset_size": 6, "selected": 4, "subsampled": True, "n": 4}
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert extra(10, "more") == {"dataset_size": 6, "selected": 6, "subsampled": False, "n": 6}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["--limit 10 is larger than dataset 'shapes', which has 6 samples: scoring all 6"]
