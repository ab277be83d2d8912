"""The training loop on CPU with a tiny ViT: exact resume, NaN stop, corrupt images, outputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from conftest import TINY_CNN_CFG, TINY_TIMM_CFG, TINY_VIT_CFG, make_encoder
from PIL import Image
from safetensors.torch import load_file

from aft_bench.core.cache import cached
from aft_bench.core.errors import USER_ERRORS
from aft_bench.core.registries import OBJECTIVES
from aft_bench.data.base import DataError
from aft_bench.models.loading import load_encoder, save_encoder
from aft_bench.training.arguments import config_from_args, run_train
from aft_bench.training.checkpoint import ResumeError, load_checkpoint
from aft_bench.training.objectives.aft import AFTObjective
from aft_bench.training.trainer import NonFiniteError, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _argv(ckpt: Path, out: Path, *extra: str) -> list[str]:
    return ["--encoder", f"ckpt:{ckpt}", "--data", "shapes:48", "--batch-size", "4", "--max-steps", "5",
            "--pgd-steps", "2", "--lr", "1e-3", "--save-every", "2", "--threads", "1", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def uninterrupted(tiny_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full")
    assert run_train(_argv(tiny_ckpt, out)) == 0
    return out


class _Killed(Exception):
    pass


def _metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("images_per_s")
    return rows


def test_resume_after_a_kill_is_exact(tiny_ckpt, uninterrupted, tmp_path, monkeypatch, caplog):
    kill_at = int(np.random.default_rng(2024).integers(3, 6))  # a "random" step, fixed for reproducibility
    calls = {"n": 0}
    original = AFTObjective.__call__

    def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise _Killed
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AFTObjective, "__call__", dying)
    with pytest.raises(_Killed):
        run_train(_argv(tiny_ckpt, tmp_path))
    monkeypatch.setattr(AFTObjective, "__call__", original)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2 * ((kill_at - 1) // 2)
    # Resume, stop once more on purpose (as a preemption), resume to the end.
    with caplog.at_level(logging.INFO, logger="aft_bench.training.arguments"):
        assert run_train(_argv(tiny_ckpt, tmp_path, "--stop-at-step", "4")) == 0
        assert "stopped at step 4 of 5; run the same command again to resume" in caplog.text
        assert not (tmp_path / "encoder.safetensors").exists()
        assert run_train(_argv(tiny_ckpt, tmp_path)) == 0
        assert f"trained encoder: {tmp_path / 'encoder.safetensors'}" in caplog.text
    full, resumed = load_file(uninterrupted / "encoder.safetensors"), load_file(tmp_path / "encoder.safetensors")
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)  # bit for bit
    assert _metrics(uninterrupted) == _metrics(tmp_path)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 5 and {"torch", "numpy", "python"} <= set(state["rng"][0])
    assert state["data"][0]["batch"] == 5 % (48 // 4) and state["data"][0]["epoch"] == 0


def test_cached_fine_tune_killed_mid_way_continues_to_the_same_weights(tiny_ckpt, uninterrupted, tmp_path,
                                                                       monkeypatch):
    """How the toy-aft / toy-fare presets are built: a resumable cache build around the trainer."""
    original = AFTObjective.__call__
    calls = {"n": 0}

    def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # after the step-2 checkpoint
            raise _Killed
        return original(self, *args, **kwargs)

    def build(directory: Path) -> None:
        assert run_train(_argv(tiny_ckpt, directory)) == 0

    monkeypatch.setattr(AFTObjective, "__call__", dying)
    with pytest.raises(_Killed):
        cached("fine-tune", build, root=tmp_path, resumable=True)
    assert load_checkpoint(tmp_path / ".fine-tune.partial" / "checkpoint.pt")["step"] == 2
    calls["n"] = -100  # no more deaths; count the steps the second build runs
    done = cached("fine-tune", build, root=tmp_path, resumable=True)
    assert calls["n"] == -100 + 3  # steps 3 to 5 only
    full, resumed = load_file(uninterrupted / "encoder.safetensors"), load_file(done / "encoder.safetensors")
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)
    assert len(_metrics(done)) == 5 and _metrics(done) == _metrics(uninterrupted)


def test_resume_refuses_a_different_recipe(tiny_ckpt, uninterrupted):
    with pytest.raises(ResumeError, match="different recipe"):
        run_train(_argv(tiny_ckpt, uninterrupted, "--eps", "2"))


def test_trained_checkpoint_loads_as_encoder_and_in_plain_open_clip(tiny_ckpt, uninterrupted, tmp_path):
    path = uninterrupted / "encoder.safetensors"
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["objective"] == "aft" and card["train_steps"] == 5 and card["eps"] == pytest.approx(4 / 255)
    assert {"versions", "seed", "data", "base_encoder", "sigma", "eta", "pgd_steps"} <= set(card)
    trained = load_encoder(f"ckpt:{path}")
    original = load_encoder(f"ckpt:{tiny_ckpt}")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    # Only the image tower changed; the text tower is the original one.
    trained_state, original_state = trained.model.state_dict(), original.model.state_dict()
    changed = {k for k in trained_state if not torch.equal(trained_state[k], original_state[k])}
    assert changed and all(k.startswith("visual.") for k in changed)
    # Plain open_clip: register the architecture, create the model, load the vision weights.
    (tmp_path / "tiny-vit-trained.json").write_text(json.dumps(TINY_VIT_CFG))
    open_clip.add_model_config(tmp_path / "tiny-vit-trained.json")
    model = open_clip.create_model("tiny-vit-trained").eval()
    weights = load_file(path)
    model.visual.load_state_dict({k.removeprefix("visual."): v for k, v in weights.items()
                                  if k.startswith("visual.")})
    with torch.no_grad():
        plain = torch.nn.functional.normalize(model.encode_image(trained.normalize(x)), dim=-1)
        assert torch.allclose(plain, trained(x), atol=1e-6)


class _NaNAtThirdStep(AFTObjective):
    """AFT whose loss becomes NaN at its third evaluation (a diverging run)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def __call__(self, *args, **kwargs):
        out = super().__call__(*args, **kwargs)
        self.calls += 1
        if self.calls == 3:
            out.loss = out.loss * float("nan")
        return out


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tiny_ckpt, tmp_path):
    argv = _argv(tiny_ckpt, tmp_path, "--objective", "test-nan-at-3")
    with OBJECTIVES.temporary("test-nan-at-3", _NaNAtThirdStep, help="test only"):
        with pytest.raises(NonFiniteError, match="at step 3") as err:
            train(config_from_args(argv))
        assert "checkpoint.pt (step 2)" in str(err.value) and isinstance(err.value, USER_ERRORS)  # one line, no trace
        state = load_checkpoint(tmp_path / "checkpoint.pt")
        assert state["step"] == 2
        assert all(torch.isfinite(v).all() for v in state["model"].values())
        assert not (tmp_path / "encoder.safetensors").exists()
        with pytest.raises(NonFiniteError, match="at step 5"):  # resumes at 2, NaN at its third step
            run_train(argv)


