"""``aft-bench paper``: run the paper's suites (or reuse what the results store holds) and write the report.

For each suite, :func:`run_suite` says first whether it can run at all (the tasks it needs are registered; the
embedded world can run it; some role has an encoder), then measures it (:mod:`aft_bench.apps.paper.measure`), lays its
table out (:mod:`aft_bench.apps.paper.layout`) and draws its panels (:mod:`aft_bench.apps.paper.panels`), timing it. A
suite that cannot run is reported with the reason (status ``needs``); one whose input is refused (a missing dataset
folder, say) or that meets a bug with the error (status ``failed``; a bug's traceback goes to the log), and the
other suites still run. :func:`write_report` writes, under
the report folder: ``report.md``, a self-contained ``report.html`` (figures embedded as data URIs), ``report.json``
(the statuses, wall times, settings and versions), ``<suite>.md`` and ``<suite>.csv`` per table, and the panels'
files under ``figures/``. Nothing stored is computed again: a second report reads the stages and panels the first
one stored (:class:`~aft_bench.apps.compare.stages.StageRunner`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aft_bench import __version__
from aft_bench.apps.compare.stages import StageRunner
from aft_bench.apps.paper.layout import PaperTable, build_table
from aft_bench.apps.paper.measure import assign_roles, is_toy_world, measure
from aft_bench.apps.paper.panels import PanelFiles, PanelRequest, PanelUnavailable, draw_panel
from aft_bench.apps.paper.references import load_reference
from aft_bench.apps.paper.spec import FigureSpec, PaperSuite
from aft_bench.core.atomic import atomic_write, atomic_write_text
from aft_bench.core.errors import USER_ERRORS
from aft_bench.core.registries import TASKS
from aft_bench.core.registry import UnknownNameError
from aft_bench.results.keys import safe_name
from aft_bench.results.result import git_hash, package_versions

log = logging.getLogger(__name__)

STATUSES = {
    "done": "every table cell and panel the run's encoders allow",
    "partial": "the table, and some panels (the others say why)",
    "needs": "not run: it needs what the report names (a task, data or encoders)",
    "failed": "not finished: the run's input was refused (the report gives the error)",
}
"""A suite's status in the report."""
TOY_WORLD = ("the embedded world: the toy CLIP (`toy`) and its AFT and FARE fine-tunes (`toy-aft`, `toy-fare`, "
             "both at eps 4/255) in the original, AFT and FARE roles, on the procedurally generated shapes data, with "
             "the reduced sample counts each suite states (its entries' `per_dataset: shapes` settings); the paper's "
             "numbers are beside ours for reference only")


