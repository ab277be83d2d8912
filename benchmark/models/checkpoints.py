"""Checkpoints read safely: state dicts from safetensors or ``torch.load(weights_only=True)`` (a file that would
unpickle Python objects is refused), nested state dicts unwrapped, strict loading that names the missing and
unexpected keys, and the JSON card beside an aft-bench checkpoint (``ckpt:PATH``)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

CARD_SUFFIX = ".json"
"""The suffix of the card beside an aft-bench checkpoint (its ``ckpt:`` path with this suffix)."""
NESTED_KEYS = ("vision_encoder_state_dict", "state_dict", "model_state_dict", "model")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unsafe, unreadable or not matching the architecture."""


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
