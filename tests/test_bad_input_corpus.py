"""The bad-input corpus: every bad input the evaluation-core and results issues list, through
``aft_bench.apps.cli.main``.

Each case must end with the documented exit status (2 for unknown names and option keys, 1 for bad input),
print no traceback, name the offending value in its message, load no encoder, and leave every file under
``--out`` as it was.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from aft_bench.apps.cli import main
from aft_bench.core.registries import ENCODERS

# (name, argv with {out} and {tmp} placeholders, exit status, text the message must contain)
CASES: list[tuple[str, list[str], int, str]] = [
    ("misspelt option", ["run", "--option", "tolerence=15"], 2, "Did you mean 'tolerance'"),
    ("option value", ["run", "--option", "tolerance=abc"], 1, "tolerance='abc'"),
    ("option of another task", ["run", "--option", "robust_n=5"], 2, "'robust_n'"),
    ("misspelt hyperparameter", ["run", "--attributions", "smoothgrad", "--attr-arg", "smoothgrad.sigmaa=0.1"], 2,
     "'sigmaa'"),
    ("hyperparameter of a method not run", ["run", "--attributions", "simple_gradient", "--attr-arg",
                                            "gradcam.block=-1"], 1, "gradcam"),
    ("misspelt dataset argument", ["run", "--dataset-arg", "sise=10"], 2, "'sise'"),
    ("limit 0", ["run", "--limit", "0"], 1, "--limit 0"),
    ("batch size 0", ["run", "--batch-size", "0"], 1, "0"),
    ("unknown task", ["run", "--task", "pointing_gam"], 2, "'pointing_gam'"),
    ("unknown encoder", ["run", "--encoders", "toyy"], 2, "'toyy'"),
    ("unknown architecture", ["run", "--encoders", "ViT-Q-99@{tmp}/w.pt"], 2, "ViT-Q-99"),
    ("checkpoint card without an architecture", ["run", "--encoders", "ckpt:{tmp}/bad.safetensors"], 1,
     "bad.json"),
    ("unknown dataset", ["run", "--dataset", "shapez"], 2, "'shapez'"),
    ("unknown attribution", ["run", "--attributions", "gradkam"], 2, "'gradkam'"),
    ("unknown device", ["run", "--device", "cudaa"], 1, "cudaa"),
    ("out under a file", ["run", "--out", "{tmp}/a-file/results"], 1, "a-file"),
    ("table of a missing folder", ["table", "{tmp}/missing"], 1, "missing"),
    ("figure format", ["figure", "--out", "{out}/grid.gif"], 1, "gif"),
    ("figure option", ["figure", "--option", "targt=probe", "--out", "{out}/grid.png"], 2, "'targt'"),
    ("train encoder", ["train", "--encoder", "toyy", "--out", "{out}/t"], 2, "'toyy'"),
    ("train steps", ["train", "--max-steps", "0", "--out", "{out}/t"], 1, "--max-steps"),
    ("train radius", ["train", "--eps", "-4", "--out", "{out}/t"], 1, "--eps"),
    ("train data", ["train", "--data", "{tmp}/no-such-folder", "--out", "{out}/t"], 1, "no-such-folder"),
    ("train flag", ["train", "--no-such-flag"], 2, "--no-such-flag"),
]
if not torch.cuda.is_available():
    CASES.append(("train on cuda without one", ["train", "--device", "cuda", "--out", "{out}/t"], 1, "cuda"))


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def corpus_dirs(tmp_path: Path, registered) -> tuple[Path, Path]:
    """``out`` with a finished-looking results folder in it, and ``tmp`` with the bad files the cases use."""
    def no_loading(device: str = "cpu") -> None:
        raise AssertionError("an encoder was loaded for a bad input")

    registered(ENCODERS, "toy", no_loading)
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    (out / "pointing_game" / "samples").mkdir(parents=True)
    (out / "pointing_game" / "leaderboard.md").write_text("# an earlier run's leaderboard\n")
    (out / "pointing_game" / "samples" / "earlier.jsonl").write_text('{"id": "a", "scores": {"pg": 1.0}}\n')
    tmp.mkdir()
    (tmp / "a-file").write_text("not a folder")
    (tmp / "w.pt").write_bytes(b"")
    (tmp / "bad.safetensors").write_bytes(b"")
    (tmp / "bad.json").write_text(json.dumps({"name": "bad"}))
    return out, tmp


@pytest.mark.parametrize(("name", "argv", "status", "named"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_message_and_changes_nothing(
    name: str, argv: list[str], status: int, named: str, corpus_dirs: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, tmp = corpus_dirs
    before = _tree(out)
    args = [a.format(out=out, tmp=tmp) for a in argv]
    if args[0] in ("run", "figure") and "--out" not in args:
        args += ["--out", str(out)]
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code
    err = capsys.readouterr().err
    assert code == status, err
    assert "Traceback" not in err and "internal error" not in err
    assert named.format(out=out, tmp=tmp) in err
    assert _tree(out) == before  # nothing under --out changed or lost
