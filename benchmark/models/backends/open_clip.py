"""The open_clip backend: any open_clip ``CLIP`` (ViT, ModifiedResNet or timm image tower) as an Encoder.

Spec forms (the default backend of :mod:`aft_bench.models.loading`): ``ARCH:TAG``, ``hf-hub:ORG/NAME`` (open_clip's
own hub models), ``ARCH[:TAG]@PATH`` and ``ckpt:PATH`` cards without a ``backend`` entry; the models are built and read
by :mod:`aft_bench.models.backends.open_clip_models`. The explicit attention
paths replace ``nn.MultiheadAttention`` (the default blocks) and open_clip's ``Attention``
(``CustomResidualAttentionBlock``) with :func:`aft_bench.models.attention.explicit_attention`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import open_clip
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import Attention, ResidualAttentionBlock, VisionTransformer
from safetensors.torch import save_file
from torch import Tensor, nn

from aft_bench.core.atomic import atomic_write, atomic_write_text
from aft_bench.core.registries import ENCODER_BACKENDS, ENCODERS
from aft_bench.core.registry import UnknownNameError
from aft_bench.models.attention import additive_mask, explicit_attention
from aft_bench.models.backends.open_clip_models import (
    HUB_PREFIX,
    apply_state_dict,
    build_model,
    model_config,
    tokenizer_for,
    weights_access,
)
from aft_bench.models.checkpoints import CARD_SUFFIX, load_state_dict_safely
from aft_bench.models.encoder import (
    AttentionFactory,
    Encoder,
    EncoderKind,
    UnsupportedEncoderError,
)

log = logging.getLogger(__name__)

OTHER_FORMS = ("ARCH:TAG", "hf-hub:NAME", "ckpt:PATH", "hf:ORG/NAME", "timm:NAME")
"""The spec forms an unknown plain name is told about, beside the registered names."""


@ENCODER_BACKENDS.register("open_clip", default=True,
                           help="open_clip CLIP models: ARCH:TAG, hf-hub:ORG/NAME, ARCH[:TAG]@PATH, ckpt:PATH")
class OpenClipEncoder(Encoder):
    """An open_clip ``CLIP`` model (``model.visual`` is the image tower, ``model.encode_text`` the text tower)."""

    backend: ClassVar[str] = "open_clip"

    @property
    def visual(self) -> nn.Module:
        return self.model.visual

    @property
    def kind(self) -> EncoderKind:
        """``"vit"`` for an open_clip VisionTransformer, ``"cnn"`` otherwise."""
        return "vit" if isinstance(self.visual, VisionTransformer) else "cnn"

    @property
    def image_size(self) -> tuple[int, int]:
        size = getattr(self.visual, "image_size", None)
        if size is None:
            raise UnsupportedEncoderError(f"encoder {self.name!r}: its image tower declares no image_size")
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def _vit_blocks(self) -> nn.ModuleList:
        return self.visual.transformer.resblocks

    def _patch_grid(self) -> tuple[int, int]:
        return tuple(self.visual.grid_size)

    @property
    def tokens_batch_first(self) -> bool:
        return getattr(self.visual.transformer, "batch_first", True)

    def _stages(self) -> list[nn.Module]:
        if isinstance(self.visual, ModifiedResNet):
            return [getattr(self.visual, f"layer{s}") for s in range(1, 5)]
        stages = getattr(getattr(self.visual, "trunk", None), "stages", None)
        if stages is None:
            return super()._stages()
        return list(stages)

    def tower_parts(self) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
        """open_clip registers a ViT's projection and embeddings before its blocks, so the parts are named: blocks
        ``block<i>``, ModifiedResNet layers ``layer1`` .. ``layer4``, timm trunks' stages ``stage<i>``."""
        if self.kind == "vit":
            blocks = [(f"block{i}", f"transformer.resblocks.{i}") for i in range(len(self.blocks))]
            return blocks, ("conv1", "class_embedding", "positional_embedding", "ln_pre")
        if isinstance(self.visual, ModifiedResNet):
            return [(f"layer{i}", f"layer{i}") for i in range(1, 5)], ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")
        return [(f"stage{i}", f"trunk.stages.{i}") for i in range(len(self._stages()))], ("trunk.stem",)

    def text_features(self, tokens: Tensor) -> Tensor:
        return self.model.encode_text(tokens.to(self.device))

    # ------------------------------------------------------------------ tail after a block (M2IB)
    def tail_after(self, block: int) -> Callable[[Tensor], Tensor]:
        """The blocks after ``block``, the pooling and the projection; the last block runs for the class
        token alone when the embedding reads nothing else (the result is the same)."""
        visual = self.visual
        pool = getattr(visual, "_pool", None)
        if pool is None:
            raise UnsupportedEncoderError(
                f"encoder {self.name!r}: this open_clip VisionTransformer has no _pool(); upgrade open_clip_torch"
            )
        later = list(self.blocks[self.resolve_block(block) + 1:])
        final = later.pop() if later and _class_token_only(visual, later[-1]) else None

        def tail(features: Tensor) -> Tensor:
            x = features
            if later:
                x = self.block_layout(features)
                for module in later:
                    x = module(x)
                x = self.batch_first(x)
            if final is not None:
                x = _class_token_block(final, x)
            pooled, _ = pool(x)
            return pooled @ visual.proj if visual.proj is not None else pooled

        return tail

    # ------------------------------------------------------------------ explicit attention
    def explicit_attention(self, block: int) -> tuple[nn.Module, AttentionFactory]:
        attn = getattr(self.blocks[block], "attn", None)
        path = EXPLICIT_PATHS.get(type(attn))
        if path is None:
            raise UnsupportedEncoderError(
                f"encoder {self.name!r}, block {block}: attention module {type(attn).__name__} has no "
                f"explicit path (supported: {', '.join(t.__name__ for t in EXPLICIT_PATHS)})"
            )
        check, factory = path
        check(attn, block)
        return attn, lambda store: factory(store, block)

    # ------------------------------------------------------------------ save
    def save(self, path: Path, card: dict[str, Any]) -> Path:
        """The full model as safetensors and the card (``arch`` or ``model_cfg``, mean, std) as JSON beside it."""
        if "arch" not in card and "model_cfg" not in card:
            raise ValueError("an encoder card needs 'arch' or 'model_cfg' to rebuild the architecture")
        state = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        atomic_write(path, lambda tmp: save_file(state, tmp))
        atomic_write_text(path.with_suffix(CARD_SUFFIX), json.dumps(card, indent=2))
        return path

    # ------------------------------------------------------------------ the backend (EncoderBackend)
    @classmethod
    def check_spec(cls, body: str) -> None:
        """Fails before any model is built on an ``ARCH[:TAG][@PATH]`` whose architecture or pretrained tag open_clip
        does not know (``hf-hub:`` names are checked when they load).

        Raises:
            UnknownNameError: With the known architectures or tags and a did-you-mean.
        """
        if body.startswith(HUB_PREFIX):
            return
        arch_tag, at, _ = body.partition("@")
        arch, colon, tag = arch_tag.partition(":")
        if arch not in open_clip.list_models():
            if not (at or colon):
                raise UnknownNameError("encoder", body, ENCODERS.names() + list(OTHER_FORMS))
            raise UnknownNameError("open_clip architecture", arch, open_clip.list_models())
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if tag and tag.lower() not in tags:
            raise UnknownNameError(f"{arch} pretrained tag", tag, tags)

    @classmethod
    def from_spec(cls, body: str, name: str, device: str | torch.device = "cpu") -> OpenClipEncoder:
        """``ARCH:TAG``, ``hf-hub:ORG/NAME`` or ``ARCH[:TAG]@PATH`` (a full or vision-only state dict), built on the
        CPU from the local caches (:func:`weights_access`); ``load_encoder`` moves it to ``device``."""
        if body.startswith(HUB_PREFIX):
            return _pretrained(body, None, name, {"arch": body, "pretrained": None})
        arch_tag, _, path = body.partition("@")
        arch, _, tag = arch_tag.partition(":")
        encoder = _pretrained(arch, tag or None, name, {"arch": arch, "pretrained": tag or None})
        if path:
            kind = apply_state_dict(encoder.model, load_state_dict_safely(path), path)
            encoder.card.update(checkpoint=str(path), checkpoint_kind=kind)
            if kind == "vision" and not tag:
                log.warning("%s: vision-only checkpoint without a pretrained tag: the text tower has random "
                            "weights; give ARCH:TAG@PATH to pair it with the original text encoder", name)
        return encoder

    @classmethod
    def from_card(cls, path: Path, card: dict[str, Any]) -> OpenClipEncoder:
        """A checkpoint written by :meth:`save`: the architecture from the card's ``model_cfg``, or its ``arch`` and
        ``pretrained`` tag (the text tower's weights), then the file's state dict."""
        if "model_cfg" in card:
            model = build_model(card["model_cfg"])
            tokenizer = tokenizer_for(card["model_cfg"])
        else:
            model_config(card["arch"])
            with weights_access(card["arch"], card.get("pretrained"), f"{path} (card arch {card['arch']!r})"):
                model = open_clip.create_model(card["arch"], pretrained=card.get("pretrained"), weights_only=True)
                tokenizer = open_clip.get_tokenizer(card["arch"])
        apply_state_dict(model, load_state_dict_safely(path), str(path))
        normalisation = {key: card[key] for key in ("mean", "std") if key in card}  # else the Encoder's (OpenAI's)
        return cls(model, tokenizer, name=card.get("name", path.stem), card=card, **normalisation)


