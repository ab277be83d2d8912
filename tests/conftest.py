"""Shared fixtures: tiny random-weight open_clip encoders of the real architectures (ViT, ModifiedResNet,
timm ConvNeXt)."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from aft_bench.models.backends.open_clip import OpenClipEncoder
from aft_bench.models.backends.open_clip_models import build_model, tokenizer_for
from aft_bench.models.encoder import Encoder
from aft_bench.models.loading import save_encoder
from aft_bench.toys.clip.recipe import ToyRecipe

TINY_VIT_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_CNN_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}

TINY_TIMM_CFG = {  # a timm image tower (ConvNeXt), as open_clip's convnext_* models have
    "embed_dim": 32,
    "vision_cfg": {"timm_model_name": "convnext_atto", "timm_model_pretrained": False, "timm_pool": "",
                   "timm_proj": "linear", "image_size": 64},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


# A toy-CLIP recipe small enough to train in well under a second: the real one trains for a minute or more.
TINY_TOY = ToyRecipe(image_size=32, patch_size=8, vision_width=32, vision_layers=1, vision_heads=2,
                     text_width=32, text_layers=1, text_heads=2, embed_dim=16, steps=3, batch_size=8,
                     warmup=1, pool_size=12, eval_size=10)


def direct_two_class_ranking(stats: Any, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The two-class AP's ranking by one sort of all 2N scores (``max - map`` for the background, ``map - min`` for
    the foreground), for checking the merged one of ``stats`` (a :class:`aft_bench.metrics.map_stats.MapStats`)."""
    from aft_bench.metrics import map_stats

    b = len(masks)
    lo, hi = stats.valid_range
    scores = torch.cat([(hi - stats.double).reshape(b, -1), (stats.double - lo).reshape(b, -1)], dim=1)
    positive = torch.cat([(masks == 0).reshape(b, -1), (masks == 1).reshape(b, -1)], dim=1)
    return map_stats._rank(scores, positive, (masks != -1).reshape(b, -1).repeat(1, 2), non_negative=True)


def make_encoder(cfg: dict, name: str, seed: int = 0) -> Encoder:
    """A random-weight open_clip encoder built from ``cfg`` with a fixed seed."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    return OpenClipEncoder(model, tokenizer_for(cfg), name=name, card={"model_cfg": cfg, "name": name}).eval()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, especially on a shared machine (use per module)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_vit() -> Encoder:
    return make_encoder(TINY_VIT_CFG, "tiny-vit")


@pytest.fixture(scope="session")
def tiny_cnn() -> Encoder:
    return make_encoder(TINY_CNN_CFG, "tiny-cnn")


@pytest.fixture(scope="session")
def tiny_timm() -> Encoder:
    return make_encoder(TINY_TIMM_CFG, "tiny-timm")


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random ViT saved as an aft-bench checkpoint (safetensors + card): training tests start from it."""
    encoder = make_encoder(TINY_VIT_CFG, "tiny-vit")
    return save_encoder(encoder, tmp_path_factory.mktemp("tiny") / "tiny.safetensors", encoder.card)


@pytest.fixture(scope="session")
def tiny48_ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Encoder spec of a tiny random ViT at 48 px, saved as an aft-bench checkpoint (the task tests' encoder)."""
    cfg = copy.deepcopy(TINY_VIT_CFG)
    cfg["vision_cfg"]["image_size"] = 48
    encoder = make_encoder(cfg, "tiny48")
    path = save_encoder(encoder, tmp_path_factory.mktemp("enc") / "tiny48", {"model_cfg": cfg, "name": "tiny48"})
    return f"ckpt:{path}"


@pytest.fixture
def registered():
    """``registered(REGISTRY, name, obj)`` puts ``obj`` under ``name`` for one test (replacing a built-in entry),
    through the registry's public ``temporary`` context manager; everything is restored afterwards."""
    with contextlib.ExitStack() as stack:

        def add(registry, name: str, obj: object) -> None:
            stack.enter_context(registry.temporary(name, obj, replace=True))

        yield add


def hidden_names(folder: Path) -> list[str]:
    """The names of the hidden entries of ``folder`` (what an interrupted atomic write or build would leave)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def task_config(task: str, encoder: str, out: Path, **changes: Any) -> Any:
    """The run configuration of ``task`` on ``encoder`` with the simple gradient in batches of 4, results in ``out``;
    ``changes`` (``limit=N``, ...) override any of it."""
    from aft_bench.evaluation.config import resolve_config

    overrides = dict(encoders=[encoder], attributions=["simple_gradient"], batch_size=4, out=str(out))
    overrides.update(changes)
    return resolve_config(task, overrides)
