"""Atomic, exactly resumable training checkpoints.

A checkpoint holds the trainable tower's weights, the optimiser and scheduler states, the step,
the data position of every rank and the RNG states (torch, CUDA, numpy, python) of every rank. It
is written to a temporary file in the same folder and renamed over the previous one (``os.replace``),
so a kill during the write leaves the last good checkpoint intact. It is read back with
``torch.load(weights_only=True)``: only tensors and plain containers, no pickled code.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aft_bench.core.atomic import atomic_write

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


class ResumeError(ValueError):
    """A checkpoint that cannot continue this run."""


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain values (safe for ``weights_only`` loading)."""
    key, array, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": str(key), "state": torch.from_numpy(np.asarray(array, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(obj: Any) -> Any:
    return [_to_lists(o) for o in obj] if isinstance(obj, tuple) else obj


def _to_tuples(obj: Any) -> Any:
    return tuple(_to_tuples(o) for o in obj) if isinstance(obj, list) else obj


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Writes ``state`` atomically (temp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT_VERSION, **state}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    log.info("checkpoint at step %d -> %s", state.get("step", -1), path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Reads a checkpoint written by :func:`save_checkpoint` (tensors and plain containers only).

    Raises:
        ResumeError: If the file is missing, unreadable or of another format.
    """
    path = Path(path)
    if not path.is_file():
        raise ResumeError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling and I/O errors of every kind
        raise ResumeError(f"checkpoint {path} is unreadable ({exc}); delete it to start over") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise ResumeError(f"{path} is not an aft-bench training checkpoint (format {FORMAT_VERSION})")
    return state
