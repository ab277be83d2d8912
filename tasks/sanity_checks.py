"""Sanity checks for saliency maps: do a method's maps depend on the encoder's weights at all?
(Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim 2018, "Sanity checks for saliency maps", NeurIPS).

The AFT paper argues that AFT's better maps reflect the encoder, not the method; a benchmark of saliency maps must
then also show that each method's maps change when the weights do. The model-parameter randomisation test
re-initialises the image tower's units (:mod:`aft_bench.models.randomisation`: ``head``, the blocks from the last to the
first, ``stem``), recomputes each method's maps for the same targets (the text embeddings, or the probe, of the
trained encoder) and compares them with the trained encoder's maps (:mod:`aft_bench.metrics.similarity`):

* cascading randomisation: the top unit, then the top two, ..., then every unit re-drawn;
* independent randomisation (option ``independent``, default true): one unit at a time.

Measures, as Adebayo et al.: the Spearman rank correlation of the maps (``spearman``) and of their absolute values
(``spearman_abs``), SSIM of min-max-normalised maps (``ssim``) and the Pearson correlation of their HOG features
(``hog``). The result columns are each measure after full randomisation (every unit re-drawn), means over the
images with 95% intervals on the 0-1 scale: lower is better (a method that ignores the weights, such as an edge
detector on the image, scores 1). The curves over the steps of both modes are in the result's ``extra.curves``
and, per (encoder, method), in ``<out>/sanity_checks/curves/`` as Markdown, CSV and PNG, with one PNG per encoder
comparing the methods. The re-drawn weights are a function of the run seed and the architecture only.

A sample whose trained-encoder map is constant has no ranking to compare and is excluded (``"constant map"``), as
is one whose map's HOG features are all equal (no HOG correlation is defined).
The project scores whole datasets by default; this task computes ``2 x units`` maps per image (the trained one, each
cascading step, each other unit alone: 12 on the toy), so it scores a seeded subset of ``samples`` of the run's
images (default in ``tasks/sanity_checks.yaml``; ``null``: all; ``--limit`` still selects the run's images first).
Scores are stored per image, so an interrupted run resumes.

A curve runs over the randomised units, top first: in the cascading mode a point is "every unit up to and including
this one re-drawn", in the independent mode "only this unit re-drawn" (Adebayo et al. 2018, Figs. 2 and 5). Each
point is the mean over the scored images with its 95% interval. Files are written atomically; their names are the
pair's per-sample store name, so a rerun with the same run key rewrites the same content. Figures are drawn with
matplotlib's object API on an Agg canvas (no pyplot, no global backend change).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from aft_bench.core.atomic import atomic_write, atomic_write_text
from aft_bench.core.options import option, optional_positive_int
from aft_bench.data.base import Batch, Dataset
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.map_task import MapOptions, MapTask
from aft_bench.evaluation.sample_task import Pair
from aft_bench.evaluation.task import Record, Reported
from aft_bench.metrics.similarity import HOG_SIMILARITY, RANDOMISED_SSIM, SPEARMAN, SPEARMAN_ABS
from aft_bench.metrics.ssim import CONSTANT_MAP, is_constant
from aft_bench.metrics.summary import RunningStat
from aft_bench.models.encoder import Encoder
from aft_bench.models.randomisation import Randomiser
from aft_bench.results.keys import run_key, safe_name
from aft_bench.results.result import RunResult

MEASURES: tuple[Reported, ...] = (SPEARMAN, SPEARMAN_ABS, RANDOMISED_SSIM, HOG_SIMILARITY)
CURVES_DIR = "curves"
UNDEFINED = "undefined similarity (the map's HOG features are constant)"
"""Exclusion reason of a non-constant map whose HOG features are all equal (no correlation is defined)."""


@dataclass(frozen=True)
class SanityOptions(MapOptions):
    """Options of the sanity checks (besides the target and probe of every map task)."""

    samples: int | None = option(32, parse=optional_positive_int,
                                 help="score a seeded subset of this many of the run's images (null: all)")
    independent: bool = option(True, help="also re-draw each unit alone (independent randomisation)")


@dataclass(frozen=True)
class SanityState:
    """Per encoder: its randomised working copy and the unit sets whose maps each image needs.

    Attributes:
        randomiser: The working copy and its units.
        sets: The distinct sets of re-drawn units, in computation order (cascading steps, then the independent
            ones not already among them).
        cascading, independent: Per step of each mode, its position in ``sets`` (independent: empty when off).
    """

    randomiser: Randomiser
    sets: tuple[frozenset[str], ...]
    cascading: tuple[int, ...]
    independent: tuple[int, ...]


def plan(randomiser: Randomiser, independent: bool) -> SanityState:
    """The unit sets of the cascading (and independent) steps, each set computed once."""
    wanted = [frozenset(step) for step in randomiser.cascading()]
    if independent:
        wanted += [frozenset([label]) for label in randomiser.labels]
    sets = tuple(dict.fromkeys(wanted))
    position = {s: i for i, s in enumerate(sets)}
    steps = len(randomiser.labels)
    return SanityState(randomiser, sets, tuple(position[s] for s in wanted[:steps]),
                       tuple(position[s] for s in wanted[steps:]))


class SanityChecks(MapTask):
    """Cascading and independent model-parameter randomisation (Adebayo et al. 2018) of every (encoder, method)."""

    Options: ClassVar[type] = SanityOptions
    reported: ClassVar[tuple[Reported, ...]] = MEASURES

    def begin_encoder(self, ctx: RunContext, encoder_spec: str, encoder: Encoder, dataset: Dataset) -> SanityState:
        return plan(Randomiser(encoder, ctx.config.seed), ctx.options.independent)

    def run_pair(self, ctx: RunContext, pair: Pair, ids: list[str], **key_extra: Any) -> RunResult | None:
        """Scores the seeded subset of ``samples`` of the run's images (all when ``samples`` is null)."""
        return super().run_pair(ctx, pair, ctx.select(ids, ctx.options.samples), **key_extra)

    def maps(self, ctx: RunContext, pair: Pair, batch: Batch) -> Tensor:
        """B x (1 + S) x H x W maps: the trained encoder's, then one per unit set of :attr:`SanityState.sets`."""
        state: SanityState = pair.state
        method = self.method(pair)
        images = batch.images.to(pair.encoder.device)
        target = ctx.target(pair.encoder, batch, pair.dataset)  # the trained encoder's targets, for every copy
        maps = [method(pair.encoder, images, target)]
        maps += [method(state.randomiser.randomise(units), images, target) for units in state.sets]
        return torch.stack(maps, dim=1)

    def score(self, ctx: RunContext, pair: Pair, maps: Tensor, batch: Batch) -> list[Record]:
        state: SanityState = pair.state
        b, s = maps.shape[0], maps.shape[1] - 1
        reference = maps[:, :1].expand(-1, s, -1, -1).flatten(0, 1)
        compared = maps[:, 1:].flatten(0, 1)
        values = {m.name: m(compared, reference).view(b, s).tolist() for m in MEASURES}
        constant = is_constant(maps[:, 0]).tolist()
        records: list[Record] = []
        for i in range(b):
            if constant[i] or any(math.isnan(x) for v in values.values() for x in v[i]):
                records.append({"excluded": CONSTANT_MAP if constant[i] else UNDEFINED})
                continue
            record: Record = {"scores": {name: v[i][state.cascading[-1]] for name, v in values.items()},
                              "cascading": {name: [v[i][j] for j in state.cascading] for name, v in values.items()}}
            if state.independent:
                record["independent"] = {name: [v[i][j] for j in state.independent] for name, v in values.items()}
            records.append(record)
        return records

    def extras(self, ctx: RunContext, pair: Pair, records: Sequence[Record]) -> dict[str, Any]:
        """The tower's units and the curves of every measure over the steps of each mode."""
        labels = pair.state.randomiser.labels
        modes = MODES if ctx.options.independent else MODES[:1]
        return {"units": labels, "curves": curves(records, labels, [m.name for m in MEASURES], modes)}

    def summarise_pair(self, ctx: RunContext, pair: Pair, key: str, records: list[Record],
                       samples_path: Path) -> RunResult:
        """The result, and its curves written as ``curves/<store name>.{md,csv,png}`` (named in ``extra.files``)."""
        result = super().summarise_pair(ctx, pair, key, records, samples_path)
        stem = ctx.folder / CURVES_DIR / samples_path.stem
        result.extra["files"] = write_pair_files(result, result.extra["curves"], [m.name for m in MEASURES], stem)
        return result

    def end_encoder(self, ctx: RunContext, encoder_spec: str, state: SanityState, results: list[RunResult]) -> None:
        """One PNG comparing the methods' cascading curves: ``curves/<encoder>__<dataset>__methods__<hash>.png``."""
        digest = run_key({"results": [r.run_key for r in results]})
        name = f"{safe_name(encoder_spec)}__{safe_name(ctx.config.dataset)}__methods__{digest}.png"
        plot_methods(results, [m.name for m in MEASURES], ctx.folder / CURVES_DIR / name,
                     f"cascading randomisation · {encoder_spec} · {ctx.config.dataset}")


# ---------------------------------------------------------------------------------------- the curves
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
