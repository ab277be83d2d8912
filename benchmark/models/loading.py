"""Loading and saving encoders: registered names, open_clip specs, ``transformers`` and timm models, checkpoints.

Encoder specs understood by :func:`load_encoder` (one backend each, ``ENCODER_BACKENDS``):

- a registered name (``toy``, ...): the registry's factory;
- ``hf:ORG/NAME`` or ``hf:/path/to/folder``: a ``transformers`` CLIP (``CLIPModel``, or a
  ``CLIPVisionModelWithProjection`` with a ``CLIPTextModelWithProjection`` in ``text/``) from the Hugging Face
  cache or a ``save_pretrained`` folder, never downloaded (:mod:`aft_bench.models.backends.transformers`);
- ``timm:NAME`` or ``timm:NAME@PATH``: a timm classifier, random or with weights from a safetensors/``.pt``
  file; its embedding is the pre-logits feature (:mod:`aft_bench.models.backends.timm`);
- ``ARCH:TAG`` (``ViT-B-16:openai``): an open_clip architecture with a pretrained tag, weights from
  the user's open_clip cache (``ARCH`` alone gives random weights, for tests);
- ``hf-hub:ORG/NAME``: an open_clip model published on the Hugging Face hub (from the local cache);

  both look in the local caches first and run the hub client offline, so a missing file fails at once naming
  the folder searched; ``AFT_BENCH_ONLINE=1`` lets open_clip download what is missing;
- ``ckpt:PATH``: a checkpoint written by aft-bench (``.json`` card beside it naming its ``backend``, default
  open_clip: safetensors of the architecture and pretrained tag it started from);
- ``ARCH[:TAG]@PATH``: architecture (and tag, for the text tower) with weights from ``PATH``, a full
  open_clip state dict or a vision-only one as AFT/FARE publish (``model.visual.state_dict()``,
  possibly under ``vision_encoder_state_dict``/``state_dict``/``model``), in ``.pt`` or safetensors.

Any spec may end in ``?mean=NAME`` (``openai``, ``imagenet``, ``inception``: that set's mean and std) or
``?mean=A,B,C&std=A,B,C`` to override the normalisation (MONET: ``ViT-L-14:openai@monet.pt?mean=imagenet``);
the override is recorded in the encoder's card (``normalisation``) and so in every result's.

Every ``.pt`` file is read with ``torch.load(weights_only=True)``: a checkpoint that would need to
unpickle arbitrary objects is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.model import CLIP
from open_clip.tokenizer import SimpleTokenizer
from safetensors.torch import load_file
from torch import Tensor

from aft_bench.core.registries import ENCODER_BACKENDS, ENCODERS
from aft_bench.core.registry import UnknownNameError
from aft_bench.models.backends.open_clip import CARD_SUFFIX
from aft_bench.models.encoder import OPENAI_MEAN, OPENAI_STD, Encoder
from aft_bench.models.normalisation import override_normalisation, split_normalisation

log = logging.getLogger(__name__)

NESTED_KEYS = ("vision_encoder_state_dict", "state_dict", "model_state_dict", "model")
ENV_ONLINE = "AFT_BENCH_ONLINE"  # "1": let open_clip download missing weights (default: local caches only)
URL_CACHE = Path("~/.cache/clip")  # where open_clip keeps weights it downloads by URL
HUB_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HUB_CONFIG = "open_clip_config.json"
#: spec prefix -> ENCODER_BACKENDS name, for the backends other than open_clip (the default) and registered names
SPEC_PREFIXES = {"hf:": "transformers", "timm:": "timm"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unsafe, unreadable or not matching the architecture."""


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