# ---------------------------------------------------------------------------------------- M2IB shortcut
def _class_token_only(visual: nn.Module, block: nn.Module) -> bool:
    """Whether the tower's embedding reads only the class token of ``block``'s output."""
    return (
        type(block) is ResidualAttentionBlock  # a subclass (the positive control's gated block) may mask
        and isinstance(block.attn, nn.MultiheadAttention)
        and block.attn.batch_first
        and not hasattr(block, "ln_1_kv")
        and getattr(visual, "pool_type", None) == "tok"
        and getattr(visual, "attn_pool", None) is None
        and not getattr(visual, "final_ln_after_pool", False)
    )


def _class_token_block(block: ResidualAttentionBlock, x: Tensor) -> Tensor:
    """``block(x)[:, :1]`` computed for the class token alone (its query over all keys, its MLP)."""
    normed = block.ln_1(x)
    attended = block.attn(normed[:, :1], normed, normed, need_weights=False)[0]
    cls = x[:, :1] + block.ls_1(attended)
    return cls + block.ls_2(block.mlp(block.ln_2(cls)))


# ---------------------------------------------------------------------------------------- attention paths
def _mha_forward(store: Callable[..., None], index: int) -> Callable[..., tuple[Tensor, Tensor | None]]:
    """Explicit replacement of ``nn.MultiheadAttention.forward`` for self-attention."""

    def forward(
        self: nn.MultiheadAttention,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        if key is not query or value is not query or key_padding_mask is not None or is_causal:
            raise UnsupportedEncoderError(
                f"explicit attention path of block {index}: only self-attention without padding or causal "
                "masks is supported (open_clip image towers use plain self-attention)"
            )
        x = query if self.batch_first else query.transpose(0, 1)
        mask = additive_mask(attn_mask, x.dtype)
        if mask is not None and mask.ndim == 3:
            mask = mask.reshape(x.shape[0], self.num_heads, *mask.shape[-2:])
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        probs, q, k, v, context = explicit_attention(
            q, k, v, self.num_heads, mask, dropout=self.dropout if self.training else 0.0
        )
        store(probs=probs, q=q, k=k, v=v, context=context)
        out = self.out_proj(context)
        out = out if self.batch_first else out.transpose(0, 1)
        weights = (probs.mean(1) if average_attn_weights else probs) if need_weights else None
        return out, weights

    return forward


def _custom_forward(store: Callable[..., None], index: int) -> Callable[..., Tensor]:
    """Explicit replacement of open_clip's ``Attention.forward`` (CustomResidualAttentionBlock)."""

    def forward(self: Attention, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        batch, tokens, _ = x.shape
        mask = additive_mask(attn_mask, x.dtype)
        if mask is not None and mask.ndim == 3:
            mask = mask.reshape(batch, self.num_heads, tokens, tokens)
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        probs, q, k, v, context = explicit_attention(
            q, k, v, self.num_heads, mask, qk_norm=(self.ln_q, self.ln_k),
            dropout=self.attn_drop.p if self.training else 0.0,
        )
        store(probs=probs, q=q, k=k, v=v, context=context)
        out = context
        if self.head_scale is not None:
            heads = out.reshape(batch, tokens, self.num_heads, -1).transpose(1, 2) * self.head_scale
            out = heads.transpose(1, 2).reshape(batch, tokens, -1)
        return self.out_drop(self.out_proj(self.ln_inner(out)))

    return forward


def _check_mha(module: nn.MultiheadAttention, index: int) -> None:
    if not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn:
        raise UnsupportedEncoderError(
            f"block {index}: nn.MultiheadAttention with separate q/k/v projections, bias_k/bias_v or "
            "add_zero_attn has no explicit attention path here"
        )


def _check_custom(module: Attention, index: int) -> None:
    if module.logit_scale is not None:
        raise UnsupportedEncoderError(
            f"block {index}: open_clip Attention with scaled cosine attention (scaled_cosine_attn=True) has "
            "no explicit attention path here; use a model with plain scaled-dot-product attention"
        )


# The attention module types with an explicit path: type -> (support check, forward factory).
EXPLICIT_PATHS: dict[type, tuple[Callable[[nn.Module, int], None], Callable[..., Callable[..., object]]]] = {
    nn.MultiheadAttention: (_check_mha, _mha_forward),
    Attention: (_check_custom, _custom_forward),
}














def _pretrained(arch: str, tag: str | None, name: str, card: dict[str, Any]) -> OpenClipEncoder:
    """open_clip's ``arch`` with pretrained ``tag`` (or an ``hf-hub:`` model), read from the local caches."""
    with weights_access(arch, tag, name):
        model = open_clip.create_model(arch, pretrained=tag, weights_only=True)
        tokenizer = open_clip.get_tokenizer(arch)
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    # the card's mean and std, else the model's preprocessing config's, else the Encoder's default (OpenAI's)
    normalisation = {key: card.get(key, cfg.get(key)) for key in ("mean", "std") if key in card or key in cfg}
    return OpenClipEncoder(model, tokenizer, name=name, card=card, **normalisation)
