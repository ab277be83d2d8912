"""The command line: fast help, listings, exit codes, a run and the leaderboard rebuild."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_VIT_CFG, make_encoder

from aft_bench.cli import main
from aft_bench.loading import save_encoder


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
        "from aft_bench.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['ls', 'attributions']); main(['ls', 'metrics'])\n"
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
    assert csv_text.splitlines()[0].startswith("task,task_version,dataset,encoder,attribution,options,n")
    assert len(csv_text.splitlines()) == 3 and "tolerance=2" in csv_text
    assert (out / "leaderboard.md").exists() and (out / "leaderboard.csv").exists()
    assert main(["table", str(tmp_path / "missing")]) == 1


def test_default_world_on_the_toy(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The embedded default end to end: the toy CLIP (trained into the user cache on first use, then reused),
    every gradient method, resume of a finished run, and the leaderboard."""
    out = tmp_path / "toy"
    args = ["run", "--encoders", "toy", "--limit", "8", "--batch-size", "4", "--out", str(out)]
    assert main(args) == 0
    first = capsys.readouterr().out
    for method in ("simple_gradient", "smoothgrad", "gradcam"):
        assert f"| toy | {method} | 8 | 0 |" in first
    assert main(args) == 0  # everything stored: recomputes nothing, same numbers, a second result file each
    assert capsys.readouterr().out.splitlines()[:6] == first.splitlines()[:6]
    assert len(list((out / "pointing_game").glob("*.json"))) == 6
