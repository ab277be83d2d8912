"""The arithmetic precision of attribution forwards: fp32, or bf16 autocast with fp32 maps and inputs.

Under ``bf16`` the method runs inside ``torch.autocast(dtype=torch.bfloat16)`` on the images' device (CPU autocast
works too, which the tests use): the matrix products and convolutions of the encoder's forward and backward run in
bfloat16, while everything autocast does not cast stays fp32. The images (and any perturbation of them: the noise
of SmoothGrad, a PGD delta that a task adds before the maps) are fp32 leaves, so their gradients, and the maps
made from them, are fp32; :class:`~aft_bench.attributions.base.Attribution` returns every map as fp32 whatever
the method computed it in. The DESIGN convention: perturbations, PGD updates and projections in fp32 even under
bf16 autocast.

The choice changes the numbers (maps differ by bfloat16's rounding: tests/test_speed_precision.py states the
tolerance), so it is a run setting (``--precision bf16``, :attr:`aft_bench.evaluation.config.RunConfig.precision`) and
part of the run key of every bf16 result.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from aft_bench.evaluation.config import PRECISIONS


@contextlib.contextmanager
def attribution_precision(precision: str, device: torch.device | str) -> Iterator[None]:
    """Runs the block's attribution forwards in ``precision`` on ``device`` (bf16: autocast; fp32: as they are).

    Raises:
        ValueError: If ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    device_type = torch.device(device).type
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield
