"""Declared options: ``parse_options`` on a hand-written options class (defaults, types, nested keys, ``class_``,
unknown keys with a did-you-mean), the shared parsers' known answers and refusals, and every shipped task's
YAML defaults parsed by its declared options."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from aft_bench.core.options import (
    UnknownOptionError,
    finite_number,
    names_in,
    nested,
    non_negative,
    one_of,
    option,
    option_keys,
    optional_positive_int,
    parse_levels,
    parse_options,
    positive_int,
    share,
)
from aft_bench.core.registries import ATTACKS, TASKS
from aft_bench.core.registry import UnknownNameError
from aft_bench.evaluation.config import load_task_spec, resolve_config
from aft_bench.evaluation.runner import check_names


@dataclass(frozen=True)
class Inner:
    steps: int = option(10, parse=positive_int, help="iterations")
    rate: float = 0.5


@dataclass(frozen=True)
class Demo:
    count: int = 3
    class_: str = "true"
    inner: Inner = nested(Inner, "inner_", help="the inner part")
    scale: float = 1.0
    flag: bool = False
    label: str | None = None
    mode: str = option("fast", parse=one_of("fast", "slow"), help="speed")


@dataclass(frozen=True)
class Containers:
    tags: list[str] = field(default_factory=list)
    levels: tuple[float, ...] = ()


DEMO_KEYS = ["count", "class", "inner_steps", "inner_rate", "scale", "flag", "label", "mode"]


def _parse(values: dict) -> Demo:
    return parse_options(Demo, values, "demo 'x'")


# ---------------------------------------------------------------------------------------- parse_options
def test_defaults_when_nothing_is_given() -> None:
    parsed = _parse({})
    assert parsed == Demo()
    assert (parsed.count, parsed.class_, parsed.scale, parsed.flag, parsed.label, parsed.mode) == (
        3, "true", 1.0, False, None, "fast")
    assert parsed.inner == Inner(steps=10, rate=0.5)


def test_every_value_parsed_to_its_type() -> None:
    parsed = _parse({"count": 7, "class": "top1", "inner_steps": 4, "inner_rate": 2, "scale": 3, "flag": True,
                     "label": "cat", "mode": "slow"})
    assert parsed == Demo(count=7, class_="top1", inner=Inner(steps=4, rate=2.0), scale=3.0, flag=True, label="cat",
                          mode="slow")
    assert type(parsed.scale) is float and type(parsed.inner.rate) is float  # integers become floats
    assert type(parsed.count) is int
    assert _parse({"label": None}).label is None
    assert _parse({"scale": 0.25}).scale == 0.25


def test_nested_key_routed_into_the_nested_object() -> None:
    parsed = _parse({"inner_steps": 42})
    assert parsed.inner == Inner(steps=42, rate=0.5) and parsed.count == 3
    with pytest.raises(ValueError, match=r"option inner_steps=0: give a positive integer"):
        _parse({"inner_steps": 0})


@pytest.mark.parametrize(("key", "value", "wanted"), [
    ("count", "3", "an integer"),
    ("count", 2.0, "an integer"),
    ("count", True, "an integer"),  # booleans are not integers
    ("count", None, "an integer"),
    ("scale", "1.5", "a number"),
    ("scale", False, "a number"),
    ("flag", "true", "true or false"),
    ("flag", 1, "true or false"),
    ("label", 3, "a text or null"),
    ("class", 1, "a text"),
    ("inner_rate", [1], "a number"),
])
def test_wrong_types_refused_naming_key_and_value(key: str, value: object, wanted: str) -> None:
    with pytest.raises(ValueError) as info:
        _parse({key: value})
    assert not isinstance(info.value, UnknownOptionError)
    assert str(info.value) == f"option {key}={value!r}: give {wanted}"


def test_own_parser_refusal() -> None:
    with pytest.raises(ValueError, match=r"option mode='medium': choose one of \['fast', 'slow'\]"):
        _parse({"mode": "medium"})


def test_unknown_key_did_you_mean_and_known_keys_in_declaration_order() -> None:
    with pytest.raises(UnknownOptionError) as info:
        _parse({"inner_step": 3})
    error = info.value
    assert isinstance(error, UnknownNameError) and isinstance(error, KeyError)
    assert str(error) == (f"unknown option 'inner_step' for demo 'x'. Did you mean 'inner_steps', 'inner_rate'? "
                          f"Known options: {', '.join(DEMO_KEYS)}.")
    assert error.name == "inner_step" and error.known == DEMO_KEYS


def test_unknown_key_without_a_close_match_and_the_field_name_of_class() -> None:
    with pytest.raises(UnknownOptionError) as info:
        _parse({"zzzzzz": 1})
    assert "Did you mean" not in str(info.value) and str(info.value).endswith(f"Known options: {', '.join(DEMO_KEYS)}.")
    with pytest.raises(UnknownOptionError, match="Did you mean 'class'"):
        _parse({"class_": "top1"})  # the key is ``class``; the field name is not a key
    with pytest.raises(UnknownOptionError, match="Did you mean 'inner_steps'"):
        _parse({"steps": 3})  # a nested key needs its prefix


def test_option_keys() -> None:
    assert option_keys(Demo) == DEMO_KEYS
    assert option_keys(Inner) == ["steps", "rate"]

    @dataclass(frozen=True)
    class Outer:
        demo: Demo = nested(Demo, "d.")
        last: int = 1

    assert option_keys(Outer) == [f"d.{k}" for k in DEMO_KEYS] + ["last"]


@pytest.mark.parametrize(("annotation_field", "value", "expected"), [("tags", ["a", "b"], ["a", "b"]),
                                                                    ("levels", 3, None)])
def test_container_fields_without_parser_pass_containers_through(annotation_field: str, value: object,
                                                                 expected: object) -> None:
    """The module says containers without a parser are left to the options class; a scalar is not a container."""
    if expected is None:
        with pytest.raises(ValueError):
            parse_options(Containers, {annotation_field: value}, "c")
    else:
        assert getattr(parse_options(Containers, {annotation_field: value}, "c"), annotation_field) == expected



# ---------------------------------------------------------------------------------------- shared parsers
def test_positive_int() -> None:
    assert positive_int(1, "k") == 1 and positive_int(250, "k") == 250
    for bad in (0, -1, True, False, 1.0, "3", None, [1]):
        with pytest.raises(ValueError, match=r"option k=.*: give a positive integer"):
            positive_int(bad, "k")


def test_optional_positive_int() -> None:
    assert optional_positive_int(None, "k") is None and optional_positive_int(3, "k") == 3
    for bad in (0, True, 2.5):
        with pytest.raises(ValueError, match="give a positive integer"):
            optional_positive_int(bad, "k")


def test_share() -> None:
    assert share(0, "k") == 0.0 and type(share(0, "k")) is float
    assert share(1, "k") == 1.0 and share(0.25, "k") == 0.25
    for bad in (1.0001, -0.1, True, "0.5", math.nan, math.inf, None):
        with pytest.raises(ValueError, match=r"give a share in \[0, 1\]"):
            share(bad, "k")


def test_finite_number() -> None:
    assert finite_number(3, "k") == 3.0 and type(finite_number(3, "k")) is float
    assert finite_number(-2.5, "k") == -2.5
    for bad in (math.inf, -math.inf, math.nan, True, "1", None):
        with pytest.raises(ValueError, match="give a finite number"):
            finite_number(bad, "k")


def test_non_negative() -> None:
    assert non_negative(0, "k") == 0.0 and non_negative(15, "k") == 15.0
    with pytest.raises(ValueError, match=r"option k=-0.1: give a number >= 0"):
        non_negative(-0.1, "k")
    for bad in (math.inf, math.nan, True):
        with pytest.raises(ValueError, match="give a finite number"):
            non_negative(bad, "k")


def test_one_of() -> None:
    parse = one_of("morf", "lerf")
    assert parse("morf", "order") == "morf" and parse("lerf", "order") == "lerf"
    for bad in ("MORF", "", None, 1):
        with pytest.raises(ValueError, match=r"option order=.*: choose one of \['morf', 'lerf'\]"):
            parse(bad, "order")


def test_parse_levels_keeps_order() -> None:
    assert parse_levels(3, "sigmas") == (3.0,)
    assert parse_levels([5, 1, 3.5], "sigmas") == (5.0, 1.0, 3.5)
    assert parse_levels((0.5,), "sigmas") == (0.5,)


@pytest.mark.parametrize(("value", "message"), [
    ([1, 3, 1], "repeats a level"),
    ([1, 1.0], "repeats a level"),
    (0, "positive finite"),
    ([1, 0], "positive finite"),
    (-2, "positive finite"),
    ([math.nan], "positive finite"),
    (math.inf, "positive finite"),
    ([], "positive finite"),
    (True, "give levels in 1/255 units"),
    ([1, True], "give levels in 1/255 units"),
    ("abc", "give levels in 1/255 units"),
    ([1, None], "give levels in 1/255 units"),
])
def test_parse_levels_refusals(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_levels(value, "sigmas")
    assert str(info.value).startswith(f"option sigmas={value!r}")


@pytest.mark.parametrize("value", ["3", ["1", "2"]])
def test_parse_levels_refuses_numeric_strings(value: object) -> None:
    with pytest.raises(ValueError):
        parse_levels(value, "sigmas")


def test_names_in_single() -> None:
    parse = names_in(ATTACKS)
    assert parse("apgd-ce", "attack") == "apgd-ce"
    assert parse(["apgd-t"], "attack") == "apgd-t"
    with pytest.raises(UnknownNameError) as info:
        parse("apgd-cee", "attack")
    assert "unknown attack 'apgd-cee'" in str(info.value) and "Did you mean 'apgd-ce'" in str(info.value)
    assert "apgd-t" in str(info.value)
    for bad in (["apgd-ce", "apgd-t"], []):
        with pytest.raises(ValueError, match=r"give one name of \['apgd-ce', 'apgd-t'\]"):
            parse(bad, "attack")


def test_names_in_many() -> None:
    parse = names_in(ATTACKS, single=False)
    assert parse("apgd-t", "attacks") == ("apgd-t",)
    assert parse(["apgd-t", "apgd-ce"], "attacks") == ("apgd-t", "apgd-ce")
    with pytest.raises(ValueError, match="give one or more names"):
        parse([], "attacks")
    with pytest.raises(UnknownNameError, match="Did you mean 'apgd-t'"):
        parse(["apgd-ce", "apgd_t"], "attacks")


# ---------------------------------------------------------------------------------------- the real tasks
def test_pointing_game_tolerance_typo() -> None:
    with pytest.raises(UnknownOptionError) as info:
        parse_options(TASKS.get("pointing_game").Options, {"tolerence": 15}, "task 'pointing_game'")
    message = str(info.value)
    assert message.startswith("unknown option 'tolerence' for task 'pointing_game'.")
    assert "Did you mean 'tolerance'" in message and "probe_steps" in message
    parsed = parse_options(TASKS.get("pointing_game").Options, {"tolerance": 15}, "task 'pointing_game'")
    assert parsed.tolerance == 15.0 and parsed.target == "text"


@pytest.mark.parametrize("task", TASKS.names())
def test_shipped_yaml_defaults_parse_with_the_task_options(task: str) -> None:
    options_cls = TASKS.get(task).Options
    defaults = load_task_spec(task).defaults.get("options", {}) or {}
    parsed = parse_options(options_cls, defaults, f"task {task!r}")
    assert isinstance(parsed, options_cls)
    assert set(defaults) <= set(option_keys(options_cls))


@pytest.mark.parametrize("task", TASKS.names())
def test_check_names_refuses_an_unknown_option_of_every_task(task: str) -> None:
    config = resolve_config(task, {"options": {"no_such_option": 1}})
    with pytest.raises(UnknownOptionError) as info:
        check_names(config)
    assert f"unknown option 'no_such_option' for task {task!r}" in str(info.value)
