"""Loading a LLaVA-layout vision-language model: ``LlavaForConditionalGeneration`` and its tokenizer.

A VLM spec (task option ``vlm``) is one of

* a name in the ``VLMS`` registry (``toy``, the embedded toy VLM, built and cached on first use);
* a local folder written by ``save_pretrained`` (``config.json``, safetensors weights, tokenizer files);
* a Hugging Face repository id ``ORG/NAME`` (``llava-hf/llava-1.5-7b-hf``) found in the user's local cache; nothing
  is downloaded.

Any model whose config is a ``LlavaConfig`` with a CLIP vision tower loads (LLaVA-1.5 and models of the same
layout). The model runs with the row-keeping attention of :mod:`aft_bench.models.vlm.rows` (numerically transformers'
``sdpa``). The image placeholder of the prompt is expanded here, one image token per patch (per patch plus CLS
under ``vision_feature_select_strategy="full"``), as LLaVA's processor does; pixels come from the encoder under
test, never from the VLM's image processor.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoTokenizer, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

from aft_bench.core.registries import VLMS
from aft_bench.models.backends.transformers import CONFIG, resolve_folder
from aft_bench.models.checkpoints import CheckpointError
from aft_bench.models.vlm.prompt import IMAGE_PLACEHOLDER, llava_conversation
from aft_bench.models.vlm.rows import IMPLEMENTATION

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The ``dtype`` option's values (``auto``: bfloat16 on CUDA, float32 elsewhere)."""


def resolve_vlm_folder(spec: str) -> Path:
    """The folder of VLM ``spec``: a ``VLMS`` entry's folder (built on first use), a local folder, or a cached
    Hugging Face repository.

    Raises:
        FileNotFoundError: Naming the spec, where it was looked for and what to do.
    """
    if spec in VLMS:
        return Path(VLMS.get(spec)())
    try:
        return resolve_folder(spec)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"--option vlm={spec}: not a registered VLM ({', '.join(VLMS.names())}), a save_pretrained folder or a "
            f"repository in the local Hugging Face cache ({exc})") from exc


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The model dtype of option ``dtype`` on ``device``."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


