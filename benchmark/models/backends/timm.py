"""The timm backend: a timm image classifier as an Encoder (no text tower).

The embedding is the classifier's pre-logits feature (``forward_head(forward_features(x), pre_logits=True)``),
unit-normalised; this is the I_x that AFT fine-tunes for the supervised ViT-B of the paper's appendix A.4.
ViTs (``VisionTransformer``) expose their blocks, patch grid and an explicit path for timm's ``Attention``;
other models are CNNs whose stages are timm's last four feature levels (``feature_info``).

Specs:

- ``timm:NAME``: pretrained weights of ``NAME`` (``vit_base_patch16_224.augreg_in1k``) from the local Hugging
  Face cache (``model.safetensors`` of its hub repository; nothing is downloaded);
- ``timm:NAME@PATH``: weights from a safetensors (or ``weights_only`` ``.pt``) file; a timm ``config.json``
  beside it may give ``model_args``, ``num_classes`` and ``pretrained_cfg`` (``input_size``, ``mean``, ``std``);
- ``timm:/path/to/folder``: a folder in timm's hub layout (``config.json`` + ``model.safetensors``).

The mean, std and input size are the model's ``pretrained_cfg``'s (a ViT's own ``img_size``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import timm
import torch
from safetensors.torch import save_file
from timm.data import resolve_data_config
from timm.layers import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from aft_bench.core.atomic import atomic_write, atomic_write_text
from aft_bench.core.registries import ENCODER_BACKENDS
from aft_bench.core.registry import UnknownNameError
from aft_bench.models.attention import additive_mask, explicit_attention, query_attention
from aft_bench.models.checkpoints import CheckpointError, load_state_dict_safely, load_strict
from aft_bench.models.encoder import AttentionFactory, Encoder, EncoderKind, UnsupportedEncoderError
from aft_bench.models.hub import cached_file, hub_cache

CONFIG, WEIGHTS = "config.json", "model.safetensors"
STAGE_LEVELS = 4  # CNN stages: the last four feature levels


class PreLogits(nn.Module):
    """Normalised pixels -> a timm classifier's pre-logits features (keys ``model.*``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: Tensor) -> Tensor:
        return self.model.forward_head(self.model.forward_features(pixels), pre_logits=True)


@ENCODER_BACKENDS.register("timm", prefixes=("timm:",),
                           help="timm image classifiers: timm:NAME or timm:NAME@PATH; pre-logits embeddings, no text")
class TimmEncoder(Encoder):
    """A timm classifier: the pre-logits embedding, its classifier head (:meth:`classifier`), no text tower."""

    backend: ClassVar[str] = "timm"

    def __init__(self, model: nn.Module, name: str, card: dict | None = None,
                 image_size: tuple[int, int] | None = None) -> None:
        config = resolve_data_config({}, model=model)
        super().__init__(model, None, name, config["mean"], config["std"], card)
        # shares the model: kept out of the module tree so that it is not registered twice
        object.__setattr__(self, "_tower", PreLogits(model))
        own = getattr(getattr(model, "patch_embed", None), "img_size", None)
        self._size = tuple(int(s) for s in (image_size or own or config["input_size"][1:]))

    @property
    def visual(self) -> nn.Module:
        return self._tower

    @property
    def kind(self) -> EncoderKind:
        return "vit" if isinstance(self.model, VisionTransformer) else "cnn"

    @property
    def image_size(self) -> tuple[int, int]:
        return self._size

    def _vit_blocks(self) -> nn.Sequential:
        return self.model.blocks

    def _patch_grid(self) -> tuple[int, int]:
        return tuple(self.model.patch_embed.grid_size)

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.model.num_prefix_tokens)

    def _stages(self) -> list[nn.Module]:
        info = getattr(self.model, "feature_info", None) or []
        return [self.model.get_submodule(level["module"]) for level in info[-STAGE_LEVELS:]]

    def classifier(self) -> nn.Module:
        """The classifier head (pre-logits features -> class logits).

        Raises:
            UnsupportedEncoderError: When the model was built without one (``num_classes=0``).
        """
        head = self.model.get_classifier()
        if not isinstance(head, nn.Linear):
            raise UnsupportedEncoderError(f"encoder {self.name!r}: its classifier head is "
                                          f"{type(head).__name__}, not a linear layer")
        return head

    def tail_after(self, block: int) -> Callable[[Tensor], Tensor]:
        """The blocks after ``block``, the final norm and the head's pooling; with class-token pooling the last
        block runs for the class token alone (its other outputs are never read)."""
        later = list(self.blocks[self.resolve_block(block) + 1:])
        final = later.pop() if later and _class_token_only(self.model, later[-1]) else None

        def tail(features: Tensor) -> Tensor:
            x = features
            for module in later:
                x = module(x)
            if final is not None:
                x = _class_token_block(final, x)
            return self.model.forward_head(self.model.norm(x), pre_logits=True)

        return tail

    def explicit_attention(self, block: int) -> tuple[nn.Module, AttentionFactory]:
        attn = getattr(self.blocks[block], "attn", None)
        if type(attn) is not Attention:
            raise UnsupportedEncoderError(f"encoder {self.name!r}, block {block}: attention module "
                                          f"{type(attn).__name__} has no explicit path (supported: timm Attention)")
        return attn, _attention_forward

    # ------------------------------------------------------------------ save and load
    def save(self, path: Path, card: dict[str, Any]) -> Path:
        """The model's state dict (timm keys) as safetensors and the card beside it; timm reads the file with
        ``timm.create_model(ARCH, pretrained=True, pretrained_cfg_overlay={"file": PATH}, **model_args)``."""
        state = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        atomic_write(path, lambda tmp: save_file(state, tmp))
        full = {"model_cfg": self.card["model_cfg"], **card, "backend": self.backend,
                "image_size": list(self.image_size)}
        atomic_write_text(path.with_suffix(".json"), json.dumps(full, indent=2, default=str))
        return path

    @classmethod
    def check_spec(cls, body: str) -> None:
        """Fails before any model loads on an unknown timm name, a missing folder config or weights file."""
        name, _, path = body.partition("@")
        if Path(name).is_dir():
            if not (Path(name) / CONFIG).is_file():
                raise FileNotFoundError(f"timm:{body}: folder {name} has no {CONFIG} (timm's hub layout)")
            return
        if not timm.is_model(name):
            raise UnknownNameError("timm model", name, timm.list_models(name.split(".")[0].split("_")[0] + "*"))
        if path and not Path(path).is_file():
            raise CheckpointError(f"timm:{body}: weights file {path} does not exist")

    @classmethod
    def from_spec(cls, body: str, name: str, device: str | torch.device = "cpu") -> TimmEncoder:
        """``timm:NAME``, ``timm:NAME@PATH`` or ``timm:FOLDER``, built on the CPU (``load_encoder`` moves it)."""
        arch, _, path = body.partition("@")
        if Path(arch).is_dir():
            config = json.loads((Path(arch) / CONFIG).read_text())
            return cls._build(config, Path(arch) / WEIGHTS, name, {"timm": body})
        if path:
            beside = Path(path).with_name(CONFIG)
            config = json.loads(beside.read_text()) if beside.is_file() else {}
            return cls._build({**config, "architecture": arch}, Path(path), name, {"timm": body})
        return cls._build({"architecture": arch}, _cached_weights(arch), name, {"timm": body})

    @classmethod
    def from_card(cls, path: Path, card: dict[str, Any]) -> TimmEncoder:
        """A file written by :meth:`save` (the card's ``model_cfg`` rebuilds the architecture)."""
        return cls._build(card["model_cfg"], path, card.get("name", path.stem), card)

    @classmethod
    def _build(cls, config: dict[str, Any], weights: Path, name: str, card: dict[str, Any]) -> TimmEncoder:
        args = dict(config.get("model_args") or {})
        if "num_classes" in config:
            args.setdefault("num_classes", config["num_classes"])
        overlay = config.get("pretrained_cfg") or None  # timm's config.json: input_size, mean, std
        model = timm.create_model(config["architecture"], pretrained=False, pretrained_cfg_overlay=overlay, **args)
        load_strict(model, load_state_dict_safely(weights), str(weights),
                    f"Check the timm model name {config['architecture']!r} and its model_args.")
        model_cfg = {"architecture": config["architecture"], "model_args": args, "pretrained_cfg": overlay}
        size = card.get("image_size")
        return cls(model.eval(), name, {"backend": cls.backend, "model_cfg": model_cfg, **card},
                   tuple(size) if size else None)


