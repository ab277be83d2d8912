"""Neuron activations of an encoder layer, for CLIP-Dissect and Network Dissection.

A layer is named by a spec string: ``block:I`` is transformer block I of a ViT (negative counts from
the end: ``block:-1`` is the last block, whose CLS token the AFT paper dissects, section 4.2), and
``stage:I`` a convolutional stage of a CNN (``stage:4``: the last stage of a ModifiedResNet). Two
readouts, each through a forward hook that is removed as soon as the forward pass ends:

- :func:`neuron_activations`: one number per neuron and image (B x U), the CLS token's features for a
  ViT block and the spatial mean of each channel for a CNN stage (CLIP-Dissect, Oikarinen & Weng 2022);
- :func:`spatial_activations`: one map per unit (B x U x h x w), the ViT patch tokens laid on their grid
  or the CNN stage's feature map (Network Dissection, Bau et al. 2017).

Tasks feed the samples to either through the one streaming loop (:mod:`aft_bench.evaluation.streaming`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from aft_bench.models.encoder import Encoder, UnsupportedEncoderError

log = logging.getLogger(__name__)

#: the layer kind each encoder kind is addressed by
LAYER_KINDS: dict[str, str] = {"vit": "block", "cnn": "stage"}


@dataclass(frozen=True)
class LayerSpec:
    """A named layer: ``kind`` ("block" for ViTs, "stage" for CNNs) and its index."""

    kind: str
    index: int

    @classmethod
    def parse(cls, text: str) -> LayerSpec:
        """Reads ``"block:-1"``, ``"stage:4"``, ...

        Raises:
            ValueError: For any other form.
        """
        kind, sep, index = str(text).partition(":")
        kind = kind.strip()
        if not sep or kind not in LAYER_KINDS.values():
            raise ValueError(f"layer {text!r}: use 'block:I' (ViT block, -1 = last) or 'stage:I' (CNN stage, 1..4)")
        try:
            return cls(kind, int(index))
        except ValueError:
            raise ValueError(f"layer {text!r}: the index after ':' must be an integer") from None

    def __str__(self) -> str:
        return f"{self.kind}:{self.index}"


def resolve_layer(encoder: Encoder, spec: str | None, defaults: dict[str, str]) -> LayerSpec:
    """The layer ``spec`` names, or ``defaults[encoder.kind]`` when it is None; checked against the encoder.

    Raises:
        UnsupportedEncoderError: When the layer kind does not fit the encoder (a block of a CNN).
        ValueError: When the index is out of range.
    """
    layer = LayerSpec.parse(defaults[encoder.kind] if spec in (None, "", "auto") else spec)
    expected = LAYER_KINDS[encoder.kind]
    if layer.kind != expected:
        raise UnsupportedEncoderError(
            f"layer {layer} does not exist in {encoder.kind} encoder {encoder.name!r}; name a {expected} "
            f"('{expected}:I')"
        )
    layer_module(encoder, layer)  # validates the index
    return layer


def layer_module(encoder: Encoder, layer: LayerSpec) -> nn.Module:
    """The module whose output ``layer`` denotes."""
    return encoder.feature_layer(layer.index)


@contextmanager
def capture(module: nn.Module) -> Iterator[list[Tensor]]:
    """Records ``module``'s outputs into the yielded list while the block runs; the hook is always removed."""
    outputs: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        outputs.append(output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(hook)
    try:
        yield outputs
    finally:
        handle.remove()


def forward_with_layer(encoder: Encoder, pixels: Tensor, layer: LayerSpec) -> tuple[Tensor, Tensor]:
    """One no-grad forward pass of pixels in [0, 1]: (unit-norm image embeddings, raw output of ``layer``)."""
    with capture(layer_module(encoder, layer)) as outputs, torch.no_grad():
        embeddings = encoder(pixels.to(encoder.device))
    if not outputs:
        raise RuntimeError(f"layer {layer} of {encoder.name!r} was not reached by the forward pass")
    return embeddings, outputs[-1]


def _vit_cls(encoder: Encoder, output: Tensor) -> Tensor:
    return encoder.cls_token(output)


def _cnn_mean(encoder: Encoder, output: Tensor) -> Tensor:
    return output.mean(dim=(2, 3))


_NEURON_READERS: dict[str, Callable[[Encoder, Tensor], Tensor]] = {"vit": _vit_cls, "cnn": _cnn_mean}


def neuron_readout(encoder: Encoder, output: Tensor) -> Tensor:
    """B x U neurons of a raw layer output: the CLS token's features (ViT) or channel means (CNN)."""
    return _NEURON_READERS[encoder.kind](encoder, output).float()


def neuron_activations(encoder: Encoder, pixels: Tensor, layer: LayerSpec) -> Tensor:
    """B x U neuron activations of ``layer`` (see :func:`neuron_readout`)."""
    return neuron_readout(encoder, forward_with_layer(encoder, pixels, layer)[1])


def spatial_activations(encoder: Encoder, pixels: Tensor, layer: LayerSpec) -> Tensor:
    """B x U x h x w unit maps: patch tokens on the ViT grid (CLS dropped) or the CNN stage's maps."""
    return encoder.to_spatial(forward_with_layer(encoder, pixels, layer)[1]).float()
