"""The pointing game and segmentation scores of attribution maps (paper section 4.1, Table 1).

PG (Zhang et al. 2018): a hit when the map's maximum lies inside the object mask (within ``tolerance`` pixels,
TorchRay's convention, when asked); PG-energy (Wang et al. 2020): the share of map mass inside the mask; pixel
accuracy, average precision and mask IoU of the map as a soft segmentation, as per-image means with 95%
intervals: ``ap`` is the foreground AP of the map (what the paper's AP values look like), ``ap_two_class`` the AP
pooled over both classes that Chefer et al.'s code computes (a random map scores about 50). As Chefer et al.'s
code also does, pixel accuracy and two-class mIoU pooled over the dataset (``pixel_acc_pooled``,
``miou_pooled``, from per-sample counts). Images whose mask is empty are excluded and counted, never scored as
hits; ignore pixels take part in no score.

Every result also reports, under ``extra.chance``, the chance level of each score that has one: the mean over
the scored images of the score a random map gets in expectation, computed exactly from their masks
(:mod:`aft_bench.metrics.chance`; with the run's PG tolerance). The leaderboard prints it as a "chance" row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, ClassVar

import torch
from torch import Tensor

from aft_bench.core.options import non_negative, option
from aft_bench.data.base import Batch, DataError
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.map_task import MapOptions, MapTask
from aft_bench.evaluation.sample_task import Pair
from aft_bench.evaluation.task import Record, Reported
from aft_bench.metrics.base import EMPTY_MASK, Metric
from aft_bench.metrics.map_stats import MapStats
from aft_bench.metrics.pointing import PG_ENERGY, POINTING_GAME
from aft_bench.metrics.pooled import COUNTS, MIOU_POOLED, PIXEL_ACC_POOLED
from aft_bench.metrics.segmentation import AVERAGE_PRECISION, AVERAGE_PRECISION_TWO_CLASS, MASK_IOU, PIXEL_ACCURACY

CHUNK_PIXELS = 1 << 19
"""Pixels of the maps scored together on the CPU (about 10 maps at 224 px): their intermediates fit the caches."""


@dataclass(frozen=True)
class PointingGameOptions(MapOptions):
    """Options of the pointing game (besides the target and probe of every map task)."""

    tolerance: float = option(0.0, parse=non_negative,
                              help="PG tolerance in pixels (TorchRay: 15 at 224 px); 0 = the maximum inside the mask")


class PointingGame(MapTask):
    """Scores each map against its sample's object mask (per-image metrics and Chefer et al.'s pooled ones)."""

    Options: ClassVar[type] = PointingGameOptions
    reported: ClassVar[tuple[Reported, ...]] = (
        POINTING_GAME, PG_ENERGY, PIXEL_ACCURACY, AVERAGE_PRECISION, AVERAGE_PRECISION_TWO_CLASS, MASK_IOU,
        PIXEL_ACC_POOLED, MIOU_POOLED,
    )

    def score(self, ctx: RunContext, pair: Pair, maps: Tensor, batch: Batch) -> list[Record]:
        """Every reported score, count and chance level of the batch, in one table and one copy to the host.

        Each chunk of rows (:data:`CHUNK_PIXELS`, so that a chunk's intermediates stay in the CPU's caches;
        the whole batch on other devices) is checked once and shares one
        :class:`~aft_bench.metrics.map_stats.MapStats` (normalised map, threshold, ranking) across the metrics.
        """
        if batch.masks is None:
            raise DataError(f"dataset {ctx.config.dataset!r} has no masks: the pointing game needs object masks")
        masks = batch.masks.to(maps.device)
        options: dict[str, dict[str, Any]] = {POINTING_GAME.name: {"tolerance": ctx.options.tolerance}}
        step = max(1, CHUNK_PIXELS // maps[0].numel()) if maps.device.type == "cpu" else len(maps)
        table = torch.cat([self._table(maps[i : i + step], masks[i : i + step], options)
                           for i in range(0, len(maps), step)]).tolist()
        records: list[Record] = []
        for row in table:
            if not row[0]:
                records.append({"excluded": EMPTY_MASK})
                continue
            values = iter(row[1:])
            record: Record = {"scores": {}, "counts": {}}
            for metric in self.reported:
                if isinstance(metric, Metric):
                    record["scores"][metric.name] = next(values)
                    if metric.chance is not None:
                        record.setdefault("chance", {})[metric.name] = next(values)
                else:
                    record["counts"][metric.name] = [int(v) for v in islice(values, len(COUNTS))]
            records.append(record)
        return records

    def _table(self, maps: Tensor, masks: Tensor, options: dict[str, dict[str, Any]]) -> Tensor:
        """B x K float64: has-foreground, then per metric its score (and chance level) or its counts."""
        stats = MapStats(maps, masks)
        columns = [stats.has_foreground.double()[:, None]]
        counted: dict[Any, Tensor] = {}  # pooled metrics that share a counts function compute it once
        for metric in self.reported:
            if isinstance(metric, Metric):
                columns.append(metric(maps, masks, stats=stats, **options.get(metric.name, {}))[:, None])
                if metric.chance is not None:
                    columns.append(metric.chance(masks, stats=stats, **options.get(metric.name, {}))[:, None])
            else:
                if metric.counts not in counted:
                    counted[metric.counts] = metric.counts(maps, masks, stats=stats).double()
                columns.append(counted[metric.counts])
        return torch.cat(columns, dim=1)

    def extras(self, ctx: RunContext, pair: Pair, records: Sequence[Record]) -> dict[str, Any]:
        """``chance``: per metric, the mean chance level of the scored images (in the metric's unit)."""
        scored = [r for r in records if "scores" in r]
        chance = {m.name: sum(r["chance"][m.name] for r in scored) / len(scored) * m.scale
                  for m in self.reported if isinstance(m, Metric) and m.chance is not None and scored}
        return {"chance": chance} if chance else {}
