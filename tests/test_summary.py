"""RunningStat against numpy, merging, JSON round-trip and edge cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from aft_bench.metrics.summary import RunningStat


def _numpy_ci95(x: np.ndarray) -> float:
    return 1.96 * np.std(x, ddof=1) / np.sqrt(x.size)


@pytest.mark.parametrize("seed", range(4))
def test_mean_and_ci95_match_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.random(1000) * rng.uniform(0.1, 10)
    stat = RunningStat()
    for chunk in np.array_split(x, 7):
        stat.update(chunk)
    assert stat.n == 1000
    assert stat.mean == pytest.approx(x.mean(), rel=1e-12)
    assert stat.ci95 == pytest.approx(_numpy_ci95(x), rel=1e-10)
    assert stat.summary() == {"mean": stat.mean, "ci95": stat.ci95, "n": 1000}


def test_binary_hits() -> None:
    stat = RunningStat()
    stat.update(torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64))
    assert stat.mean == 0.75
    assert stat.ci95 == pytest.approx(1.96 * math.sqrt(0.25) / 2)


def test_large_offset_keeps_precision() -> None:
    rng = np.random.default_rng(0)
    x = 1e9 + rng.random(5000)
    stat = RunningStat()
    for chunk in np.array_split(x, 13):
        stat.update(chunk)
    assert stat.std == pytest.approx(np.std(x, ddof=1), rel=1e-6)


def test_merge_equals_single_accumulation() -> None:
    rng = np.random.default_rng(1)
    parts = [rng.random(n) for n in (1, 0, 17, 250, 3)]
    single = RunningStat()
    single.update(np.concatenate(parts))
    merged = RunningStat()
    for p in parts:
        s = RunningStat()
        s.update(p)
        merged.merge(s)
    assert merged.n == single.n
    assert merged.mean == pytest.approx(single.mean, rel=1e-13)
    assert merged.ci95 == pytest.approx(single.ci95, rel=1e-11)
    empty = RunningStat()
    assert empty.merge(single).summary() == single.summary()


def test_json_round_trip() -> None:
    stat = RunningStat()
    stat.update(torch.rand(33))
    text = json.dumps(stat.to_dict(), allow_nan=False)
    back = RunningStat.from_dict(json.loads(text))
    assert back.summary() == stat.summary()
    assert back.to_dict() == stat.to_dict()
    fresh = RunningStat.from_dict(json.loads(json.dumps(RunningStat().to_dict(), allow_nan=False)))
    assert fresh.n == 0


def test_small_counts_are_nan() -> None:
    stat = RunningStat()
    assert math.isnan(stat.mean) and math.isnan(stat.ci95) and stat.n == 0
    stat.update([0.4])
    assert stat.mean == 0.4 and math.isnan(stat.ci95)
    stat.update(np.array([]))
    assert stat.n == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values_raise(bad: float) -> None:
    stat = RunningStat()
    with pytest.raises(ValueError, match="1 non-finite"):
        stat.update(torch.tensor([0.5, bad]))
    assert stat.n == 0  # nothing half-added


def test_from_dict_rejects_bad_state() -> None:
    with pytest.raises(ValueError, match="lacks keys"):
        RunningStat.from_dict({"count": 2, "mean": 0.5})
    with pytest.raises(ValueError, match="invalid"):
        RunningStat.from_dict({"count": -1, "mean": 0.5, "m2": 0.0})
    with pytest.raises(TypeError):
        RunningStat().merge({"count": 1})  # type: ignore[arg-type]
