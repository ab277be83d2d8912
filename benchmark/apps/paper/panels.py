"""A paper figure's panels, drawn by the project's own figure code and kept in the results store.

One function per kind (:data:`PANELS`, the kinds of :data:`aft_bench.apps.paper.spec.FIGURE_KINDS`):

- ``saliency``: the map grid of :mod:`aft_bench.reporting.saliency` (``aft-bench figure``'s code:
:func:`compute_panels` and
  :func:`draw`) for the roles' encoders, written as PNG and SVG;
- ``removal``: each role's accuracy curves of an entry's ROAR/ROAD results, by the tasks' own
  :func:`aft_bench.evaluation.removal.curves.plot_curves`;
- ``side_file``: the figure a task wrote beside its result file (``extra.side_files``), read as it is;
- ``curve``: :func:`aft_bench.reporting.curves.write_curve` over an entry's results (a metric against a card value).

Drawn files go to ``<results>/reports/paper/figures/<suite>__<panel>__<fingerprint>.<ext>``; the fingerprint hashes
what the drawing depends on (the settings and the encoders' cards, or the results' row keys and dates), so a report
that asks again for the same panel reuses the file and draws nothing. A panel that the run cannot draw (a curve over
encoders whose cards lack its x) is a :class:`PanelUnavailable` with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aft_bench.apps.compare.stages import StageRunner
from aft_bench.apps.paper.measure import Measurement
from aft_bench.apps.paper.spec import FigureSpec, PaperSuite
from aft_bench.core.atomic import atomic_write
from aft_bench.evaluation.config import RunConfig
from aft_bench.results.files import REPORTS_DIR, read_result_files
from aft_bench.results.keys import run_key, safe_name
from aft_bench.results.result import RunResult

FIGURES_DIR = Path(REPORTS_DIR) / "paper" / "figures"
"""Where drawn panels are kept, under the results folder."""


class PanelUnavailable(Exception):
    """A panel the run cannot draw, with the reason (the report shows it in the panel's place)."""


@dataclass(frozen=True)
class PanelFiles:
    """The files of one drawn panel (PNG first; an SVG beside it where the kind writes one), each with a caption."""

    files: tuple[tuple[Path, str], ...]


@dataclass(frozen=True)
class PanelRequest:
    """What a panel's function gets: the suite, the panel, the roles' encoders, the suite's measurements, the run
    settings, the stage runner (for encoder cards) and the results folder."""

    suite: PaperSuite
    figure: FigureSpec
    encoders: Mapping[str, str]
    measurements: Sequence[Measurement]
    settings: Mapping[str, Any]
    runner: StageRunner
    store: Path

    def path(self, fingerprint: str, suffix: str, part: str = "") -> Path:
        stem = "__".join(safe_name(s) for s in (self.suite.name, self.figure.name, part) if s)
        return self.store / FIGURES_DIR / f"{stem}__{fingerprint}{suffix}"

    def roles(self) -> list[tuple[str, str]]:
        """``(role label, encoder spec)`` of the panel's roles that have an encoder, in the suite's order."""
        wanted = self.figure.roles or tuple(r.name for r in self.suite.paper.roles)
        return [(role.printed, self.encoders[role.name]) for role in self.suite.paper.roles
                if role.name in wanted and role.name in self.encoders]

    def results(self) -> list[tuple[str, RunResult]]:
        """``(role label, result)`` of the panel's entry, one per result, in the measurements' order."""
        chosen: dict[tuple[str, ...], tuple[str, RunResult]] = {}
        for m in self.measurements:
            if m.entry == self.figure.entry:
                chosen.setdefault(m.result.row_key(), (m.role.printed, m.result))
        return list(chosen.values())


def _saliency(request: PanelRequest) -> PanelFiles:
    from aft_bench.reporting.saliency import compute_panels, draw, figure_context  # torch, only when a grid is drawn

    roles = request.roles()
    if not roles:
        raise PanelUnavailable("no encoder for the panel's roles (give --encoders)")
    figure = request.figure
    settings = request.settings
    config = RunConfig(task="figure", encoders=tuple(spec for _, spec in roles), attributions=figure.attributions,
                       dataset=settings.get("dataset") or RunConfig.dataset, data_root=settings.get("data_root"),
                       limit=figure.images, seed=settings.get("seed") or 0, device=settings.get("device") or "cpu",
                       options=figure.options,
                       dataset_args={**(settings.get("dataset_args") or {}), **figure.dataset_args})
    cards = [request.runner.identity(spec).card for _, spec in roles]
    settings_key = {k: v for k, v in config.to_dict().items() if k not in ("device", "out", "cache_samples")}
    fingerprint = run_key({"config": settings_key, "cards": cards})
    png, svg = request.path(fingerprint, ".png"), request.path(fingerprint, ".svg")
    if not (png.is_file() and svg.is_file()):
        batch, rows = compute_panels(figure_context(config))
        labels = {spec: label for label, spec in roles}
        drawn = draw(batch, [(labels.get(spec, spec), method, maps) for spec, method, maps in rows])
        for path, kind in ((svg, "svg"), (png, "png")):  # the PNG last: its presence says both are there
            atomic_write(path, lambda tmp, kind=kind: drawn.savefig(tmp, format=kind))
    caption = f"{figure.title} ({', '.join(label for label, _ in roles)}; {', '.join(figure.attributions)})"
    return PanelFiles(((png, caption), (svg, caption)))


def _results_fingerprint(results: Sequence[RunResult]) -> str:
    return run_key({"rows": [list(r.row_key()) + [r.date] for r in results]})


def _removal(request: PanelRequest) -> PanelFiles:
    from aft_bench.evaluation.removal.curves import plot_curves

    by_role: dict[str, list[RunResult]] = {}
    for label, result in request.results():
        by_role.setdefault(label, []).append(result)
    if not by_role:
        raise PanelUnavailable(f"no results of entry {request.figure.entry!r} (no encoder ran it)")
    files = []
    for label, results in by_role.items():
        path = request.path(_results_fingerprint(results), ".png", label)
        if not path.is_file():
            plot_curves(results, path, title=f"{request.figure.title} · {label}")
        files.append((path, f"{request.figure.title}: {label}"))
    return PanelFiles(tuple(files))


def _side_file(request: PanelRequest) -> PanelFiles:
    pairs = request.results()
    if not pairs:
        raise PanelUnavailable(f"no results of entry {request.figure.entry!r} (no encoder ran it)")
    tasks = {result.task for _, result in pairs}
    stored = {(r.row_key(), r.date): path for task in tasks for path, r in read_result_files(request.store / task)}
    files = []
    for label, result in pairs:
        ending = (result.extra.get("side_files") or {}).get(request.figure.side_file or "")
        path = stored.get((result.row_key(), result.date))
        if ending is None or path is None or not path.with_suffix(ending).is_file():
            raise PanelUnavailable(f"the {result.task} result of {result.encoder} has no {request.figure.side_file!r} "
                                   "side file")
        files.append((path.with_suffix(ending), f"{request.figure.title}: {label} ({result.encoder})"))
    return PanelFiles(tuple(files))


def _curve(request: PanelRequest) -> PanelFiles:
    from aft_bench.reporting.curves import write_curve

    figure = request.figure
    results = [result for _, result in request.results()]
    if not results or figure.metric is None or figure.x is None:
        raise PanelUnavailable(f"no results of entry {figure.entry!r} to draw {figure.metric} against {figure.x}")
    path = request.path(_results_fingerprint(results), ".png", json.dumps([figure.metric, figure.x]))
    if not path.is_file():
        try:
            write_curve(results, figure.metric, figure.x, path, results[0].task)
        except ValueError as exc:
            raise PanelUnavailable(str(exc)) from None
    return PanelFiles(((path, figure.title),))


PANELS: dict[str, Callable[[PanelRequest], PanelFiles]] = {
    "saliency": _saliency, "removal": _removal, "side_file": _side_file, "curve": _curve,
}
"""The drawing function of each figure kind."""


def draw_panel(request: PanelRequest) -> PanelFiles:
    """The files of the panel ``request.figure`` (drawn, or reused from the results store).

    Raises:
        PanelUnavailable: When the run cannot draw it (the reason says why).
    """
    return PANELS[request.figure.kind](request)
