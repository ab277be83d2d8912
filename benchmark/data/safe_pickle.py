"""Reading the pickled arrays some datasets ship (CIFAR's python batches) without running their code.

A pickle names callables that ``pickle.load`` imports and calls, so a crafted file runs arbitrary code.
:func:`load_array_pickle` unpickles with an allow-list: plain containers and numbers (which need no
global), and the few numpy functions that rebuild an ``ndarray``. Anything else is refused with the file
and the global it asked for.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

from aft_bench.data.base import DataError

ALLOWED: frozenset[tuple[str, str]] = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})
"""(module, name) pairs an array pickle may reference: numpy's array reconstruction, and ``_codecs.encode``
that Python 2 pickles use for byte strings."""

_MOVED = {"numpy.core.multiarray": "numpy._core.multiarray"}  # numpy 2 moved numpy.core to numpy._core


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, handle: Any, source: Path) -> None:
        super().__init__(handle, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise DataError(f"{self.source} asks to load {module}.{name}, which a data pickle has no use for; "
                            "refusing to unpickle it (it could run code). Re-download the file from its source.")
        for candidate in (_MOVED.get(module), module):
            if candidate is None:
                continue
            try:
                return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
        raise DataError(f"{self.source}: cannot resolve {module}.{name} with this numpy")


def load_array_pickle(path: str | Path) -> Any:
    """Unpickles a data file that holds only containers, numbers, byte strings and numpy arrays.

    Python 2 strings come back as ``bytes`` (``encoding="bytes"``), as CIFAR's keys do.

    Raises:
        DataError: If the file is missing, not a pickle, or references anything outside :data:`ALLOWED`.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return _ArrayUnpickler(handle, path).load()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path} is not a readable pickle ({exc}); re-download it") from exc