# ---------------------------------------------------------------------------------------- state dicts
def load_state_dict_safely(path: str | Path) -> dict[str, Tensor]:
    """Reads tensors from ``.safetensors`` or a ``.pt``/``.pth``/``.bin`` file without unpickling code.

    Nested dicts (``{"vision_encoder_state_dict": {...}}``, ``{"state_dict": {...}}``) are unwrapped
    and a DDP ``module.`` prefix is stripped.

    Raises:
        CheckpointError: If the file is missing, unreadable, or holds pickled objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            state: Any = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {exc}") from exc
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(
                f"refused to load {path}: it contains pickled Python objects that could run code "
                f"(weights_only=True rejected it: {str(exc).splitlines()[0]}). Re-save the tensors alone "
                "(torch.save(model.state_dict(), ...)) or as safetensors."
            ) from exc
        except (RuntimeError, OSError, EOFError) as exc:
            raise CheckpointError(f"checkpoint {path} is not a readable torch file: {exc}") from exc
    for key in NESTED_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def apply_state_dict(model: CLIP, state: Mapping[str, Tensor], source: str) -> str:
    """Loads a full or vision-only state dict into ``model``; returns "full" or "vision".

    Raises:
        CheckpointError: Naming the missing and unexpected keys when the checkpoint does not fit.
    """
    vision_only = not any(k.startswith("visual.") for k in state)
    load_strict(model.visual if vision_only else model, state, f"{source} ({'vision-only' if vision_only else 'full'} "
                "state dict)", "Check the architecture name given before '@'.")
    return "vision" if vision_only else "full"


def load_strict(module: torch.nn.Module, state: Mapping[str, Tensor], source: str, hint: str = "") -> None:
    """``module.load_state_dict(state, strict=True)`` with an error naming the missing and unexpected keys.

    Raises:
        CheckpointError: When the keys or shapes do not fit (``hint`` says what to check).
    """
    missing, unexpected = _mismatch(module, state)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {source} does not match the architecture: {len(missing)} missing keys {_preview(missing)}, "
            f"{len(unexpected)} unexpected keys {_preview(unexpected)}. {hint}".rstrip()
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"checkpoint {source} does not match the architecture: {exc}") from exc


def _mismatch(module: torch.nn.Module, state: Mapping[str, Tensor]) -> tuple[list[str], list[str]]:
    expected = set(module.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)


def _preview(keys: list[str], n: int = 5) -> str:
    return "[" + ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") + "]"


# ---------------------------------------------------------------------------------------- save
def save_encoder(encoder: Encoder, path: str | Path, card: Mapping[str, Any]) -> Path:
    """Writes the encoder through its backend (:meth:`Encoder.save`) with ``card`` as JSON beside it, atomically.

    The card is completed with the encoder's mean and std (unless given). open_clip cards must name how to
    rebuild the architecture: ``arch`` (an open_clip name) or ``model_cfg`` (a config dict); other backends add
    their ``backend`` entry and what they need themselves.

    Returns:
        The path ``ckpt:`` takes (the safetensors file; a ``save_pretrained`` folder for ``transformers``).
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    full_card = {"mean": list(encoder.mean.flatten().tolist()), "std": list(encoder.std.flatten().tolist())}
    full_card.update(card)
    return encoder.save(path, full_card)


# ---------------------------------------------------------------------------------------- load
def check_encoder_spec(spec: str) -> None:
    """Fails fast (before any model is built) on a spec that names no encoder.

    Raises:
        UnknownNameError: For a plain name that is neither registered nor an open_clip architecture, an unknown
            architecture before ``:`` or ``@``, or a pretrained tag open_clip does not know for the architecture.
        CheckpointError: For a ``ckpt:`` spec whose card is missing, unreadable or names no architecture.
    """
    spec = split_normalisation(spec)[0]
    if spec.startswith("ckpt:") and spec not in ENCODERS:
        read_card(spec)
        return
    if spec in ENCODERS or spec.startswith("hf-hub:"):
        return
    prefix = _backend_prefix(spec)
    if prefix:
        ENCODER_BACKENDS.get(SPEC_PREFIXES[prefix]).check_spec(spec.removeprefix(prefix))
        return
    arch_tag, at, _ = spec.partition("@")
    arch, colon, tag = arch_tag.partition(":")
    if arch not in open_clip.list_models():
        if not (at or colon):
            raise UnknownNameError("encoder", spec, ENCODERS.names() + ["ARCH:TAG", "hf-hub:NAME", "ckpt:PATH",
                                                                    "hf:ORG/NAME", "timm:NAME"])
        raise UnknownNameError("open_clip architecture", arch, open_clip.list_models())
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag and tag.lower() not in tags:
        raise UnknownNameError(f"{arch} pretrained tag", tag, tags)


def online() -> bool:
    """Whether open_clip may download missing weights (``AFT_BENCH_ONLINE=1``); by default only caches are read."""
    return os.environ.get(ENV_ONLINE, "").strip().lower() in ("1", "true", "yes")


def _hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hub_file(repo: str, names: tuple[str, ...]) -> bool:
    """Whether one of ``names`` of hub repository ``repo`` is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo, name, cache_dir=_hub_cache()), str) for name in names)


def cached_weights_folder(arch: str, tag: str | None) -> tuple[bool, Path]:
    """Whether open_clip would find the weights of ``arch`` (pretrained ``tag``, or ``hf-hub:ORG/NAME`` as
    ``arch``) in its local caches, and the folder it looks in.

    open_clip prefers the Hugging Face hub copy when a tag lists one (``HF_HUB_CACHE``, by default
    ``~/.cache/huggingface/hub``), else the URL's file in ``~/.cache/clip``.
    """
    if arch.startswith("hf-hub:"):
        repo = arch.removeprefix("hf-hub:")
        return _hub_file(repo, (HUB_CONFIG,)) and _hub_file(repo, HUB_WEIGHTS), _hub_folder(repo)
    cfg = open_clip.get_pretrained_cfg(arch, tag or "")
    if cfg.get("hf_hub"):
        repo, filename = os.path.split(cfg["hf_hub"])
        names = (filename, filename.rsplit(".", 1)[0] + ".safetensors") if filename else HUB_WEIGHTS
        return _hub_file(repo, names), _hub_folder(repo)
    folder = URL_CACHE.expanduser()
    return (folder / os.path.basename(cfg.get("url", ""))).is_file(), folder


def _hub_folder(repo: str) -> Path:
    return _hub_cache() / f"models--{repo.replace('/', '--')}"


@contextlib.contextmanager
def _offline_hub() -> Iterator[None]:
    """The Hugging Face hub client answers from its cache only while the block runs (no requests, no retries)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


