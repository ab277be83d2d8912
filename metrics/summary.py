"""Streaming mean and 95% interval of per-sample scores, without keeping the scores.

Tasks feed each batch's valid scores into a :class:`RunningStat` per metric, merge the states of
shards or resumed runs, and report ``summary()`` (mean, 95% half-width, count) in the result file.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor

Z_95 = 1.96
"""Two-sided 95% quantile of the standard normal distribution (normal-approximation interval)."""


class RunningStat:
    """Count, mean and sum of squared deviations of a stream of values, in float64.

    The state is equivalent to (sum, sum of squares, count) but kept as (count, mean, M2) and
    combined with the parallel update of Chan, Golub & LeVeque (1979): the textbook
    ``sumsq - sum**2 / n`` loses all precision when the spread is small against the mean, the
    update below does not. Memory is constant: no list of values is kept.

    Example:
        >>> stat = RunningStat()
        >>> stat.update(np.array([1.0, 0.0, 1.0]))
        >>> round(stat.mean, 4)
        0.6667
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean = 0.0
        self._m2 = 0.0

    def update(self, values: Tensor | np.ndarray | float | list[float]) -> None:
        """Adds values (any shape; flattened). Callers pass only valid scores.

        Args:
            values: Scores; an empty input is a no-op.

        Raises:
            ValueError: If a value is NaN or infinite (exclude such samples before, and count why).
        """
        if isinstance(values, Tensor):
            values = values.detach().to("cpu").double().numpy()
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.size == 0:
            return
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise ValueError(
                f"RunningStat.update got {bad} non-finite (NaN/Inf) values out of {arr.size}; exclude those "
                "samples before aggregating (see aft_bench.metrics.base.exclusion_reason)"
            )
        mean = float(arr.mean())
        self._combine(arr.size, mean, float(((arr - mean) ** 2).sum()))

    def merge(self, other: RunningStat) -> RunningStat:
        """Adds another stat's values to this one (shards, resumed runs); returns self."""
        if not isinstance(other, RunningStat):
            raise TypeError(f"can only merge a RunningStat, got {type(other).__name__}")
        if other.count:
            self._combine(other.count, other._mean, other._m2)
        return self

    def _combine(self, n_b: int, mean_b: float, m2_b: float) -> None:
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self._mean
        self._mean += delta * n_b / n
        self._m2 += m2_b + delta * delta * n_a * n_b / n
        self.count = n

    @property
    def n(self) -> int:
        """Number of values seen."""
        return self.count

    @property
    def mean(self) -> float:
        """Mean of the values; NaN when there are none."""
        return self._mean if self.count else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); NaN for fewer than 2 values."""
        if self.count < 2:
            return math.nan
        return math.sqrt(max(self._m2, 0.0) / (self.count - 1))

    @property
    def ci95(self) -> float:
        """Half-width of the normal-approximation 95% interval, ``1.96 * std / sqrt(n)``.

        NaN for fewer than 2 values: one value says nothing about the spread, and 0 would claim
        certainty.
        """
        if self.count < 2:
            return math.nan
        return Z_95 * self.std / math.sqrt(self.count)

    def summary(self) -> dict[str, float | int]:
        """``{"mean": ..., "ci95": ..., "n": ...}``; mean and ci95 may be NaN (see above)."""
        return {"mean": self.mean, "ci95": self.ci95, "n": self.count}

    def to_dict(self) -> dict[str, float | int]:
        """The state as plain JSON numbers (always finite), for result files and resumes."""
        return {"count": self.count, "mean": self._mean, "m2": self._m2}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> RunningStat:
        """Rebuilds a stat from :meth:`to_dict` output.

        Raises:
            ValueError: If a key is missing or a value is invalid.
        """
        missing = {"count", "mean", "m2"} - set(state)
        if missing:
            raise ValueError(
                f"RunningStat state {state!r} lacks keys {sorted(missing)}; "
                "pass the dict that RunningStat.to_dict made"
            )
        count, mean, m2 = state["count"], float(state["mean"]), float(state["m2"])
        if int(count) != count or count < 0 or not math.isfinite(mean) or not m2 >= 0 or math.isinf(m2):
            raise ValueError(
                f"invalid RunningStat state {state!r}: need an integer count >= 0, a finite mean and m2 >= 0"
            )
        stat = cls()
        stat.count, stat._mean, stat._m2 = int(count), mean, m2
        return stat

    def __repr__(self) -> str:
        return f"RunningStat(n={self.count}, mean={self.mean:.6g}, ci95={self.ci95:.6g})"
