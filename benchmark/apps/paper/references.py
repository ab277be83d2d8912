"""The AFT paper's published numbers as package data: one YAML file per table, read into typed records.

Each file under ``aft_bench/paper/references/`` transcribes one numeric table of the paper, as the text
extraction the project works from (``shared/paper/000_78bcd2991a2d852c.txt``) prints it; ``lines`` and each row's
``line`` are 1-based line numbers of that text. A file in short::

    version: 1                     # schema version (this loader reads versions up to SCHEMA_VERSION)
    id: table7                     # the file's stem
    title: SSIM of Grad-CAM maps under input noise
    caption: ...                   # the table's meaning, in this project's words
    source: Table 7 (appendix A.4)
    lines: [547, 551]
    protocol:                      # the paper's setting (keys of Protocol; all optional)
      tasks: {ssim_robustness: {sigmas: [1, 3, 5, 7, 9]}}   # project tasks (and --option values) that measure it
      backbone: ViT-B/16
      attributions: [gradcam]
    row_keys: [encoder]            # what tells the rows apart (names of ROW_KEYS)
    column_kind: metric            # metric (project metric names), dataset or quantity (COLUMN_KINDS)
    columns:
      - {key: ssim@1, label: 1/255, unit: "%", decimals: 2, description: SSIM at noise sd 1/255}
    rows:
      - row: {encoder: original}
        line: 550
        note: Grad-CAM maps of the original CLIP
        values: {ssim@1: 91.18}
        remarks: {ssim@1: ...}     # optional, per cell
    missing:                       # cells the text does not give, and why (row: a subset of the row keys,
      - {row: {encoder: aft}, columns: [ssim@1], reason: ...}   # default every row; columns: default all)
    notes: [...]                   # how garbled parts of the extraction were read

Every value is a number in the paper's unit (percent for most tables) with at most the column's ``decimals``.
Unknown keys, non-numeric or non-finite values, duplicate keys or cells, and unknown names (row keys, encoder
roles, attribution methods, targets, tasks) are refused with a message naming the file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any

import yaml

from aft_bench.core.registries import ATTRIBUTIONS, TARGETS, TASKS
from aft_bench.core.registry import UnknownNameError

SCHEMA_VERSION = 1
"""The newest reference-file schema this loader reads."""
PACKAGE, FOLDER = "aft_bench.apps.paper", "references"
"""Where the reference files live (package data)."""

RowValue = str | int | float | None
"""The value of a row key: a name, a number (a radius in 1/255 units) or null (no such setting)."""

COLUMN_KINDS: dict[str, str] = {
    "metric": "the columns are project metric names (pg, ap, ssim@3, ...)",
    "dataset": "the columns are evaluation datasets (the row key `metric` names the score)",
    "quantity": "the columns are other quantities (batch size, hours, ...)",
}
ROW_KEYS: dict[str, str] = {
    "encoder": "the image encoder's role (ENCODER_ROLES)",
    "train_eps": "the fine-tuning radius in 1/255 units (null for an encoder that was not fine-tuned)",
    "target": "what the maps explain: a TARGETS name (text: the zero-shot prompt; probe: a linear probe's logit)",
    "method": "the attribution method: an ATTRIBUTIONS name or one of PAPER_ONLY_METHODS",
    "metric": "the project metric name of the row's score (clean, robust@2/255, ...)",
    "backbone": "the CLIP architecture",
    "cases": "the user study's subset of cases (correct or incorrect zero-shot prediction)",
}
ENCODER_ROLES: dict[str, str] = {
    "original": "the pre-trained CLIP image encoder",
    "aft": "CLIP fine-tuned with unsupervised AFT (paper Eq. 7; the objective `aft`)",
    "aft-supervised": "CLIP fine-tuned with supervised AFT on image captions (paper Eq. 1; `aft-supervised`)",
    "fare": "CLIP fine-tuned with FARE (Schlarmann et al. 2024; the objective `fare`)",
    "imagenet-supervised": "a network trained with labels on ImageNet (the paper's supervised baseline)",
}
PAPER_ONLY_METHODS: dict[str, str] = {
    "llava_attention": "LLaVA's language-model attention combined with its ViT's attention over the image",
}
"""Map methods the paper reports that are not attribution methods of this project."""

_NUMBERED = re.compile(r"(.*?)(\d+)")


class UnknownReferenceKeyError(UnknownNameError):
    """A key a section of a reference file does not have (misspelt, or from a newer schema)."""

    def __init__(self, where: str, key: str, known: Sequence[str]) -> None:
        super().__init__("key", key, list(known))
        self.args = (f"{where}: {self.args[0]}",)


@dataclass(frozen=True)
class Column:
    """One column of a table: ``key`` (a metric, dataset or quantity name), the paper's ``label``, the ``unit``
    of its values, the ``decimals`` printed, and a ``description``."""

    key: str
    label: str
    unit: str
    decimals: int
    description: str = ""


@dataclass(frozen=True)
class Protocol:
    """The paper's setting of a table, as far as the paper states it.

    Attributes:
        tasks: The project tasks that measure the table's scores, each with the ``--option`` values of the
            paper's setting.
        dataset: The evaluation data, in words. samples: How many samples were evaluated, where stated.
        backbone: The CLIP architecture. fine_tuning: The fine-tuning data and schedule, in words.
        train_eps: Fine-tuning radii in 1/255 units. eta, sigma: AFT's smoothing and noise in 1/255 units.
        pgd_steps: PGD steps of the fine-tuning. attack: The evaluation attack, in words.
        attack_eps: Attack radii in 1/255 units. attack_samples: Attacked samples per dataset.
        attributions: The attribution methods, where the rows do not name them.
        notes: Anything else (which settings the paper states elsewhere, typos of the paper).
    """

    tasks: Mapping[str, Mapping[str, Any]]
    dataset: str | None
    samples: int | None
    backbone: str | None
    fine_tuning: str | None
    train_eps: tuple[float, ...]
    eta: float | None
    sigma: float | None
    pgd_steps: int | None
    attack: str | None
    attack_eps: tuple[float, ...]
    attack_samples: int | None
    attributions: tuple[str, ...]
    notes: str


@dataclass(frozen=True)
class ReferenceCell:
    """One published number: the row it belongs to (``{row key: value}``), its column, the value as printed
    (in ``unit``, with ``decimals``), a note of what it is, and the line of the text extraction it is on."""

    row: Mapping[str, RowValue]
    column: str
    value: float
    unit: str
    decimals: int
    note: str
    line: int

    @property
    def printed(self) -> str:
        """The value as the paper prints it (``74.90``)."""
        return f"{self.value:.{self.decimals}f}"


@dataclass(frozen=True)
class Missing:
    """Cells of the paper's table that the text extraction does not give: those of the rows matching ``row`` (a
    subset of the row keys; empty: every row) in ``columns`` (empty: every column), and why."""

    row: Mapping[str, RowValue]
    columns: tuple[str, ...]
    reason: str

    def covers(self, column: str, row: Mapping[str, RowValue]) -> bool:
        """Whether the cell (``row``, ``column``) is one of these."""
        return (not self.columns or column in self.columns) and all(row.get(k) == v for k, v in self.row.items())


@dataclass(frozen=True)
class ReferenceTable:
    """One table of the paper: what it is, the paper's protocol, its cells and the cells it lacks.

    Attributes:
        id: The table's id (``table1``). title: A short title. caption: What the table shows, in our words.
        source: Where it is in the paper. lines: First and last line of the table in the text extraction.
        protocol: The paper's setting. row_keys: The keys of every cell's ``row``. column_kind: What the
            columns are (COLUMN_KINDS). columns: The columns, in the paper's order. cells: The numbers, row by
            row. missing: The cells the text does not give. notes: How garbled parts of the text were read.
        file: The file the table was read from (for messages).
    """

    id: str
    title: str
    caption: str
    source: str
    lines: tuple[int, int]
    protocol: Protocol
    row_keys: tuple[str, ...]
    column_kind: str
    columns: tuple[Column, ...]
    cells: tuple[ReferenceCell, ...]
    missing: tuple[Missing, ...]
    notes: tuple[str, ...]
    file: str

    def cell(self, column: str, **row: RowValue) -> ReferenceCell:
        """The cell of ``column`` in the row whose keys are ``row`` (every row key, e.g. ``encoder="aft"``).

        Raises:
            KeyError: If the table has no such cell; the message says why when the paper's value is missing.
        """
        for cell in self.cells:
            if cell.column == column and dict(cell.row) == row:
                return cell
        reason = self.missing_reason(column, **row)
        known = f"columns: {', '.join(c.key for c in self.columns)}; row keys: {', '.join(self.row_keys)}"
        raise KeyError(f"{self.id} has no cell {column!r} for {row}: {reason or known}")

    def missing_reason(self, column: str, **row: RowValue) -> str | None:
        """Why the cell of ``column`` in the row ``row`` is not transcribed, or None if it is not listed missing."""
        return next((m.reason for m in self.missing if m.covers(column, row)), None)


# ---------------------------------------------------------------------------------------- finding files
def reference_ids() -> list[str]:
    """The ids of the reference tables (the files' stems) in the paper's order: table1, table2, ..., table11."""
    folder = resources.files(PACKAGE).joinpath(FOLDER)
    stems = [entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml")]
    return sorted(stems, key=_natural_key)


def load_reference(table_id: str) -> ReferenceTable:
    """The reference table ``table_id`` (one of :func:`reference_ids`).

    Raises:
        UnknownNameError: For an id no file has (the message lists the ids, with a did-you-mean).
        ValueError: For a file that is not valid (see :func:`parse_reference`) or whose ``id`` is not its stem.
    """
    ids = reference_ids()
    if table_id not in ids:
        raise UnknownNameError("reference table", table_id, ids)
    name = f"{table_id}.yaml"
    text = resources.files(PACKAGE).joinpath(FOLDER).joinpath(name).read_text(encoding="utf-8")
    table = parse_reference(text, f"{PACKAGE.replace('.', '/')}/{FOLDER}/{name}")
    if table.id != table_id:
        raise ValueError(f"{table.file}: id={table.id!r} differs from the file name; give id: {table_id}")
    return table


def _natural_key(name: str) -> tuple[str, int]:
    """``table2`` before ``table10``: the text before a trailing number, then the number."""
    match = _NUMBERED.fullmatch(name)
    return (match.group(1), int(match.group(2))) if match else (name, -1)


# ---------------------------------------------------------------------------------------- parsing
class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that repeats a key (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} appears twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_TOP = {"version": True, "id": True, "title": True, "caption": True, "source": True, "lines": True,
        "protocol": True, "row_keys": True, "column_kind": True, "columns": True, "rows": True, "missing": False,
        "notes": False}
_COLUMN = {"key": True, "label": True, "unit": True, "decimals": True, "description": False}
_ROW = {"row": True, "line": True, "note": True, "values": True, "remarks": False}
_MISSING = {"row": False, "columns": False, "reason": True}
_PROTOCOL = {"tasks": False, "dataset": False, "samples": False, "backbone": False, "fine_tuning": False,
             "train_eps": False, "eta": False, "sigma": False, "pgd_steps": False, "attack": False,
             "attack_eps": False, "attack_samples": False, "attributions": False, "notes": False}
"""The keys of each section, True for the required ones."""


def parse_reference(text: str, source: str) -> ReferenceTable:
    """A :class:`ReferenceTable` from the YAML ``text`` of the file ``source`` (named in every message).

    Raises:
        UnknownReferenceKeyError: For a key a section does not have (with a did-you-mean).
        UnknownNameError: For an unknown row key, encoder role, attribution method, target or task.
        ValueError: For invalid YAML, a repeated key, a missing section, a value of the wrong kind, a value
            that is not a finite number or has more decimals than its column, a duplicate column or cell, a
            cell listed as missing, or a schema version this loader does not read.
    """
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ValueError(f"reference file {source} is not valid YAML ({exc})") from None
    top = _section(data, _TOP, source)
    version = top["version"]
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise ValueError(f"{source}: version={version!r}: give the schema version (1 to {SCHEMA_VERSION})")
    lines = _integers(top["lines"], f"{source} lines")
    if len(lines) != 2 or not 1 <= lines[0] <= lines[1]:
        raise ValueError(f"{source}: lines={top['lines']!r}: give [first, last] line numbers of the text")
    row_keys = tuple(_names(top["row_keys"], f"{source} row_keys"))
    for key in row_keys:
        _known(key, ROW_KEYS, "row key", f"{source} row_keys")
    column_kind = _known(top["column_kind"], COLUMN_KINDS, "column kind", f"{source} column_kind")
    columns = tuple(_column(c, f"{source} columns[{i}]") for i, c in enumerate(_list(top["columns"], source)))
    keys = [c.key for c in columns]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{source}: the column {next(k for k in keys if keys.count(k) > 1)!r} is declared twice")
    rows = _list(top["rows"], f"{source} rows")
    if rows and not columns:
        raise ValueError(f"{source}: rows need declared columns")
    cells: list[ReferenceCell] = []
    for i, row in enumerate(rows):
        cells += _cells(row, row_keys, columns, f"{source} rows[{i}]")
    seen: set[tuple[Any, ...]] = set()
    for cell in cells:
        identity = (*(cell.row[k] for k in row_keys), cell.column)
        if identity in seen:
            raise ValueError(f"{source}: duplicate cell {cell.column!r} of row {dict(cell.row)}")
        seen.add(identity)
    missing = tuple(_missing(m, row_keys, keys, f"{source} missing[{i}]")
                    for i, m in enumerate(_list(top.get("missing", []), f"{source} missing")))
    for entry in missing:
        listed = next((c for c in cells if entry.covers(c.column, c.row)), None)
        if listed is not None:
            raise ValueError(f"{source}: the cell {listed.column!r} of row {dict(listed.row)} is transcribed and "
                             f"listed as missing ({entry.reason})")
    return ReferenceTable(
        id=_text(top["id"], f"{source} id"), title=_text(top["title"], f"{source} title"),
        caption=_text(top["caption"], f"{source} caption"), source=_text(top["source"], f"{source} source"),
        lines=(lines[0], lines[1]), protocol=_protocol(top["protocol"], f"{source} protocol"), row_keys=row_keys,
        column_kind=column_kind, columns=columns, cells=tuple(cells), missing=missing,
        notes=tuple(_text(n, f"{source} notes") for n in _list(top.get("notes", []), f"{source} notes")),
        file=source)


def _column(data: Any, where: str) -> Column:
    values = _section(data, _COLUMN, where)
    decimals = values["decimals"]
    if isinstance(decimals, bool) or not isinstance(decimals, int) or decimals < 0:
        raise ValueError(f"{where}: decimals={decimals!r}: give the number of decimals printed (0 or more)")
    return Column(key=_text(values["key"], f"{where} key"), label=_text(values["label"], f"{where} label"),
                  unit=_text(values["unit"], f"{where} unit"), decimals=decimals,
                  description=_text(values.get("description", ""), f"{where} description", empty=True))


def _cells(data: Any, row_keys: tuple[str, ...], columns: tuple[Column, ...], where: str) -> list[ReferenceCell]:
    """The cells of one row entry, in the order of its ``values``."""
    values = _section(data, _ROW, where)
    row = _row(values["row"], row_keys, f"{where} row", partial=False)
    line = values["line"]
    if isinstance(line, bool) or not isinstance(line, int) or line < 1:
        raise ValueError(f"{where}: line={line!r}: give the row's line number in the text")
    note = _text(values["note"], f"{where} note")
    by_key = {c.key: c for c in columns}
    numbers = _mapping(values["values"], f"{where} values")
    remarks = _mapping(values.get("remarks", {}), f"{where} remarks")
    for key in remarks:
        if key not in numbers:
            raise UnknownReferenceKeyError(f"{where} remarks", str(key), list(numbers))
    cells = []
    for key, number in numbers.items():
        if key not in by_key:
            raise UnknownReferenceKeyError(f"{where} values", str(key), list(by_key))
        column = by_key[key]
        value = _value(number, column, f"{where} values.{key}")
        remark = f" ({_text(remarks[key], f'{where} remarks.{key}')})" if key in remarks else ""
        cells.append(ReferenceCell(row=row, column=key, value=value, unit=column.unit, decimals=column.decimals,
                                   note=f"{column.label} ({column.unit}), {note}{remark}", line=line))
    return cells


def _value(number: Any, column: Column, where: str) -> float:
    """A finite number with at most the column's decimals."""
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise ValueError(f"{where}={number!r}: give the number as printed (a cell the paper or the text lacks "
                         "goes in `missing:` with the reason)")
    value = float(number)
    if not math.isfinite(value):
        raise ValueError(f"{where}={number!r}: give a finite number")
    if abs(round(value, column.decimals) - value) > 1e-9:
        raise ValueError(f"{where}={number!r} has more decimals than the column's {column.decimals}")
    return value


def _missing(data: Any, row_keys: tuple[str, ...], columns: list[str], where: str) -> Missing:
    values = _section(data, _MISSING, where)
    names = _names(values.get("columns", []), f"{where} columns")
    for name in names:
        if name not in columns:
            raise UnknownReferenceKeyError(f"{where} columns", name, columns)
    return Missing(row=_row(values.get("row", {}), row_keys, f"{where} row", partial=True), columns=tuple(names),
                   reason=_text(values["reason"], f"{where} reason"))


def _row(data: Any, row_keys: tuple[str, ...], where: str, partial: bool) -> Mapping[str, RowValue]:
    """A row's keys: every row key (a subset when ``partial``), each a name, a number or null."""
    row = _mapping(data, where)
    for key, value in row.items():
        if key not in row_keys:
            raise UnknownReferenceKeyError(where, str(key), row_keys)
        if isinstance(value, bool) or not isinstance(value, str | int | float | type(None)):
            raise ValueError(f"{where}: {key}={value!r}: give a name, a number or null")
    absent = [key for key in row_keys if key not in row]
    if absent and not partial:
        raise ValueError(f"{where}: the row key {absent[0]!r} is required (row keys: {', '.join(row_keys)})")
    if "encoder" in row:
        _known(row["encoder"], ENCODER_ROLES, "encoder role", where)
    if "method" in row:
        _known(row["method"], [*ATTRIBUTIONS, *PAPER_ONLY_METHODS], "attribution method", where)
    if "target" in row:
        _known(row["target"], list(TARGETS), "target", where)
    return MappingProxyType(dict(row))


def _protocol(data: Any, where: str) -> Protocol:
    values = _section(data, _PROTOCOL, where)
    tasks = _mapping(values.get("tasks", {}), f"{where} tasks")
    for name in tasks:
        _known(name, list(TASKS), "task", f"{where} tasks")
    methods = _names(values.get("attributions", []), f"{where} attributions")
    for method in methods:
        _known(method, [*ATTRIBUTIONS, *PAPER_ONLY_METHODS], "attribution method", f"{where} attributions")

    def text(key: str) -> str | None:
        return None if values.get(key) is None else _text(values[key], f"{where} {key}")

    def count(key: str) -> int | None:
        return None if values.get(key) is None else _integers([values[key]], f"{where} {key}")[0]

    def level(key: str) -> float | None:
        return None if values.get(key) is None else _levels([values[key]], f"{where} {key}")[0]

    return Protocol(
        tasks=MappingProxyType({str(k): MappingProxyType(_mapping(v or {}, f"{where} tasks.{k}"))
                                for k, v in tasks.items()}),
        dataset=text("dataset"), samples=count("samples"), backbone=text("backbone"),
        fine_tuning=text("fine_tuning"), train_eps=_levels(values.get("train_eps", []), f"{where} train_eps"),
        eta=level("eta"), sigma=level("sigma"), pgd_steps=count("pgd_steps"), attack=text("attack"),
        attack_eps=_levels(values.get("attack_eps", []), f"{where} attack_eps"),
        attack_samples=count("attack_samples"), attributions=tuple(methods),
        notes=_text(values.get("notes", ""), f"{where} notes", empty=True))


# ---------------------------------------------------------------------------------------- small readers
def _section(data: Any, keys: Mapping[str, bool], where: str) -> dict[str, Any]:
    """``data`` as a mapping with only the keys of ``keys`` and every required one."""
    values = _mapping(data, where)
    for key in values:
        if key not in keys:
            raise UnknownReferenceKeyError(where, str(key), list(keys))
    absent = [key for key, required in keys.items() if required and key not in values]
    if absent:
        raise ValueError(f"{where}: the key {absent[0]!r} is required")
    return values


def _mapping(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping of key: value, got {type(data).__name__}")
    return {str(key): value for key, value in data.items()}


def _list(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise ValueError(f"{where}: expected a list, got {type(data).__name__}")
    return data


def _text(data: Any, where: str, empty: bool = False) -> str:
    if not isinstance(data, str) or not (data.strip() or empty):
        raise ValueError(f"{where}: {data!r}: give a text")
    return data.strip()


def _names(data: Any, where: str) -> list[str]:
    return [_text(item, where) for item in _list(data, where)]


def _integers(data: Any, where: str) -> list[int]:
    items = _list(data, where)
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in items):
        raise ValueError(f"{where}: {data!r}: give whole numbers")
    return items


def _levels(data: Any, where: str) -> tuple[float, ...]:
    """Radii or noise levels in 1/255 units: positive finite numbers."""
    items = _list(data, where)
    if not all(isinstance(i, int | float) and not isinstance(i, bool) and math.isfinite(i) and i > 0 for i in items):
        raise ValueError(f"{where}: {data!r}: give positive numbers (1/255 units)")
    return tuple(float(i) for i in items)


def _known(name: Any, known: Mapping[str, str] | Sequence[str], kind: str, where: str) -> str:
    """``name`` if it is one of ``known``.

    Raises:
        UnknownNameError: Naming ``where``, the name, a did-you-mean and the known names.
    """
    if not isinstance(name, str) or name not in known:
        error = UnknownNameError(kind, str(name), list(known))
        error.args = (f"{where}: {error.args[0]}",)
        raise error
    return name
