"""Scores of an answer's per-token maps: the best value over the response tokens (paper appendix A.4).

Appendix A.4 scores each image by the best value, per metric, over the maps of the tokens of the model's answer:
the maximum for a metric where higher is better, the minimum where lower is. An answer with no token has no map
and is excluded from the scores (and counted) instead of scoring zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

NO_TOKENS = "the answer has no tokens"
"""Exclusion reason of an image whose answer is empty."""


def best_over_tokens(per_token: Sequence[Mapping[str, float]], higher_is_better: Mapping[str, bool]
                     ) -> dict[str, float] | None:
    """The best value of each metric over the tokens' scores, or None for an answer with no tokens.

    Args:
        per_token: One ``{metric: value}`` per response token (the same metrics for every token).
        higher_is_better: Each metric's direction.

    Raises:
        ValueError: If a token lacks a metric or a metric has no direction.
    """
    if not per_token:
        return None
    names = set(per_token[0])
    for i, scores in enumerate(per_token):
        if set(scores) != names:
            raise ValueError(f"best_over_tokens: token {i} has the metrics {sorted(scores)}, token 0 {sorted(names)}")
    unknown = names - set(higher_is_better)
    if unknown:
        raise ValueError(f"best_over_tokens: no direction for {sorted(unknown)}")
    pick = {name: max if higher_is_better[name] else min for name in names}
    return {name: float(pick[name](scores[name] for scores in per_token)) for name in sorted(names)}
