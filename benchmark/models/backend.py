"""The encoder backend protocol: how a model library's encoders are found by spec, built and read back.

One backend per library, each declared in ``ENCODER_BACKENDS`` where it is defined: the :class:`~aft_bench.models.
encoder.Encoder` subclasses of open_clip, ``transformers`` and timm implement it with class methods, and the named
encoders' spec reader does. A declaration says, as literal data read without importing the backend
(:mod:`aft_bench.core.declarations`), which specs it reads: ``prefixes`` (``hf:``, ``timm:``), ``names=True`` for the
registered encoder names, ``default=True`` for the specs no other backend claims (open_clip's
``ARCH[:TAG][@PATH]``). :func:`aft_bench.models.loading.load_encoder` dispatches through them; a third-party
package adds a backend with an entry point of the group ``aft_bench.encoder_backends``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from aft_bench.models.encoder import Encoder


@runtime_checkable
class EncoderBackend(Protocol):
    """What :func:`~aft_bench.models.loading.load_encoder` needs of a backend.

    Attributes:
        backend: The backend's ``ENCODER_BACKENDS`` name, written into the cards of the encoders it saves.
    """

    backend: ClassVar[str]

    @classmethod
    def check_spec(cls, body: str) -> None:
        """Fails before any model is built on a spec body (the spec without the backend's prefix) that names no
        encoder of this backend (an unknown name with a did-you-mean, a folder without its config, ...)."""
        ...

    @classmethod
    def from_spec(cls, body: str, name: str, device: str | torch.device = "cpu") -> Encoder:
        """The encoder of a spec body, named ``name`` (the whole spec); the factory moves it to ``device``."""
        ...

    @classmethod
    def from_card(cls, path: Path, card: dict[str, Any]) -> Encoder:
        """The encoder this backend saved at ``path`` (:meth:`Encoder.save`), rebuilt from its ``card``."""
        ...
