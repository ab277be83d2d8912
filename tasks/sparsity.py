"""Sparsity of attribution maps: the Gini index of each map (paper appendix A.4, Table 3).

The AFT paper motivates its Huber regulariser by the sparsity of saliency maps and measures it with
the Gini index (Hurley & Rickard 2009): AFT gives sparser maps, so a higher Gini is better. The task
needs no masks, so it runs on every dataset (labelled folders, captioned images, the shapes world).
"""

from __future__ import annotations

import math
from typing import ClassVar

from torch import Tensor

from aft_bench.data.base import Batch
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.map_task import MapOptions, MapTask
from aft_bench.evaluation.sample_task import Pair
from aft_bench.evaluation.task import Record, Reported
from aft_bench.metrics.gini import GINI, ZERO_MAP


class Sparsity(MapTask):
    """Gini index of every map (absolute values, flattened; see :mod:`aft_bench.metrics.gini`).

    Reported in percent like every other leaderboard column (0 = uniform map, 100 * (1 - 1/N) =
    one-hot map of N pixels). A map that is zero everywhere has no Gini index and is excluded as
    ``"zero map"``; a map with NaN/Inf values is a bad sample (``--on-error`` decides).
    """

    Options: ClassVar[type] = MapOptions
    reported: ClassVar[tuple[Reported, ...]] = (GINI,)

    def score(self, ctx: RunContext, pair: Pair, maps: Tensor, batch: Batch) -> list[Record]:
        return [{"excluded": ZERO_MAP} if math.isnan(value) else {"scores": {GINI.name: value}}
                for value in GINI(maps, None).tolist()]
