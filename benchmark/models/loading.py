"""The one encoder factory: every spec reaches its backend through ``ENCODER_BACKENDS``; saving goes through the
encoder's own backend.

Encoder specs understood by :func:`load_encoder`, each read by one backend (:mod:`aft_bench.models.backend`):

- a registered name (``toy``, ...): the registry's factory (the backend declared with ``names=True``);
- ``hf:ORG/NAME`` or ``hf:/path/to/folder``: a ``transformers`` CLIP (``CLIPModel``, or a
  ``CLIPVisionModelWithProjection`` with a ``CLIPTextModelWithProjection`` in ``text/``) from the Hugging Face
  cache or a ``save_pretrained`` folder, never downloaded (:mod:`aft_bench.models.backends.transformers`);
- ``timm:NAME`` or ``timm:NAME@PATH``: a timm classifier, random or with weights from a safetensors/``.pt``
  file; its embedding is the pre-logits feature (:mod:`aft_bench.models.backends.timm`);
- ``ckpt:PATH``: a checkpoint written by aft-bench, read by the backend its ``.json`` card names (cards without
  one are open_clip's: safetensors of the architecture and pretrained tag it started from);
- anything else goes to the default backend, open_clip (:mod:`aft_bench.models.backends.open_clip`):
  ``ARCH:TAG`` (``ViT-B-16:openai``; ``ARCH`` alone gives random weights, for tests), ``hf-hub:ORG/NAME`` (an
  open_clip model published on the hub) and ``ARCH[:TAG]@PATH``: architecture (and tag, for the text tower) with
  weights from ``PATH``, a full open_clip state dict or a vision-only one as AFT/FARE publish
  (``model.visual.state_dict()``, possibly under ``vision_encoder_state_dict``/``state_dict``/``model``).

Pretrained weights are read from the local caches with the hub offline (:mod:`aft_bench.models.hub`), so a missing
file fails at once naming the folder searched; ``AFT_BENCH_ONLINE=1`` lets a library download what is missing. Any
spec may end in ``?mean=NAME`` (``openai``, ``imagenet``, ``inception``) or ``?mean=A,B,C&std=A,B,C`` to override the
normalisation (:mod:`aft_bench.models.normalisation`); the override is recorded in the encoder's card and so in
every result's. Every ``.pt`` file is read with ``torch.load(weights_only=True)`` (:mod:`aft_bench.models.checkpoints`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from aft_bench.core.registries import ENCODER_BACKENDS, ENCODERS
from aft_bench.models.backend import EncoderBackend
from aft_bench.models.checkpoints import read_card
from aft_bench.models.encoder import Encoder
from aft_bench.models.normalisation import override_normalisation, split_normalisation

CHECKPOINT_PREFIX = "ckpt:"
"""The spec form of a checkpoint written by aft-bench, read by the backend its card names."""


def backend_for(spec: str) -> tuple[EncoderBackend, str]:
    """The backend that reads ``spec`` (without a normalisation override) and the spec's body for it: the backend of
    the registered names for one of them, the one whose declared prefix starts the spec (the prefix removed), else the
    default backend (the whole spec). Nothing is imported but the chosen backend.

    Raises:
        LookupError: When no backend is declared as the default (a broken installation).
    """
    declared = {name: ENCODER_BACKENDS.declared(name) for name in ENCODER_BACKENDS.names()}
    if spec in ENCODERS:
        name = next(name for name, data in declared.items() if data.get("names"))
        return ENCODER_BACKENDS.get(name), spec
    for name, data in declared.items():
        prefix = next((p for p in data.get("prefixes", ()) if spec.startswith(p)), None)
        if prefix is not None:
            return ENCODER_BACKENDS.get(name), spec.removeprefix(prefix)
    return ENCODER_BACKENDS.get(_default_backend()), spec


def card_backend(card: Mapping[str, Any]) -> EncoderBackend:
    """The backend that reads a checkpoint with ``card``: the one it names, else the default (old open_clip cards)."""
    return ENCODER_BACKENDS.get(card.get("backend") or _default_backend())


def _default_backend() -> str:
    """The name of the backend declared ``default=True`` (open_clip's).

    Raises:
        LookupError: When none is (a broken installation).
    """
    default = next((name for name in ENCODER_BACKENDS.names() if ENCODER_BACKENDS.declared(name).get("default")), None)
    if default is None:
        raise LookupError("no encoder backend is declared default=True; reinstall aft-bench")
    return default


def check_encoder_spec(spec: str) -> None:
    """Fails fast (before any model is built) on a spec that names no encoder.

    Raises:
        UnknownNameError: For a name no backend knows (an unregistered plain name, an unknown architecture or
            pretrained tag, an unknown timm model), with a did-you-mean.
        CheckpointError: For a ``ckpt:`` spec whose card is missing, unreadable or names no architecture.
        FileNotFoundError: For a folder or file that does not exist.
    """
    base = split_normalisation(spec)[0]
    if base.startswith(CHECKPOINT_PREFIX) and base not in ENCODERS:
        card_backend(read_card(base)[1])  # an unknown backend name fails here, with the known ones
        return
    backend, body = backend_for(base)
    backend.check_spec(body)


def load_encoder(spec: str, device: str | torch.device = "cpu") -> Encoder:
    """Loads an encoder from a spec (see the module docstring) onto ``device``, in eval mode."""
    check_encoder_spec(spec)
    base, override = split_normalisation(spec)
    if base.startswith(CHECKPOINT_PREFIX) and base not in ENCODERS:
        path, card = read_card(base)
        encoder = card_backend(card).from_card(path, card)
    else:
        backend, body = backend_for(base)
        encoder = backend.from_spec(body, base, device)
    if override:
        override_normalisation(encoder, spec, override)
    return encoder.to(device).eval()


def save_encoder(encoder: Encoder, path: str | Path, card: Mapping[str, Any]) -> Path:
    """Writes the encoder through its backend (:meth:`Encoder.save`) with ``card`` as JSON beside it, atomically.

    The card is completed with the encoder's mean and std (unless given). open_clip cards must name how to
    rebuild the architecture: ``arch`` (an open_clip name) or ``model_cfg`` (a config dict); other backends add
    their ``backend`` entry and what they need themselves.

    Returns:
        The path ``ckpt:`` takes (the safetensors file; a ``save_pretrained`` folder for ``transformers``).
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    full_card = {"mean": list(encoder.mean.flatten().tolist()), "std": list(encoder.std.flatten().tolist())}
    full_card.update(card)
    return encoder.save(path, full_card)
