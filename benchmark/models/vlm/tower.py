"""The encoder under test as a VLM's vision tower (paper section 4.3: LLaVA with the original and the AFT encoder).

LLaVA's vision tower is a ``transformers`` ``CLIPVisionModel``; the encoder under test replaces its weights, the
projector and language model stay (as robust-CLIP work evaluates LLaVA with FARE or TeCoA towers). The weights
come from the encoder's own ``transformers`` CLIP tower, or, for an open_clip ViT (the toy CLIP and every
open_clip CLIP), through :mod:`aft_bench.models.convert`. An encoder whose tower does not fit, by any number of
the tower's config (width, layers, heads, MLP width, patch, image size, activation, layer-norm epsilon) or by kind
(a CNN, a timm model), is refused by name before any sample is scored: :func:`tower_state` raises
:class:`~aft_bench.models.encoder.UnsupportedEncoderError` naming each mismatch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn
from transformers import CLIPVisionConfig

from aft_bench.models.convert import open_clip_to_hf_state, vision_config
from aft_bench.models.encoder import Encoder, UnsupportedEncoderError
from aft_bench.models.vlm.loading import VLM

FIT_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
              "patch_size", "hidden_act", "layer_norm_eps")
"""The ``CLIPVisionConfig`` numbers on which an encoder must agree with the VLM's tower."""
VISION_PREFIX = "vision_model."


def _open_clip_tower(encoder: Encoder) -> tuple[CLIPVisionConfig, Callable[[], dict[str, Tensor]]]:
    visual = encoder.model.visual
    config = vision_config(visual)
    return config, lambda: open_clip_to_hf_state(visual.state_dict(), config.num_hidden_layers)


def _transformers_tower(encoder: Encoder) -> tuple[CLIPVisionConfig, Callable[[], dict[str, Tensor]]]:
    vision = encoder.model.vision_model
    return vision.config, lambda: {VISION_PREFIX + k: v for k, v in vision.state_dict().items()}


TOWERS: dict[str, Callable[[Encoder], tuple[CLIPVisionConfig, Callable[[], dict[str, Tensor]]]]] = {
    "open_clip": _open_clip_tower, "transformers": _transformers_tower,
}
"""Encoder backend -> (its tower's CLIP vision config, a function giving its weights in ``CLIPVisionModel`` keys)."""


def mismatches(config: CLIPVisionConfig, target: CLIPVisionConfig) -> list[str]:
    """``field: encoder value != tower value`` for each :data:`FIT_FIELDS` number that differs."""
    out = []
    for name in FIT_FIELDS:
        mine, theirs = getattr(config, name), getattr(target, name)
        same = abs(mine - theirs) <= 1e-12 if isinstance(mine, float) else mine == theirs
        if not same:
            out.append(f"{name} {mine!r} != {theirs!r}")
    return out


def _tower_of(encoder: Encoder, vlm: VLM) -> tuple[CLIPVisionConfig, Callable[[], dict[str, Tensor]]]:
    backend = getattr(encoder, "backend", "")
    if encoder.kind != "vit" or backend not in TOWERS:
        raise UnsupportedEncoderError(
            f"encoder {encoder.name!r} ({backend or type(encoder).__name__}, {encoder.kind}) cannot be the vision "
            f"tower of VLM {vlm.spec!r}: only CLIP ViTs of the open_clip or transformers backends map onto its "
            "CLIP vision model")
    try:
        return TOWERS[backend](encoder)
    except UnsupportedEncoderError as exc:
        raise UnsupportedEncoderError(f"encoder {encoder.name!r} cannot be the vision tower of VLM {vlm.spec!r}: "
                                      f"{exc}") from exc


def check_tower(encoder: Encoder, vlm: VLM) -> None:
    """Refuses an encoder that does not fit the VLM's tower, naming every mismatch (no weights are touched).

    Raises:
        UnsupportedEncoderError: For a non-ViT, a ViT without a CLIP counterpart, or differing config numbers.
    """
    config, _ = _tower_of(encoder, vlm)
    bad = mismatches(config, vlm.vision_config)
    if bad:
        raise UnsupportedEncoderError(f"encoder {encoder.name!r} does not fit the vision tower of VLM {vlm.spec!r} "
                                      f"(encoder != tower): {'; '.join(bad)}")


def tower_state(encoder: Encoder, vlm: VLM) -> dict[str, Tensor]:
    """The encoder's weights in the keys of a CLIP vision transformer (``embeddings.*``, ``pre_layrnorm.*``,
    ``encoder.*``, ``post_layernorm.*``; checked by :func:`check_tower`)."""
    check_tower(encoder, vlm)
    _, weights = _tower_of(encoder, vlm)
    return {k.removeprefix(VISION_PREFIX): v for k, v in weights().items() if k.startswith(VISION_PREFIX)}


def install_tower(encoder: Encoder, vlm: VLM) -> dict[str, Any]:
    """Loads the encoder's weights into the VLM's tower (strict, in the VLM's dtype and device).

    Returns:
        What the swap changed: ``{"encoder": name, "tensors": count}``.

    Raises:
        UnsupportedEncoderError: If the encoder does not fit (see :func:`check_tower`).
        RuntimeError: If the tower's keys and the encoder's differ (a bug in the mapping).
    """
    state = tower_state(encoder, vlm)
    tower: nn.Module = vlm.vision_body
    own = tower.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("position_ids")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise RuntimeError(f"tower swap of {encoder.name!r}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    tower.load_state_dict({k: v.to(device=own[k].device, dtype=own[k].dtype) for k, v in state.items()},
                          strict=False)
    return {"encoder": encoder.name, "tensors": len(state)}
