"""The Python API of ``import aft_bench``: every public name resolves to the object its module defines."""

from __future__ import annotations

import importlib

import aft_bench


def test_every_public_name_resolves() -> None:
    for name in aft_bench.__all__:
        value = getattr(aft_bench, name)
        module = aft_bench._API.get(name)
        if module is not None:
            assert value is getattr(importlib.import_module(module), name), name
    assert aft_bench.get_attribution("gradcam", block=-2).block == -2
