"""Geometry shared by images and masks: resize the shorter side, then center crop.

This is CLIP's evaluation preprocessing (Radford et al. 2021: bicubic resize of the shorter side to the
input size, then a center crop), extended to non-square targets by scaling with the larger of the two
ratios so that the crop fits. Images are resampled bicubic with antialiasing; masks with the same
geometry but nearest neighbour at pixel centres (``nearest-exact``), so mask and image stay aligned
pixel for pixel and mask values stay in {1, 0, -1}. Normalisation is not done here: encoders take
pixels in [0, 1] and normalise inside.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or s <= 0 for s in size):
        raise ValueError(f"size must be two positive integers (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def resized_shape(height: int, width: int, size: tuple[int, int]) -> tuple[int, int]:
    """Shape (h, w) after scaling so that both sides cover ``size`` with the shorter-side rule.

    For a square target this equals ``torchvision.transforms.Resize(s)`` (the longer side is
    ``int(s * long / short)``, truncated).

    Args:
        height: Input height.
        width: Input width.
        size: Target (height, width).
    """
    target_h, target_w = _check_size(size)
    if height <= 0 or width <= 0:
        raise ValueError(f"cannot resize an empty image of shape ({height}, {width})")
    if target_h * width >= target_w * height:  # height ratio is the larger: height sets the scale
        return target_h, max(target_w, int(target_h * width / height))
    return max(target_h, int(target_w * height / width)), target_w


def _crop_box(height: int, width: int, size: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of a centred ``size`` crop (rounding as torchvision's ``center_crop``)."""
    top = int(round((height - size[0]) / 2.0))
    left = int(round((width - size[1]) / 2.0))
    return top, left


def _resize_crop(x: Tensor, size: tuple[int, int], stored: tuple[int, int] | None = None) -> Tensor:
    """Resizes a C x H x W tensor (bicubic, antialiased) by the shorter-side rule and crops the centre; the
    geometry is that of an image of size ``stored`` (default: ``x``'s own)."""
    size = _check_size(size)
    new_h, new_w = resized_shape(*(stored or x.shape[-2:]), size)
    if (new_h, new_w) != tuple(x.shape[-2:]):
        x = F.interpolate(x.unsqueeze(0), size=(new_h, new_w), mode="bicubic", antialias=True,
                          align_corners=False).squeeze(0)
    top, left = _crop_box(new_h, new_w, size)
    return x[..., top : top + size[0], left : left + size[1]]


def resize_center_crop(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Resizes the shorter side to the target and center-crops (CLIP preprocessing).

    Args:
        image: C x H x W float pixels in [0, 1].
        size: Target (height, width).

    Returns:
        C x height x width float32 pixels, clamped to [0, 1] (bicubic overshoots at edges).
    """
    if image.ndim != 3:
        raise ValueError(f"expected a C x H x W image, got shape {tuple(image.shape)}")
    out = _resize_crop(image.float(), size)
    return out.clamp_(0.0, 1.0).contiguous()


def resize_center_crop_uint8(image: Tensor, size: tuple[int, int], stored: tuple[int, int] | None = None) -> Tensor:
    """:func:`resize_center_crop` of uint8 pixels, resized in uint8: ``float_pixels`` of the result
    (:func:`aft_bench.data.base.float_pixels`, ``level / 255``) is the float image.

    torch's uint8 antialiased bicubic kernel (the same filter, PIL's) rounds its output to whole uint8 levels:
    it differs from the float path by that rounding (at most about 1/255 per pixel on natural images, more at
    hard edges where the float path's overshoot is clamped) and runs several times faster; the result is a quarter
    of the bytes of float32 in every later copy (collation, the workers' transfer, the copy to the device).

    Args:
        image: 3 x H x W uint8 pixels (channels-last memory is fastest).
        size: Target (height, width).
        stored: The size of the stored image when ``image`` is a smaller draft decode of it
            (:func:`aft_bench.data.io.read_image_uint8`): the geometry (scale, crop) is the stored image's.

    Returns:
        3 x height x width contiguous uint8 pixels.
    """
    if image.ndim != 3 or image.dtype != torch.uint8:
        raise ValueError(f"expected a 3 x H x W uint8 image, got shape {tuple(image.shape)} and dtype {image.dtype}")
    return _resize_crop(image, size, stored).contiguous()


def resize_center_crop_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Same geometry as :func:`resize_center_crop` for an H x W mask, by nearest neighbour.

    Args:
        mask: H x W integer mask (1 foreground, 0 background, -1 ignore).
        size: Target (height, width).

    Returns:
        height x width mask with the input's dtype and only values present in the input.
    """
    if mask.ndim != 2:
        raise ValueError(f"expected an H x W mask, got shape {tuple(mask.shape)}")
    if mask.is_floating_point():
        raise ValueError(f"expected an integer mask, got dtype {mask.dtype}")
    rows, cols = mask_indices(mask.shape[0], mask.shape[1], size)
    return mask.index_select(0, rows).index_select(1, cols)


def mask_indices(height: int, width: int, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """The source rows and columns that :func:`resize_center_crop_mask` takes from a ``height x width`` mask:
    ``mask[rows][:, cols]`` (any array type) is the resized and cropped mask.

    Args:
        height: Mask height.
        width: Mask width.
        size: Target (height, width).

    Returns:
        (rows, cols): int64 index tensors of lengths ``size[0]`` and ``size[1]`` (views of cached ones: read them,
        do not write to them).
    """
    size = _check_size(size)
    new_h, new_w = resized_shape(height, width, size)
    top, left = _crop_box(new_h, new_w, size)
    return (_nearest_exact(height, new_h)[top : top + size[0]], _nearest_exact(width, new_w)[left : left + size[1]])


@functools.lru_cache(maxsize=256)
def _nearest_exact(length: int, new_length: int) -> Tensor:
    """The source index of each output index of torch's ``nearest-exact`` resize of ``length`` to ``new_length``:
    ``min(floor((i + 0.5) * scale), length - 1)`` with ``scale = length / new_length``, in float32 as torch's
    CPU kernel computes it (so masks are indexed, never converted to float). Kept per pair of lengths (a dataset
    has few image sizes); callers only read it."""
    scale = torch.tensor(length, dtype=torch.float32) / new_length
    index = ((torch.arange(new_length, dtype=torch.float32) + 0.5) * scale).floor_().long()
    return index.clamp_(max=length - 1)
