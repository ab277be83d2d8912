"""Runs a task from a resolved config and rebuilds the leaderboard: the one entry point for the CLI
and for notebooks (``aft_bench.run(config)``).

Under ``torchrun`` the runner joins the process group; tasks that can (:attr:`Task.shardable`) share
their samples over the ranks, rank 0 writes the results and the leaderboard, and the other ranks
return an empty outcome.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from aft_bench import distributed as dist_utils
from aft_bench.config import RunConfig, load_task_spec
from aft_bench.loading import check_encoder_spec
from aft_bench.registries import ATTRIBUTIONS, DATASETS, TASKS
from aft_bench.results import RunResult
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


def check_names(config: RunConfig) -> None:
    """Raises UnknownNameError for any unknown task, dataset, attribution or encoder before work starts."""
    TASKS.get(config.task)
    check_components(config)


def check_components(config: RunConfig) -> None:
    """Raises UnknownNameError for any unknown dataset, attribution or encoder of ``config``."""
    DATASETS.get(config.dataset)
    for name in config.attributions:
        ATTRIBUTIONS.get(name)
    for spec in config.encoders:
        check_encoder_spec(spec)


def run(config: RunConfig) -> RunOutcome:
    """Evaluates ``config``; writes result files and rebuilds ``<out>/<task>/leaderboard.{md,csv}``."""
    check_names(config)
    task = TASKS.get(config.task)(load_task_spec(config.task))
    ctx = dist_utils.setup(config.device)
    try:
        if ctx.distributed and not task.shardable:
            shardable = [name for name in TASKS.names() if TASKS.get(name).shardable]
            raise ValueError(f"task {config.task!r} runs in one process: start it without torchrun (this job has "
                             f"WORLD_SIZE={ctx.world_size}); tasks that share their samples over ranks: "
                             f"{', '.join(shardable)}")
        paths = task.run(config)
    finally:
        dist_utils.teardown(ctx)
    if not ctx.is_main:
        return RunOutcome(paths=[], results=[], markdown="", leaderboard=None)
    own = [RunResult.from_dict(json.loads(p.read_text(encoding="utf-8"))) for p in paths]
    leaderboard = write_leaderboards(Path(config.out) / config.task)["md"]
    log.debug("wrote %d results and %s", len(paths), leaderboard)
    return RunOutcome(paths=paths, results=own, markdown=make_markdown(own), leaderboard=leaderboard)
