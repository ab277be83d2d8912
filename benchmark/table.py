"""Leaderboards: a results folder turned into Markdown or CSV (``aft-bench table``).

One table per (task, dataset); one row per (encoder, attribution, task options), the latest result
of each; one column per metric with an arrow from the metric's ``higher_is_better`` and the 95%
interval beside the mean. Nothing is read but the result files, so the table can be rebuilt at any time.
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


def _higher(rows: list[RunResult], metric: str) -> bool:
    return next(r.metrics[metric]["higher_is_better"] for r in rows if metric in r.metrics)


RENDERERS = {"md": make_markdown, "csv": make_csv}


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
