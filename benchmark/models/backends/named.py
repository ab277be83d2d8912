"""The toy backend: encoders registered by name in ``ENCODERS`` (the bundled toy CLIP and its fine-tunes).

The toy CLIP is an open_clip ``CLIP`` that the project trains itself (:mod:`aft_bench.toys.clip`), so its encoders are
:class:`~aft_bench.models.backends.open_clip.OpenClipEncoder` instances; what this backend adds is the spec form: a
plain registered name (``toy``, ``toy-aft``, ...) calls the registry's factory.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from aft_bench.core.registries import ENCODER_BACKENDS, ENCODERS
from aft_bench.core.registry import UnknownNameError
from aft_bench.models.encoder import Encoder


@ENCODER_BACKENDS.register("toy", help="the registered named encoders (the bundled toy CLIPs and their fine-tunes)")
class ToyEncoders:
    """Spec reader of the registered encoder names."""

    backend: ClassVar[str] = "toy"

    @classmethod
    def check_spec(cls, body: str) -> None:
        if body not in ENCODERS:
            raise UnknownNameError("encoder", body, ENCODERS.names())

    @classmethod
    def from_spec(cls, body: str, name: str, device: str | torch.device = "cpu") -> Encoder:
        """The registry's factory for ``body`` on ``device`` (``name`` is the spec, the same string)."""
        cls.check_spec(body)
        return ENCODERS.get(body)(device=device)