def _cached_weights(arch: str) -> Path:
    """``model.safetensors`` of ``arch``'s hub repository in the local Hugging Face cache.

    Raises:
        FileNotFoundError: Naming the repository and the cache when the file is not there.
    """
    repo = getattr(timm.models.get_pretrained_cfg(arch), "hf_hub_id", None) if "." in arch else None
    found = cached_file(repo, (WEIGHTS,)) if repo else None
    if found is None:
        raise FileNotFoundError(
            f"timm:{arch}: no pretrained weights in the local Hugging Face cache ({hub_cache()}, repository "
            f"{repo or 'none: give NAME.TAG'}); on a machine with a connection run python -c \"import timm; "
            f"timm.create_model('{arch}', pretrained=True)\" and copy the cache here, or give timm:{arch}@PATH")
    return found


def _class_token_only(model: nn.Module, block: nn.Module) -> bool:
    """Whether the embedding reads only the class token of ``block``'s output (plain block, token pooling)."""
    attn = getattr(block, "attn", None)
    return (type(block) is Block and type(attn) is Attention and attn.gate is None
            and model.global_pool == "token" and getattr(model, "attn_pool", None) is None)


def _class_token_block(block: Block, x: Tensor) -> Tensor:
    """``block(x)[:, :1]`` of a timm ``Block`` computed for the class token alone."""
    attn = block.attn
    normed = block.norm1(x)
    q, k, v = attn.qkv(normed).chunk(3, dim=-1)
    context = query_attention(q[:, :1], k, v, attn.num_heads, qk_norm=(attn.q_norm, attn.k_norm))
    cls = x[:, :1] + block.ls1(attn.proj(attn.norm(context)))
    return cls + block.ls2(block.mlp(block.norm2(cls)))


def _attention_forward(store: Callable[..., None]) -> Callable[..., Tensor]:
    """Explicit replacement of timm's ``Attention.forward`` (QK norm, scale norm and gate included)."""

    def forward(self: Attention, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        if is_causal:
            raise UnsupportedEncoderError("timm Attention explicit path: causal attention is not supported")
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        probs, q, k, v, context = explicit_attention(
            q, k, v, self.num_heads, additive_mask(attn_mask, x.dtype), qk_norm=(self.q_norm, self.k_norm),
            dropout=self.attn_drop.p if self.training else 0.0,
        )
        store(probs=probs, q=q, k=k, v=v, context=context)
        out = self.norm(context)
        if gate is not None:
            out = out * gate
        return self.proj_drop(self.proj(out))

    return forward
