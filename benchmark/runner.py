"""Runs a task from a resolved config and rebuilds the leaderboard: the one entry point for the CLI and for
notebooks (``aft_bench.run(config)``).

:func:`check_names` validates every name and the task's options before any model loads. :func:`run` builds the
:class:`~aft_bench.context.RunContext` once (options parsed, distributed context set up, device resolved), lets
the task yield its results, writes each one atomically as it comes (never overwriting; side files such as
figures and CSVs beside it) and builds the leaderboard from the results it holds. Under ``torchrun`` tasks
that can (:attr:`Task.shardable`) share their samples over the ranks; rank 0 writes the results and the
leaderboard, the other ranks return an empty outcome.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aft_bench import distributed as dist_utils
from aft_bench.config import RunConfig, load_task_spec
from aft_bench.context import RunContext
from aft_bench.loading import check_encoder_spec
from aft_bench.options import parse_options
from aft_bench.registries import ATTRIBUTIONS, DATASETS, TASKS
from aft_bench.results import RunResult, read_results, write_result
from aft_bench.table import make_markdown, write_leaderboards

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutcome:
    """What a run produced: its result files and records, their Markdown table, the leaderboard file.

    On ranks other than 0 of a ``torchrun`` job everything is empty and ``leaderboard`` is None.
    """

    paths: list[Path]
    results: list[RunResult]
    markdown: str
    leaderboard: Path | None


def check_components(config: RunConfig) -> None:
    """Raises UnknownNameError for any unknown dataset, attribution or encoder of ``config``."""
    DATASETS.get(config.dataset)
    for name in config.attributions:
        ATTRIBUTIONS.get(name)
    for spec in config.encoders:
        check_encoder_spec(spec)


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
    try:
        if dist.distributed and not task.shardable:
            shardable = [name for name in TASKS.names() if TASKS.get(name).shardable]
            raise ValueError(f"task {config.task!r} runs in one process: start it without torchrun (this job has "
                             f"WORLD_SIZE={dist.world_size}); tasks that share their samples over ranks: "
                             f"{', '.join(shardable)}")
        ctx = RunContext(config=config, spec=spec, options=options, dist=dist)
        earlier = read_results(ctx.folder) if dist.is_main and ctx.folder.is_dir() else []
        for result in task.run(ctx):
            paths.append(write_result(result, config.out))
            results.append(result)
    finally:
        dist_utils.teardown(dist)
    if not dist.is_main:
        return RunOutcome(paths=[], results=[], markdown="", leaderboard=None)
    leaderboard = write_leaderboards(ctx.folder, earlier + results)["md"]
    log.debug("wrote %d results and %s", len(paths), leaderboard)
    return RunOutcome(paths=paths, results=results, markdown=make_markdown(results), leaderboard=leaderboard)
