"""The report as text: each paper table in Markdown and CSV, and ``report.md``.

A table cell reads ``ours (paper, ours - paper)``, e.g. ``31.25 (25.77, +5.48)†``: our mean with the column's
decimals, the paper's number as printed, and the difference; ``-`` where we have no number, ``n/a`` where the paper
has none (the reference file's reason is listed below the table), and ``†`` where our protocol differs from the
paper's (the differences are listed below the table). Headings carry the column's unit and the metric's direction
(:func:`aft_bench.results.table.arrow`). The CSV has one line per cell with every part in its own field.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aft_bench.apps.paper.layout import Cell, PaperTable, TableColumn
from aft_bench.results.table import arrow, format_number

MARK = "†"
LEGEND = (f"Each cell: ours (paper, ours - paper); - : not measured; n/a : the paper has no number; {MARK} : our "
          "protocol differs from the paper's (listed below the table).")


def heading(column: TableColumn) -> str:
    """``PG ↑ (%)``."""
    direction = f" {arrow(column.higher_is_better)}" if column.higher_is_better is not None else ""
    unit = f" ({column.unit})" if column.unit else ""
    return f"{column.label}{direction}{unit}"


def cell_text(cell: Cell, decimals: int) -> str:
    """``31.25 (25.77, +5.48)†`` (see the module docstring)."""
    ours = format_number(cell.value, decimals)
    if cell.reference is None:
        return f"{ours} (n/a)" if cell.missing else ours
    difference = cell.difference
    delta = "" if difference is None else f", {difference:+.{decimals}f}"
    return f"{ours} ({cell.reference.printed}{delta}){MARK if cell.differences else ''}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def table_notes(table: PaperTable) -> list[str]:
    """The lines below a table: the protocol's differences and why the paper lacks cells."""
    notes = [f"{MARK} {difference}" for difference in table.differences]
    missing = dict.fromkeys(cell.missing for row in table.rows for cell in row.cells if cell.missing)
    notes += [f"n/a: {reason}" for reason in missing if reason]
    if table.reference is not None:
        notes.append(f"Paper numbers: {table.reference.source} ({table.reference.file}).")
    return notes


def table_markdown(table: PaperTable) -> str:
    """The table in Markdown, with its legend and notes."""
    lines = [f"### {table.title}", "", LEGEND, ""]
    header = list(table.row_headers)
    for column in table.columns:
        group = f"{table.group_labels.get(column.group, column.group)}: " if table.group_key else ""
        header.append(group + heading(column))
    lines += ["| " + " | ".join(map(_escape, header)) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        cells = [cell_text(cell, column.decimals) for cell, column in zip(row.cells, table.columns, strict=True)]
        lines.append("| " + " | ".join(map(_escape, [*row.labels, *cells])) + " |")
    notes = table_notes(table)
    if notes:
        lines += [""] + [f"- {_escape(note)}" for note in notes]
    return "\n".join(lines)


def table_csv(table: PaperTable) -> str:
    """One line per cell: the row keys, group, column, ours, the paper's, the difference, samples, differences."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*table.row_keys, "group", "column", "unit", "ours", "paper", "difference", "n",
                     "protocol_differs"])
    for row in table.rows:
        for cell, column in zip(row.cells, table.columns, strict=True):
            writer.writerow([*(row.keys[k] if row.keys[k] is not None else "" for k in table.row_keys),
                             "" if column.group is None else column.group, column.key, column.unit,
                             "" if cell.value is None else f"{cell.value:.6g}",
                             "" if cell.reference is None else cell.reference.printed,
                             "" if cell.difference is None else f"{cell.difference:.6g}",
                             "" if cell.n is None else cell.n, "; ".join(cell.differences)])
    return buffer.getvalue()


def run_lines(facts: Mapping[str, Any]) -> list[str]:
    """The report's "Run" section: world, results folder, settings and versions."""
    versions = ", ".join(f"{k} {v}" for k, v in facts["versions"].items())
    settings = ", ".join(f"{k}={v}" for k, v in facts["settings"].items()) or "none (the defaults)"
    return [f"- World: {facts['world']}", f"- Results store: `{facts['results']}`",
            f"- Encoders: {' '.join(facts['encoders']) or 'the roles’ toy encoders (listed per suite)'}",
            f"- Settings: {settings}",
            f"- aft-bench {facts['aft_bench']} (git {facts['git'] or 'unknown'}), {facts['date']}; {versions}",
            f"- Wall time: {facts['wall_s']:.1f} s"]


def status_lines(facts: Mapping[str, Any]) -> list[str]:
    """The per-suite status table."""
    lines = ["| suite | paper item | status | wall time (s) | stages run | stages reused | note |",
             "|---|---|---|---|---|---|---|"]
    for s in facts["suites"]:
        lines.append(f"| {s['suite']} | {s['item']} | {s['status']} | {s['wall_s']:.1f} | {s['stages_run']} | "
                     f"{s['stages_reused']} | {_escape(s['message'])} |")
    return lines


def report_markdown(reports: Sequence[Any], facts: Mapping[str, Any], copies: Mapping[Path, Path], out: Path) -> str:
    """``report.md``: the run, the statuses, then each suite's table, panels (linked copies) and notes."""
    lines = ["# AFT paper report", "", "## Run", "", *run_lines(facts), "", "## Suites", "", *status_lines(facts)]
    for report in reports:
        paper = report.suite.paper
        lines += ["", f"## {paper.item}: {paper.title}", "", f"Status: **{report.status}**"
                  + (f" - {report.message}" if report.message else "") + f" ({report.wall_s:.1f} s)", ""]
        if report.encoders:
            lines += ["Encoders: " + ", ".join(f"{k} = `{v}`" for k, v in report.encoders.items()), ""]
        if report.table is not None:
            lines += [table_markdown(report.table), ""]
        for panel in report.panels:
            if panel.files is None:
                lines += [f"- {panel.figure.title or panel.figure.name}: not drawn - {panel.reason}"]
                continue
            for path, caption in panel.files.files:
                if path.suffix == ".png":
                    link = os.path.relpath(copies[path], out)
                    lines += [f"![{_escape(caption)}]({link})", ""]
        lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"
