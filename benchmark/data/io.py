"""Reading images and label masks from disk, with errors that name the file and the remedy.

Every reader decodes the whole file here (``PIL.Image.load``), so a truncated or corrupt file fails at
read time with a :class:`~aft_bench.data.base.DataError`, never later inside a model. Images keep their
stored pixel grid (EXIF orientation is not applied) because segmentation masks are annotated on it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from aft_bench.data.base import DataError

REMEDY = "re-download or regenerate the file, or pass --on-error skip to skip it"

# PIL raises these for unreadable, truncated or hostile files.
_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def _open_decoded(path: Path) -> Image.Image:
    """Opens, verifies and fully decodes an image file.

    ``verify`` checks the container (for PNG the chunk CRCs) and ``load`` decodes every pixel, so a
    truncated file raises here. PIL needs the file reopened after ``verify``.
    """
    if not path.is_file():
        raise DataError(f"{path}: no such file; {REMEDY}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as probe:
                probe.verify()
            image = Image.open(path)
            image.load()
    except (*_READ_ERRORS, Image.DecompressionBombWarning) as err:
        reason = f"{type(err).__name__}: {err}"
        raise DataError(f"{path}: unreadable or corrupt image ({reason}); {REMEDY}") from err
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Converts any PIL mode to RGB (grey replicated, alpha dropped, palette expanded)."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        # 16/32-bit grey: rescale to 8 bits instead of letting PIL clip at 255.
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def read_image(path: str | Path) -> Tensor:
    """Reads an image file as 3 x H x W float32 pixels in [0, 1].

    Grey, grey+alpha, RGBA, palette, CMYK and 16-bit images are converted to RGB.

    Args:
        path: The image file (any format PIL reads: JPEG, PNG, ...).

    Returns:
        A contiguous 3 x H x W float32 tensor in [0, 1].

    Raises:
        DataError: If the file is missing, truncated or not a readable image; the message names it.
    """
    path = Path(path)
    with _open_decoded(path) as image:
        rgb = _to_rgb(image)
        array = np.array(rgb, dtype=np.uint8)  # copy: independent of PIL's buffer
    return torch.from_numpy(array).permute(2, 0, 1).contiguous().float().div_(255.0)


def read_label_png(path: str | Path) -> np.ndarray:
    """Reads a label PNG whose class id per pixel is ``R + 256 * G`` (ImageNet-S and Broden encoding).

    Palette and RGBA PNGs are expanded to RGB first (the palette colours carry the encoding); single
    channel PNGs are refused, because their values do not follow the R + 256 G encoding.

    Args:
        path: The PNG file.

    Returns:
        An H x W int64 array of class ids.

    Raises:
        DataError: If the file is missing, corrupt, not a PNG (lossy formats destroy ids) or single-channel.
    """
    path = Path(path)
    with _open_decoded(path) as image:
        if image.format != "PNG":
            raise DataError(
                f"{path}: label masks must be PNG (ids survive only lossless storage), got {image.format}; "
                f"{REMEDY}"
            )
        if image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
            raise DataError(
                f"{path}: expected an RGB label PNG with class id = R + 256*G, got single-channel mode "
                f"{image.mode!r}; {REMEDY}"
            )
        rgb = _to_rgb(image)
        array = np.asarray(rgb, dtype=np.int64)
    return array[..., 0] + 256 * array[..., 1]
