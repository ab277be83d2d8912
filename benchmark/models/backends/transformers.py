"""The ``transformers`` backend: Hugging Face CLIP models (``CLIPModel``, or a ``CLIPVisionModelWithProjection``
with an optional ``CLIPTextModelWithProjection``) as Encoders.

Specs: ``hf:ORG/NAME`` (a repository in the local Hugging Face cache; nothing is downloaded) or
``hf:/path/to/folder`` (a ``save_pretrained`` folder); ``hf:VISION+TEXT`` pairs a vision tower with a text
tower. The processor's ``preprocessor_config.json`` gives the mean and std, the folder's tokenizer the
text tokens. Weights are read from ``model.safetensors`` (sharded or not) or, without one, from
``pytorch_model.bin`` through ``torch.load(weights_only=True)``; a pickle that would run code is refused.
(``hf-hub:ORG/NAME`` is a different thing: an open_clip model published on the hub.)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from transformers import (
    AutoTokenizer,
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)
from transformers.models.clip.modeling_clip import CLIPAttention

from aft_bench.core.atomic import atomic_write_text
from aft_bench.core.registries import ENCODER_BACKENDS
from aft_bench.models.attention import additive_mask, explicit_attention, query_attention
from aft_bench.models.checkpoints import CheckpointError, load_state_dict_safely, load_strict
from aft_bench.models.encoder import (
    OPENAI_MEAN,
    OPENAI_STD,
    AttentionFactory,
    Encoder,
    EncoderKind,
    UnsupportedEncoderError,
)
from aft_bench.models.hub import cached_file, hub_folder

CONFIG = "config.json"
PROCESSOR = "preprocessor_config.json"
SAFETENSORS, SAFETENSORS_INDEX, PICKLE = "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"
TEXT_FOLDER = "text"
#: config ``model_type`` -> model class
MODEL_TYPES: dict[str, type[nn.Module]] = {
    "clip": CLIPModel, "clip_vision_model": CLIPVisionModelWithProjection,
    "clip_text_model": CLIPTextModelWithProjection,
}
CONFIG_TYPES: dict[str, type] = {"clip": CLIPConfig, "clip_vision_model": CLIPVisionConfig,
                                 "clip_text_model": CLIPTextConfig}


class HFImageTower(nn.Module):
    """Normalised pixels -> projected pooled class token of a transformers CLIP vision tower.

    Holds the model's own ``vision_model`` and ``visual_projection`` (shared, not copied), so its state-dict
    keys are the model's.
    """

    def __init__(self, vision_model: nn.Module, visual_projection: nn.Module) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = visual_projection

    def forward(self, pixels: Tensor) -> Tensor:
        return self.visual_projection(self.vision_model(pixel_values=pixels).pooler_output)


class HFTokenizer:
    """A transformers tokenizer padded to the text tower's context length: strings -> (input_ids, attention_mask)."""

    def __init__(self, tokenizer: Any, context_length: int) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length

    def __call__(self, texts: Sequence[str]) -> dict[str, Tensor]:
        out = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.context_length,
                             return_tensors="pt")
        return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}


@ENCODER_BACKENDS.register("transformers", prefixes=("hf:",),
                           help="transformers CLIP models: hf:ORG/NAME (local cache) or hf:/path/to/folder")
