"""What ROAR and ROAD share: removal options, the methods to score (with the random baseline) and the curve
metrics ``acc@<k>`` and ``auc``.

Both remove the top-k% pixels of each image by its saliency map (Hooker et al. 2019; Rong et al. 2022), for a list
of fractions, and report the accuracy left after each removal and the normalised area under that curve. With
``order=morf`` (most relevant first, the default) a lower accuracy means a better map; with ``order=lerf`` a
higher one. ``random`` is the random-removal baseline every map must beat.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from aft_bench.attributions.base import Attribution
from aft_bench.attributions.random import RandomBaseline
from aft_bench.core.options import one_of, option
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.map_task import MapOptions
from aft_bench.metrics.base import Metric
from aft_bench.metrics.removal import ORDERS, check_fraction, fraction_label
from aft_bench.models.encoder import Encoder

RANDOM = "random"
"""Name of the random-removal baseline row."""
DEFAULT_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
HIGHER_IS_BETTER: dict[str, bool] = {"morf": False, "lerf": True}
"""Per removal order: whether a higher accuracy means a better map."""


def parse_fractions(value: Any, key: str) -> tuple[float, ...]:
    """Option ``fractions``: one number or a list of distinct numbers in [0, 1] (sorted ascending here)."""
    items = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    try:
        fractions = tuple(sorted(check_fraction(f) for f in items))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"option {key}={value!r}: give shares in [0, 1], e.g. --option {key}=[0.1,0.5,0.9]"
                         ) from exc
    if not fractions or len({fraction_label(f) for f in fractions}) != len(fractions):
        raise ValueError(f"option {key}={value!r}: give at least one fraction, each once")
    return fractions


@dataclass(frozen=True)
class RemovalOptions(MapOptions):
    """The options ROAR and ROAD share (besides the target and probe of every map task)."""

    fractions: tuple[float, ...] = option(DEFAULT_FRACTIONS, parse=parse_fractions, help="removal fractions")
    order: str = option("morf", parse=one_of(*ORDERS), help="morf: most relevant first; lerf: least relevant first")
    random_baseline: bool = option(True, help="add the random-removal row")


def removal_methods(ctx: RunContext, encoder: Encoder, refused: list[str]) -> Iterator[tuple[str, Attribution]]:
    """The run's attributions that serve ``encoder`` (refusals collected), then ``random`` unless switched off."""
    yield from ctx.attributions(encoder, refused)
    if ctx.options.random_baseline and RANDOM not in ctx.config.attributions:
        yield RANDOM, RandomBaseline(seed=ctx.config.seed)


def curve_metrics(fractions: Sequence[float], order: str) -> tuple[Metric, ...]:
    """The metric objects of removal curves: ``acc@<k>`` per fraction and ``auc``, with the order's direction."""
    better = HIGHER_IS_BETTER[order]
    return (*(Metric(name=f"acc@{fraction_label(f)}", higher_is_better=better,
                     description=f"accuracy after removing {fraction_label(f)} of the pixels ({order})")
              for f in fractions),
            Metric(name="auc", higher_is_better=better, description=f"normalised area under the curve ({order})"))
