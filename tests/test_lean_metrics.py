"""The batched pointing-game metrics against references computed here: scikit-learn's average precision and
the documented formulas in numpy, per image, on maps with ties, ignore pixels, constant maps and odd dtypes;
the task's one-table scoring against the metric functions one by one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

import aft_bench.metrics.segmentation as segmentation
from aft_bench.config import resolve_config
from aft_bench.context import RunContext
from aft_bench.data.base import Batch
from aft_bench.metrics.pointing import pg_energy, pointing_game
from aft_bench.metrics.pooled import segmentation_counts
from aft_bench.metrics.segmentation import (
    MapStats,
    average_precision,
    average_precision_two_class,
    mask_iou,
    pixel_accuracy,
)
from aft_bench.tasks import pointing_game as task_module
from aft_bench.tasks.pointing_game import PointingGame, PointingGameOptions

TOLERANCE = 1e-9  # the issue asks for 1e-6; the batched code agrees with the references far closer


def _maps(kind: str, shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    maps = torch.rand(shape, generator=generator)
    if kind == "ties":  # few distinct values: large tie groups, and fg/bg ties across the two AP channels
        return (maps * 4).round() / 4 - 0.5
    if kind == "constant":
        return torch.full(shape, 0.3)
    if kind == "float64":
        return torch.rand(shape, generator=generator, dtype=torch.float64) * 1e-3 - 1
    if kind == "int":
        return torch.randint(-3, 3, shape, generator=generator)
    if kind == "mixed_scale":  # values 1e-12 next to whole numbers, and a negative zero
        tiny = torch.rand(shape, generator=generator) * 1e-12
        out = torch.where(torch.rand(shape, generator=generator) > 0.5, tiny, -(maps * 4).round())
        out[0, 0, 0] = -0.0
        return out
    if kind == "bfloat16":
        return maps.bfloat16()
    return maps


KINDS = ["continuous", "ties", "constant", "float64", "int", "mixed_scale", "bfloat16"]


def _batch(kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = (6, 9, 11)
    masks = torch.randint(-1, 2, shape, generator=generator).to(torch.int8)
    masks[1] = torch.where(masks[1] == 1, 0, masks[1])  # no foreground: NaN
    masks[2] = 1  # no background
    return _maps(kind, shape, generator), masks


def _reference(map_: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The documented scores of one image, in numpy float64 (scikit-learn for both APs)."""
    valid = mask != -1
    fg = mask == 1
    m = map_.astype(np.float64)
    lo, hi = m[valid].min(), m[valid].max()
    norm = np.where(valid, (m - lo) / (hi - lo), 0.0) if hi > lo else np.zeros_like(m)
    pred = (norm > norm[valid].sum() / valid.sum()) & valid
    inter, union = (pred & fg).sum(), (pred | fg).sum()
    y, s = fg[valid], m[valid]
    two = average_precision_score(np.concatenate([~y, y]), np.concatenate([hi - s, s - lo]))
    point = np.argmax(np.where(valid, m, -np.inf))
    energy = np.clip(m, 0, None) * valid
    return {"pixel_acc": ((pred == fg) & valid).sum() / valid.sum(), "mask_iou": inter / max(union, 1),
            "ap": average_precision_score(y, s), "ap_two_class": two, "pg": float(fg.reshape(-1)[point]),
            "pg_energy": (energy * fg).sum() / energy.sum() if energy.sum() > 0 else 0.0}


@pytest.mark.parametrize("kind", KINDS)
def test_batched_scores_match_the_references(kind: str) -> None:
    maps, masks = _batch(kind)
    stats = MapStats(maps, masks)
    got = {"pixel_acc": pixel_accuracy(maps, masks, stats=stats), "mask_iou": mask_iou(maps, masks, stats=stats),
           "ap": average_precision(maps, masks, stats=stats),
           "ap_two_class": average_precision_two_class(maps, masks, stats=stats),
           "pg": pointing_game(maps, masks, stats=stats), "pg_energy": pg_energy(maps, masks, stats=stats)}
    for i in range(maps.shape[0]):
        if not (masks[i] == 1).any():
            assert all(math.isnan(float(v[i])) for v in got.values())
            continue
        reference = _reference(maps[i].double().numpy() if kind == "bfloat16" else maps[i].numpy(), masks[i].numpy())
        for name, value in reference.items():
            assert float(got[name][i]) == pytest.approx(value, abs=TOLERANCE), (kind, i, name)