class HFClipEncoder(Encoder):
    """A transformers CLIP: ``model`` is a ``CLIPModel`` or a ``CLIPVisionModelWithProjection``; ``text_model`` a
    ``CLIPTextModelWithProjection`` for the latter (or None: no text tower)."""

    backend: ClassVar[str] = "transformers"

    def __init__(self, model: nn.Module, tokenizer: Callable[[Sequence[str]], Any] | None, name: str,
                 mean: Sequence[float] = OPENAI_MEAN, std: Sequence[float] = OPENAI_STD, card: dict | None = None,
                 text_model: nn.Module | None = None) -> None:
        super().__init__(model, tokenizer if (text_model is not None or hasattr(model, "text_model")) else None,
                         name, mean, std, card)
        self.text_model = None if text_model is None else text_model.eval()
        # shares the model's modules: kept out of the module tree so that they are not registered twice
        object.__setattr__(self, "_tower", HFImageTower(model.vision_model, model.visual_projection))

    @property
    def visual(self) -> nn.Module:
        return self._tower

    @property
    def kind(self) -> EncoderKind:
        return "vit"

    @property
    def _vision_config(self) -> CLIPVisionConfig:
        return self.model.vision_model.config

    @property
    def image_size(self) -> tuple[int, int]:
        size = int(self._vision_config.image_size)
        return size, size

    def _vit_blocks(self) -> nn.ModuleList:
        return self.model.vision_model.encoder.layers

    def _patch_grid(self) -> tuple[int, int]:
        side = self._vision_config.image_size // self._vision_config.patch_size
        return side, side

    def text_features(self, tokens: dict[str, Tensor]) -> Tensor:
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        if self.text_model is not None:
            return self.text_model(**tokens).text_embeds
        out = self.model.get_text_features(**tokens)
        return out if isinstance(out, Tensor) else out.pooler_output

    def tail_after(self, block: int) -> Callable[[Tensor], Tensor]:
        """The layers after ``block``, the last one for the class token alone (CLIP pools the class token, so
        its other outputs are never read), the post layer norm and the projection."""
        later = list(self.blocks[self.resolve_block(block) + 1:])
        final = later.pop() if later else None
        vision = self.model.vision_model

        def tail(features: Tensor) -> Tensor:
            x = features
            for layer in later:
                x = layer(x, None)
            if final is not None:
                x = _class_token_layer(final, x)
            return self.model.visual_projection(vision.post_layernorm(x[:, 0]))

        return tail

    def explicit_attention(self, block: int) -> tuple[nn.Module, AttentionFactory]:
        attn = self.blocks[block].self_attn
        if type(attn) is not CLIPAttention:
            raise UnsupportedEncoderError(f"encoder {self.name!r}, block {block}: attention module "
                                          f"{type(attn).__name__} has no explicit path (supported: CLIPAttention)")
        return attn, _clip_attention_forward

    # ------------------------------------------------------------------ save and load
    def save(self, path: Path, card: dict[str, Any]) -> Path:
        """A ``save_pretrained`` folder (``PATH`` without its suffix: weights as safetensors, tokenizer, processor
        mean/std) and the card beside it; ``hf:FOLDER`` and ``CLIPModel.from_pretrained(FOLDER)`` read it too."""
        folder = path.with_suffix("")
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            self.model.save_pretrained(tmp, safe_serialization=True)
            if self.text_model is not None:
                self.text_model.save_pretrained(tmp / TEXT_FOLDER, safe_serialization=True)
            if self.tokenizer is not None:
                self.tokenizer.tokenizer.save_pretrained(tmp)
            size = self.image_size[0]
            (tmp / PROCESSOR).write_text(json.dumps({
                "image_processor_type": "CLIPImageProcessor", "image_mean": self.mean.flatten().tolist(),
                "image_std": self.std.flatten().tolist(), "size": {"shortest_edge": size},
                "crop_size": {"height": size, "width": size}, "do_normalize": True, "do_rescale": True,
                "rescale_factor": 1 / 255,
            }, indent=2))
            old = folder.with_name(f".{folder.name}.old")
            if folder.exists():
                os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        full = {**card, "backend": self.backend, "folder": folder.name}
        atomic_write_text(folder.with_suffix(".json"), json.dumps(full, indent=2, default=str))
        return folder

    @classmethod
    def check_spec(cls, body: str) -> None:
        """Fails before any model loads when a folder or cached repository of ``hf:BODY`` has no config."""
        for part in body.split("+"):
            resolve_folder(part)

    @classmethod
    def from_spec(cls, body: str, name: str, device: str | torch.device = "cpu") -> HFClipEncoder:
        """``hf:FOLDER_OR_REPO`` or ``hf:VISION+TEXT``, built on the CPU (``load_encoder`` moves it to ``device``)."""
        vision, _, text = body.partition("+")
        folder = resolve_folder(vision)
        model = load_model(folder)
        text_model, text_folder = None, folder
        if text:
            text_folder = resolve_folder(text)
            text_model = load_model(text_folder)
        elif (folder / TEXT_FOLDER / CONFIG).is_file():
            text_folder = folder / TEXT_FOLDER
            text_model = load_model(text_folder)
        mean, std = processor_normalisation(folder)
        card = {"backend": cls.backend, "hf": body, "model_cfg": model.config.to_dict()}
        return cls(model, load_tokenizer(text_folder, folder, model, text_model), name, mean, std, card, text_model)

    @classmethod
    def from_card(cls, path: Path, card: dict[str, Any]) -> HFClipEncoder:
        """A folder written by :meth:`save` (``card["folder"]`` beside the card)."""
        encoder = cls.from_spec(str(path.parent / card.get("folder", path.stem)), card.get("name", path.stem))
        encoder.card = dict(card)
        return encoder


def _class_token_layer(layer: nn.Module, x: Tensor) -> Tensor:
    """``layer(x)[:, :1]`` of a ``CLIPEncoderLayer`` computed for the class token alone."""
    attn = layer.self_attn
    normed = layer.layer_norm1(x)
    context = query_attention(attn.q_proj(normed[:, :1]), attn.k_proj(normed), attn.v_proj(normed), attn.num_heads)
    cls = x[:, :1] + attn.out_proj(context)
    return cls + layer.mlp(layer.layer_norm2(cls))


