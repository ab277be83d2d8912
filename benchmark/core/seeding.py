"""The one per-sample seeding scheme: a generator seed that is a pure function of (run seed, sample id, parts).

Every random draw that belongs to one sample (SSIM's input noise, ROAD's imputation noise, the attacks' random
starts, AFT's per-sample noise and PGD starts) is seeded through :func:`sample_seed`, so a sample draws the same
numbers whatever its batch, batch position, device, rank or the other samples of the run.
"""

from __future__ import annotations

import hashlib

import torch


def sample_seed(seed: int, sample_id: str, *parts: object) -> int:
    """A 63-bit generator seed from (run seed, sample id, further parts), via SHA-256.

    Args:
        seed: The run seed.
        sample_id: The sample's id (a dataset id, or the index of a training sample as text).
        parts: What else the draw belongs to (a noise level, an attack and radius, a training step); their
            ``repr`` enters the hash, so ``1`` and ``1.0`` differ.
    """
    text = "|".join([str(int(seed)), sample_id, *(repr(part) for part in parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def sample_generator(seed: int, sample_id: str, *parts: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with :func:`sample_seed`."""
    return torch.Generator(device=device).manual_seed(sample_seed(seed, sample_id, *parts))
