"""Leaderboards: a results folder turned into Markdown or CSV (``aft-bench table``).

One table per (task, dataset); one row per distinct run configuration (:meth:`RunResult.row_key`: the run key
plus ``--limit``), the newest result of each, rows in first-seen order (the order of each row's oldest result,
so a rerun never moves a row). Beside encoder and attribution, a table shows the fields that tell its rows apart
(data root, dataset arguments, limit, seed, method arguments, task options, task version; the run key if rows
still look alike) as columns, each only when its values differ within the table; then n, excluded and skipped
counts and one column per metric with an arrow from the metric's ``higher_is_better`` and the 95% interval
beside the mean. Where results carry exact chance levels (``extra.chance``: the score a random map gets in
expectation on the images scored, :mod:`aft_bench.metrics.chance`), the table ends with a "chance" row per
distinct set of levels (rows on other image sets have other levels), with no interval: the levels are exact.
Nothing is read but the result files, so the table can be rebuilt at any time.
``aft-bench table --metric M`` lays one metric out across datasets instead, with their average, as the
paper's Table 2 does (:func:`pivot`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from aft_bench.core.atomic import atomic_write_text
from aft_bench.results.files import read_results
from aft_bench.results.result import RunResult

FORMATS = ("md", "csv")


def latest(results: Iterable[RunResult]) -> list[RunResult]:
    """The newest result per row key (:meth:`RunResult.row_key`), rows in first-seen order (oldest first)."""
    chosen: dict[tuple[str, ...], RunResult] = {}
    for result in sorted(results, key=lambda r: r.date):
        chosen[result.row_key()] = result
    return list(chosen.values())


def _groups(results: list[RunResult]) -> dict[tuple[str, str], list[RunResult]]:
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for result in results:
        groups.setdefault((result.task, result.dataset), []).append(result)
    return groups


def _metric_names(rows: list[RunResult]) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row.metrics))
    return list(names)


def format_number(value: float | None, digits: int = 2) -> str:
    """A table cell's number: ``digits`` decimals, ``-`` for None or NaN (no value)."""
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:.{digits}f}"


def arrow(higher_is_better: bool) -> str:
    """The arrow of a metric's direction in a column heading: ``↑`` higher is better, ``↓`` lower is better."""
    return "↑" if higher_is_better else "↓"


def _pairs(values: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((values or {}).items())) or "-"


def _options_label(result: RunResult) -> str:
    return _pairs(result.config.get("options"))


def _method_args(result: RunResult) -> str:
    return _pairs((result.config.get("attribution_args") or {}).get(result.attribution))


def _limit(result: RunResult) -> str:
    limit = result.config.get("limit")
    return "all" if limit is None else str(limit)


#: the fields that can tell the rows of one table apart: (column, its text for a result)
DISTINGUISHING: tuple[tuple[str, Callable[[RunResult], str]], ...] = (
    ("data root", lambda r: str(r.config.get("data_root") or "-")),
    ("dataset args", lambda r: _pairs(r.config.get("dataset_args"))),
    ("limit", _limit),
    ("seed", lambda r: str(r.seed)),
    ("method args", _method_args),
    ("options", _options_label),
    ("task version", lambda r: str(r.task_version)),
)


def _columns(rows: list[RunResult]) -> list[tuple[str, Callable[[RunResult], str]]]:
    """The distinguishing columns whose values differ within ``rows`` (plus the run key where rows still look
    alike, as a retrained checkpoint under the same path does)."""
    shown = [(name, cell) for name, cell in DISTINGUISHING if len({cell(r) for r in rows}) > 1]
    labels = {(r.encoder, r.attribution, *(cell(r) for _, cell in shown)) for r in rows}
    if len(labels) < len(rows):
        shown.append(("run key", lambda r: r.run_key))
    return shown


CHANCE_ENCODER, CHANCE_ATTRIBUTION = "chance", "random map (exact)"
"""The encoder and attribution cells of a chance row."""