# ---------------------------------------------------------------------------------------- attention path
def _clip_attention_forward(store: Callable[..., None]) -> Callable[..., tuple[Tensor, Tensor]]:
    """Explicit replacement of ``CLIPAttention.forward`` (any ``attn_implementation``)."""

    def forward(self: CLIPAttention, hidden_states: Tensor, attention_mask: Tensor | None = None,
                **_kwargs: Any) -> tuple[Tensor, Tensor]:
        mask = additive_mask(attention_mask, hidden_states.dtype)
        probs, q, k, v, context = explicit_attention(
            self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states), self.num_heads, mask,
            dropout=self.dropout if self.training else 0.0,
        )
        store(probs=probs, q=q, k=k, v=v, context=context)
        return self.out_proj(context), probs

    return forward


# ---------------------------------------------------------------------------------------- files
def resolve_folder(spec: str) -> Path:
    """The local folder of ``spec``: an existing folder, or the snapshot of repository ``ORG/NAME`` in the local
    Hugging Face cache (never downloaded).

    Raises:
        FileNotFoundError: Naming the folder or cache searched and what to do.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / CONFIG).is_file():
            raise FileNotFoundError(f"hf:{spec}: {path} has no {CONFIG}; give a folder written by save_pretrained")
        return path
    if spec.startswith(("/", ".", "~")) or spec.count("/") != 1:
        raise FileNotFoundError(f"hf:{spec}: no such folder, and not an ORG/NAME repository name")
    found = cached_file(spec, (CONFIG,))
    if found is None:
        folder = hub_folder(spec)
        raise FileNotFoundError(
            f"hf:{spec}: not in the local Hugging Face cache (searched {folder}); on a machine with a connection run "
            f"python -c \"from huggingface_hub import snapshot_download; snapshot_download('{spec}')\" and copy "
            f"{folder} here, or save the model with save_pretrained and give hf:/path/to/folder")
    return found.parent


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{folder / CONFIG} is unreadable ({exc})") from exc


def read_weights(folder: Path) -> dict[str, Tensor]:
    """The state dict in ``folder``: safetensors (one file or shards), else a ``.bin`` read with ``weights_only``.

    Raises:
        CheckpointError: When there are no weights, or a pickle holds objects that could run code.
    """
    if (folder / SAFETENSORS).is_file():
        return load_file(str(folder / SAFETENSORS))
    if (folder / SAFETENSORS_INDEX).is_file():
        shards = sorted(set(json.loads((folder / SAFETENSORS_INDEX).read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(str(folder / shard)).items()}
    if (folder / PICKLE).is_file():
        return load_state_dict_safely(folder / PICKLE)
    raise CheckpointError(f"{folder}: no {SAFETENSORS}, {SAFETENSORS_INDEX} or {PICKLE}")


def load_model(folder: Path) -> nn.Module:
    """The CLIP model of ``folder``, built from its config and loaded from its weights (strict)."""
    config = _read_config(folder)
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise CheckpointError(f"{folder / CONFIG}: model_type {model_type!r} is not a CLIP model "
                              f"(supported: {', '.join(MODEL_TYPES)})")
    model = MODEL_TYPES[model_type](CONFIG_TYPES[model_type].from_dict(config))
    load_strict(model, read_weights(folder), str(folder), f"Check {folder / CONFIG}.")
    return model.eval()


def processor_normalisation(folder: Path) -> tuple[Sequence[float], Sequence[float]]:
    """``image_mean``/``image_std`` of the folder's image processor (OpenAI's without one)."""
    path = folder / PROCESSOR
    if not path.is_file():
        return OPENAI_MEAN, OPENAI_STD
    cfg = json.loads(path.read_text())
    return cfg.get("image_mean", OPENAI_MEAN), cfg.get("image_std", OPENAI_STD)


def load_tokenizer(text_folder: Path, folder: Path, model: nn.Module,
                   text_model: nn.Module | None) -> HFTokenizer | None:
    """The tokenizer saved with the text tower (or the main folder), at the text tower's context length; None when
    there is no text tower."""
    text = text_model if text_model is not None else getattr(model, "text_model", None)
    if text is None:
        return None
    config = text.config.text_config if hasattr(text.config, "text_config") else text.config
    for candidate in dict.fromkeys((text_folder, folder)):
        try:
            return HFTokenizer(AutoTokenizer.from_pretrained(candidate, local_files_only=True),
                               int(config.max_position_embeddings))
        except (OSError, ValueError, TypeError):
            continue
    raise FileNotFoundError(f"{folder}: no tokenizer files (vocab.json, merges.txt or tokenizer.json) for the text "
                            "tower; save the tokenizer with tokenizer.save_pretrained(folder)")


def random_clip(config: CLIPConfig | CLIPVisionConfig, seed: int = 0) -> nn.Module:
    """A randomly initialised ``CLIPModel`` (or vision tower with projection) of ``config`` (tests, benchmarks)."""
    torch.manual_seed(seed)
    return (CLIPModel if isinstance(config, CLIPConfig) else CLIPVisionModelWithProjection)(config).eval()
