"""The scorecard: one row per encoder, one column per headline metric of each suite entry (per method for the
tasks that score attribution maps), each cell the metric's mean in its result file, the best value per column
marked by the metric's direction.

Nothing is recomputed: a cell is ``result.metrics[metric]`` of the newest result of its (entry, encoder, method),
the same numbers the task's leaderboard shows. A column's arrow and direction come from the metric object the
task reports (``higher_is_better``); a column keeps the results' metric names, so a column reads like the
leaderboard's (``pointing_game · gradcam · pg``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aft_bench.apps.compare.plan import EntryPlan
from aft_bench.evaluation.task import Reported
from aft_bench.results.result import RunResult
from aft_bench.results.table import arrow


@dataclass(frozen=True)
class Column:
    """One scorecard column.

    Attributes:
        entry: The suite entry's label. task: Its task. method: The attribution method (None: a task that scores
            encoders). metric: The metric object (name, direction, scale).
    """

    entry: str
    task: str
    method: str | None
    metric: Reported

    @property
    def label(self) -> str:
        """``entry · method · metric`` (``entry · metric`` without a method)."""
        return " · ".join(part for part in (self.entry, self.method, self.metric.name) if part)

    @property
    def higher_is_better(self) -> bool:
        return self.metric.higher_is_better

    @property
    def heading(self) -> str:
        """The label with the direction's arrow."""
        return f"{self.label} {arrow(self.higher_is_better)}"


@dataclass(frozen=True)
class Cell:
    """One encoder's value in a column: the result's mean, 95% half-width and n (None where it has none)."""

    mean: float | None
    ci95: float | None = None
    n: int | None = None


@dataclass
class Scorecard:
    """Encoders x headline columns.

    Attributes:
        suite: The suite's name. baseline: The baseline encoder. encoders: The rows, in order.
        columns: The columns, in suite order. cells: ``{(encoder, column label): Cell}`` (a missing key: no result).
        results: ``{(encoder, column label): RunResult}``, the result each cell comes from.
    """

    suite: str
    baseline: str
    encoders: list[str]
    columns: list[Column]
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    results: dict[tuple[str, str], RunResult] = field(default_factory=dict)

    def cell(self, encoder: str, column: Column) -> Cell:
        """The cell of ``encoder`` in ``column`` (an empty cell where there is no result)."""
        return self.cells.get((encoder, column.label), Cell(None))

    def best(self, column: Column) -> set[str]:
        """The encoders with the column's best mean (all of them on a tie; none without values)."""
        values = {e: self.cell(e, column).mean for e in self.encoders}
        finite = {e: v for e, v in values.items() if v is not None and math.isfinite(v)}
        if not finite:
            return set()
        target = (max if column.higher_is_better else min)(finite.values())
        return {e for e, v in finite.items() if v == target}


def result_for(results: Sequence[RunResult], method: str | None) -> RunResult | None:
    """The result of ``method`` among one stage's results (the only result of a task that scores encoders)."""
    if method is None:
        return results[0] if results else None
    return next((r for r in results if r.attribution == method), None)


def build_scorecard(suite: str, baseline: str, encoders: Sequence[str], plans: Sequence[EntryPlan],
                    stage_results: Mapping[tuple[str, str], Sequence[RunResult]]) -> Scorecard:
    """The scorecard of ``plans`` from each stage's results (``{(entry label, encoder): results}``)."""
    card = Scorecard(suite, baseline, list(encoders), [])
    for plan in plans:
        for method in plan.methods:
            for metric in plan.headline:
                column = Column(plan.entry.label, plan.entry.task, method, metric)
                card.columns.append(column)
                for encoder in encoders:
                    result = result_for(stage_results.get((plan.entry.label, encoder), ()), method)
                    summary = None if result is None else result.metrics.get(metric.name)
                    if summary is None:
                        continue
                    card.cells[(encoder, column.label)] = Cell(summary.get("mean"), summary.get("ci95"),
                                                               summary.get("n"))
                    card.results[(encoder, column.label)] = result  # type: ignore[assignment]
    return card
