"""benchmarks/gpu_suite.py --tiny: every section of the GPU benchmark runs on the CPU and prints its figures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"


def test_tiny_suite_runs_every_section(capsys: pytest.CaptureFixture[str], one_thread: None) -> None:
    spec = importlib.util.spec_from_file_location("gpu_suite", SCRIPT)
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)  # type: ignore[union-attr]
    try:
        results = suite.main(["--tiny"])
    finally:
        for name in ("gpu_suite", "train_step", "attribution_speed", "apgd_speed"):
            sys.modules.pop(name, None)
    out = capsys.readouterr().out
    assert set(results) == {"train", "attributions", "pointing", "apgd"}
    assert not [name for name, result in results.items() if "error" in result], out
    assert "aft      step incl. AdamW" in out and "step GFLOPs" in out
    assert set(results["attributions"]["s_per_map"]) >= {"simple_gradient", "smoothgrad", "gradcam", "m2ib"}
    assert "m2ib batched" in out and results["attributions"]["m2ib_loop_s_per_map"] > 0
    assert results["pointing"]["images_per_s"] > 0 and "3 methods x 8 images in one pass" in out
    assert "APGD-CE:" in out and results["apgd"]["apgd_iteration_ms_per_image"] > 0