@dataclass
class VLM:
    """A loaded LLaVA model, its tokenizer and the facts the attention maps need.

    Attributes:
        spec: The spec as given. folder: Where it was loaded from. model: The model (eval mode, on its device).
        tokenizer: Its tokenizer (from the folder).
    """

    spec: str
    folder: Path
    model: LlavaForConditionalGeneration
    tokenizer: Any

    @property
    def config(self) -> LlavaConfig:
        return self.model.config

    @property
    def vision_config(self) -> CLIPVisionConfig:
        return self.model.config.vision_config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.model.vision_tower

    @property
    def vision_body(self) -> nn.Module:
        """The tower's CLIP vision transformer (``embeddings``, ``encoder``, ...), whichever way transformers nests
        it in the tower."""
        return getattr(self.vision_tower, "vision_model", self.vision_tower)

    @property
    def feature_layer(self) -> int:
        """The index into the tower's hidden states (embeddings = 0, layer i's output = i + 1) that LLaVA
        projects, made non-negative.

        Raises:
            CheckpointError: For several feature layers (concatenated features), or the embeddings (no layers).
        """
        layer = self.config.vision_feature_layer
        if not isinstance(layer, int):
            raise CheckpointError(f"VLM {self.spec!r}: vision_feature_layer={layer} concatenates several layers; "
                                  "the composite map needs one feature layer")
        count = int(self.vision_config.num_hidden_layers)
        index = layer % (count + 1)
        if index == 0:
            raise CheckpointError(f"VLM {self.spec!r}: vision_feature_layer={layer} is the patch embeddings, "
                                  "after no attention layer")
        return index

    @property
    def has_cls(self) -> bool:
        """Whether the image tokens include the CLS token (``vision_feature_select_strategy="full"``)."""
        return self.config.vision_feature_select_strategy == "full"

    @property
    def grid(self) -> tuple[int, int]:
        side = int(self.vision_config.image_size) // int(self.vision_config.patch_size)
        return side, side

    @property
    def image_tokens(self) -> int:
        """Image tokens per image in the sequence."""
        rows, cols = self.grid
        return rows * cols + int(self.has_cls)

    def llm_attention_modules(self) -> list[nn.Module]:
        """The language model's attention modules, one per layer, in order."""
        return [layer.self_attn for layer in self.model.model.language_model.layers]

    def vision_attention_modules(self) -> list[nn.Module]:
        """The tower's attention modules of the layers up to the feature layer, in order."""
        return [layer.self_attn for layer in self.vision_body.encoder.layers[: self.feature_layer]]

    def prompt_ids(self, question: str) -> Tensor:
        """The token ids (1-D) of LLaVA-1.5's conversation around ``question``, the image placeholder expanded to
        :attr:`image_tokens` image tokens.

        Raises:
            CheckpointError: If the tokenizer does not turn the placeholder into exactly one image token.
        """
        ids = self.tokenizer(llava_conversation(question), return_tensors="pt")["input_ids"][0]
        image = int(self.config.image_token_id)
        where = (ids == image).nonzero().flatten()
        if len(where) != 1:
            raise CheckpointError(f"VLM {self.spec!r}: its tokenizer turns {IMAGE_PLACEHOLDER!r} into {len(where)} "
                                  f"image tokens (id {image}), not one; the tokenizer in {self.folder} does not "
                                  "belong to this model")
        at = int(where[0])
        return torch.cat([ids[:at], torch.full((self.image_tokens,), image, dtype=ids.dtype), ids[at + 1:]])

    def image_positions(self, prompt: Tensor) -> Tensor:
        """The positions of the patch tokens in ``prompt`` (the CLS token's, under ``full``, left out)."""
        positions = (prompt == int(self.config.image_token_id)).nonzero().flatten()
        return positions[1:] if self.has_cls else positions

    def card(self) -> dict[str, Any]:
        """What identifies the VLM in run keys: its spec, a hash of its config and one of its weight files' names
        and sizes (the tower's weights are the encoder's and enter the key through the encoder's card)."""
        config = json.dumps(self.config.to_dict(), sort_keys=True, default=str)
        files = sorted((p.name, p.stat().st_size) for p in self.folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
        return {"vlm": self.spec, "vlm_config": hashlib.sha256(config.encode()).hexdigest()[:16],
                "vlm_weights": hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]}

    def check_llm_layers(self, layers: tuple[int, ...] | None) -> None:
        """Refuses LLM layer indices (option ``llm_layers``) outside the language model's layers."""
        count = len(self.llm_attention_modules())
        bad = [i for i in layers or () if not -count <= i < count]
        if bad:
            raise ValueError(f"option llm_layers={list(layers or ())}: VLM {self.spec!r} has {count} LLM layers "
                             f"(indices {-count}..{count - 1}); {bad} are out of range")


def load_vlm(spec: str, device: torch.device | str = "cpu", dtype: str = "auto") -> VLM:
    """The VLM ``spec`` on ``device`` (``local_files_only``; safetensors weights preferred by transformers).

    Raises:
        FileNotFoundError: If the spec resolves to nothing (see :func:`resolve_vlm_folder`).
        CheckpointError: If the folder's model is not a LLaVA model with a CLIP vision tower, or lacks a tokenizer.
    """
    folder = resolve_vlm_folder(spec)
    config = json.loads((folder / CONFIG).read_text())
    if config.get("model_type") != "llava" or config.get("vision_config", {}).get("model_type") not in (
            "clip_vision_model", None):
        raise CheckpointError(f"VLM {spec!r}: {folder / CONFIG} is model_type {config.get('model_type')!r} with "
                              f"vision tower {config.get('vision_config', {}).get('model_type')!r}; the task needs "
                              "a LlavaForConditionalGeneration with a CLIP vision tower (LLaVA-1.5 layout)")
    device = torch.device(device)
    model = LlavaForConditionalGeneration.from_pretrained(
        folder, local_files_only=True, dtype=resolve_dtype(dtype, device), attn_implementation=IMPLEMENTATION)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"VLM {spec!r}: no tokenizer in {folder} ({exc}); save it with "
                              "tokenizer.save_pretrained(folder)") from exc
    vlm = VLM(spec, folder, model.to(device).eval(), tokenizer)
    vlm.feature_layer  # noqa: B018 - refuse an unusable feature layer now, before any work
    log.info("VLM %s from %s: %d LLM layers, tower %s, %d image tokens", spec, folder,
             len(vlm.llm_attention_modules()), vlm.vision_config.image_size, vlm.image_tokens)
    return vlm
