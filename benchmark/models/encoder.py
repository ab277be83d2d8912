"""The encoder contract: pixels in [0, 1] in, unit-norm embeddings out, whatever library the model comes from.

An :class:`Encoder` takes pixels in [0, 1] (B x 3 x H x W), normalises them inside with its own mean and
std, and returns unit-norm image embeddings, so that attributions and attacks live in pixel space. It
encodes text prompts where the model has a text tower, and it is the one place that knows the image
tower's layout: its kind (``vit`` or ``cnn``), input size, residual blocks and their indexing
(:attr:`Encoder.blocks`, :meth:`Encoder.resolve_block`), the token layout between blocks
(:meth:`Encoder.batch_first`, :meth:`Encoder.cls_token`, :meth:`Encoder.patch_slice`,
:meth:`Encoder.token_grid`), the layer Grad-CAM (Selvaraju et al. 2017) weights
(:meth:`Encoder.feature_layer`), the rest of the tower after a cut (:meth:`Encoder.tail_after`, for M2IB)
and an explicit attention path per block (:meth:`Encoder.explicit_attention`, for attention maps,
Rollout and Grad-ECLIP).

One subclass per library lives in :mod:`aft_bench.models.backends` (open_clip, ``transformers`` CLIP, timm
classifiers), declared in ``ENCODER_BACKENDS``; only those files know the libraries' classes.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EncoderKind = Literal["vit", "cnn"]
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: An explicit attention forward: ``factory(store)`` returns the replacement ``forward(module, ...)``, which
#: calls ``store(probs=..., q=..., k=..., v=..., context=...)`` (all batch-first) on every call.
AttentionFactory = Callable[[Callable[..., None]], Callable[..., Any]]


class UnsupportedEncoderError(ValueError):
    """Raised when a method cannot serve an encoder (for example Rollout on a CNN)."""


class Encoder(nn.Module):
    """An image (and text) encoder seen through pixels in [0, 1] and unit-norm embeddings.

    Subclasses (one per library, :mod:`aft_bench.models.backends`) implement the abstract members; the token
    layout, normalisation, text cache and block indexing are shared here.

    Args:
        model: The library's model (kept as ``self.model``).
        tokenizer: Callable mapping a list of strings to what :meth:`text_features` takes; None without a text tower.
        name: The name the encoder was loaded under (used in results).
        mean: Per-channel normalisation mean the model was trained with.
        std: Per-channel normalisation standard deviation.
        card: Free-form provenance (backend, architecture, checkpoint, normalisation, training recipe).
    """

    #: The ``ENCODER_BACKENDS`` name of the subclass, written into the cards of the encoders it saves.
    backend: str = ""

    # ------------------------------------------------------------------ the backend protocol
    # Each subclass is its library's backend (:class:`aft_bench.models.backend.EncoderBackend`): it reads its spec
    # forms and its own checkpoints.
    @classmethod
    @abstractmethod
    def check_spec(cls, body: str) -> None:
        """Fails before any model is built on a spec body this backend cannot read (see ``EncoderBackend``)."""

    @classmethod
    @abstractmethod
    def from_spec(cls, body: str, name: str, device: str | torch.device = "cpu") -> Encoder:
        """The encoder of a spec body, named ``name`` (see ``EncoderBackend``)."""

    @classmethod
    @abstractmethod
    def from_card(cls, path: Path, card: dict[str, Any]) -> Encoder:
        """The encoder this backend saved at ``path``, rebuilt from its card (see ``EncoderBackend``)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[[Sequence[str]], Any] | None,
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

    # ------------------------------------------------------------------ what each backend provides
    @property
    @abstractmethod
    def visual(self) -> nn.Module:
        """The image tower: normalised pixels (B x 3 x H x W) -> un-normalised embeddings (B x D).

        The module AFT/FARE train (a deep copy of it), whose weights probes fingerprint.
        """

    @property
    @abstractmethod
    def kind(self) -> EncoderKind:
        """``"vit"`` or ``"cnn"``."""

    @property
    @abstractmethod
    def image_size(self) -> tuple[int, int]:
        """Input (height, width) the image tower expects."""

    def _vit_blocks(self) -> nn.ModuleList | nn.Sequential:
        """The ViT's residual blocks (ViT backends override)."""
        raise NotImplementedError

    def _patch_grid(self) -> tuple[int, int]:
        """The ViT's patch grid (ViT backends override)."""
        raise NotImplementedError

    def _stages(self) -> list[nn.Module]:
        """A CNN's stages, first first (CNN backends override); ``stage:I`` is the I-th, counted from 1."""
        raise UnsupportedEncoderError(f"encoder {self.name!r}: its image tower has no stages known to aft-bench")

    def tower_parts(self) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
        """The image tower's blocks (ViT) or stages (CNN), first first, as (label, key prefix in
        ``visual.state_dict()``), and the key prefixes of its stem (what runs before the first block).

        By default the blocks are labelled ``block<i>`` / ``stage<i>`` from 0 and the stem is every state-dict key
        before the first block's: modules register in the order they run in transformers' and timm's towers
        (embeddings, blocks, final norm and head). Backends whose order differs override this.
        """
        modules = list(self.blocks) if self.kind == "vit" else self._stages()
        names = {id(m): name for name, m in self.visual.named_modules()}
        label = "block" if self.kind == "vit" else "stage"
        parts = [(f"{label}{i}", names[id(m)]) for i, m in enumerate(modules)]
        keys = list(self.visual.state_dict())
        first = parts[0][1] + "."
        return parts, tuple(keys[:next(i for i, k in enumerate(keys) if k.startswith(first))])

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch grid in a ViT's sequence (the class token; timm adds register tokens)."""
        return 1

    @property
    def tokens_batch_first(self) -> bool:
        """Whether the ViT blocks run on B x N x C (else N x B x C)."""
        return True

    def text_features(self, tokens: Any) -> Tensor:
        """Un-normalised text embeddings of tokenised prompts (backends with a text tower override)."""
        raise UnsupportedEncoderError(self._no_text())

    def tail_after(self, block: int) -> Callable[[Tensor], Tensor]:
        """Batch-first tokens after ViT block ``block`` -> un-normalised embeddings (the rest of the tower)."""
        raise UnsupportedEncoderError(f"encoder {self.name!r}: no tower tail after a block")

    def explicit_attention(self, block: int) -> tuple[nn.Module, AttentionFactory]:
        """The attention module of ViT block ``block`` and the factory of its explicit forward.

        Raises:
            UnsupportedEncoderError: When the block's attention has no explicit path.
        """
        raise UnsupportedEncoderError(f"encoder {self.name!r}: no explicit attention path")

    def classifier(self) -> nn.Module:
        """The model's own classifier head (un-normalised embeddings -> class logits), for the ``head`` target.

        Raises:
            UnsupportedEncoderError: For encoders without one (CLIP models: use the text or probe target).
        """
        raise UnsupportedEncoderError(f"encoder {self.name!r} ({self.backend}) has no classifier head: the 'head' "
                                      "target needs a classifier (timm:NAME); use --option target=text or target=probe")

    @abstractmethod
    def save(self, path: Path, card: dict[str, Any]) -> Path:
        """Writes the encoder and ``card`` (with ``backend``) so that ``ckpt:PATH`` loads it back; returns PATH."""

    # ------------------------------------------------------------------ structure
    @property
    def has_text(self) -> bool:
        """Whether the encoder has a text tower (:meth:`encode_text` works)."""
        return self.tokenizer is not None

    def _no_text(self) -> str:
        return (f"encoder {self.name!r} ({self.backend}) has no text tower: the 'text' target and zero-shot heads "
                "need one; use --option target=head (its classifier) or target=probe (a linear probe)")

    def _require_vit(self, what: str) -> None:
        if self.kind != "vit":
            raise UnsupportedEncoderError(f"encoder {self.name!r} is a {self.kind}: it has no {what} "
                                          "(this needs a ViT image tower)")

    @property
    def num_blocks(self) -> int:
        """Number of transformer blocks (ViT) or stages (CNN)."""
        return len(self.blocks) if self.kind == "vit" else len(self._stages())

    @property
    def blocks(self) -> nn.ModuleList | nn.Sequential:
        """The residual attention blocks of a ViT image tower, first block first.

        Raises:
            UnsupportedEncoderError: For a CNN encoder.
        """
        self._require_vit("transformer blocks")
        return self._vit_blocks()

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
        gh, gw = self._patch_grid()
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
        return F.normalize(self.visual(self.normalize(pixels)).float(), dim=-1)

    encode_image = forward

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str]) -> Tensor:
        """Unit-norm text embeddings (N x D), not cached (for weights that change, as in training)."""
        if not self.has_text:
            raise UnsupportedEncoderError(self._no_text())
        tokens = self.tokenizer(list(texts))
        return F.normalize(self.text_features(tokens).float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Unit-norm text embeddings (N x D), cached per prompt.

        Raises:
            UnsupportedEncoderError: Naming the encoder, when it has no text tower.
        """
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            self._text_cache.update(zip(missing, self.embed_text(missing), strict=True))
        return torch.stack([self._text_cache[t] for t in texts])

    def train(self, mode: bool = True) -> Encoder:
        """Changes the mode and drops cached text embeddings (weights may change while training)."""
        self._text_cache.clear()
        return super().train(mode)

    # ------------------------------------------------------------------ token layout
    def batch_first(self, tokens: Tensor) -> Tensor:
        """A ViT block's token sequence as B x N x C.

        Blocks run batch-first (B x N x C) or, in some open_clip towers, sequence-first (N x B x C); a
        block's output (and a forward hook's view of it) has that layout. The conversion is a transpose or
        nothing, so it is its own inverse: :meth:`block_layout` (the same function) turns batch-first
        tokens back into the blocks' layout.

        Raises:
            UnsupportedEncoderError: For a CNN encoder (no token sequence).
        """
        self._require_vit("token sequence")
        return tokens if self.tokens_batch_first else tokens.transpose(0, 1)

    #: Batch-first tokens (B x N x C) in the layout the ViT blocks take (the inverse of :meth:`batch_first`).
    block_layout = batch_first

    def patch_slice(self, num_tokens: int) -> slice:
        """The positions of the patch tokens in a sequence of ``num_tokens`` tokens.

        Every backend puts the class token (and any other prefix token) first and the ``gh * gw`` patch
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
    def stage(self, index: int | None = None) -> nn.Module:
        """CNN stage ``index`` (1..n, default the last).

        Raises:
            ValueError: For an index out of range.
        """
        stages = self._stages()
        index = len(stages) if index is None else index
        if not 1 <= index <= len(stages):
            raise ValueError(f"stage {index} out of range 1..{len(stages)} for {type(self.visual).__name__} "
                             f"{self.name!r}")
        return stages[index - 1]

    def feature_layer(self, block: int | None = None) -> nn.Module:
        """The module whose output Grad-CAM weights.

        Args:
            block: ViT block index (negative counts from the end; default -2, the second to last, as the
                paper's code uses). CNNs use a stage (1..n, default the last).
        """
        if self.kind == "vit":
            return self.blocks[self.resolve_block(-2 if block is None else block)]
        return self.stage(block)

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

    def tail_after_stage(self, index: int) -> Callable[[Tensor], Tensor]:
        """CNN stage ``index``'s output (B x C x h x w) -> un-normalised embeddings, the rest of the tower.

        Runs the tower on placeholder pixels with a forward hook that puts ``features`` in place of the
        stage's output, so it serves any CNN (at the cost of running the stages before the cut again).
        """
        module = self.stage(index)
        height, width = self.image_size

        def tail(features: Tensor) -> Tensor:
            handle = module.register_forward_hook(lambda _m, _i, _o: features)
            try:
                placeholder = features.new_zeros((features.shape[0], 3, height, width))
                return self.visual(placeholder)
            finally:
                handle.remove()

        return tail
