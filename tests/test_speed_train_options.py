"""The trainer's speed options on the CPU against the plain fp32 run of the same steps, on the tiniest model of the
suite (random ViT, 32 px, 2 blocks of width 32), two AFT steps with 2 PGD steps each.

Tolerances: channels-last (the same operators on another memory layout) 1e-6 absolute on every trained tensor and
every logged figure. ``torch.compile`` (the towers compiled, the PGD loop eager) runs here with the ``aot_eager``
backend, marked: Dynamo's graph capture and AOTAutograd's backward, the parts that could change the math, but not
inductor's C++ code generation, whose compile of this step takes minutes on 2 shared cores (164 s measured);
first-step figures (loss, gradient norm, PGD objective: before any update) to 1e-5 relative, trained tensors to
1e-4 absolute, a tenth of the learning rate (Adam divides by the root of the squared gradient, so a rounding-level
difference in a near-zero gradient moves a weight by up to the learning rate). bf16 autocast: the PGD objective and
the perturbation's norm (fp32 deltas) within 1% of fp32's; the AFT loss at the first step is a distance between
nearly equal embeddings, of the size of bfloat16's rounding of them (2**-9 relative), so only within a factor 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from aft_bench.training.arguments import run_train

pytestmark = pytest.mark.usefixtures("one_thread")


FIRST_STEP = ("loss", "grad_norm", "inner", "pgd_first", "pgd_last", "delta_norm")


def _train(ckpt: Path, out: Path, *extra: str) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    argv = ["--encoder", f"ckpt:{ckpt}", "--objective", "aft", "--data", "shapes:16", "--batch-size", "4",
            "--max-steps", "2", "--pgd-steps", "2", "--lr", "1e-3", "--threads", "1", "--out", str(out), *extra]
    assert run_train(argv) == 0
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return load_file(out / "encoder.safetensors"), log


@pytest.fixture(scope="module")
def plain(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, torch.Tensor], list[dict]]:
    return _train(tiny_ckpt, tmp_path_factory.mktemp("plain"))


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_channels_last_trains_the_same_weights(plain, tiny_ckpt: Path, tmp_path: Path) -> None:
    weights, log = _train(tiny_ckpt, tmp_path, "--channels-last")
    assert _max_difference(weights, load_file(tiny_ckpt)) > 1e-4  # the steps moved the weights
    assert _max_difference(weights, plain[0]) <= 1e-6
    for step, reference in zip(log, plain[1], strict=True):
        for figure in FIRST_STEP:
            assert step[figure] == pytest.approx(reference[figure], abs=1e-6), figure


def test_compiled_towers_train_the_same_weights(plain, tiny_ckpt: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[str] = []
    original = torch.compile

    def aot_eager(model, **kwargs):  # noqa: ANN001, ANN003, ANN202 - torch.compile's signature
        compiled.append(type(model).__name__)
        return original(model, backend="aot_eager", **kwargs)

    monkeypatch.setattr(torch, "compile", aot_eager)
    torch._dynamo.reset()
    weights, log = _train(tiny_ckpt, tmp_path, "--compile")
    assert compiled == ["ImageTower", "ImageTower"]  # outer and inner tower
    for figure in FIRST_STEP:
        assert log[0][figure] == pytest.approx(plain[1][0][figure], rel=1e-5), figure
    assert _max_difference(weights, plain[0]) <= 1e-4


def test_bf16_autocast_stays_near_fp32(plain, tiny_ckpt: Path, tmp_path: Path) -> None:
    weights, log = _train(tiny_ckpt, tmp_path, "--precision", "bf16")
    assert all(w.dtype == torch.float32 for w in weights.values())  # the weights stay fp32 under autocast
    for figure in ("inner", "pgd_first", "pgd_last", "delta_norm"):
        assert log[0][figure] == pytest.approx(plain[1][0][figure], rel=0.01), figure
    assert log[0]["loss"] != plain[1][0]["loss"] and 0.5 <= log[0]["loss"] / plain[1][0]["loss"] <= 2