@pytest.mark.parametrize("kind", ["continuous", "ties", "int"])
def test_counts_follow_from_the_confusion(kind: str) -> None:
    maps, masks = _batch(kind, seed=3)
    counts = segmentation_counts(maps, masks)
    pred = MapStats(maps, masks).predicted
    valid, fg = masks != -1, masks == 1
    bg_pred, bg_true = ~pred & valid, ~fg & valid
    expected = torch.stack([((pred == fg) & valid).sum((1, 2)), valid.sum((1, 2)), (pred & fg).sum((1, 2)),
                            (pred | fg).sum((1, 2)), (bg_pred & bg_true).sum((1, 2)), (bg_pred | bg_true).sum((1, 2))],
                           dim=1)
    assert torch.equal(counts, expected)


def test_the_cpu_key_sort_and_the_argsort_rank_alike() -> None:
    # the packed-key numpy sort (CPU, float32 / non-negative float64) against torch's argsort path
    maps, masks = _batch("ties", seed=5)
    b = maps.shape[0]
    scores, positive, valid = maps.reshape(b, -1), (masks == 1).reshape(b, -1), (masks != -1).reshape(b, -1)
    keys, labels, n = segmentation._rank(scores, positive, valid)
    values, order = torch.sort(scores.double().masked_fill(~valid, float("inf")), dim=1)
    for i in range(b):
        k = int(n[i])
        assert torch.equal(labels[i, k:], torch.zeros_like(labels[i, k:]))
        # within each tie group the labels may come in any order: compare the label counts per value
        for value in values[i, :k].unique():
            assert int(labels[i, :k][values[i, :k] == value].sum()) == int(positive[i][order[i, :k]][values[i, :k]
                                                                                                 == value].sum())
        assert int((keys[i, 1:k] != keys[i, : k - 1]).sum()) == len(values[i, :k].unique()) - 1


@pytest.mark.parametrize("tolerance", [0.5, 1.0, 2.5, 15.0])
def test_pointing_tolerance_matches_the_distance_rule(tolerance: float) -> None:
    maps, masks = _batch("continuous", seed=7)
    hits = pointing_game(maps, masks, tolerance=tolerance)
    for i in range(maps.shape[0]):
        if not (masks[i] == 1).any():
            continue
        point = int(torch.argmax(maps[i].masked_fill(masks[i] == -1, float("-inf"))))
        r, c = divmod(point, maps.shape[2])
        rows, cols = np.nonzero(masks[i].numpy() == 1)
        dist2 = (rows - r) ** 2 + (cols - c) ** 2
        assert float(hits[i]) == float(bool(((dist2 == 0) | (dist2 < tolerance**2)).any()))


def _score(maps: torch.Tensor, masks: torch.Tensor, tolerance: float = 0.0) -> list[dict]:
    ctx = RunContext.local(resolve_config("pointing_game", {}), options=PointingGameOptions(tolerance=tolerance))
    batch = Batch(ids=[str(i) for i in range(len(maps))], images=torch.empty(0), prompts=[""] * len(maps),
                  labels=torch.zeros(len(maps), dtype=torch.long), masks=masks)
    return PointingGame().score(ctx, None, maps, batch)  # type: ignore[arg-type]


def test_task_table_equals_the_metrics_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    maps, masks = _batch("ties", seed=11)
    checks = []
    original = segmentation.check_batch
    monkeypatch.setattr(segmentation, "check_batch", lambda *a: checks.append(1) or original(*a))
    monkeypatch.setattr(task_module, "CHUNK_PIXELS", 2 * maps[0].numel())  # chunks of 2 maps
    records = _score(maps, masks, tolerance=2.0)
    assert len(checks) == 3  # the batch checked once per chunk (one MapStats each), not once per metric
    assert records[1] == {"excluded": "empty mask"}
    task = PointingGame()
    for i, record in enumerate(records):
        if i == 1:
            continue
        one, mask = maps[i : i + 1], masks[i : i + 1]
        for metric in task.reported:
            if hasattr(metric, "fn"):
                options = {"tolerance": 2.0} if metric.name == "pg" else {}
                assert record["scores"][metric.name] == pytest.approx(float(metric(one, mask, **options)[0]), abs=1e-12)
                if metric.chance is not None:
                    assert record["chance"][metric.name] == pytest.approx(float(metric.chance(mask, **options)[0]))
            else:
                assert record["counts"][metric.name] == metric.counts(one, mask)[0].tolist()
                assert all(isinstance(v, int) for v in record["counts"][metric.name])
