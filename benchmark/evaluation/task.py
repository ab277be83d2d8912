"""The task contract: declared options and metrics, and a runner yielding results.

A :class:`Task` declares its options (a dataclass, parsed before any model loads) and the metric objects it
reports, and turns a :class:`~aft_bench.evaluation.context.RunContext` into
:class:`~aft_bench.results.result.RunResult` objects, which the runner writes. Most tasks build on one of three
bases, each in its own module: :class:`~aft_bench.evaluation.sample_task.SampleTask` (scored sample by sample:
resumable, shardable, one pass over the data), :class:`~aft_bench.evaluation.map_task.MapTask` (scored from
attribution maps) and :class:`~aft_bench.evaluation.encoder_task.EncoderTask` (scored from each encoder itself).
:func:`summarise` turns stored per-sample records into metric summaries: per-sample metrics as means with 95%
intervals, pooled metrics from summed counts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from aft_bench.evaluation.context import RunContext
from aft_bench.metrics.base import Metric, PooledMetric
from aft_bench.metrics.summary import RunningStat
from aft_bench.results.result import RunResult

Record = dict[str, Any]
Reported = Metric | PooledMetric


@dataclass(frozen=True)
class NoOptions:
    """The options of a task that takes none."""




class Task(ABC):
    """A benchmark task: declared options and metrics, and a runner yielding results.

    Attributes:
        Options: The dataclass of the task's ``--option`` keys (see :mod:`aft_bench.core.options`).
        reported: The metric objects the task reports, in column order (:meth:`metrics` may derive them from
            the options instead).
        shardable: Whether :meth:`run` shares its work over the ranks of a ``torchrun`` job (others refuse one).
        resumable: Whether a killed run, started again, computes only what is missing (False for tasks whose work
            is passes over the whole dataset with nothing stored per sample: they start over).
    """

    Options: ClassVar[type] = NoOptions
    reported: ClassVar[tuple[Reported, ...]] = ()
    shardable: ClassVar[bool] = False
    resumable: ClassVar[bool] = True

    def metrics(self, options: Any) -> tuple[Reported, ...]:
        """The metric objects this run reports (their names are the result columns)."""
        return self.reported

    @abstractmethod
    def run(self, ctx: RunContext) -> Iterator[RunResult]:
        """Evaluates the run and yields its results (none on ranks other than 0); the runner writes them."""


def summarise(metrics: Sequence[Reported], records: Sequence[Record]) -> tuple[dict[str, dict[str, Any]], int]:
    """Metric summaries of per-sample records and the number of samples scored.

    Per-sample metrics read ``record["scores"][name]`` (times the metric's scale); pooled metrics sum
    ``record["counts"][name]`` over the scored records and reduce the totals.
    """
    stats = {m.name: RunningStat() for m in metrics if isinstance(m, Metric)}
    totals: dict[str, Tensor] = {}
    scored = [r for r in records if "scores" in r]
    for record in scored:
        for metric in metrics:
            if isinstance(metric, Metric) and metric.name in record["scores"]:
                stats[metric.name].update(torch.tensor([record["scores"][metric.name] * metric.scale],
                                                       dtype=torch.float64))
            elif isinstance(metric, PooledMetric) and metric.name in record.get("counts", {}):
                counts = torch.tensor(record["counts"][metric.name], dtype=torch.float64)
                totals[metric.name] = totals[metric.name] + counts if metric.name in totals else counts
    summaries = {m.name: m.summary(stats[m.name]) if isinstance(m, Metric) else
                 m.summary(totals.get(m.name), len(scored)) for m in metrics}
    return summaries, len(scored)