@contextlib.contextmanager
def _weights_access(arch: str, tag: str | None, spec: str) -> Iterator[None]:
    """Checks the local cache for pretrained weights, then runs the block offline (unless :func:`online`).

    Raises:
        FileNotFoundError: Naming the folder searched and how to place the weights there.
    """
    if online() or not (tag or arch.startswith("hf-hub:")):
        yield
        return
    found, folder = cached_weights_folder(arch, tag)
    if not found:
        fetch = (f"open_clip.create_model('{arch}'" + (f", pretrained='{tag}')" if tag else ")"))
        raise FileNotFoundError(
            f"{spec}: the weights are not in the local cache (searched {folder}); on a machine with a connection "
            f"run python -c \"import open_clip; {fetch}\" and copy {folder} to the same place here, or set "
            f"{ENV_ONLINE}=1 to download them, or give the weights file as ARCH[:TAG]@PATH")
    with _offline_hub():
        yield


def _backend_prefix(spec: str) -> str:
    return next((prefix for prefix in SPEC_PREFIXES if spec.startswith(prefix)), "")


def load_encoder(spec: str, device: str | torch.device = "cpu") -> Encoder:
    """Loads an encoder from a spec (see the module docstring) onto ``device``."""
    check_encoder_spec(spec)
    base, override = split_normalisation(spec)
    prefix = _backend_prefix(base)
    if base in ENCODERS:
        encoder = ENCODER_BACKENDS.get("toy").from_spec(base, base, device)
    elif base.startswith("ckpt:"):
        encoder = _load_card_checkpoint(base)
    elif prefix:
        encoder = ENCODER_BACKENDS.get(SPEC_PREFIXES[prefix]).from_spec(base.removeprefix(prefix), base, device)
    elif base.startswith("hf-hub:"):
        encoder = _load_open_clip(base, None, base)
    else:
        arch_tag, _, path = base.partition("@")
        arch, _, tag = arch_tag.partition(":")
        encoder = _load_open_clip(arch, tag or None, base)
        if path:
            kind = apply_state_dict(encoder.model, load_state_dict_safely(path), path)
            encoder.card.update(checkpoint=str(path), checkpoint_kind=kind)
            if kind == "vision" and not tag:
                log.warning("%s: vision-only checkpoint without a pretrained tag: the text tower has random "
                            "weights; give ARCH:TAG@PATH to pair it with the original text encoder", spec)
    if override:
        override_normalisation(encoder, spec, override)
    return encoder.to(device).eval()


def _load_open_clip(arch: str, tag: str | None, name: str) -> Encoder:
    with _weights_access(arch, tag, name):
        model = open_clip.create_model(arch, pretrained=tag, weights_only=True)
        tokenizer = open_clip.get_tokenizer(arch)
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    return Encoder(
        model,
        tokenizer,
        name=name,
        mean=cfg.get("mean", OPENAI_MEAN),
        std=cfg.get("std", OPENAI_STD),
        card={"arch": arch, "pretrained": tag},
    )


def read_card(spec: str) -> tuple[Path, dict[str, Any]]:
    """The checkpoint path of a ``ckpt:PATH`` spec and its card, checked to name an architecture.

    Raises:
        CheckpointError: Naming the card, when it is missing, not JSON, or names no architecture.
    """
    path = Path(spec.removeprefix("ckpt:"))
    card_path = path.with_suffix(CARD_SUFFIX)
    if not card_path.is_file():
        raise CheckpointError(
            f"{path}: no card {card_path.name} beside it. For a checkpoint without a card give the "
            f"architecture: --encoders ARCH[:TAG]@{path}"
        )
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"card {card_path} is not valid JSON ({exc}); rewrite it or give "
                              f"--encoders ARCH[:TAG]@{path}") from exc
    if not isinstance(card, dict) or not {"arch", "model_cfg", "backend"} & set(card):
        raise CheckpointError(f"card {card_path} names no architecture: add 'arch' (an open_clip name) or "
                              f"'model_cfg' to it, or give --encoders ARCH[:TAG]@{path}")
    return path, card


def _load_card_checkpoint(spec: str) -> Encoder:
    path, card = read_card(spec)
    backend = card.get("backend", "open_clip")
    if backend != "open_clip":
        return ENCODER_BACKENDS.get(backend).from_card(path, card)
    if "model_cfg" in card:
        model = build_model(card["model_cfg"])
        tokenizer = tokenizer_for(card["model_cfg"])
    else:
        model_config(card["arch"])
        with _weights_access(card["arch"], card.get("pretrained"), f"{path} (card arch {card['arch']!r})"):
            model = open_clip.create_model(card["arch"], pretrained=card.get("pretrained"), weights_only=True)
            tokenizer = open_clip.get_tokenizer(card["arch"])
    apply_state_dict(model, load_state_dict_safely(path), str(path))
    return Encoder(
        model,
        tokenizer,
        name=card.get("name", path.stem),
        mean=card.get("mean", OPENAI_MEAN),
        std=card.get("std", OPENAI_STD),
        card=card,
    )
