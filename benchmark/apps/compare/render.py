"""The scorecard and the paired-difference table as Markdown, CSV and JSON.

Markdown is for reading: the scorecard shows each cell's mean (in the metric's unit, as the leaderboards), the
best value of a column in bold, and after a cell ``▲`` (``▼``) where the encoder is significantly better (worse)
than the baseline after Holm's correction; the paired table shows the test, the paired and left-out samples, the
difference with its 95% interval and the raw and Holm-adjusted p-values. CSV and JSON hold every number (the
cells' 95% half-widths and n, the left-out samples' reasons). Numbers are formatted by
:func:`aft_bench.results.table.format_number` and directions by :func:`aft_bench.results.table.arrow`, as in the
leaderboards.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from aft_bench.apps.compare.differences import Difference, Settings
from aft_bench.apps.compare.scorecard import Column, Scorecard
from aft_bench.results.result import finite_or_null
from aft_bench.results.table import format_number

BETTER, WORSE = "▲", "▼"
"""Scorecard marks of a significant difference from the baseline, by the column's direction."""


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def significance_mark(difference: Difference | None) -> str:
    """``▲`` / ``▼`` for a significant difference that is better / worse by the column's direction, else ``""``."""
    if difference is None or not difference.significant or difference.difference in (None, 0):
        return ""
    better = (difference.difference > 0) == difference.column.higher_is_better  # type: ignore[operator]
    return BETTER if better else WORSE


def by_cell(differences: Sequence[Difference]) -> dict[tuple[str, str], Difference]:
    """The differences by (encoder, column label)."""
    return {(d.encoder, d.column.label): d for d in differences}


def _row_name(card: Scorecard, encoder: str) -> str:
    return f"{encoder} (baseline)" if encoder == card.baseline else encoder


def scorecard_markdown(card: Scorecard, differences: Sequence[Difference]) -> str:
    """The scorecard as a Markdown table with a heading and a note."""
    marks = by_cell(differences)
    best = {column.label: card.best(column) for column in card.columns}
    rows = []
    for encoder in card.encoders:
        cells = [_row_name(card, encoder)]
        for column in card.columns:
            text = format_number(card.cell(encoder, column).mean)
            text = f"**{text}**" if encoder in best[column.label] else text
            cells.append(text + significance_mark(marks.get((encoder, column.label))))
        rows.append(cells)
    lines = [f"### Scorecard · {card.suite} (baseline: {card.baseline})", "",
             *_markdown_table(["encoder", *(column.heading for column in card.columns)], rows), "",
             f"Means in the metrics' units (percent; detector counts as counts), best per column in bold; {BETTER} / "
             f"{WORSE}: significantly better / worse than the baseline (paired test, Holm-corrected; see the paired "
             "table)."]
    return "\n".join(lines) + "\n"


