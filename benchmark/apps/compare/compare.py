"""``aft-bench compare`` as a function: run a suite for several encoders, then score them against a baseline.

:func:`compare` resolves the suite into a plan (:mod:`aft_bench.apps.compare.plan`; every name and option checked
before any model loads), runs one stage per (entry, encoder) through the runner, reusing stored scores and the
stages of earlier compares (:mod:`aft_bench.apps.compare.stages`), builds the scorecard from the results
(:mod:`aft_bench.apps.compare.scorecard`), pairs each encoder's stored per-sample scores with the baseline's and
tests the differences (:mod:`aft_bench.apps.compare.differences`), and writes, atomically, under
``<out>/reports/compare/<suite>/``: ``scorecard.md``, ``.csv``, ``.json`` and ``.png`` and ``paired.md``, ``.csv``
and ``.json``. Every encoder sees the same samples: one configuration per entry, the same seed, dataset and limit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

from aft_bench import __version__
from aft_bench.apps.compare.differences import Difference, Settings, compare_columns
from aft_bench.apps.compare.figure import write_scorecard_png
from aft_bench.apps.compare.pairing import Record, stored_records
from aft_bench.apps.compare.plan import EntryPlan, build_plan
from aft_bench.apps.compare.render import (
    paired_csv,
    paired_json,
    paired_markdown,
    scorecard_csv,
    scorecard_json,
    scorecard_markdown,
)
from aft_bench.apps.compare.scorecard import Column, Scorecard, build_scorecard
from aft_bench.apps.compare.stages import COMPARE_DIR, StageRunner
from aft_bench.apps.suites.suite import Suite
from aft_bench.core.atomic import atomic_write_text
from aft_bench.data.base import select_ids
from aft_bench.evaluation.config import RunConfig
from aft_bench.evaluation.context import RunContext
from aft_bench.results.keys import safe_name
from aft_bench.results.result import RunResult

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class CompareRequest:
    """What to compare and how.

    Attributes:
        suite: The suite. encoders: The compared encoders' specs, in scorecard order (the baseline among them).
        baseline: The encoder the others are compared with.
        run_settings: :class:`~aft_bench.evaluation.config.RunConfig` fields from the command line (None: not given), as
            :meth:`~aft_bench.apps.suites.suite.SuiteTask.overrides` takes them; ``out`` and ``fresh`` among them.
        statistics: Bootstrap resamples and seed, and the significance level.
    """

    suite: Suite
    encoders: tuple[str, ...]
    baseline: str
    run_settings: Mapping[str, Any] = field(default_factory=dict)
    statistics: Settings = field(default_factory=Settings)

    def __post_init__(self) -> None:
        if self.baseline not in self.encoders:
            raise ValueError(f"--baseline {self.baseline}: the baseline must be one of the compared encoders "
                             f"({', '.join(self.encoders)})")
        repeated = sorted({e for e in self.encoders if self.encoders.count(e) > 1})
        if repeated:
            raise ValueError(f"--encoders names {repeated[0]!r} twice; give each encoder once")

    @property
    def out(self) -> Path:
        return Path(self.run_settings.get("out") or RunConfig.out)


@dataclass(frozen=True)
class CompareOutcome:
    """What a compare produced: the scorecard, the paired differences, the files, and how many stages ran."""

    scorecard: Scorecard
    differences: list[Difference]
    files: dict[str, Path]
    stages_run: int
    stages_reused: int


def plan_compare(request: CompareRequest) -> list[EntryPlan]:
    """The checked plan of ``request`` (before any model loads; see :func:`~aft_bench.apps.compare.plan.build_plan`)."""
    return build_plan(request.suite, request.encoders, request.run_settings)


def _selection(plan: EntryPlan, image_size: tuple[int, int]) -> list[str]:
    """The sample ids an entry's runs score (the dataset's, or the seeded ``--limit`` subset)."""
    dataset = RunContext.local(plan.config).dataset(image_size)
    return select_ids(dataset.ids(), plan.config.limit, plan.config.seed)


def compare(request: CompareRequest, plans: Sequence[EntryPlan] | None = None) -> CompareOutcome:
    """Runs (or reuses) every stage of the request's suite and writes the scorecard and the paired table.

    Args:
        request: What to compare. plans: Its plan, if already built by :func:`plan_compare`.

    Raises:
        UnknownNameError: For an unknown name (before any model loads).
        ValueError, FileNotFoundError: For bad input, as the tasks raise them.
    """
    plans = list(plans) if plans is not None else plan_compare(request)
    runner = StageRunner(request.out, fresh=bool(request.run_settings.get("fresh")))
    stage_results: dict[tuple[str, str], list[RunResult]] = {}
    ran = reused = 0
    for plan in plans:
        for encoder in request.encoders:
            stage = runner.results(plan.stage(encoder))
            stage_results[(plan.entry.label, encoder)] = stage.results
            reused += stage.reused
            ran += not stage.reused
    card = build_scorecard(request.suite.name, request.baseline, request.encoders, plans, stage_results)
    by_label = {plan.entry.label: plan for plan in plans}

    @cache
    def selection(label: str) -> tuple[str, ...]:
        return tuple(_selection(by_label[label], runner.identity(request.baseline).image_size))

    stores: dict[tuple[str, ...], dict[str, Record]] = {}

    def records(column: Column, result: RunResult) -> dict[str, Record]:
        """A result's stored records, read once per compare."""
        if result.row_key() not in stores:
            stores[result.row_key()] = stored_records(result, request.out / result.task,
                                                      lambda: selection(column.entry))
        return stores[result.row_key()]

    def per_sample(column: Column) -> bool:
        return by_label[column.entry].per_sample

    differences = compare_columns(card, records, per_sample, request.statistics)
    files = write_outputs(request, card, differences)
    log.info("compare %s: %d stages run, %d reused; %s", request.suite.name, ran, reused, files["scorecard.md"])
    return CompareOutcome(card, differences, files, ran, reused)


def about(request: CompareRequest) -> dict[str, Any]:
    """What a compare's JSON files say about it."""
    return {"suite_source": request.suite.source, "suite_version": request.suite.version,
            "aft_bench": __version__, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "statistics": {"resamples": request.statistics.resamples, "seed": request.statistics.seed,
                           "alpha": request.statistics.alpha, "interval": "paired percentile bootstrap, 95%",
                           "correction": "Holm"}}


def output_folder(request: CompareRequest) -> Path:
    """``<out>/reports/compare/<suite>/``."""
    return request.out / COMPARE_DIR / safe_name(request.suite.name)


def write_outputs(request: CompareRequest, card: Scorecard, differences: list[Difference]) -> dict[str, Path]:
    """Writes the scorecard and paired-table files (atomically); returns them by file name."""
    folder = output_folder(request)
    facts = about(request)
    texts = {
        "scorecard.md": scorecard_markdown(card, differences), "scorecard.csv": scorecard_csv(card),
        "scorecard.json": scorecard_json(card, facts),
        "paired.md": paired_markdown(differences, request.baseline, request.statistics),
        "paired.csv": paired_csv(differences), "paired.json": paired_json(differences, facts),
    }
    files = {name: atomic_write_text(folder / name, text) for name, text in texts.items()}
    files["scorecard.png"] = write_scorecard_png(folder / "scorecard.png", card, differences)
    return files
