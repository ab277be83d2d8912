"""Registry: lazy entries, did-you-mean errors, decorator registration."""

from __future__ import annotations

import sys

import pytest

from aft_bench.registry import Registry, UnknownNameError


def test_lazy_entry_imports_on_first_get() -> None:
    reg: Registry = Registry("thing")
    reg.register("join", "os.path:join", help="joins paths")
    assert reg.help("join") == "joins paths"
    import os.path

    assert reg.get("join") is os.path.join
    assert reg.names() == ["join"]


def test_unknown_name_lists_known_and_suggests() -> None:
    reg: Registry = Registry("attribution")
    reg.register("simple_gradient", object())
    reg.register("smoothgrad", object())
    with pytest.raises(UnknownNameError) as info:
        reg.get("smoothgrd")
    message = str(info.value)
    assert "Did you mean 'smoothgrad'" in message
    assert "simple_gradient" in message and "smoothgrad" in message


def test_decorator_and_duplicate() -> None:
    reg: Registry = Registry("method")

    @reg.register("m")
    class M:
        """First line of the doc."""

    assert reg.get("m") is M
    assert reg.help("m") == "First line of the doc."
    with pytest.raises(ValueError, match="already registered"):
        reg.register("m", object())


def test_builtin_registries_do_not_import_torch() -> None:
    import subprocess

    code = (
        "import sys; import aft_bench.registries as r, aft_bench.cli; "
        "names = r.ATTRIBUTIONS.names() + r.ENCODERS.names() + r.METRICS.names(); "
        "print('torch' in sys.modules, len(names))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False"
    assert int(out[1]) >= 9


def test_builtin_lazy_entries_resolve() -> None:
    from aft_bench import registries

    for registry in (registries.ATTRIBUTIONS, registries.METRICS, registries.TASKS, registries.DATASETS):
        for name in registry.names():
            assert registry.get(name) is not None, name
