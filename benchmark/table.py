"""Leaderboards: a results folder turned into Markdown or CSV (``aft-bench table``).

One table per (task, dataset); one row per (encoder, attribution, task options), the latest result
of each; one column per metric with an arrow from the metric's ``higher_is_better`` and the 95%
interval beside the mean. Nothing is read but the result files, so the table can be rebuilt at any time.
``aft-bench table --metric M`` lays one metric out across datasets instead, with their average, as the
paper's Table 2 does (:func:`pivot`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path

from aft_bench.atomic import atomic_write_text
from aft_bench.results import RunResult, read_results

FORMATS = ("md", "csv")


def latest(results: Iterable[RunResult]) -> list[RunResult]:
    """The newest result per (task, dataset, encoder, attribution, options), in first-seen order."""
    chosen: dict[tuple[str, ...], RunResult] = {}
    for result in sorted(results, key=lambda r: r.date):
        chosen[_row_key(result)] = result
    return list(chosen.values())


def _row_key(result: RunResult) -> tuple[str, ...]:
    options = json.dumps(result.config.get("options", {}), sort_keys=True)
    return (result.task, result.dataset, result.encoder, result.attribution, options)


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


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:.{digits}f}"


def _options_label(result: RunResult) -> str:
    options = result.config.get("options", {}) or {}
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items())) or "-"


def make_markdown(results: Iterable[RunResult]) -> str:
    """Markdown leaderboard: a heading and a table per (task, dataset)."""
    blocks = []
    for (task, dataset), rows in _groups(latest(results)).items():
        metrics = _metric_names(rows)
        show_options = len({_options_label(r) for r in rows}) > 1
        arrows = {m: ("↑" if _higher(rows, m) else "↓") for m in metrics}
        head = ["encoder", "attribution"] + (["options"] if show_options else []) + ["n", "excluded"]
        head += [f"{m} {arrows[m]}" for m in metrics]
        lines = [f"### {task} · {dataset} (task v{rows[0].task_version})", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cells = [r.encoder, r.attribution] + ([_options_label(r)] if show_options else [])
            cells += [str(r.n), str(sum(r.excluded.values()) + sum(r.skipped.values()))]
            for m in metrics:
                s = r.metrics.get(m)
                cells.append(f"{_fmt(s['mean'])} ± {_fmt(s['ci95'])}" if s else "-")
            lines.append("| " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    if not blocks:
        return "No results found.\n"
    note = ("Means (in %) with the half-width of the 95% interval; excluded = samples left out "
            "(empty mask, skipped).")
    return "\n\n".join(blocks) + f"\n\n{note}\n"


def make_csv(results: Iterable[RunResult]) -> str:
    """CSV leaderboard: one row per result, mean and ci95 columns per metric."""
    rows = latest(results)
    metrics = _metric_names(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["task", "task_version", "dataset", "encoder", "attribution", "options", "n", "excluded", "skipped"]
    for m in metrics:
        header += [m, f"{m}_ci95", f"{m}_higher_is_better"]
    writer.writerow(header + ["date", "git", "result_key"])
    for r in rows:
        line = [r.task, r.task_version, r.dataset, r.encoder, r.attribution, _options_label(r), r.n,
                sum(r.excluded.values()), sum(r.skipped.values())]
        for m in metrics:
            s = r.metrics.get(m)
            line += [s["mean"], s["ci95"], s["higher_is_better"]] if s else ["", "", ""]
        writer.writerow(line + [r.date, r.git or "", r.run_key])
    return buffer.getvalue()


def pivot(results: Iterable[RunResult], metric: str) -> tuple[list[str], list[list[str]]]:
    """One metric across datasets, as the paper's Table 2 lays it out: a row per (task, encoder, attribution,
    options), a column per dataset (first-seen order) and, with two or more datasets, their average.

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
    table: dict[tuple[str, ...], dict[str, float]] = {}
    for r in rows:
        key = (r.task, r.encoder, r.attribution, _options_label(r))
        table.setdefault(key, {})[r.dataset] = r.metrics[metric]["mean"]
    arrow = "↑" if _higher(rows, metric) else "↓"
    header = ["task", "encoder", "attribution", "options"] + [f"{d} {arrow}" for d in datasets]
    header += ["average"] if len(datasets) > 1 else []
    lines = []
    for key, values in table.items():
        cells = list(key) + [_fmt(values.get(d)) for d in datasets]
        if len(datasets) > 1:
            complete = all(d in values and values[d] == values[d] for d in datasets)
            cells.append(_fmt(sum(values[d] for d in datasets) / len(datasets)) if complete else "-")
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
