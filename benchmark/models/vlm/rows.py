"""Only the attention rows a composite map needs, taken during one ordinary forward of a LLaVA model.

A composite map (:mod:`aft_bench.models.vlm.composite`) reads, per response token, one attention row per LLM layer (the
row of the token's query position over the sequence, mean over heads) and the vision tower's head-mean patch
matrices up to the VLM's feature layer. Asking ``transformers`` for ``output_attentions=True`` would keep every
layer's full ``B x H x S x S`` tensor (for LLaVA-1.5-7B at 576 image tokens: 32 layers x 32 heads x ~650^2 values
per image); instead this module registers an attention function, :data:`IMPLEMENTATION`, with transformers'
``AttentionInterface``. It computes each layer's output with PyTorch's fused ``scaled_dot_product_attention``
(transformers' ``sdpa`` path, unchanged numbers) and, only while a :class:`RowCollector` is attached to the model
and only for the modules it watches, the softmax of the needed rows, averaged over heads on the spot:

* LLM layers: ``B x R x S`` for the R query positions asked for (the rest of the ``S x S`` scores never exist);
* vision layers up to the feature layer: ``B x T x T`` (T = CLS + patches), the head mean.

Outside a collector (``generate``) the function is transformers' ``sdpa`` attention itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

IMPLEMENTATION = "aft_rows"
"""The ``attn_implementation`` name under which the row-keeping attention is registered."""
SLOT = "_aft_rows_slot"
"""The attribute a :class:`RowCollector` sets on each module it watches while it is attached."""


@dataclass
class RowCollector:
    """What one forward keeps: per watched LLM layer the head-mean rows of ``positions``, per watched vision layer
    the head-mean attention matrix.

    Attributes:
        positions: The R query positions whose rows the LLM layers keep (the same for every sample of the batch).
        llm: Per LLM layer index (in the order of the layers), ``B x R x S`` float32 rows.
        vision: Per vision layer index, ``B x T x T`` float32 head-mean attention.
    """

    positions: Tensor
    llm: dict[int, Tensor] = field(default_factory=dict)
    vision: dict[int, Tensor] = field(default_factory=dict)

    def llm_rows(self) -> Tensor:
        """``B x L x R x S``: the kept LLM rows, layers in index order."""
        return torch.stack([self.llm[i] for i in sorted(self.llm)], dim=1)

    def vision_layers(self) -> list[Tensor]:
        """The kept vision matrices (each ``B x T x T``), layers in index order."""
        return [self.vision[i] for i in sorted(self.vision)]


@dataclass(frozen=True)
class _Slot:
    collector: RowCollector
    kind: str
    index: int


def _allowed(attention_mask: Tensor | None, positions: Tensor, length: int, causal: bool,
             device: torch.device) -> tuple[Tensor | None, Tensor | None]:
    """(boolean keep-mask, additive mask) of the rows ``positions`` (each broadcastable to B x H x R x S)."""
    if attention_mask is None:
        if not causal:
            return None, None
        keys = torch.arange(length, device=device)
        return keys[None, :] <= positions[:, None], None
    rows = attention_mask[..., positions, :]
    if rows.dtype == torch.bool:
        return rows, None
    return None, rows.float()


def head_mean_rows(module: nn.Module, query: Tensor, key: Tensor, attention_mask: Tensor | None,
                   scaling: float | None, positions: Tensor | None) -> Tensor:
    """The softmax attention of the query ``positions`` (all positions when None), mean over heads, in float32.

    Args:
        module: The attention module (its ``num_key_value_groups`` and ``is_causal`` are read).
        query: B x H x Q x D queries. key: B x H_kv x S x D keys (grouped-query keys are repeated).
        attention_mask: The mask transformers passed (None, boolean keep-mask, or additive float), B x 1 x Q x S.
        scaling: The score scale (default ``D ** -0.5``).
        positions: The R query positions to keep.

    Returns:
        B x R x S float32 rows, each summing to 1 over the positions it may attend to.
    """
    keys = repeat_kv(key, int(getattr(module, "num_key_value_groups", 1)))
    rows = torch.arange(query.shape[2], device=query.device) if positions is None else positions.to(query.device)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query[:, :, rows].float(), keys.float().transpose(-1, -2)) * scale
    keep, additive = _allowed(attention_mask, rows, keys.shape[2], bool(getattr(module, "is_causal", False)),
                              query.device)
    if additive is not None:
        scores = scores + additive
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, dim=-1).mean(dim=1)


def rows_attention_forward(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                           attention_mask: Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                           **kwargs: Any) -> tuple[Tensor, None]:
    """transformers' ``sdpa`` attention, plus the rows a watching :class:`RowCollector` keeps (see the module)."""
    slot: _Slot | None = getattr(module, SLOT, None)
    if slot is not None:
        if slot.kind == "llm":
            slot.collector.llm[slot.index] = head_mean_rows(module, query, key, attention_mask, scaling,
                                                            slot.collector.positions)
        else:
            slot.collector.vision[slot.index] = head_mean_rows(module, query, key, attention_mask, scaling, None)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  **kwargs)


AttentionInterface.register(IMPLEMENTATION, rows_attention_forward)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


@contextmanager
def collecting(llm_modules: Sequence[nn.Module], vision_modules: Sequence[nn.Module],
               positions: Sequence[int] | Tensor) -> Iterator[RowCollector]:
    """Attaches a :class:`RowCollector` to the attention modules given (the model must run with
    ``attn_implementation=IMPLEMENTATION``) for the duration of the block; detaches it whatever happens."""
    collector = RowCollector(torch.as_tensor(positions, dtype=torch.long))
    watched = [(m, "llm", i) for i, m in enumerate(llm_modules)] + [(m, "vision", i) for i, m in
                                                                     enumerate(vision_modules)]
    try:
        for module, kind, index in watched:
            setattr(module, SLOT, _Slot(collector, kind, index))
        yield collector
    finally:
        for module, _, _ in watched:
            if hasattr(module, SLOT):
                delattr(module, SLOT)
