"""Reading images and label masks from disk, with errors that name the file and the remedy.

Every reader decodes the whole file here (``PIL.Image.load``), so a truncated or corrupt file fails at
read time with a :class:`~aft_bench.data.base.DataError`, never later inside a model. Images keep their
stored pixel grid (EXIF orientation is not applied) because segmentation masks are annotated on it.

The file is read once: its bytes are verified (PNG chunk CRCs) and decoded from memory. The lean readers
return what the decoder produced, uint8 pixels and compact label ids, so that resizing runs on uint8
(:func:`aft_bench.data.transforms.resize_center_crop_uint8`) and floats are made only at the target size;
:func:`read_image_uint8` can also let a JPEG decode near the size it will be resized to (draft mode).
"""

from __future__ import annotations

import io
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


DRAFT_MARGIN = 2
"""A JPEG is decoded at a reduced scale (draft mode) only while it stays at least this many times the size it
is resized to, so that the antialiased resize still averages two or more decoded pixels per output pixel.

Bound (tests/test_lean_decode.py, textured photographs-like images of 900 x 1200 and 1800 x 2400 at 224 px): the
resized pixels of a draft decode differ from those of the full decode by at most 1/255 on average and 8/255 at
any pixel. That is within the spread of two standard resamplers of the full decode at single pixels (bicubic
against bilinear: up to 8/255), but on average 2-4 times the uint8 resize's own rounding (about 0.25/255), so
draft decoding is opt-in (the ``draft`` argument of the datasets that offer it), never a default."""


def _open_decoded(path: Path, draft: tuple[int, int] | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Reads an image file once, verifies and fully decodes it; returns the image and its stored (H, W).

    ``verify`` checks the container (for PNG the chunk CRCs) and ``load`` decodes every pixel, so a
    truncated file raises here. Both run on the bytes read once (PIL needs a fresh image after ``verify``).
    ``draft`` (H, W): let a JPEG decoder scale down by a power of two while both sides stay at least
    :data:`DRAFT_MARGIN` times ``draft``.
    """
    if not path.is_file():
        raise DataError(f"{path}: no such file; {REMEDY}")
    try:
        data = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format == "PNG":  # JPEG's verify checks nothing; PNG's checks the chunk CRCs
                image.verify()
                image = Image.open(io.BytesIO(data))
            stored = (image.height, image.width)
            if draft is not None and image.format == "JPEG":
                image.draft(image.mode, (draft[1] * DRAFT_MARGIN, draft[0] * DRAFT_MARGIN))
            image.load()
    except (*_READ_ERRORS, Image.DecompressionBombWarning) as err:
        reason = f"{type(err).__name__}: {err}"
        raise DataError(f"{path}: unreadable or corrupt image ({reason}); {REMEDY}") from err
    return image, stored


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
    return read_image_uint8(path)[0].contiguous().float().div_(255.0)


def read_image_uint8(path: str | Path, draft: tuple[int, int] | None = None) -> tuple[Tensor, tuple[int, int]]:
    """Reads an image file as 3 x H x W uint8 pixels (channels-last in memory, as decoded) and its stored size.

    Args:
        path: The image file (any format PIL reads; converted to RGB as :func:`read_image` does).
        draft: The (H, W) the image will be resized to: a JPEG may then decode at 1/2, 1/4 or 1/8 scale while
            both sides stay at least :data:`DRAFT_MARGIN` times it (the returned pixels are smaller than the
            stored size then). None decodes at full size.

    Returns:
        (pixels, (stored height, stored width)).

    Raises:
        DataError: If the file is missing, truncated or not a readable image; the message names it.
    """
    path = Path(path)
    image, stored = _open_decoded(path, draft)
    with image:
        array = np.array(_to_rgb(image), dtype=np.uint8)  # copy: independent of PIL's buffer
    return torch.from_numpy(array).permute(2, 0, 1), stored


def read_label_png(path: str | Path, dtype: type = np.int64) -> np.ndarray:
    """Reads a label PNG whose class id per pixel is ``R + 256 * G`` (ImageNet-S and Broden encoding).

    Palette and RGBA PNGs are expanded to RGB first (the palette colours carry the encoding); single
    channel PNGs are refused, because their values do not follow the R + 256 G encoding.

    Args:
        path: The PNG file.
        dtype: Integer type of the ids (ids go up to 65535: ``np.uint16`` holds them in a quarter of int64).

    Returns:
        An H x W array of class ids.

    Raises:
        DataError: If the file is missing, corrupt, not a PNG (lossy formats destroy ids) or single-channel.
    """
    path = Path(path)
    image, _ = _open_decoded(path)
    with image:
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
        array = np.asarray(_to_rgb(image))  # uint8, H x W x 3
    ids = array[..., 1].astype(dtype)
    ids <<= 8
    ids |= array[..., 0]
    return ids
