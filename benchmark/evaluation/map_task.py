"""Tasks scored from attribution maps (pointing game, sparsity, SSIM, ROAD): every (encoder, method) pair of the
run, one pass over the data per encoder for all its methods, maps with NaN/Inf values handled as bad samples before
:meth:`MapTask.score` sees them."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from aft_bench.attributions.base import Attribution
from aft_bench.core.options import names_in, nested, option
from aft_bench.core.registries import TARGETS
from aft_bench.data.base import Batch, Dataset
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.precision import attribution_precision
from aft_bench.evaluation.probe.options import ProbeOptions
from aft_bench.evaluation.sample_task import Pair, SampleTask
from aft_bench.evaluation.task import Record
from aft_bench.models.encoder import Encoder, UnsupportedEncoderError
from aft_bench.results.result import RunResult


@dataclass(frozen=True)
class MapOptions:
    """The options every attribution-map task shares: what the maps explain, and the linear probe if they
    explain one (``--option target=probe probe_steps=100 ...``)."""

    target: str = option("text", parse=names_in(TARGETS), help="text (zero-shot prompt) or probe (probe logit)")
    probe: ProbeOptions = nested(ProbeOptions, "probe_", help="the linear probe (target=probe)")


def non_finite_message(maps: Tensor) -> str:
    """The error of a sample whose map holds NaN or Inf values."""
    return f"non-finite map ({int((~torch.isfinite(maps)).sum())} NaN/Inf values)"


class MapTask(SampleTask):
    """A task scored sample by sample from attribution maps (pointing game, sparsity, SSIM, ROAD).

    Subclasses declare their metrics and implement :meth:`score`, which only ever sees finite maps (a map with
    NaN/Inf values is a bad sample, under the run's policy). :meth:`run` scores every (encoder, attribution)
    pair of the run; per-encoder state (a classifier, a figure path) is what :meth:`begin_encoder` returns.
    """

    @abstractmethod
    def score(self, ctx: RunContext, pair: Pair, maps: Tensor, batch: Batch) -> list[Record]:
        """One record per sample of ``batch`` from its finite maps (``maps[i]`` belongs to ``batch.ids[i]``)."""

    def maps(self, ctx: RunContext, pair: Pair, batch: Batch) -> Tensor:
        """Attribution maps of a batch, ``maps[i]`` of sample i (overridden by tasks that perturb images), fp32, from
        forwards in the run's precision (:func:`aft_bench.evaluation.precision.attribution_precision`)."""
        images = batch.images.to(pair.encoder.device)
        target = ctx.target(pair.encoder, batch, pair.dataset)
        with attribution_precision(ctx.config.precision, images.device):
            return self.method(pair)(pair.encoder, images, target)

    @staticmethod
    def method(pair: Pair) -> Attribution:
        """The pair's attribution method (map tasks always have one)."""
        if pair.method is None:
            raise TypeError(f"pair {pair.encoder_spec} x {pair.name} has no attribution method: map tasks need one")
        return pair.method

    def evaluate(self, ctx: RunContext, pair: Pair, batch: Batch) -> list[Record]:
        """:meth:`score` of the finite maps; an error record for each sample whose map is not finite."""
        maps = self.maps(ctx, pair, batch)
        finite = torch.isfinite(maps).flatten(1).all(dim=1).tolist()
        records: list[Record | None] = [None if ok else {"error": non_finite_message(maps[i])}
                                        for i, ok in enumerate(finite)]
        keep = [i for i, ok in enumerate(finite) if ok]
        if keep:
            good = keep == list(range(len(batch)))
            scored = self.score(ctx, pair, maps if good else maps[torch.tensor(keep, device=maps.device)],
                                batch if good else batch.select(keep))
            for i, record in zip(keep, scored, strict=True):
                records[i] = record
        return records  # type: ignore[return-value]

    def methods(self, ctx: RunContext, encoder: Encoder, refused: list[str]) -> Iterator[tuple[str, Attribution]]:
        """The (name, method) pairs to score ``encoder`` with (refusals appended to ``refused``)."""
        return ctx.attributions(encoder, refused)

    def begin_encoder(self, ctx: RunContext, encoder_spec: str, encoder: Encoder, dataset: Dataset) -> Any:
        """Per-encoder state, built before its pairs are scored (default: none); it reaches every :class:`Pair`."""
        return None

    def end_encoder(self, ctx: RunContext, encoder_spec: str, state: Any, results: list[RunResult]) -> None:
        """Called on rank 0 with an encoder's results after its pairs (tasks that draw figures do it here)."""

    def run(self, ctx: RunContext) -> Iterator[RunResult]:
        """Scores every (encoder, attribution) pair; yields the results (none on ranks other than 0)."""
        refused: list[str] = []
        pairs = 0
        for spec, encoder in ctx.encoders():
            methods = list(self.methods(ctx, encoder, refused))
            if not methods:
                continue
            dataset, ids = ctx.samples(encoder.image_size)
            state = self.begin_encoder(ctx, spec, encoder, dataset)
            pairs += len(methods)
            results: list[RunResult] = []
            pairs_of = [Pair(spec, encoder, name, method, dataset, state) for name, method in methods]
            if type(self).run_pair is SampleTask.run_pair:  # one pass over the data for all the methods
                scored = self.run_pairs(ctx, pairs_of, ids)
            else:  # a task that chooses the samples of each pair (its own run_pair) scores pair by pair
                scored = [self.run_pair(ctx, pair, ids) for pair in pairs_of]
            for result in scored:
                if result is not None:
                    results.append(result)
                    yield result
            if results:
                self.end_encoder(ctx, spec, state, results)
        if not pairs and refused:
            raise UnsupportedEncoderError("; ".join(refused))
