"""``aft-bench train`` on a tiny transformers CLIP (AFT) and a tiny timm ViT (FARE): the image tower changes, the
output reloads as the same backend and through the library's own loader, and a task evaluates it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from test_backend_models import NUM_CLASSES, TIMM_VIT, images_for, save_hf_clip, save_timm
from transformers import CLIPModel

from aft_bench.core.registries import TASKS
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.runner import run
from aft_bench.models.backends.timm import TimmEncoder
from aft_bench.models.backends.transformers import HFClipEncoder
from aft_bench.models.loading import load_encoder
from aft_bench.tasks.sparsity import Sparsity
from aft_bench.training.arguments import run_train

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(spec: str, out: Path, objective: str) -> Path:
    argv = ["--encoder", spec, "--objective", objective, "--data", "shapes:8", "--batch-size", "4", "--max-steps",
            "2", "--pgd-steps", "1", "--lr", "1e-2", "--threads", "1", "--out", str(out)]
    assert run_train(argv) == 0
    return out


def _evaluate(spec: str, out: Path, **options: object) -> float:
    with TASKS.temporary("sparsity", Sparsity, replace=True):
        config = resolve_config("sparsity", dict(encoders=[spec], attributions=["simple_gradient"], limit=2,
                                                 batch_size=2, out=str(out), options=options))
        (result,) = run(config).results
    assert result.n == 2
    return result.metrics["gini"]["mean"]


def test_aft_on_a_transformers_clip(tmp_path: Path) -> None:
    start = save_hf_clip(tmp_path / "start")
    out = _train(f"hf:{start}", tmp_path / "run", "aft")
    card = json.loads((out / "encoder.json").read_text())
    assert card["backend"] == "transformers" and card["objective"] == "aft" and card["base_encoder"] == f"hf:{start}"
    trained, original = load_encoder(f"ckpt:{out / 'encoder'}"), load_encoder(f"hf:{start}")
    assert isinstance(trained, HFClipEncoder)
    before, after = original.model.state_dict(), trained.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("vision_model."))
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("text_model."))
    native = CLIPModel.from_pretrained(out / "encoder", local_files_only=True).eval()  # transformers' own loader
    images = images_for(trained)
    with torch.no_grad():
        pooled = native.get_image_features(pixel_values=trained.normalize(images)).pooler_output
        torch.testing.assert_close(trained(images), F.normalize(pooled, dim=-1), atol=1e-6, rtol=1e-5)
        assert torch.equal(load_encoder(f"hf:{out / 'encoder'}")(images), trained(images))
    assert _evaluate(f"ckpt:{out / 'encoder'}", tmp_path / "results") > 0


def test_fare_on_a_timm_vit_and_the_head_target(tmp_path: Path) -> None:
    weights = save_timm(tmp_path / "start" / "weights.safetensors", *TIMM_VIT)
    spec = f"timm:{TIMM_VIT[0]}@{weights}"
    out = _train(spec, tmp_path / "run", "fare")
    trained = load_encoder(f"ckpt:{out / 'encoder.safetensors'}")
    assert isinstance(trained, TimmEncoder) and trained.card["objective"] == "fare"
    before, after = load_encoder(spec).model.state_dict(), trained.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("blocks."))
    native = timm.create_model(TIMM_VIT[0], pretrained=True, num_classes=NUM_CLASSES, **TIMM_VIT[1],
                               pretrained_cfg_overlay={"file": str(out / "encoder.safetensors")}).eval()
    images = images_for(trained)
    with torch.no_grad():
        features = native.forward_head(native.forward_features(trained.normalize(images)), pre_logits=True)
        torch.testing.assert_close(trained(images), F.normalize(features, dim=-1), atol=1e-6, rtol=1e-5)
    assert _evaluate(f"ckpt:{out / 'encoder.safetensors'}", tmp_path / "results", target="head",
                     probe_class="top1") > 0
