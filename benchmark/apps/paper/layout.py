"""A paper table laid out as the paper prints it, each measured number beside the paper's.

The columns (keys, labels, units, decimals, order) are those of the table's reference file
(:mod:`aft_bench.apps.paper.references`); a layout's ``groups`` row key spreads them over column groups (Table 1: the
zero-shot and linear-probe halves). The rows are the reference's, in its order, projected onto the layout's row keys,
then any measured row the paper lacks. Each :class:`Cell` holds the measured mean (None: not measured), the paper's
cell (None: the paper has none; ``missing`` says why when the reference does), and the ways the run's protocol
differs from the paper's (another encoder, dataset, sample count or task option), which mark the cell. A layout's
``averages`` column (Table 2's "Average Zero-shot") is the mean of the row's measured cells in the columns it names,
measured only when every one of them is (as the paper averages a full row), and marked with their differences. A
table without a reference file (a figure's scores) has one column per headline metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aft_bench.apps.paper.measure import Measurement
from aft_bench.apps.paper.references import ReferenceCell, ReferenceTable
from aft_bench.apps.paper.spec import PaperSection
from aft_bench.models.checkpoints import read_card

DEFAULT_DECIMALS = 2


@dataclass(frozen=True)
class TableColumn:
    """One printed column: the measured key (metric or dataset), its label, unit, decimals, direction, and the value
    of the group row key it belongs to (None without groups)."""

    key: str
    label: str
    unit: str
    decimals: int
    higher_is_better: bool | None = None
    group: Any = None


@dataclass(frozen=True)
class Cell:
    """One cell: the measured mean, the paper's number, why the paper's is missing, the samples and the protocol's
    differences from the paper's (they mark the cell)."""

    value: float | None
    reference: ReferenceCell | None
    missing: str | None
    n: int | None
    differences: tuple[str, ...]

    @property
    def difference(self) -> float | None:
        """Measured minus the paper's number (None when either is absent)."""
        if self.value is None or self.reference is None:
            return None
        return self.value - self.reference.value


@dataclass(frozen=True)
class TableRow:
    """One row: its row-key values, their printed labels, and one cell per column."""

    keys: Mapping[str, Any]
    labels: tuple[str, ...]
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class PaperTable:
    """A table in the paper's layout (see the module docstring).

    Attributes:
        title: Its title. row_keys: The row keys, in column order. row_headers: Their printed headings.
        group_key: The row key over column groups (None: none). group_labels: The groups' printed names.
        columns: The columns, group by group. rows: The rows. reference: The reference table (None: none).
    """

    title: str
    row_keys: tuple[str, ...]
    row_headers: tuple[str, ...]
    group_key: str | None
    group_labels: Mapping[Any, str]
    columns: tuple[TableColumn, ...]
    rows: tuple[TableRow, ...]
    reference: ReferenceTable | None

    def cell(self, column: str, group: Any = None, **keys: Any) -> Cell:
        """The cell of ``column`` (in ``group``) in the row whose keys are ``keys``.

        Raises:
            KeyError: For a row or column the table does not have.
        """
        index = next((i for i, c in enumerate(self.columns) if c.key == column and c.group == group), None)
        row = next((r for r in self.rows if dict(r.keys) == keys), None)
        if index is None or row is None:
            raise KeyError(f"{self.title}: no cell {column!r} (group {group!r}) in the row {keys}")
        return row.cells[index]

    @property
    def differences(self) -> list[str]:
        """Every distinct protocol difference of the table's measured cells, in order."""
        return list(dict.fromkeys(d for row in self.rows for cell in row.cells for d in cell.differences))


def _printed(key: str, value: Any, paper: PaperSection) -> str:
    labels = paper.layout.labels.get(key, {})
    if value is None:
        return labels.get("null", "-" if key == "train_eps" else "")
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return labels.get(text, text)


def _role_labels(paper: PaperSection, row_keys: Sequence[str]) -> dict[tuple[str, Any], str]:
    """The roles' own labels, for the encoder key of rows that tell roles apart (with train_eps when a key)."""
    return {(role.role, role.train_eps if "train_eps" in row_keys else None): role.printed for role in paper.roles}


def _differences(measurement: Measurement, reference: ReferenceTable | None, paper: PaperSection) -> tuple[str, ...]:
    """How the protocol of ``measurement`` differs from the paper's (empty when it does not, or there is no paper)."""
    if reference is None:
        return ()
    out = []
    protocol = reference.protocol
    spec = measurement.result.encoder
    architecture = encoder_architecture(spec)
    if protocol.backbone and architecture is not None and architecture != protocol.backbone:
        out.append(f"encoder {spec} (paper: {protocol.backbone})")
    datasets = paper.needs.datasets
    if datasets and measurement.result.dataset not in datasets:
        out.append(f"dataset {measurement.result.dataset} (paper: {', '.join(datasets)})")
    robust = measurement.metric.startswith("robust")
    samples = protocol.attack_samples if robust and protocol.attack_samples else protocol.samples
    if samples is not None and measurement.n != samples:
        out.append(f"{measurement.n} samples (paper: {samples})")
    options = measurement.result.config.get("options") or {}
    for key, value in (protocol.tasks.get(measurement.result.task) or {}).items():
        if key in options and _plain(options[key]) != _plain(value):
            out.append(f"{measurement.result.task} {key}={_plain(options[key])} (paper: {_plain(value)})")
    return tuple(out)


