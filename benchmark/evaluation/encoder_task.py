"""Tasks that score each encoder itself, not attribution maps: zero-shot accuracy and robustness, the class entropy,
the shortcut reliance, LLaVA's attention with the encoder as its tower.

An :class:`EncoderTask` is a :class:`~aft_bench.evaluation.sample_task.SampleTask` whose :meth:`EncoderTask.run` is
written once: it refuses ``--attributions`` (naming them), builds what the whole run shares
(:meth:`EncoderTask.prepare`: a VLM, a category table), and for each encoder builds its state on the encoder's own
dataset and sample ids (:meth:`EncoderTask.setup`: a classifier head, the attacked subset) and scores it through the
resumable, shardable per-sample loop. A task supplies the leaderboard's attribution column (:meth:`EncoderTask.label`),
:meth:`EncoderTask.setup` and :meth:`~aft_bench.evaluation.sample_task.SampleTask.evaluate`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aft_bench.data.base import Dataset
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.sample_task import Pair, SampleTask
from aft_bench.models.encoder import Encoder
from aft_bench.results.result import RunResult


@dataclass(frozen=True)
class EncoderSetup:
    """What one encoder's scoring needs, from :meth:`EncoderTask.setup`.

    Attributes:
        state: The task's per-encoder state (it reaches every :class:`~aft_bench.evaluation.sample_task.Pair`).
        ids: The sample ids to score, in the order they are scored (default: the run's).
        key: What else the run key of the encoder's result depends on (a category table's digest, the VLM's card).
    """

    state: Any = None
    ids: list[str] | None = None
    key: Mapping[str, Any] = field(default_factory=dict)


class EncoderTask(SampleTask):
    """A per-sample task that scores every encoder of the run, each once (no attribution methods)."""

    #: What the task scores, for the refusal of ``--attributions`` ("an encoder's zero-shot predictions").
    scores: ClassVar[str] = "encoders"

    @abstractmethod
    def label(self, ctx: RunContext) -> str:
        """The leaderboard's attribution column of the run's results (the attacks, the classifier, the VLM)."""

    def prepare(self, ctx: RunContext) -> Any:
        """What every encoder of the run shares, built once before the first is loaded (default: nothing)."""
        return None

    @abstractmethod
    def setup(self, ctx: RunContext, spec: str, encoder: Encoder, dataset: Dataset, ids: list[str],
              shared: Any) -> EncoderSetup:
        """One encoder's state, built on its dataset and the run's sample ids before any of them is scored."""

    def encoder(self, ctx: RunContext, spec: str, shared: Any) -> Encoder:
        """Encoder ``spec`` on the run's device, ready to score (a task that changes it overrides: LLaVA's tower)."""
        return ctx.load_encoder(spec)

    def run(self, ctx: RunContext) -> Iterator[RunResult]:
        """Scores every encoder of the run in order; yields the results (none on ranks other than 0).

        Raises:
            ValueError: When the run names attribution methods (this task makes no maps).
        """
        if ctx.config.attributions:
            raise ValueError(f"task {ctx.spec.name!r} scores {self.scores}, not attribution maps: drop --attributions "
                             f"({' '.join(ctx.config.attributions)})")
        shared = self.prepare(ctx)
        label = self.label(ctx)
        for spec in ctx.config.encoders:
            encoder = self.encoder(ctx, spec, shared)
            dataset, ids = ctx.samples(encoder.image_size)
            setup = self.setup(ctx, spec, encoder, dataset, ids, shared)
            pair = Pair(spec, encoder, label, None, dataset, setup.state)
            result = self.run_pair(ctx, pair, ids if setup.ids is None else setup.ids, **setup.key)
            if result is not None:
                yield result
