"""The paper's suites: compare suites (:mod:`aft_bench.apps.suites.suite`) with one more section, ``paper``.

Each paper item (a table or figure of the AFT paper) is one YAML file in ``aft_bench/paper/suites/``: the
``version``, ``suite``, ``defaults`` and ``tasks`` sections of every suite (parsed by the same code as
``aft-bench compare``'s, run by the same stage runner), plus::

    paper:
      item: Table 1                       # the paper item reproduced
      title: Localization of saliency maps with and without AFT
      reference: table1                   # the reference file (aft_bench/paper/references/<id>.yaml) of a table
      roles:                              # the encoders, in --encoders order: their roles and the toy world's
        - {role: original, toy: toy}
        - {role: aft, train_eps: 4, toy: toy-aft, label: w/ AFT}
      needs:                              # what the paper's protocol needs (for aft-bench paper list)
        datasets: [imagenet_s]
        encoders: ViT-B-16 (OpenAI) and the same after AFT at eps 4/255
        gpu_hours: 2
        tasks: []                         # tasks the suite needs that this aft-bench may not have (Table 3: the VLM's)
      layout:                             # a table's rows and column groups (columns, units, decimals: the reference's)
        rows: [method, encoder]
        groups: target
        labels: {method: {simple_gradient: SG}, target: {text: Zero-shot Classification}}
      figures:                            # a figure item's panels (FIGURE_KINDS)
        - {name: maps, kind: saliency, attributions: [simple_gradient, gradcam]}
      toy_world: ""                       # why the embedded world cannot run the suite ("" when it can)

Every key is parsed into a frozen dataclass (unknown keys refused with a did-you-mean, values of the wrong kind with
a message naming the file and key).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aft_bench.apps.paper.references import ENCODER_ROLES, ROW_KEYS
from aft_bench.apps.suites.suite import (
    Suite,
    load_suite,
    parse_mapping,
    parse_names,
    parse_optional_text,
    parse_section,
    suite_names,
)
from aft_bench.core.options import option, optional_positive_int
from aft_bench.core.registry import UnknownNameError

PACKAGE = "aft_bench.apps.paper.suites"
"""Where the paper's suite files live (package data)."""
FIGURE_KINDS: dict[str, str] = {
    "saliency": "a grid of attribution maps of every role's encoder (aft_bench.reporting.saliency, as aft-bench "
                "figure)",
    "removal": "accuracy against the share of pixels removed, per encoder (the ROAR/ROAD task's own figure code)",
    "side_file": "a figure a task writes beside its result file (CLIP-Dissect's histogram, Network Dissection's units)",
    "curve": "a metric against a number of the encoders' cards (aft_bench.reporting.curves, as aft-bench curve)",
}
"""The kinds of figure panel a paper suite can ask for."""


def _optional_eps(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{key}={value!r}: give the fine-tuning radius in 1/255 units (or null)")
    return float(value)


def _role(value: Any, key: str) -> str:
    if value not in ENCODER_ROLES:
        raise UnknownNameError(f"encoder role ({key})", str(value), list(ENCODER_ROLES))
    return str(value)


def _row_key(value: Any, key: str) -> str:
    if value not in ROW_KEYS:
        raise UnknownNameError(f"row key ({key})", str(value), list(ROW_KEYS))
    return str(value)


def _row_keys(value: Any, key: str) -> tuple[str, ...]:
    return tuple(_row_key(item, key) for item in parse_names(value, key))


def _labels(value: Any, key: str) -> dict[str, dict[str, str]]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{key}={value!r}: give {{row key: {{value: label}}}}")
    out: dict[str, dict[str, str]] = {}
    for name, labels in value.items():
        _row_key(name, key)
        if not isinstance(labels, Mapping):
            raise ValueError(f"{key}.{name}={labels!r}: give {{value: label}}")
        out[str(name)] = {str(k): str(v) for k, v in labels.items()}
    return out


def _averages(value: Any, key: str) -> dict[str, tuple[str, ...]]:
    def names(over: Any) -> bool:
        return isinstance(over, list | tuple) and bool(over) and all(isinstance(c, str) for c in over)

    if not isinstance(value, Mapping) or not all(names(over) for over in value.values()):
        raise ValueError(f"{key}={value!r}: give {{column: [the columns it averages]}}")
    return {str(column): tuple(over) for column, over in value.items()}


def _kind(value: Any, key: str) -> str:
    if value not in FIGURE_KINDS:
        raise UnknownNameError(f"figure kind ({key})", str(value), list(FIGURE_KINDS))
    return str(value)


def _hours(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{key}={value!r}: give the GPU hours of the paper's protocol (a number, 0 or more)")
    return float(value)


@dataclass(frozen=True)
class Role:
    """One encoder of a paper suite: its role (ENCODER_ROLES), fine-tuning radius, the embedded world's encoder for
    it (None: the toy world has none) and its printed label (default: the role, with the radius)."""

    role: str = option(parse=_role, help="the encoder's role (original, aft, fare, ...)")
    train_eps: float | None = option(None, parse=_optional_eps, help="the fine-tuning radius in 1/255 units")
    toy: str | None = option(None, parse=parse_optional_text, help="the embedded world's encoder for this role")
    label: str | None = option(None, parse=parse_optional_text, help="the role's printed name")

    @property
    def name(self) -> str:
        """``aft@4`` (the role with its radius), the key of an --encoders ROLE=SPEC flag."""
        return self.role if self.train_eps is None else f"{self.role}@{self.train_eps:g}"

    @property
    def printed(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class Needs:
    """What the paper's protocol of a suite needs: datasets, encoders (in words), GPU hours, and tasks."""

    datasets: tuple[str, ...] = option((), parse=parse_names, help="the paper's datasets (DATASETS names)")
    encoders: str = option("", help="the paper's encoders, in words")
    gpu_hours: float = option(0.0, parse=_hours, help="an estimate of the GPU hours of the paper's protocol")
    tasks: tuple[str, ...] = option((), parse=parse_names, help="tasks the suite needs (checked against TASKS)")
    note: str = option("", help="anything else")


@dataclass(frozen=True)
class Layout:
    """A table's rows (row keys in order), the row key spread over column groups, and printed names of values."""

    rows: tuple[str, ...] | None = option(None, parse=_row_keys, help="row keys (default: the reference's)")
    groups: str | None = option(None, parse=lambda v, k: None if v is None else _row_key(v, k),
                                help="a row key whose values become column groups")
    labels: dict[str, dict[str, str]] = option(default_factory=dict, parse=_labels, help="{row key: {value: label}}")
    averages: dict[str, tuple[str, ...]] = option(default_factory=dict, parse=_averages,
                                                  help="{column: [columns]}: a column that is the mean of others")


@dataclass(frozen=True)
class FigureSpec:
    """One panel of a figure item (see FIGURE_KINDS for ``kind``).

    Attributes:
        name: The panel's name (unique in the suite). kind: FIGURE_KINDS. title: Its caption.
        entry: The suite entry whose results it draws (removal, side_file, curve).
        side_file: The result's ``extra.side_files`` key (side_file). metric, x: A curve's axes.
        attributions, options, dataset_args, images: A saliency grid's methods, map options (``target``),
            dataset arguments and number of images.
        roles: The roles drawn (default: every role of the suite).
    """

    name: str = option(help="the panel's name")
    kind: str = option(parse=_kind, help="saliency, removal, side_file or curve")
    title: str = option("", help="the panel's caption")
    entry: str | None = option(None, parse=parse_optional_text, help="the suite entry whose results are drawn")
    side_file: str | None = option(None, parse=parse_optional_text, help="the side file's key (histogram, top_images)")
    metric: str | None = option(None, parse=parse_optional_text, help="a curve's metric")
    x: str | None = option(None, parse=parse_optional_text, help="a curve's x (a card value: eps, step)")
    attributions: tuple[str, ...] = option((), parse=parse_names, help="a saliency grid's methods")
    options: dict[str, Any] = option(default_factory=dict, parse=parse_mapping, help="a saliency grid's map options")
    dataset_args: dict[str, Any] = option(default_factory=dict, parse=parse_mapping, help="a saliency grid's data")
    images: int | None = option(None, parse=optional_positive_int, help="a saliency grid's images")
    roles: tuple[str, ...] = option((), parse=parse_names, help="the roles drawn (default: all)")


def _roles(value: Any, key: str) -> tuple[Role, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{key}: list the suite's encoder roles (- {{role: original, toy: toy}})")
    roles = tuple(parse_section(Role, item, f"{key}[{i}]") for i, item in enumerate(value))
    names = [r.name for r in roles]
    if len(set(names)) != len(names):
        raise ValueError(f"{key}: a role appears twice ({', '.join(names)}); give each role and radius once")
    return roles


def _figures(value: Any, key: str) -> tuple[FigureSpec, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{key}: list the figure's panels (- {{name: maps, kind: saliency}})")
    return tuple(parse_section(FigureSpec, item, f"{key}[{i}]") for i, item in enumerate(value))


@dataclass(frozen=True)
class PaperSection:
    """The ``paper`` section of a paper suite (see the module docstring)."""

    item: str = option(help="the paper item (Table 1, Fig. 3)")
    roles: tuple[Role, ...] = option(parse=_roles, help="the encoders' roles, in --encoders order")
    title: str = option("", help="what it shows")
    reference: str | None = option(None, parse=parse_optional_text, help="the reference table id (tables)")
    needs: Needs = option(default_factory=Needs, parse=lambda v, k: parse_section(Needs, v, k), help="needs")
    layout: Layout = option(default_factory=Layout, parse=lambda v, k: parse_section(Layout, v, k), help="layout")
    figures: tuple[FigureSpec, ...] = option((), parse=_figures, help="a figure's panels")
    toy_world: str = option("", help="why the embedded world cannot run the suite (empty: it can)")


@dataclass(frozen=True)
class PaperSuite:
    """A paper suite: the suite (tasks, defaults) and its ``paper`` section."""

    suite: Suite
    paper: PaperSection

    @property
    def name(self) -> str:
        return self.suite.name


def paper_suite_names() -> list[str]:
    """The paper's suites (the YAML files of :data:`PACKAGE`), in the paper's order (tables, then figures)."""
    names = suite_names(PACKAGE)
    return sorted(names, key=lambda n: (not n.startswith("table"), int("".join(c for c in n if c.isdigit())[:2] or 0)))


def load_paper_suite(name: str) -> PaperSuite:
    """The paper suite ``name`` (:func:`paper_suite_names`) or a paper suite file at path ``name``.

    Raises:
        UnknownNameError: For an unknown suite, key or name (with a did-you-mean).
        ValueError, FileNotFoundError: For a file that is not a valid paper suite, or does not exist.
    """
    suite = load_suite(name, PACKAGE, {"paper": PaperSection})
    paper: PaperSection | None = suite.sections.get("paper")
    if paper is None or not paper.item:
        raise ValueError(f"{suite.source}: a paper suite needs a 'paper' section naming its item and roles")
    labels = {entry.label for entry in suite.tasks}
    for figure in paper.figures:
        if figure.entry is not None and figure.entry not in labels:
            raise UnknownNameError(f"entry of suite {suite.name!r} (figure {figure.name!r})", figure.entry,
                                   sorted(labels))
        unknown = [r for r in figure.roles if r not in {role.name for role in paper.roles}]
        if unknown:
            raise UnknownNameError(f"role of suite {suite.name!r} (figure {figure.name!r})", unknown[0],
                                   [role.name for role in paper.roles])
    return PaperSuite(suite, paper)
