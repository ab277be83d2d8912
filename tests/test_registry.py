"""Registry: lazy entries, did-you-mean errors, decorator registration."""

from __future__ import annotations

import sys

import pytest

from aft_bench.core.registry import Registry, UnknownNameError


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
        "import sys; import aft_bench.core.registries as r, aft_bench.apps.cli; "
        "names = r.ATTRIBUTIONS.names() + r.ENCODERS.names() + r.METRICS.names(); "
        "print('torch' in sys.modules, len(names))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False"
    assert int(out[1]) >= 9


def test_builtin_lazy_entries_resolve() -> None:
    from aft_bench.core import registries

    for registry in (registries.ATTRIBUTIONS, registries.METRICS, registries.TASKS, registries.DATASETS):
        for name in registry.names():
            assert registry.get(name) is not None, name


# ---------------------------------------------------------------------------------------- temporary, unregister
def _small() -> Registry:
    reg: Registry = Registry("thing")
    reg.register("join", "os.path:join", help="joins paths")
    reg.register("first", object(), help="the first")
    return reg


class _Doc:
    """Doc line of the stand-in."""


def test_temporary_entry_inside_and_gone_after() -> None:
    reg = _small()
    fake = object()
    with reg.temporary("extra", fake, help="for a while") as entry:
        assert entry is fake and reg.get("extra") is fake and "extra" in reg
        assert reg.help("extra") == "for a while" and reg.names() == ["join", "first", "extra"]
    assert "extra" not in reg and reg.names() == ["join", "first"] and reg.help("extra") == ""
    with pytest.raises(UnknownNameError):
        reg.get("extra")
    with reg.temporary("extra", _Doc):
        assert reg.help("extra") == "Doc line of the stand-in."  # no help: the first doc line
    assert len(reg) == 2


def test_temporary_entry_removed_when_the_body_raises() -> None:
    reg = _small()
    with pytest.raises(RuntimeError, match="inside"):
        with reg.temporary("extra", object()):
            raise RuntimeError("inside")
    assert reg.names() == ["join", "first"] and reg.help("extra") == ""


def test_replace_stands_in_and_restores_a_lazy_entry_and_its_help() -> None:
    import os.path

    reg = _small()
    with reg.temporary("join", _Doc, replace=True):
        assert reg.get("join") is _Doc and reg.help("join") == "Doc line of the stand-in."
    assert reg.help("join") == "joins paths" and reg.names() == ["join", "first"]
    assert reg.get("join") is os.path.join  # the lazy reference came back and still resolves
    with pytest.raises(KeyError):
        with reg.temporary("join", "os.path:split", help="lazy stand-in", replace=True):
            assert reg.get("join") is os.path.split and reg.help("join") == "lazy stand-in"
            raise KeyError("body fails")
    assert reg.get("join") is os.path.join and reg.help("join") == "joins paths"


def test_nested_temporaries_of_one_name_unwind_in_order() -> None:
    reg = _small()
    a, b = object(), object()
    with reg.temporary("x", a):
        with reg.temporary("x", b, replace=True):
            assert reg.get("x") is b
        assert reg.get("x") is a
    assert "x" not in reg


def test_replace_of_a_new_name_adds_and_removes() -> None:
    reg = _small()
    with reg.temporary("new", object(), replace=True):
        assert "new" in reg
    assert reg.names() == ["join", "first"]


def test_temporary_refuses_an_existing_name_without_replace() -> None:
    reg = _small()
    first = reg.get("first")
    with pytest.raises(ValueError, match="thing 'first' is already registered.*replace=True"):
        with reg.temporary("first", object()):
            pytest.fail("the body must not run")
    assert reg.get("first") is first and reg.help("first") == "the first"


def test_unregister() -> None:
    reg = _small()
    reg.unregister("first")
    assert reg.names() == ["join"] and reg.help("first") == ""
    reg.register("first", object(), help="again")  # the name is free again
    assert reg.help("first") == "again"
    with pytest.raises(UnknownNameError) as info:
        reg.unregister("jion")
    message = str(info.value)
    assert message.startswith("unknown thing 'jion'.") and "Did you mean 'join'" in message
    assert "Known things: first, join." in message
    assert reg.names() == ["join", "first"]


def test_reload_reads_the_declarations_again_and_drops_hand_made_entries() -> None:
    from aft_bench.core.registries import ATTRIBUTIONS

    declared = ATTRIBUTIONS.names()
    ATTRIBUTIONS.register("hand-made", object(), help="registered by hand")
    assert "hand-made" in ATTRIBUTIONS
    ATTRIBUTIONS.reload()
    assert "hand-made" not in ATTRIBUTIONS and sorted(ATTRIBUTIONS.names()) == sorted(declared)
    assert ATTRIBUTIONS.get("gradcam").__name__ == "GradCAM"
