"""Runs a task from a resolved config and rebuilds the leaderboard: the one entry point for the CLI
and for notebooks (``aft_bench.run(config)``)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from aft_bench.config import RunConfig, load_task_spec
from aft_bench.loading import check_encoder_spec
from aft_bench.registries import ATTRIBUTIONS, DATASETS, TASKS
from aft_bench.results import RunResult
from aft_bench.table import make_markdown, write_leaderboards

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutcome:
    """What a run produced: its result files and records, their Markdown table, the leaderboard file."""

    paths: list[Path]
    results: list[RunResult]
    markdown: str
    leaderboard: Path


def check_names(config: RunConfig) -> None:
    """Raises UnknownNameError for any unknown task, dataset, attribution or encoder before work starts."""
    TASKS.get(config.task)
    DATASETS.get(config.dataset)
    for name in config.attributions:
        ATTRIBUTIONS.get(name)
    for spec in config.encoders:
        check_encoder_spec(spec)


def run(config: RunConfig) -> RunOutcome:
    """Evaluates ``config``; writes result files and rebuilds ``<out>/<task>/leaderboard.{md,csv}``."""
    check_names(config)
    task = TASKS.get(config.task)(load_task_spec(config.task))
    paths = task.run(config)
    own = [RunResult.from_dict(json.loads(p.read_text(encoding="utf-8"))) for p in paths]
    leaderboard = write_leaderboards(Path(config.out) / config.task)["md"]
    log.debug("wrote %d results and %s", len(paths), leaderboard)
    return RunOutcome(paths=paths, results=own, markdown=make_markdown(own), leaderboard=leaderboard)