def scorecard_csv(card: Scorecard) -> str:
    """The scorecard as CSV: a row per encoder; per column its mean, 95% half-width, n and whether it is best."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["encoder", "baseline"]
    for column in card.columns:
        header += [column.heading, f"{column.label} ci95", f"{column.label} n", f"{column.label} best"]
    writer.writerow(header)
    best = {column.label: card.best(column) for column in card.columns}
    for encoder in card.encoders:
        line: list[Any] = [encoder, encoder == card.baseline]
        for column in card.columns:
            cell = card.cell(encoder, column)
            line += [_csv_number(cell.mean), _csv_number(cell.ci95), "" if cell.n is None else cell.n,
                     encoder in best[column.label]]
        writer.writerow(line)
    return buffer.getvalue()


def _csv_number(value: float | None) -> Any:
    return "" if value is None or value != value else value


def _column_json(column: Column) -> dict[str, Any]:
    return {"label": column.label, "entry": column.entry, "task": column.task, "method": column.method,
            "metric": column.metric.name, "higher_is_better": column.higher_is_better}


def scorecard_json(card: Scorecard, about: Mapping[str, Any]) -> str:
    """The scorecard as JSON: ``about`` (what was compared, how), the columns, and a row per encoder."""
    best = {column.label: card.best(column) for column in card.columns}
    rows = []
    for encoder in card.encoders:
        cells = {}
        for column in card.columns:
            cell = card.cell(encoder, column)
            cells[column.label] = {"mean": cell.mean, "ci95": cell.ci95, "n": cell.n,
                                   "best": encoder in best[column.label]}
        rows.append({"encoder": encoder, "baseline": encoder == card.baseline, "cells": cells})
    data = {**about, "suite": card.suite, "baseline": card.baseline, "encoders": card.encoders,
            "columns": [_column_json(c) for c in card.columns], "rows": rows}
    return json.dumps(finite_or_null(data), indent=2, allow_nan=False) + "\n"


def _interval(d: Difference) -> str:
    return "-" if d.low is None else f"[{format_number(d.low)}, {format_number(d.high)}]"


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"


def paired_markdown(differences: Sequence[Difference], baseline: str, settings: Settings) -> str:
    """The paired differences as a Markdown table with a heading and a note."""
    tests = sum(d.p_value is not None for d in differences)
    header = ["column", "encoder", "test", "n", "left out", "baseline", "encoder value", "Δ", "95% interval", "p",
              "p (Holm)", "significant"]
    rows = [[d.column.heading, d.encoder, d.test, "-" if d.n is None else str(d.n),
             str(d.baseline_only + d.other_only), format_number(d.baseline_value), format_number(d.other_value),
             format_number(d.difference), _interval(d), _p(d.p_value), _p(d.p_holm),
             "-" if d.significant is None else ("yes" + significance_mark(d) if d.significant else "no")]
            for d in differences]
    lines = [f"### Paired differences against {baseline}", "", *_markdown_table(header, rows), "",
             f"Δ = encoder - baseline on the samples both scored (left out: samples only one of them scored). 95% "
             f"interval: paired bootstrap, {settings.resamples} resamples, seed {settings.seed}. p: McNemar's exact "
             "test for binary scores, Wilcoxon's signed-rank test for continuous ones, the bootstrap for pooled "
             f"scores; Holm's correction over the {tests} tests of this table; significant: Holm p < "
             f"{settings.alpha:g}. No test: a dataset-level score without per-sample records (the results' means)."]
    return "\n".join(lines) + "\n"


def _difference_json(d: Difference) -> dict[str, Any]:
    return {**_column_json(d.column), "column": d.column.label, "encoder": d.encoder, "test": d.test, "n": d.n,
            "baseline_only": d.baseline_only, "other_only": d.other_only, "left_out_reasons": d.reasons,
            "baseline_value": d.baseline_value, "encoder_value": d.other_value, "difference": d.difference,
            "ci95_low": d.low, "ci95_high": d.high, "p": d.p_value, "p_holm": d.p_holm, "significant": d.significant}


def paired_csv(differences: Sequence[Difference]) -> str:
    """The paired differences as CSV, one row per (column, encoder); reasons as ``reason=count; ...``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    rows = [_difference_json(d) for d in differences]
    header = list(_difference_json(differences[0])) if differences else ["column", "encoder", "test"]
    writer.writerow(header)
    for row in rows:
        row["left_out_reasons"] = "; ".join(f"{k}={v}" for k, v in sorted(row["left_out_reasons"].items()))
        writer.writerow(["" if row[k] is None else row[k] for k in header])
    return buffer.getvalue()


def paired_json(differences: Sequence[Difference], about: Mapping[str, Any]) -> str:
    """The paired differences as JSON: ``about`` and one object per (column, encoder)."""
    data = {**about, "differences": [_difference_json(d) for d in differences]}
    return json.dumps(finite_or_null(data), indent=2, allow_nan=False) + "\n"
