"""The explicit attention path: per-block attention probabilities of a ViT on request.

Fused scaled-dot-product attention (``nn.MultiheadAttention`` with ``need_weights=False``,
``F.scaled_dot_product_attention`` in open_clip's ``Attention``, timm's ``Attention`` or ``transformers``'
SDPA CLIP attention) never materialises the attention probabilities that attention maps, Rollout
(Abnar & Zuidema 2020) and Grad-ECLIP (Zhao et al. 2024) need. :class:`AttentionRecorder` temporarily
replaces the attention computation of chosen ViT blocks with the explicit form
``softmax(Q K^T / sqrt(d)) V`` (Vaswani et al. 2017), records what was asked for, and restores the fused
path on exit. Recorded tensors stay in the autograd graph, so gradients with respect to them
(Grad-ECLIP's attention output) flow; the outputs equal the fused path's up to float rounding (tested).

Example::

    with AttentionRecorder(encoder, blocks=[-1], keep=("probs",)) as rec:
        embeddings = encoder(images)
    probs = rec.probs(-1)  # the last block's, B x heads x N x N

Which modules are the blocks, how block indices resolve and which explicit forward replaces each block's
attention is the encoder's knowledge (:attr:`~aft_bench.models.encoder.Encoder.blocks`,
:meth:`~aft_bench.models.encoder.Encoder.resolve_block`, :meth:`~aft_bench.models.encoder.Encoder.explicit_attention`;
the forwards live in the backend files of :mod:`aft_bench.models.backends`); they share
:func:`aft_bench.models.attention.explicit_attention`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import MethodType

from torch import Tensor, nn

from aft_bench.models.attention import HEAD_REDUCTIONS
from aft_bench.models.encoder import Encoder

RECORDABLE = frozenset({"probs", "q", "k", "v", "context"})


@dataclass
class AttentionRecord:
    """What one block's explicit attention computed in the last forward pass (all batch-first).

    Attributes:
        probs: Attention probabilities, B x heads x N x N (rows: queries, columns: keys).
        q: Queries, B x N x C (heads concatenated along channels, before the 1/sqrt(d) scaling).
        k: Keys, B x N x C.
        v: Values, B x N x C.
        context: Attention output before the output projection, B x N x C (``probs @ v`` per head,
            heads concatenated).
    """

    probs: Tensor | None = None
    q: Tensor | None = None
    k: Tensor | None = None
    v: Tensor | None = None
    context: Tensor | None = None


# ---------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Runs the body with every submodule in eval mode, then restores each one's own flag.

    Flags are set directly (not through ``Encoder.train``, which would drop the text cache), so that
    dropout cannot perturb attention and a caller in the middle of training keeps its mode.
    """
    modes = {m: m.training for m in module.modules()}
    for m in modes:
        m.training = False
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def reduce_heads(probs: Tensor, how: str) -> Tensor:
    """Reduces B x heads x N x N attention over heads with ``mean``, ``max`` or ``min`` (B x N x N)."""
    reduce = HEAD_REDUCTIONS.get(how)
    if reduce is None:
        raise ValueError(f"unknown head reduction {how!r}; choose from {sorted(HEAD_REDUCTIONS)}")
    return reduce(probs)


# ---------------------------------------------------------------------------------------- recorder
class AttentionRecorder:
    """Context manager computing the chosen ViT blocks' attention explicitly and recording it.

    While active, each chosen block's attention module runs the explicit path (same weights, same
    numbers as the fused path up to float rounding) and ``records[block]`` holds the tensors named in
    ``keep`` from the latest forward pass, still attached to the autograd graph when gradients are
    enabled. On exit the fused path is restored; the model itself is never modified otherwise.

    Args:
        encoder: A ViT :class:`~aft_bench.models.encoder.Encoder` of any backend.
        blocks: Block indices (negative counts from the end); ``None`` records every block.
        keep: Which of ``probs``, ``q``, ``k``, ``v``, ``context`` to record.

    Raises:
        UnsupportedEncoderError: For a CNN encoder or an attention module without an explicit path
            (:meth:`~aft_bench.models.encoder.Encoder.explicit_attention`).
        ValueError: For an unknown ``keep`` entry or a block out of range.
    """

    def __init__(self, encoder: Encoder, blocks: Iterable[int] | None = None, keep: Iterable[str] = ("probs",)) -> None:
        modules = encoder.blocks
        self.blocks = sorted({encoder.resolve_block(b) for b in (range(len(modules)) if blocks is None else blocks)})
        self.keep = frozenset(keep)
        unknown = self.keep - RECORDABLE
        if unknown:
            raise ValueError(f"cannot record {sorted(unknown)}; choose from {sorted(RECORDABLE)}")
        self.encoder = encoder
        self.records: dict[int, AttentionRecord] = {}
        self._patched: list[nn.Module] = []
        self._targets: list[tuple[nn.Module, Callable[..., object]]] = []
        for index in self.blocks:
            module, factory = encoder.explicit_attention(index)
            self._targets.append((module, factory(functools.partial(self._store, index))))

    def __enter__(self) -> AttentionRecorder:
        if self._patched:
            raise RuntimeError("AttentionRecorder is already active; it is not re-entrant")
        for module, forward in self._targets:
            if "forward" in module.__dict__:
                self._restore()
                raise RuntimeError(f"{type(module).__name__} of {self.encoder.name!r} already has a patched forward")
            module.forward = MethodType(forward, module)
            self._patched.append(module)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        for module in self._patched:
            del module.forward
        self._patched.clear()

    def _store(self, index: int, **tensors: Tensor) -> None:
        self.records[index] = AttentionRecord(**{k: v for k, v in tensors.items() if k in self.keep})

    def probs(self, block: int) -> Tensor:
        """The recorded attention probabilities (B x heads x N x N) of ``block``."""
        return self.get(block, "probs")

    def get(self, block: int, field: str) -> Tensor:
        """The recorded tensor ``field`` (one of ``probs``, ``q``, ``k``, ``v``, ``context``) of ``block``.

        Raises:
            KeyError: If the field was not recorded for that block (not kept, or no forward pass yet).
        """
        index = self.encoder.resolve_block(block)
        record = self.records.get(index)
        value = None if record is None else getattr(record, field)
        if value is None:
            raise KeyError(
                f"no {field!r} recorded for block {index}: record it with blocks containing {index} and "
                f"keep containing {field!r}, and run a forward pass inside the context"
            )
        return value