@dataclass(frozen=True)
class ReportRequest:
    """What to report.

    Attributes:
        names: The suites (names or paper-suite files). encoders: ``--encoders`` (empty: each role's toy, or none).
        settings: :class:`~aft_bench.evaluation.config.RunConfig` fields of the command line (None: not given); ``out``
        is the
            results folder. out: The report folder.
    """

    names: tuple[str, ...]
    encoders: tuple[str, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    out: Path = Path("report")

    @property
    def store(self) -> Path:
        return Path(self.settings.get("out") or "results")

    @property
    def toy_world(self) -> bool:
        return is_toy_world(self.encoders, self.settings)


@dataclass
class Panel:
    """A figure panel in the report: its spec, its files (None: not drawn) and why not."""

    figure: FigureSpec
    files: PanelFiles | None
    reason: str = ""


@dataclass
class SuiteReport:
    """One suite's part of the report (see :data:`STATUSES` for ``status``)."""

    suite: PaperSuite
    status: str
    message: str = ""
    wall_s: float = 0.0
    encoders: dict[str, str] = field(default_factory=dict)
    table: PaperTable | None = None
    panels: list[Panel] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stages_run: int = 0
    stages_reused: int = 0


def _needs(suite: PaperSuite, request: ReportRequest, assigned: Mapping[str, str]) -> str:
    """Why ``suite`` cannot run here ("" when it can)."""
    absent = [task for task in suite.paper.needs.tasks if task not in TASKS]
    if absent:
        return f"needs the task(s) {', '.join(absent)}, which this aft-bench does not have yet"
    if request.toy_world and suite.paper.toy_world:
        return suite.paper.toy_world
    if not assigned:
        roles = " ".join(role.name for role in suite.paper.roles)
        return f"no encoder for any of its roles ({roles}): give --encoders"
    return ""


def _notes(report: SuiteReport, plans: Sequence[Any]) -> list[str]:
    """The roles left without an encoder and each entry's samples and options, for the report."""
    notes = [f"role {role.printed} ({role.name}): no encoder in this run, its cells stay empty"
             for role in report.suite.paper.roles if role.name not in report.encoders]
    for plan in plans:
        config = plan.config
        limit = f"a seeded subset of {config.limit} samples" if config.limit else "every sample"
        options = ", ".join(f"{k}={v}" for k, v in sorted(dict(config.options).items())) or "the task's defaults"
        args = ", ".join(f"{k}={v}" for k, v in sorted(dict(config.dataset_args).items()))
        notes.append(f"{plan.entry.label}: task {config.task} on {config.dataset}{f' ({args})' if args else ''}, "
                     f"{limit}; methods {', '.join(config.attributions) or '-'}; options {options}")
    return notes


def run_suite(suite: PaperSuite, request: ReportRequest, runner: StageRunner) -> SuiteReport:
    """Runs (or reuses) ``suite`` and lays out its table and panels (see the module docstring)."""
    start = time.monotonic()
    try:
        assigned = assign_roles(suite, request.encoders, request.toy_world)
    except ValueError as exc:
        return SuiteReport(suite, "failed", str(exc))
    report = SuiteReport(suite, "done", encoders=dict(assigned))
    reason = _needs(suite, request, assigned)
    if reason:
        report.status, report.message = "needs", reason
        report.notes = _notes(report, [])
        return report
    try:
        measured = measure(suite, assigned, request.settings, runner)
        reference = load_reference(suite.paper.reference) if suite.paper.reference else None
        report.table = build_table(suite.paper, reference, measured.measurements)
        report.stages_run, report.stages_reused = measured.stages_run, measured.stages_reused
        report.notes = _notes(report, measured.plans)
        for figure in suite.paper.figures:
            panel = PanelRequest(suite, figure, assigned, measured.measurements, request.settings, runner,
                                 request.store)
            try:
                report.panels.append(Panel(figure, draw_panel(panel)))
            except PanelUnavailable as exc:
                report.panels.append(Panel(figure, None, str(exc)))
                report.status = "partial"
    except (*USER_ERRORS, UnknownNameError) as exc:
        log.warning("paper suite %s: %s", suite.name, exc)
        report.status, report.message = "failed", f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a bug in a task or method: reported (with its traceback in the log), the rest runs
        log.exception("paper suite %s: internal error", suite.name)
        report.status = "failed"
        report.message = f"internal error (a bug; the log has the traceback): {type(exc).__name__}: {exc}"
    report.wall_s = time.monotonic() - start
    return report


def about(request: ReportRequest, reports: Sequence[SuiteReport], wall_s: float) -> dict[str, Any]:
    """The run's settings, versions and per-suite statuses (``report.json``; the reports' "Run" section)."""
    settings = {k: v for k, v in request.settings.items() if v is not None and k != "out"}
    return {"aft_bench": __version__, "git": git_hash(), "versions": package_versions(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "results": str(request.store),
            "world": TOY_WORLD if request.toy_world else "the encoders and data given on the command line",
            "encoders": list(request.encoders), "settings": settings, "wall_s": round(wall_s, 1),
            "suites": [{"suite": r.suite.name, "item": r.suite.paper.item, "status": r.status, "message": r.message,
                        "wall_s": round(r.wall_s, 1), "stages_run": r.stages_run, "stages_reused": r.stages_reused,
                        "encoders": r.encoders} for r in reports]}


def copy_panels(reports: Sequence[SuiteReport], out: Path) -> dict[Path, Path]:
    """Copies every panel file into ``<out>/figures/`` (atomically); returns ``{stored file: its copy}``."""
    copies = {}
    for report in reports:
        for panel in report.panels:
            for path, _ in panel.files.files if panel.files else ():
                target = out / "figures" / f"{safe_name(report.suite.name)}__{path.name}"
                copies[path] = atomic_write(target, lambda tmp, path=path: shutil.copyfile(path, tmp))
    return copies


def write_report(request: ReportRequest, reports: Sequence[SuiteReport], wall_s: float) -> dict[str, Path]:
    """Writes the report folder (see the module docstring); returns its main files by name."""
    from aft_bench.apps.paper.html import report_html
    from aft_bench.apps.paper.render import report_markdown, table_csv, table_markdown

    facts = about(request, reports, wall_s)
    copies = copy_panels(reports, request.out)
    files = {}
    for report in reports:
        if report.table is not None:
            stem = safe_name(report.suite.name)
            atomic_write_text(request.out / f"{stem}.md", table_markdown(report.table) + "\n")
            atomic_write_text(request.out / f"{stem}.csv", table_csv(report.table))
    files["report.md"] = atomic_write_text(request.out / "report.md", report_markdown(reports, facts, copies,
                                                                                      request.out))
    files["report.html"] = atomic_write_text(request.out / "report.html", report_html(reports, facts))
    files["report.json"] = atomic_write_text(request.out / "report.json", json.dumps(facts, indent=2) + "\n")
    return files


def build_report(request: ReportRequest, suites: Sequence[PaperSuite]) -> tuple[list[SuiteReport], dict[str, Path]]:
    """Runs every suite of ``suites`` (one stage runner: stages shared between suites run once) and writes the
    report; returns the suites' reports and the report's files."""
    start = time.monotonic()
    runner = StageRunner(request.store, fresh=bool(request.settings.get("fresh")))
    reports = []
    for suite in suites:
        log.info("paper suite %s (%s)", suite.name, suite.paper.item)
        reports.append(run_suite(suite, request, runner))
    return reports, write_report(request, reports, time.monotonic() - start)
