"""Sparsity of attribution maps: the Gini index of each map (paper appendix A.4, Table 3).

The AFT paper motivates its Huber regulariser by the sparsity of saliency maps and measures it with
the Gini index (Hurley & Rickard 2009): AFT gives sparser maps, so a higher Gini is better. The task
needs no masks, so it runs on every dataset (labelled folders, captioned images, the shapes world).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from aft_bench.config import RunConfig
from aft_bench.data.base import Batch
from aft_bench.evaluation import MapTask, Record
from aft_bench.metrics.gini import ZERO_MAP, gini_index


class Sparsity(MapTask):
    """Gini index of every map (absolute values, flattened; see :mod:`aft_bench.metrics.gini`).

    Reported in percent like every other leaderboard column (0 = uniform map, 100 * (1 - 1/N) =
    one-hot map of N pixels). A map that is zero everywhere has no Gini index and is excluded as
    ``"zero map"``; a map with NaN/Inf values is a bad sample (``--on-error`` decides).
    """

    metrics: ClassVar[dict[str, bool]] = {"gini": True}
    scale: ClassVar[float] = 100.0

    def score(self, maps: Tensor, batch: Batch, config: RunConfig) -> list[Record]:
        finite = torch.isfinite(maps).flatten(1).all(dim=1)
        clean = torch.where(finite[:, None, None], maps, torch.zeros_like(maps))
        values = gini_index(clean).tolist()
        records: list[Record] = []
        for i, value in enumerate(values):
            if not bool(finite[i]):
                bad = int((~torch.isfinite(maps[i])).sum())
                records.append({"error": f"non-finite map: {bad} NaN/Inf values"})
            elif math.isnan(value):
                records.append({"excluded": ZERO_MAP})
            else:
                records.append({"scores": {"gini": value}})
        return records
