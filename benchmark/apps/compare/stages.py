"""Running a compare's stages through the runner, and reusing the stages an earlier compare ran.

A stage is one (suite entry, encoder) run: :func:`aft_bench.evaluation.runner.run` on the entry's configuration for that
encoder, so its results land in ``<out>/<task>/`` beside those of ``aft-bench run``, a per-sample task resumes
from its stored scores, and the leaderboards stay up to date. Tasks that keep no per-sample state (CLIP-Dissect,
Network Dissection) would start again on every run; so that a second compare recomputes nothing, each finished
stage is recorded in ``<out>/reports/compare/stages/<fingerprint>.json`` with the row keys
(:meth:`~aft_bench.results.result.RunResult.row_key`) of its results. The fingerprint is a hash of everything that
changes
the stage's numbers: the configuration (without the execution settings and ``--out``), the task's version and the
encoder's card, so a retrained checkpoint at the same path gets new stages. A recorded stage whose rows the task
folder still holds is not run again: its results are the newest of those rows (as the leaderboard shows them).
``--fresh`` runs every stage again, recomputing stored scores. An encoder that every method of an entry refuses
(:class:`~aft_bench.models.encoder.UnsupportedEncoderError`) is warned about and gets empty cells, as ``aft-bench run``
skips it among other encoders.

Reading an encoder's card means loading it once per compare (on the CPU; then it is let go).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aft_bench.core.atomic import atomic_write_text
from aft_bench.evaluation.config import RunConfig, load_task_spec
from aft_bench.evaluation.runner import run
from aft_bench.models.encoder import UnsupportedEncoderError
from aft_bench.models.loading import load_encoder
from aft_bench.results.files import REPORTS_DIR
from aft_bench.results.folder import ResultsFolder
from aft_bench.results.keys import run_key
from aft_bench.results.result import RunResult
from aft_bench.results.table import latest

log = logging.getLogger(__name__)

COMPARE_DIR = Path(REPORTS_DIR) / "compare"
"""Where a compare writes, under ``--out``: ``<suite>/`` with its files, ``stages/`` with its stage records."""
STAGES_DIR = COMPARE_DIR / "stages"
"""Where finished stages are recorded, under ``--out``."""
EXECUTION = ("out", "fresh", "batch_size", "device", "num_workers", "cache_samples")
"""Configuration fields that do not change a stage's numbers (``RunConfig.numbers_key`` leaves them out too)."""


@dataclass(frozen=True)
class EncoderIdentity:
    """What a compare needs to know of an encoder without keeping it loaded.

    Attributes:
        card: A hash of the encoder's card (what the run keys hold of it). image_size: Its input size.
    """

    card: str
    image_size: tuple[int, int]


@dataclass(frozen=True)
class StageResults:
    """The results of one stage, and whether they were reused from an earlier compare."""

    results: list[RunResult]
    reused: bool


class StageRunner:
    """Runs stages into one results folder, reusing recorded ones (see the module docstring).

    Args:
        out: The results folder (``--out``). fresh: Run every stage again, recomputing stored scores.
    """

    def __init__(self, out: str | Path, fresh: bool = False) -> None:
        self.out = Path(out)
        self.fresh = fresh
        self._identities: dict[str, EncoderIdentity] = {}

    def identity(self, spec: str) -> EncoderIdentity:
        """The card hash and input size of encoder ``spec`` (loaded once, on the CPU, on first asking)."""
        if spec not in self._identities:
            encoder = load_encoder(spec, "cpu")
            card = run_key({"card": json.dumps(encoder.card, sort_keys=True, default=str)})
            self._identities[spec] = EncoderIdentity(card, tuple(encoder.image_size))  # type: ignore[arg-type]
        return self._identities[spec]

    def fingerprint(self, config: RunConfig) -> str:
        """The hash of what changes the numbers of the one-encoder stage ``config``."""
        settings = {key: value for key, value in config.to_dict().items() if key not in EXECUTION}
        (encoder,) = config.encoders
        return run_key({"config": settings, "task_version": load_task_spec(config.task).version,
                        "encoder_card": self.identity(encoder).card})

    def _record_path(self, fingerprint: str) -> Path:
        return self.out / STAGES_DIR / f"{fingerprint}.json"

    def _recorded(self, config: RunConfig, path: Path) -> list[RunResult] | None:
        """The results of a recorded stage, if its record exists and the task folder holds all its rows."""
        if self.fresh or not path.is_file():
            return None
        try:
            rows = [tuple(row) for row in json.loads(path.read_text(encoding="utf-8"))["rows"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("stage record %s is not readable (%s): running the stage again", path, exc)
            return None
        folder = self.out / config.task
        newest = {result.row_key(): result for result in latest(ResultsFolder(folder).results)}
        if not rows or any(row not in newest for row in rows):
            return None
        return [newest[row] for row in rows]  # type: ignore[index]

    def results(self, config: RunConfig) -> StageResults:
        """The results of the one-encoder stage ``config``: recorded ones, else those of a run (then recorded)."""
        path = self._record_path(self.fingerprint(config))
        recorded = self._recorded(config, path)
        if recorded is not None:
            log.info("%s x %s: reusing the %d results of an earlier compare (%s)", config.task, config.encoders[0],
                     len(recorded), path.name)
            return StageResults(recorded, reused=True)
        try:
            outcome = run(config)
        except UnsupportedEncoderError as exc:  # every method of the entry refuses this encoder: its cells stay empty
            log.warning("%s x %s: %s; its scorecard cells stay empty", config.task, config.encoders[0], exc)
            return StageResults([], reused=False)
        record: dict[str, Any] = {"task": config.task, "encoder": config.encoders[0],
                                  "rows": [list(result.row_key()) for result in outcome.results],
                                  "config": config.to_dict()}
        atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")
        return StageResults(list(outcome.results), reused=False)
