"""The plan of a compare: each suite entry resolved into the ``aft-bench run`` configuration of its task.

Every entry of the suite becomes an :class:`EntryPlan`: its :class:`~aft_bench.evaluation.config.RunConfig` for all the
compared encoders (the command line over the entry over the suite's defaults over the task's YAML,
:meth:`~aft_bench.apps.suites.suite.SuiteTask.overrides`), checked by :func:`aft_bench.evaluation.runner.check_names`
(every name, the
task's options, the methods' and dataset's arguments) before any model loads, the metric objects the task reports
in that configuration and the headline ones the scorecard shows. The compare runs one stage per (entry, encoder):
:meth:`EntryPlan.stage` is the entry's configuration for that one encoder, so adding an encoder to a compare
reuses every other encoder's stages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aft_bench.apps.suites.suite import Suite, SuiteTask, headline_metrics
from aft_bench.core.registries import TASKS
from aft_bench.evaluation.config import RunConfig, resolve_config, with_changes
from aft_bench.evaluation.runner import check_names
from aft_bench.evaluation.sample_task import SampleTask
from aft_bench.evaluation.task import Reported


@dataclass(frozen=True)
class EntryPlan:
    """One suite entry, resolved.

    Attributes:
        entry: The suite entry. config: Its run configuration with every compared encoder.
        reported: Every metric object the task reports in that configuration (result columns).
        headline: The ones the scorecard shows, in the entry's order.
        per_sample: Whether the task keeps per-sample scores (a
            :class:`~aft_bench.evaluation.sample_task.SampleTask`), which
            the paired tests read.
    """

    entry: SuiteTask
    config: RunConfig
    reported: tuple[Reported, ...]
    headline: tuple[Reported, ...]
    per_sample: bool

    @property
    def methods(self) -> tuple[str | None, ...]:
        """The attribution methods of the scorecard's columns; ``(None,)`` for a task that scores encoders (its
        one result per encoder is the column, whatever it names in its attribution field)."""
        return tuple(self.config.attributions) or (None,)

    def stage(self, encoder: str) -> RunConfig:
        """The entry's run configuration for ``encoder`` alone."""
        return with_changes(self.config, encoders=(encoder,))


def build_plan(suite: Suite, encoders: Sequence[str], command_line: Mapping[str, Any]) -> list[EntryPlan]:
    """The plan of every entry of ``suite`` for ``encoders`` and the command line's run settings.

    Args:
        suite: The suite. encoders: The compared encoders' specs (the baseline among them).
        command_line: :class:`~aft_bench.evaluation.config.RunConfig` fields the command line gives (None: not given).

    Raises:
        UnknownNameError: For an unknown task, encoder, method, dataset, option key or headline metric.
        ValueError: For a value a task, method or dataset refuses.
    """
    plans = []
    for entry in suite.tasks:
        task = TASKS.get(entry.task)
        config = resolve_config(entry.task, {**entry.overrides(suite.defaults, command_line),
                                             "encoders": tuple(encoders)})
        options = check_names(config)
        reported = tuple(task().metrics(options))
        plans.append(EntryPlan(entry, config, reported, headline_metrics(entry, reported),
                               issubclass(task, SampleTask)))
    return plans
