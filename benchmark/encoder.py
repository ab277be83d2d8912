"""The encoder layer: one wrapper around any open_clip CLIP model.

An :class:`Encoder` takes pixels in [0, 1] (B x 3 x H x W), normalises them inside, and returns
unit-norm image embeddings, so that attributions and attacks live in pixel space. It also encodes
text prompts with the model's own tokenizer and exposes the activations that Grad-CAM (Selvaraju et
al. 2017) needs: a ViT block's token sequence reshaped to the patch grid, or a CNN's last stage.

It is the one place that knows a ViT tower's token layout: its residual blocks and their indexing
(:attr:`Encoder.blocks`, :meth:`Encoder.resolve_block`), the layout of the token sequence between
blocks (batch-first or sequence-first, :meth:`Encoder.batch_first`), where the class token and the
patch tokens sit in it (:meth:`Encoder.cls_token`, :meth:`Encoder.patch_slice`) and how the patch
tokens lie on the grid (:meth:`Encoder.token_grid`). Attention methods, M2IB, Grad-CAM and the
neuron readouts all read the layout from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from torch import Tensor, nn

EncoderKind = Literal["vit", "cnn"]
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class UnsupportedEncoderError(ValueError):
    """Raised when a method cannot serve an encoder (for example Rollout on a CNN)."""


class Encoder(nn.Module):
    """An open_clip CLIP model seen through pixels in [0, 1] and unit-norm embeddings.

    Args:
        model: An open_clip ``CLIP`` model (ViT, ModifiedResNet or timm image tower).
        tokenizer: Callable mapping a list of strings to a LongTensor of token ids.
        name: The name the encoder was loaded under (used in results).
        mean: Per-channel normalisation mean the model was trained with.
        std: Per-channel normalisation standard deviation.
        card: Free-form provenance (architecture, pretrained tag, checkpoint, training recipe).
    """

    def __init__(
        self,
        model: CLIP,
        tokenizer: Callable[[Sequence[str]], Tensor],
        name: str,
        mean: Sequence[float] = OPENAI_MEAN,
        std: Sequence[float] = OPENAI_STD,
        card: dict | None = None,
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.card = dict(card or {})
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self._text_cache: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ structure
    @property
    def visual(self) -> nn.Module:
        """The image tower (``model.visual``)."""
        return self.model.visual

    @property
    def kind(self) -> EncoderKind:
        """``"vit"`` for an open_clip VisionTransformer, ``"cnn"`` otherwise."""
        return "vit" if isinstance(self.visual, VisionTransformer) else "cnn"

    @property
    def image_size(self) -> tuple[int, int]:
        """Input (height, width) the image tower expects."""
        size = getattr(self.visual, "image_size", None)
        if size is None:
            raise UnsupportedEncoderError(f"encoder {self.name!r}: its image tower declares no image_size")
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    @property
    def num_blocks(self) -> int:
        """Number of transformer blocks (ViT) or residual stages (ModifiedResNet: 4)."""
        if self.kind == "vit":
            return len(self.blocks)
        return 4

    @property
    def _transformer(self) -> nn.Module:
        """The ViT tower's transformer (its blocks and their token layout); raises for other towers."""
        if self.kind != "vit":
            raise UnsupportedEncoderError(
                f"encoder {self.name!r} is a {self.kind}: it has no transformer blocks (this needs an open_clip "
                "ViT image tower)"
            )
        return self.visual.transformer

    @property
    def blocks(self) -> nn.ModuleList:
        """The residual attention blocks of a ViT image tower, first block first.

        Raises:
            UnsupportedEncoderError: If the image tower is not an open_clip VisionTransformer.
        """
        return self._transformer.resblocks

    def resolve_block(self, index: int) -> int:
        """The non-negative position of ViT block ``index`` (negative counts from the end: -1 is the last).

        Raises:
            ValueError: If ``index`` is outside ``-num_blocks .. num_blocks - 1``.
            UnsupportedEncoderError: For a CNN encoder.
        """
        depth = len(self.blocks)
        if not -depth <= index < depth:
            raise ValueError(f"block {index} out of range for {self.name!r} with {depth} blocks")
        return index % depth

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid (ViT) of the token activations."""
        if self.kind != "vit":
            raise UnsupportedEncoderError(f"encoder {self.name!r} is a CNN and has no patch grid")
        gh, gw = self.visual.grid_size
        return int(gh), int(gw)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    # ------------------------------------------------------------------ embeddings
    def normalize(self, pixels: Tensor) -> Tensor:
        """Maps pixels in [0, 1] to the model's normalised input space."""
        return (pixels - self.mean.to(pixels.dtype)) / self.std.to(pixels.dtype)

    def forward(self, pixels: Tensor) -> Tensor:
        """Unit-norm image embeddings (B x D) of pixels in [0, 1] (B x 3 x H x W)."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"encoder {self.name!r} expects B x 3 x H x W pixels, got shape {tuple(pixels.shape)}")
        feats = self.model.encode_image(self.normalize(pixels))
        return F.normalize(feats.float(), dim=-1)

    encode_image = forward

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Unit-norm text embeddings (N x D), cached per prompt."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            tokens = self.tokenizer(list(missing)).to(self.device)
            feats = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            self._text_cache.update(zip(missing, feats, strict=True))
        return torch.stack([self._text_cache[t] for t in texts])

    def train(self, mode: bool = True) -> Encoder:
        """Changes the mode and drops cached text embeddings (weights may change while training)."""
        self._text_cache.clear()
        return super().train(mode)

    # ------------------------------------------------------------------ token layout
    def batch_first(self, tokens: Tensor) -> Tensor:
        """A ViT block's token sequence as B x N x C.

        open_clip runs the blocks batch-first (B x N x C) by default and sequence-first (N x B x C) when
        the tower's transformer has ``batch_first=False``; a block's output (and a forward hook's view of
        it) has that layout. The conversion is a transpose or nothing, so it is its own inverse:
        :meth:`block_layout` (the same function) turns batch-first tokens back into the blocks' layout.

        Raises:
            UnsupportedEncoderError: For a CNN encoder (no token sequence).
        """
        return tokens if getattr(self._transformer, "batch_first", True) else tokens.transpose(0, 1)

    #: Batch-first tokens (B x N x C) in the layout the ViT blocks take (the inverse of :meth:`batch_first`).
    block_layout = batch_first

    def patch_slice(self, num_tokens: int) -> slice:
        """The positions of the patch tokens in a sequence of ``num_tokens`` tokens.

        open_clip puts the class token (and any other prefix token) first and the ``gh * gw`` patch
        tokens, row by row, last.

        Raises:
            UnsupportedEncoderError: For a CNN, or when ``num_tokens`` cannot hold a class token and the grid.
        """
        gh, gw = self.grid_size
        if num_tokens < gh * gw + 1:
            raise UnsupportedEncoderError(
                f"encoder {self.name!r}: {num_tokens} tokens cannot hold a class token and a {gh}x{gw} patch grid"
            )
        return slice(num_tokens - gh * gw, num_tokens)

    def cls_token(self, tokens: Tensor) -> Tensor:
        """The class token (B x C) of a ViT block's output in the blocks' layout (see :meth:`batch_first`)."""
        return self.batch_first(tokens)[:, 0]

    def token_grid(self, values: Tensor) -> Tensor:
        """Per-patch values (B x gh*gw x ...) laid on the patch grid row by row (B x gh x gw x ...)."""
        gh, gw = self.grid_size
        return values.reshape(values.shape[0], gh, gw, *values.shape[2:])

    # ------------------------------------------------------------------ activations
    def feature_layer(self, block: int | None = None) -> nn.Module:
        """The module whose output Grad-CAM weights.

        Args:
            block: ViT block index (negative counts from the end; default -2, the second to last,
                as the paper's code uses). CNNs use their last convolutional stage; ``block`` selects
                stage 1..4 of a ModifiedResNet.
        """
        if self.kind == "vit":
            return self.blocks[self.resolve_block(-2 if block is None else block)]
        if isinstance(self.visual, ModifiedResNet):
            stage = 4 if block is None else block
            if stage not in (1, 2, 3, 4):
                raise ValueError(f"stage {stage} out of range 1..4 for ModifiedResNet {self.name!r}")
            return getattr(self.visual, f"layer{stage}")
        trunk = getattr(self.visual, "trunk", None)
        stages = getattr(trunk, "stages", None)
        if stages is None:
            raise UnsupportedEncoderError(
                f"encoder {self.name!r}: no convolutional stage found in {type(self.visual).__name__}"
            )
        return stages[-1 if block is None else block]

    def to_spatial(self, activation: Tensor) -> Tensor:
        """Reshapes a :meth:`feature_layer` output to B x C x h x w.

        For ViTs the output is the token sequence in the blocks' layout; the class token (and any other
        prefix token) is dropped and the patch tokens are laid on the grid row by row.
        """
        if self.kind != "vit":
            return activation
        tokens = self.batch_first(activation)
        patches = tokens[:, self.patch_slice(tokens.shape[1])]
        return self.token_grid(patches).permute(0, 3, 1, 2)
