"""The curves of the sanity checks: per randomisation step, the mean similarity of each measure, as a result's
``extra``, a table (Markdown and CSV) and a figure (PNG).

A curve runs over the randomised units, top first: in the cascading mode a point is "every unit up to and including
this one re-drawn", in the independent mode "only this unit re-drawn" (Adebayo et al. 2018, Figs. 2 and 5). Each
point is the mean over the scored images with its 95% interval. Files are written atomically; their names are the
pair's per-sample store name, so a rerun with the same run key rewrites the same content. Figures are drawn with
matplotlib's object API on an Agg canvas (no pyplot, no global backend change).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from aft_bench.core.atomic import atomic_write, atomic_write_text
from aft_bench.metrics.summary import RunningStat
from aft_bench.results.result import RunResult

MODES = ("cascading", "independent")
Curves = dict[str, dict[str, Any]]
"""``{mode: {"randomised": [unit labels], measure: {"mean": [...], "ci95": [...]}}}``."""


def curves(records: Sequence[Mapping[str, Any]], labels: Sequence[str], measures: Sequence[str],
           modes: Sequence[str] = MODES) -> Curves:
    """The mean and 95% interval of each measure at each step of each mode over the scored ``records`` (NaN means
    when none was scored).

    Args:
        records: Per-sample records; scored ones hold ``record[mode][measure]``, one value per step.
        labels: The tower's unit labels, top first (the steps of both modes).
        measures: The measure names.
        modes: The modes the run computed.
    """
    out: Curves = {}
    scored = [r for r in records if "scores" in r]
    for mode in modes:
        summary: dict[str, Any] = {"randomised": list(labels)}
        for measure in measures:
            stats = [RunningStat() for _ in labels]
            for record in scored:
                for stat, value in zip(stats, record[mode][measure], strict=True):
                    stat.update([value])
            summary[measure] = {"mean": [s.mean for s in stats], "ci95": [s.ci95 for s in stats]}
        out[mode] = summary
    return out


def _cell(mean: float | None, ci: float | None) -> str:
    if mean is None or mean != mean:
        return "-"
    return f"{mean:.3f}" + (f" ± {ci:.3f}" if ci is not None and ci == ci else "")


def markdown(result: RunResult, data: Curves, measures: Sequence[str]) -> str:
    """The curves of one result as Markdown tables, one per mode (rows: steps; columns: measures)."""
    lines = [f"# Sanity checks: {result.encoder} · {result.attribution} · {result.dataset} (n = {result.n})", ""]
    for mode, summary in data.items():
        lines += [f"## {mode} randomisation", "", "| randomised | " + " | ".join(measures) + " |",
                  "|---|" + "---|" * len(measures)]
        for i, label in enumerate(summary["randomised"]):
            prefix = "up to " if mode == "cascading" else ""
            cells = [_cell(summary[m]["mean"][i], summary[m]["ci95"][i]) for m in measures]
            lines.append(f"| {prefix}{label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def table_csv(data: Curves, measures: Sequence[str]) -> str:
    """The curves as CSV rows ``mode, step, randomised, <measure>, <measure>_ci95, ...``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["mode", "step", "randomised", *[c for m in measures for c in (m, f"{m}_ci95")]])
    for mode, summary in data.items():
        for i, label in enumerate(summary["randomised"]):
            values = [summary[m][key][i] for m in measures for key in ("mean", "ci95")]
            writer.writerow([mode, i + 1, label, *["" if v is None or v != v else f"{v:.6f}" for v in values]])
    return buffer.getvalue()


def _draw_curve(axes: Any, labels: Sequence[str], mean: Sequence[float | None], ci: Sequence[float | None],
                label: str) -> None:
    xs = list(range(len(labels)))
    ys = [float("nan") if m is None else m for m in mean]
    (line,) = axes.plot(xs, ys, marker="o", markersize=3, label=label)
    half = [0.0 if c is None or c != c else c for c in ci]
    axes.fill_between(xs, [y - h for y, h in zip(ys, half, strict=True)],
                      [y + h for y, h in zip(ys, half, strict=True)], color=line.get_color(), alpha=0.15)
    axes.set_xticks(xs, labels, rotation=45, ha="right", fontsize=7)


def _style(axes: Any, title: str, ylabel: str) -> None:
    axes.axhline(0.0, color="0.6", linewidth=0.8)
    axes.set_ylim(max(-1.05, min(-0.35, axes.get_ylim()[0])), 1.05)
    axes.set_title(title, fontsize=9)
    axes.set_ylabel(ylabel, fontsize=8)
    axes.grid(alpha=0.3)


def plot_pair(result: RunResult, data: Curves, measures: Sequence[str], path: Path) -> Path:
    """One PNG per (encoder, method): a panel per mode, a curve per measure; returns ``path``."""
    figure = Figure(figsize=(4.2 * len(data), 3.6), dpi=120)
    FigureCanvasAgg(figure)
    for column, (mode, summary) in enumerate(data.items(), start=1):
        axes = figure.add_subplot(1, len(data), column)
        for measure in measures:
            _draw_curve(axes, summary["randomised"], summary[measure]["mean"], summary[measure]["ci95"], measure)
        _style(axes, f"{mode} · {result.encoder} · {result.attribution}", "similarity to the original map")
        axes.legend(fontsize=7)
    figure.tight_layout()
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))


def plot_methods(results: Sequence[RunResult], measures: Sequence[str], path: Path, title: str) -> Path:
    """One PNG per encoder: a panel per measure, a cascading curve per method (Adebayo et al.'s Fig. 4 layout)."""
    figure = Figure(figsize=(3.4 * len(measures), 3.6), dpi=120)
    FigureCanvasAgg(figure)
    for column, measure in enumerate(measures, start=1):
        axes = figure.add_subplot(1, len(measures), column)
        for result in results:
            summary = result.extra["curves"]["cascading"]
            _draw_curve(axes, summary["randomised"], summary[measure]["mean"], summary[measure]["ci95"],
                        result.attribution)
        _style(axes, measure, "similarity (cascading)" if column == 1 else "")
        if column == len(measures):
            axes.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))


def write_pair_files(result: RunResult, data: Curves, measures: Sequence[str], stem: Path) -> dict[str, str]:
    """Writes ``<stem>.md``, ``<stem>.csv`` and ``<stem>.png``; returns their names by kind."""
    paths = {kind: stem.parent / f"{stem.name}.{kind}" for kind in ("md", "csv", "png")}
    atomic_write_text(paths["md"], markdown(result, data, measures))
    atomic_write_text(paths["csv"], table_csv(data, measures))
    plot_pair(result, data, measures, paths["png"])
    return {kind: path.name for kind, path in paths.items()}
