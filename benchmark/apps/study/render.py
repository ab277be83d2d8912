"""The pictures of the study page: the case's image and its maps over the image, as embedded data URIs.

As in the benchmark's figures (:mod:`aft_bench.reporting.saliency`, ``--overlay``), each map is min-max normalised on
its own
and drawn with the jet colour map at half opacity over the image in grey, the way HIVE (Kim et al. 2022) and the
AFT paper's Fig. 16 show explanations. Pictures are JPEG (quality 90, no chroma subsampling, so thin coloured
edges stay sharp) at the encoder's input size, embedded as ``data:`` URIs so that the page needs no other file.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib import colormaps
from PIL import Image
from torch import Tensor

from aft_bench.reporting.saliency import _normalise

JPEG_QUALITY = 90
OVERLAY_ALPHA = 0.5


def image_pixels(image: Tensor) -> np.ndarray:
    """H x W x 3 uint8 pixels of a 3 x H x W image in [0, 1]."""
    return (image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def overlays(image: Tensor, maps: Tensor) -> list[np.ndarray]:
    """Each of the N x H x W ``maps`` drawn over ``image`` in grey (N pictures, H x W x 3 uint8)."""
    grey = image.detach().float().cpu().clamp(0, 1).mean(dim=0).numpy()[..., None]
    pictures = []
    for heat in _normalise(maps):
        colour = colormaps["jet"](heat)[..., :3]
        blend = (1 - OVERLAY_ALPHA) * grey + OVERLAY_ALPHA * colour
        pictures.append((np.clip(blend, 0, 1) * 255).round().astype(np.uint8))
    return pictures


def data_uri(pixels: np.ndarray) -> str:
    """A ``data:image/jpeg;base64,...`` URI of H x W x 3 uint8 pixels."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