def chance_rows(rows: list[RunResult]) -> list[tuple[RunResult, dict[str, float]]]:
    """The distinct chance levels of ``rows`` (``extra.chance`` as ``{metric: level}``, in first-seen order), each
    with the first result that carries it (whose distinguishing cells and n the chance row shows). A task that keeps
    one chance figure there instead (the user study's 25%) gets no row: it says nothing per metric."""
    found: dict[tuple[tuple[str, float], ...], tuple[RunResult, dict[str, float]]] = {}
    for r in rows:
        levels = r.extra.get("chance")
        if isinstance(levels, Mapping) and levels:
            found.setdefault(tuple(sorted((k, round(float(v), 9)) for k, v in levels.items())), (r, dict(levels)))
    return list(found.values())


def make_markdown(results: Iterable[RunResult]) -> str:
    """Markdown leaderboard: a heading and a table per (task, dataset)."""
    blocks = []
    for (task, dataset), rows in _groups(latest(results)).items():
        metrics = _metric_names(rows)
        columns = _columns(rows)
        arrows = {m: arrow(_higher(rows, m)) for m in metrics}
        head = ["encoder", "attribution"] + [name for name, _ in columns] + ["n", "excluded", "skipped"]
        head += [f"{m} {arrows[m]}" for m in metrics]
        versions = sorted({r.task_version for r in rows})
        lines = [f"### {task} · {dataset} (task v{', v'.join(map(str, versions))})", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cells = [r.encoder, r.attribution] + [cell(r) for _, cell in columns]
            cells += [str(r.n), str(sum(r.excluded.values())), str(sum(r.skipped.values()))]
            for m in metrics:
                s = r.metrics.get(m)
                cells.append(f"{format_number(s['mean'])} ± {format_number(s['ci95'])}" if s else "-")
            lines.append("| " + " | ".join(cells) + " |")
        for r, levels in chance_rows(rows):
            cells = [CHANCE_ENCODER, CHANCE_ATTRIBUTION] + [cell(r) for _, cell in columns] + [str(r.n), "-", "-"]
            cells += [format_number(levels.get(m)) for m in metrics]
            lines.append("| " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    if not blocks:
        return "No results found.\n"
    note = ("Means in each metric's unit (fractions in %) with the half-width of the 95% interval; n = samples "
            "scored, excluded = samples the task leaves out (empty mask, ...), skipped = bad samples skipped under "
            "--on-error skip; chance = the exact expected score of a random map on the same images.")
    return "\n\n".join(blocks) + f"\n\n{note}\n"


def make_csv(results: Iterable[RunResult]) -> str:
    """CSV leaderboard: one row per row key, every distinguishing field, mean and ci95 columns per metric."""
    rows = latest(results)
    metrics = _metric_names(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["task", "task_version", "dataset", "data_root", "dataset_args", "encoder", "attribution",
              "attribution_args", "options", "seed", "limit", "n", "excluded", "skipped"]
    for m in metrics:
        header += [m, f"{m}_ci95", f"{m}_higher_is_better"]
    writer.writerow(header + ["date", "git", "result_key"])
    for r in rows:
        line = [r.task, r.task_version, r.dataset, r.config.get("data_root") or "",
                _pairs(r.config.get("dataset_args")), r.encoder, r.attribution, _method_args(r), _options_label(r),
                r.seed, _limit(r), r.n, sum(r.excluded.values()), sum(r.skipped.values())]
        for m in metrics:
            s = r.metrics.get(m)
            line += [s["mean"], s["ci95"], s["higher_is_better"]] if s else ["", "", ""]
        writer.writerow(line + [r.date, r.git or "", r.run_key])
    for r, levels in chance_rows(rows):
        line = [r.task, r.task_version, r.dataset, r.config.get("data_root") or "",
                _pairs(r.config.get("dataset_args")), CHANCE_ENCODER, CHANCE_ATTRIBUTION, "", _options_label(r),
                r.seed, _limit(r), r.n, "", ""]
        for m in metrics:
            known = m in levels and m in r.metrics
            line += [levels[m], "", r.metrics[m]["higher_is_better"]] if known else ["", "", ""]
        writer.writerow(line + ["", "", ""])
    return buffer.getvalue()


#: what tells two rows of :func:`pivot` apart besides task, encoder and attribution (the dataset is the column)
PIVOT_DISTINGUISHING: tuple[tuple[str, Callable[[RunResult], str]], ...] = tuple(
    (name, cell) for name, cell in DISTINGUISHING if name not in ("data root", "dataset args"))


def pivot(results: Iterable[RunResult], metric: str) -> tuple[list[str], list[list[str]]]:
    """One metric across datasets, as the paper's Table 2 lays it out: a row per (task, encoder, attribution,
    and what else tells runs apart: limit, seed, method arguments, options, task version), a column per dataset
    (first-seen order) and, with two or more datasets, their average. The distinguishing columns are shown
    where the rows differ in them.

    The average is taken only over rows that have every dataset (else ``-``), so rows stay comparable.

    Returns:
        The header and the rows (cells as text; means only).

    Raises:
        ValueError: If no result has ``metric`` (the message lists the metrics there are).
    """
    rows = [r for r in latest(results) if metric in r.metrics]
    if not rows:
        known = sorted({m for r in latest(results) for m in r.metrics})
        raise ValueError(f"no result has the metric {metric!r}; the results have {known or 'no metrics'}")
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    shown = [(name, cell) for name, cell in PIVOT_DISTINGUISHING if len({cell(r) for r in rows}) > 1]
    table: dict[tuple[str, ...], dict[str, float]] = {}
    for r in rows:
        key = (r.task, r.encoder, r.attribution, *(cell(r) for _, cell in PIVOT_DISTINGUISHING))
        table.setdefault(key, {})[r.dataset] = r.metrics[metric]["mean"]
    direction = arrow(_higher(rows, metric))
    header = ["task", "encoder", "attribution"] + [name for name, _ in shown] + [f"{d} {direction}" for d in datasets]
    header += ["average"] if len(datasets) > 1 else []
    positions = [3 + [name for name, _ in PIVOT_DISTINGUISHING].index(name) for name, _ in shown]
    lines = []
    for key, values in table.items():
        cells = list(key[:3]) + [key[i] for i in positions] + [format_number(values.get(d)) for d in datasets]
        if len(datasets) > 1:
            complete = all(d in values and values[d] == values[d] for d in datasets)
            cells.append(format_number(sum(values[d] for d in datasets) / len(datasets)) if complete else "-")
        lines.append(cells)
    return header, lines


def pivot_markdown(results: Iterable[RunResult], metric: str) -> str:
    """:func:`pivot` as a Markdown table with a heading."""
    header, rows = pivot(results, metric)
    lines = [f"### {metric} by dataset", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def pivot_csv(results: Iterable[RunResult], metric: str) -> str:
    """:func:`pivot` as CSV."""
    header, rows = pivot(results, metric)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows([header, *rows])
    return buffer.getvalue()


def _higher(rows: list[RunResult], metric: str) -> bool:
    return next(r.metrics[metric]["higher_is_better"] for r in rows if metric in r.metrics)


RENDERERS = {"md": make_markdown, "csv": make_csv}
PIVOT_RENDERERS = {"md": pivot_markdown, "csv": pivot_csv}


def write_leaderboards(folder: str | Path, results: list[RunResult] | None = None) -> dict[str, Path]:
    """Writes ``leaderboard.md`` and ``leaderboard.csv`` into ``folder`` (atomically)."""
    folder = Path(folder)
    results = read_results(folder) if results is None else results
    paths = {}
    for fmt, render in RENDERERS.items():
        path = folder / f"leaderboard.{fmt}"
        atomic_write_text(path, render(results))
        paths[fmt] = path
    return paths
