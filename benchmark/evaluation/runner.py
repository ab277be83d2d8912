"""Runs a task from a resolved config and rebuilds the leaderboard: the one entry point for the CLI and for
notebooks (``aft_bench.run(config)``).

:func:`check_names` validates every name and the task's options before any model loads. :func:`run` builds the
:class:`~aft_bench.evaluation.context.RunContext` once (options parsed, distributed context set up, device resolved),
lets the task yield its results and writes each one atomically as it comes (never overwriting; side files such as
figures and CSVs beside it; a result whose numbers repeat the newest stored one of its row is not written again,
the stored one stands). The leaderboard is rebuilt from the folder's results when the run starts and again after
each result, so a killed run leaves one with every finished pair; the folder is read once, at the start
(:class:`~aft_bench.results.folder.ResultsFolder`). Under ``torchrun`` tasks that can (:attr:`Task.shardable`) share
their samples over the ranks; rank 0 writes the results and the leaderboard, the other ranks return an empty
outcome.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aft_bench.core import distributed as dist_utils
from aft_bench.core.options import parse_options
from aft_bench.core.registries import ATTRIBUTIONS, DATASETS, TASKS
from aft_bench.evaluation.config import RunConfig, load_task_spec
from aft_bench.evaluation.context import RunContext, check_arguments
from aft_bench.models.loading import check_encoder_spec
from aft_bench.results.folder import ResultsFolder
from aft_bench.results.result import RunResult
from aft_bench.results.table import make_markdown, write_leaderboards

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutcome:
    """What a run produced: its result files and records, their Markdown table, the leaderboard file.

    ``reused`` lists the paths of ``paths`` that were already stored (the run repeated their numbers exactly; their
    results are the stored ones). On ranks other than 0 of a ``torchrun`` job everything is empty and
    ``leaderboard`` is None.
    """

    paths: list[Path]
    results: list[RunResult]
    markdown: str
    leaderboard: Path | None
    reused: list[Path] = field(default_factory=list)


def check_components(config: RunConfig) -> None:
    """Checks the dataset, attribution and encoder names of ``config`` and the ``--attr-arg`` / ``--dataset-arg``
    keys against the methods' and dataset's signatures.

    Raises:
        UnknownNameError: For an unknown name or keyword (with a did-you-mean).
        ValueError: For arguments of a method the run does not use.
    """
    DATASETS.get(config.dataset)
    for name in config.attributions:
        ATTRIBUTIONS.get(name)
    for spec in config.encoders:
        check_encoder_spec(spec)
    check_arguments(config)


def check_names(config: RunConfig) -> Any:
    """Checks every name of ``config`` and parses the task's options, before any model loads.

    Returns:
        The task's parsed options.

    Raises:
        UnknownNameError: For an unknown task, dataset, attribution, encoder or option key.
        ValueError: For an option value the task refuses.
    """
    task = TASKS.get(config.task)
    check_components(config)
    return parse_options(task.Options, config.options, f"task {config.task!r}")


def run(config: RunConfig) -> RunOutcome:
    """Evaluates ``config``; writes result files and rebuilds ``<out>/<task>/leaderboard.{md,csv}``."""
    options = check_names(config)
    task = TASKS.get(config.task)()
    spec = load_task_spec(config.task)
    dist = dist_utils.setup(config.device)
    results: list[RunResult] = []
    paths: list[Path] = []
    reused: list[Path] = []
    leaderboard: Path | None = None
    try:
        if dist.distributed and not task.shardable:
            shardable = [name for name in TASKS.names() if TASKS.get(name).shardable]
            raise ValueError(f"task {config.task!r} runs in one process: start it without torchrun (this job has "
                             f"WORLD_SIZE={dist.world_size}); tasks that share their samples over ranks: "
                             f"{', '.join(shardable)}")
        ctx = RunContext(config=config, spec=spec, options=options, dist=dist)
        folder = ResultsFolder(ctx.folder) if dist.is_main else None
        if folder is not None and ctx.folder.is_dir():  # a killed run's results get their leaderboard now
            leaderboard = write_leaderboards(ctx.folder, folder.results)["md"]
        for result in task.run(ctx):
            if folder is None:
                raise RuntimeError(f"task {config.task!r} yielded a result on rank {dist.rank}: only rank 0 may")
            path, stands, was_stored = folder.add(result)
            paths.append(path)
            results.append(stands)
            if was_stored:
                reused.append(path)
            leaderboard = write_leaderboards(ctx.folder, folder.results)["md"]
    finally:
        dist_utils.teardown(dist)
    if folder is None:
        return RunOutcome(paths=[], results=[], markdown="", leaderboard=None)
    if leaderboard is None:  # a first run that produced no result
        leaderboard = write_leaderboards(ctx.folder, folder.results)["md"]
    log.debug("%d results (%d reused) and %s", len(paths), len(reused), leaderboard)
    return RunOutcome(paths=paths, results=results, markdown=make_markdown(results), leaderboard=leaderboard,
                      reused=reused)
