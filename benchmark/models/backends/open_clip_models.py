"""open_clip's models as aft-bench builds and reads them: architectures from config dicts, the bundled tokenizer,
full or vision-only state dicts, and pretrained weights looked up in the local caches with the hub held offline
(:mod:`aft_bench.models.hub`). The encoder class that wraps them is :mod:`aft_bench.models.backends.open_clip`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import open_clip
from open_clip.model import CLIP
from open_clip.tokenizer import SimpleTokenizer
from torch import Tensor

from aft_bench.core.registry import UnknownNameError
from aft_bench.models.checkpoints import load_strict
from aft_bench.models.hub import ENV_ONLINE, cached_file, hub_folder, offline_hub, online

HUB_PREFIX = "hf-hub:"
"""open_clip's own models on the Hugging Face hub (``open_clip_config.json``), not ``transformers`` ones."""


URL_CACHE = Path("~/.cache/clip")
"""Where open_clip keeps the weights it downloads by URL."""


HUB_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


HUB_CONFIG = "open_clip_config.json"


# ---------------------------------------------------------------------------------------- models
def build_model(model_cfg: Mapping[str, Any]) -> CLIP:
    """Builds a randomly initialised open_clip ``CLIP`` from an architecture config dict.

    Args:
        model_cfg: ``{"embed_dim": ..., "vision_cfg": {...}, "text_cfg": {...}, ...}`` as in
            open_clip's ``model_configs/*.json``.
    """
    cfg = dict(model_cfg)
    cfg.pop("custom_text", None)
    return CLIP(**cfg)


def model_config(arch: str) -> dict[str, Any]:
    """The open_clip architecture config of ``arch`` (raises with the known names if unknown)."""
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise UnknownNameError("open_clip architecture", arch, open_clip.list_models())
    return cfg


def tokenizer_for(model_cfg: Mapping[str, Any]) -> SimpleTokenizer:
    """open_clip's BPE tokenizer (bundled with the package, works offline) at the config's context length."""
    return SimpleTokenizer(context_length=int(model_cfg.get("text_cfg", {}).get("context_length", 77)))


def apply_state_dict(model: CLIP, state: Mapping[str, Tensor], source: str) -> str:
    """Loads a full or vision-only state dict into ``model``; returns "full" or "vision".

    Raises:
        CheckpointError: Naming the missing and unexpected keys when the checkpoint does not fit.
    """
    vision_only = not any(k.startswith("visual.") for k in state)
    load_strict(model.visual if vision_only else model, state, f"{source} ({'vision-only' if vision_only else 'full'} "
                "state dict)", "Check the architecture name given before '@'.")
    return "vision" if vision_only else "full"


# ---------------------------------------------------------------------------------------- weights in the caches
def cached_weights_folder(arch: str, tag: str | None) -> tuple[bool, Path]:
    """Whether open_clip would find the weights of ``arch`` (pretrained ``tag``, or ``hf-hub:ORG/NAME`` as
    ``arch``) in its local caches, and the folder it looks in.

    open_clip prefers the Hugging Face hub copy when a tag lists one (:func:`aft_bench.models.hub.hub_cache`), else
    the URL's file in ``~/.cache/clip``.
    """
    if arch.startswith(HUB_PREFIX):
        repo = arch.removeprefix(HUB_PREFIX)
        found = cached_file(repo, (HUB_CONFIG,)) is not None and cached_file(repo, HUB_WEIGHTS) is not None
        return found, hub_folder(repo)
    cfg = open_clip.get_pretrained_cfg(arch, tag or "")
    if cfg.get("hf_hub"):
        repo, filename = os.path.split(cfg["hf_hub"])
        names = (filename, filename.rsplit(".", 1)[0] + ".safetensors") if filename else HUB_WEIGHTS
        return cached_file(repo, names) is not None, hub_folder(repo)
    folder = URL_CACHE.expanduser()
    return (folder / os.path.basename(cfg.get("url", ""))).is_file(), folder


@contextlib.contextmanager
def weights_access(arch: str, tag: str | None, spec: str) -> Iterator[None]:
    """Checks the local caches for pretrained weights, then runs the block with the hub offline (unless
    :func:`aft_bench.models.hub.online`).

    Raises:
        FileNotFoundError: Naming the folder searched and how to place the weights there.
    """
    if online() or not (tag or arch.startswith(HUB_PREFIX)):
        yield
        return
    found, folder = cached_weights_folder(arch, tag)
    if not found:
        fetch = (f"open_clip.create_model('{arch}'" + (f", pretrained='{tag}')" if tag else ")"))
        raise FileNotFoundError(
            f"{spec}: the weights are not in the local cache (searched {folder}); on a machine with a connection "
            f"run python -c \"import open_clip; {fetch}\" and copy {folder} to the same place here, or set "
            f"{ENV_ONLINE}=1 to download them, or give the weights file as ARCH[:TAG]@PATH")
    with offline_hub():
        yield
