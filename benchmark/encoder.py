"""The encoder layer: one wrapper around any open_clip CLIP model.

An :class:`Encoder` takes pixels in [0, 1] (B x 3 x H x W), normalises them inside, and returns
unit-norm image embeddings, so that attributions and attacks live in pixel space. It also encodes
text prompts with the model's own tokenizer and exposes the activations that Grad-CAM (Selvaraju et
al. 2017) needs: a ViT block's token sequence reshaped to the patch grid, or a CNN's last stage.
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
            return len(self.visual.transformer.resblocks)
        return 4

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

    # ------------------------------------------------------------------ activations
    def feature_layer(self, block: int | None = None) -> nn.Module:
        """The module whose output Grad-CAM weights.

        Args:
            block: ViT block index (negative counts from the end; default -2, the second to last,
                as the paper's code uses). CNNs use their last convolutional stage; ``block`` selects
                stage 1..4 of a ModifiedResNet.
        """
        if self.kind == "vit":
            blocks = self.visual.transformer.resblocks
            index = -2 if block is None else block
            if not -len(blocks) <= index < len(blocks):
                raise ValueError(f"block {index} out of range for {self.name!r} with {len(blocks)} blocks")
            return blocks[index]
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

        For ViTs the output is the token sequence: batch-first (B x N x C) in current open_clip,
        sequence-first in old releases; the CLS token (and any other prefix token) is dropped and
        the patch tokens are laid on the grid row by row.
        """
        if self.kind != "vit":
            return activation
        if not getattr(self.visual.transformer, "batch_first", True):
            activation = activation.transpose(0, 1)
        gh, gw = self.grid_size
        batch, tokens, channels = activation.shape
        patches = activation[:, tokens - gh * gw :]
        return patches.reshape(batch, gh, gw, channels).permute(0, 3, 1, 2)
