"""The pointing game and segmentation scores of attribution maps (paper section 4.1, Table 1).

PG (Zhang et al. 2018): a hit when the map's maximum lies inside the object mask; PG-energy (Wang et
al. 2020): the share of map mass inside the mask; pixel accuracy, average precision and mask IoU of
the map as a soft segmentation (Chefer et al. 2021), as per-image means with 95% intervals and, as
Chefer et al.'s code computes them, pooled over the dataset (pixel accuracy and two-class mIoU). Images
whose mask is empty are excluded and counted, never scored as hits; ignore pixels take part in no score.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from aft_bench.config import RunConfig
from aft_bench.data.base import Batch, DataError, Dataset
from aft_bench.evaluation import MapTask, Record
from aft_bench.metrics.base import exclusion_reason
from aft_bench.metrics.pooled import pooled_scores, segmentation_counts
from aft_bench.registries import METRICS
from aft_bench.results import RunResult, SampleStore


class PointingGame(MapTask):
    """Scores each map against its sample's object mask; options: ``tolerance`` (pixels) for PG.

    Besides the per-image means it reports ``pixel_acc_pooled`` and ``miou_pooled``, the dataset-pooled
    scores of Chefer et al.'s evaluation code (:mod:`aft_bench.metrics.pooled`); they have no interval.
    """

    metrics: ClassVar[dict[str, bool]] = {
        "pg": True, "pg_energy": True, "pixel_acc": True, "ap": True, "mask_iou": True,
    }

    def score(self, maps: Tensor, batch: Batch, config: RunConfig) -> list[Record]:
        if batch.masks is None:
            raise DataError(f"dataset {config.dataset!r} has no masks: the pointing game needs object masks")
        masks = batch.masks.to(maps.device)
        finite = torch.isfinite(maps).flatten(1).all(dim=1)
        records: list[Record] = []
        for i in range(len(batch)):
            if not bool(finite[i]):
                bad = int((~torch.isfinite(maps[i])).sum())
                records.append({"error": f"non-finite map: {bad} NaN/Inf values"})
                continue
            reason = exclusion_reason(maps[i], masks[i])
            records.append({"excluded": reason} if reason else {"scores": {}})
        keep = [i for i, r in enumerate(records) if "scores" in r]
        if keep:
            index = torch.tensor(keep, device=maps.device)
            options: dict[str, dict[str, Any]] = {"pg": {"tolerance": config.options.get("tolerance", 0)}}
            for name in self.metrics:
                values = METRICS.get(name)(maps[index], masks[index], **options.get(name, {}))
                for i, value in zip(keep, values.tolist(), strict=True):
                    records[i]["scores"][name] = value
            for i, counts in zip(keep, segmentation_counts(maps[index], masks[index]).tolist(), strict=True):
                records[i]["counts"] = counts
        return records

    def _summarise(self, config: RunConfig, spec: str, name: str, key: str, store: SampleStore,
                   ids: list[str], dataset: Dataset) -> RunResult:
        """Adds Chefer et al.'s dataset-pooled pixel accuracy and mIoU, from the counts stored per sample."""
        result = super()._summarise(config, spec, name, key, store, ids, dataset)
        counts = [record["counts"] for record in map(store.get, ids) if record is not None and "counts" in record]
        if counts:
            n = len(counts)
            for metric, value in pooled_scores(torch.tensor(counts).sum(dim=0)).items():
                result.metrics[metric] = {"mean": 100.0 * value, "ci95": math.nan, "n": n, "higher_is_better": True}
        return result
