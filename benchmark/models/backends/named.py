"""The named backend: encoders registered by name in ``ENCODERS`` (the bundled toy CLIPs, their fine-tunes, the
control encoders, and any a plugin declares).

What this backend adds is the spec form: a plain registered name (``toy``, ``toy-aft``, ...) calls the registry's
factory with the run's device. The toy CLIP is an open_clip ``CLIP`` the project trains itself
(:mod:`aft_bench.toys.clip`), so its encoders are :class:`~aft_bench.models.backends.open_clip.OpenClipEncoder`
instances, saved and read back as open_clip checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from aft_bench.core.registries import ENCODER_BACKENDS, ENCODERS
from aft_bench.core.registry import UnknownNameError
from aft_bench.models.encoder import Encoder


@ENCODER_BACKENDS.register("named", names=True,
                           help="the registered encoder names (the bundled toy CLIPs, their fine-tunes, the controls)")
class NamedEncoders:
    """Spec reader of the registered encoder names."""

    backend: ClassVar[str] = "named"

    @classmethod
    def check_spec(cls, body: str) -> None:
        if body not in ENCODERS:
            raise UnknownNameError("encoder", body, ENCODERS.names())

    @classmethod
    def from_spec(cls, body: str, name: str, device: str | torch.device = "cpu") -> Encoder:
        """The registry's factory for ``body`` on ``device`` (``name`` is the spec, the same string)."""
        cls.check_spec(body)
        return ENCODERS.get(body)(device=device)

    @classmethod
    def from_card(cls, path: Path, card: dict[str, Any]) -> Encoder:
        """Named encoders are saved through their own backend (an open_clip checkpoint for the toys).

        Raises:
            ValueError: Always, naming the card.
        """
        raise ValueError(f"{path}: its card names the backend 'named', which has no checkpoint format; a named "
                         "encoder is saved by its own backend (open_clip for the toys): write the card's backend")