def _image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(7):
        folder = root / f"n0{i % 2}"  # ImageNet train layout: class/xxx.JPEG
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".JPEG" if i % 2 else ".png"
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"img{i}{suffix}")
    bad = root / "n01" / "corrupt.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    return bad


def test_corrupt_image_fails_by_default_and_the_run_resumes_skipping_it_on_request(tiny_ckpt, tmp_path, caplog):
    bad = _image_folder(tmp_path / "images")
    # Seed 2 orders epoch 0 as [6 5 7 2 | 3 4 0 1]: the corrupt file (index 4 of 8, sorted) is in step 2's batch.
    argv = ["--encoder", f"ckpt:{tiny_ckpt}", "--data", str(tmp_path / "images"), "--batch-size", "4", "--seed", "2",
            "--max-steps", "2", "--pgd-steps", "1", "--save-every", "1", "--out", str(tmp_path / "run")]
    with pytest.raises(DataError, match="corrupt.JPEG"):
        run_train(argv)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 1
    with caplog.at_level(logging.INFO):  # on_error is not part of the recipe: the stopped run continues
        result = train(config_from_args([*argv, "--on-error", "skip"]))
    assert "resumed" in caplog.text and str(bad) in caplog.text
    assert result.step == 2 and result.skipped_images == 1 and result.encoder_path is not None
    card = json.loads(result.encoder_path.with_suffix(".json").read_text())
    assert card["skipped_images"] == 1 and "8 images" in card["data"]


def test_supervised_aft_trains_on_a_caption_file(tiny_ckpt, tmp_path):
    _image_folder(tmp_path / "images").unlink()  # readable images only: image-only data fails for its captions
    files = sorted((tmp_path / "images").rglob("img*"))
    lines = ["path,caption"] + [f"{f.relative_to(tmp_path)},a photo of thing {i}" for i, f in enumerate(files)]
    (tmp_path / "captions.csv").write_text("\n".join(lines) + "\n")
    argv = ["--encoder", f"ckpt:{tiny_ckpt}", "--data", str(tmp_path / "captions.csv"), "--batch-size", "4",
            "--max-steps", "1", "--pgd-steps", "2", "--objective", "aft-supervised", "--out", str(tmp_path / "o")]
    result = train(config_from_args(argv))
    rows = [json.loads(line) for line in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    assert result.encoder_path is not None and np.isfinite(rows[0]["loss"])
    image_only = [*argv[:3], str(tmp_path / "images"), *argv[4:-1], str(tmp_path / "o2")]
    with pytest.raises(DataError, match="caption"):
        train(config_from_args(image_only))


@pytest.mark.parametrize("cfg", [TINY_CNN_CFG, TINY_TIMM_CFG], ids=["modified_resnet", "timm_convnext"])
def test_cnn_towers_train_too(cfg, tmp_path):
    encoder = make_encoder(cfg, "tower")
    ckpt = save_encoder(encoder, tmp_path / "start.safetensors", encoder.card)
    assert run_train(["--encoder", f"ckpt:{ckpt}", "--data", "shapes:16", "--batch-size", "4", "--max-steps", "2",
                 "--pgd-steps", "2", "--lr", "1e-3", "--out", str(tmp_path / "out")]) == 0
    start, trained = load_file(ckpt), load_file(tmp_path / "out" / "encoder.safetensors")
    assert any(not torch.equal(start[k], trained[k]) for k in start if k.startswith("visual."))
    assert all(torch.equal(start[k], trained[k]) for k in start if not k.startswith("visual."))