def encoder_architecture(spec: str) -> str | None:
    """The architecture of an encoder spec: ``ARCH`` of ``ARCH:TAG`` and ``ARCH[:TAG]@PATH``, a ``ckpt:`` card's
    ``arch``, the name itself for a registered encoder (``toy``); None where it cannot be told (a checkpoint without
    a readable card, a Hugging Face model), which then marks no difference."""
    if spec.startswith("ckpt:"):
        try:
            return read_card(spec)[1].get("arch")
        except (ValueError, OSError):
            return None
    if spec.startswith("hf-hub:"):
        return None
    return spec.split("@")[0].split(":")[0]


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, list | tuple) else value


def _columns(reference: ReferenceTable | None, measured: Sequence[Measurement], dataset_columns: bool
             ) -> list[TableColumn]:
    """The reference's columns, then (dataset tables, tables without a reference) the measured keys it lacks."""
    directions = {m.metric: m.summary.get("higher_is_better") for m in measured}
    columns = [] if reference is None else [
        TableColumn(c.key, c.label, c.unit, c.decimals, directions.get(c.key) if not dataset_columns else None)
        for c in reference.columns]
    if reference is not None and not dataset_columns:
        return columns
    known = {c.key for c in columns}
    decimals = columns[0].decimals if columns else DEFAULT_DECIMALS
    for m in measured:
        key = m.result.dataset if dataset_columns else m.metric
        if key not in known:
            known.add(key)
            columns.append(TableColumn(key, key, "%" if dataset_columns else "", decimals,
                                       None if dataset_columns else directions.get(key)))
    return columns


def build_table(paper: PaperSection, reference: ReferenceTable | None, measured: Sequence[Measurement],
                default_rows: Sequence[str] = ("entry", "method", "encoder")) -> PaperTable:
    """The table of ``measured`` in the layout of ``paper`` and ``reference`` (see the module docstring).

    Args:
        paper: The suite's paper section (layout, roles). reference: The paper's table (None: a figure's scores).
        measured: The suite's measurements. default_rows: The row keys of a table without a reference or layout.
    """
    dataset_columns = reference is not None and reference.column_kind == "dataset"
    row_keys = paper.layout.rows or (tuple(k for k in reference.row_keys if k != paper.layout.groups)
                                     if reference is not None else tuple(default_rows))
    group = paper.layout.groups

    def value_of(m: Measurement, key: str) -> Any:
        return m.entry if key == "entry" else m.row_value(key)

    def column_of(m: Measurement) -> str:
        return m.result.dataset if dataset_columns else m.metric

    base = _columns(reference, measured, dataset_columns)
    groups: list[Any] = [None]
    if group is not None:
        seen = [c.row.get(group) for c in reference.cells] if reference is not None else []
        groups = list(dict.fromkeys([*seen, *(value_of(m, group) for m in measured)]))
    columns = [TableColumn(c.key, c.label, c.unit, c.decimals, c.higher_is_better, g) for g in groups for c in base]

    by_cell: dict[tuple[Any, ...], Measurement] = {}
    for m in measured:
        if m.value is not None:
            by_cell[(*(value_of(m, k) for k in row_keys), value_of(m, group) if group else None, column_of(m))] = m
    row_values: list[tuple[Any, ...]] = []
    if reference is not None:
        row_values += [tuple(c.row.get(k) for k in row_keys) for c in reference.cells]
    row_values += [key[:len(row_keys)] for key in by_cell]
    role_labels = _role_labels(paper, row_keys)
    rows = []
    for values in dict.fromkeys(row_values):
        keys = dict(zip(row_keys, values, strict=True))
        cells = []
        for column in columns:
            m = by_cell.get((*values, column.group, column.key))
            full = {**keys, **({group: column.group} if group else {})}
            ref = _reference_cell(reference, column.key, full)
            missing = reference.missing_reason(column.key, **full) if reference is not None and ref is None else None
            averaged = paper.layout.averages.get(column.key)
            if m is None and averaged:
                cells.append(_average_cell([by_cell.get((*values, column.group, c)) for c in averaged], ref, missing,
                                           reference, paper))
                continue
            cells.append(Cell(None if m is None else m.value, ref, missing, None if m is None else m.n,
                              () if m is None or ref is None else _differences(m, reference, paper)))
        labels = tuple(role_labels.get((v, keys.get("train_eps")), _printed(k, v, paper)) if k == "encoder"
                       else _printed(k, v, paper) for k, v in keys.items())
        rows.append(TableRow(keys, labels, tuple(cells)))
    headers = tuple({"train_eps": "eps (/255)", "entry": "entry"}.get(k, k.replace("_", " ")) for k in row_keys)
    group_labels = {g: _printed(group, g, paper) for g in groups} if group else {}
    title = f"{paper.item}: {paper.title}" if paper.title else paper.item
    return PaperTable(title, tuple(row_keys), headers, group, group_labels, tuple(columns), tuple(rows), reference)


def _average_cell(parts: Sequence[Measurement | None], ref: ReferenceCell | None, missing: str | None,
                  reference: ReferenceTable | None, paper: PaperSection) -> Cell:
    """The mean of ``parts`` (None unless every part is measured), marked with the parts' protocol differences."""
    if any(p is None or p.value is None for p in parts):
        return Cell(None, ref, missing, None, ())
    value = sum(p.value for p in parts) / len(parts)
    differences = () if ref is None else tuple(dict.fromkeys(d for p in parts for d in _differences(p, reference,
                                                                                                   paper)))
    return Cell(value, ref, missing, None, differences)


def _reference_cell(reference: ReferenceTable | None, column: str, row: Mapping[str, Any]) -> ReferenceCell | None:
    if reference is None:
        return None
    wanted = {k: row.get(k) for k in reference.row_keys}
    return next((c for c in reference.cells if c.column == column and dict(c.row) == wanted), None)
