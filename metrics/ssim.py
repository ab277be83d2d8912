"""Structural similarity (SSIM) of saliency maps, batched in torch, equal to scikit-image's.

The AFT paper (appendix A.4, Table 7) measures how robust Grad-CAM maps are to input noise as the
SSIM between the map of a clean image and the map of the same image with Gaussian noise added. SSIM
(Wang, Bovik, Sheikh & Simoncelli 2004, "Image quality assessment: from error visibility to structural
similarity", IEEE TIP 13(4)) compares local means, variances and the covariance of two images in a
sliding window:

    S(x, y) = (2 mu_x mu_y + C1) (2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (s_x^2 + s_y^2 + C2)),
    C1 = (K1 R)^2, C2 = (K2 R)^2,

and reports the mean of S over the image. :func:`ssim` follows the defaults of
``skimage.metrics.structural_similarity(a, b, data_range=R)`` (scikit-image >= 0.19) exactly: a
7 x 7 uniform window, sample (N - 1) covariances, K1 = 0.01, K2 = 0.03, and the mean taken over the
windows that lie fully inside the image (scikit-image filters with reflected borders and then crops
a (win_size - 1) / 2 strip, which leaves the same windows). All sums run in float64.

Maps are min-max normalised to [0, 1] before they are compared (:func:`normalize_minmax`), so SSIM
with ``data_range=1`` compares the shape of two maps and not their scale (an attribution's scale
differs between encoders by orders of magnitude).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from aft_bench.metrics.base import Metric, NonFiniteMapError

CONSTANT_MAP = "constant map"
"""Exclusion reason of a sample whose clean map is constant: min-max normalisation leaves no structure."""


def _check_pair(a: Tensor, b: Tensor, win_size: int) -> None:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"ssim takes torch tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.dim() != 3 or tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"ssim takes two batches of maps of the same shape B x H x W, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}; add a batch dimension with maps[None]"
        )
    if win_size < 1 or win_size % 2 != 1:
        raise ValueError(f"ssim win_size must be an odd positive number of pixels, got {win_size}")
    if a.shape[1] < win_size or a.shape[2] < win_size:
        raise ValueError(
            f"maps of size {a.shape[1]} x {a.shape[2]} are smaller than the {win_size} x {win_size} SSIM window; "
            "compare maps of at least that size or pass a smaller odd win_size"
        )
    for name, t in (("first", a), ("second", b)):
        bad = (~torch.isfinite(t)).reshape(t.shape[0], -1).sum(dim=1)
        if bool(bad.any()):
            samples = torch.nonzero(bad).flatten().tolist()
            raise NonFiniteMapError(
                f"the {name} maps hold {int(bad.sum())} non-finite (NaN/Inf) values in batch samples "
                f"{samples[:10]}; skip these samples with --on-error skip"
            )


def ssim(
    a: Tensor, b: Tensor, data_range: float = 1.0, win_size: int = 7, k1: float = 0.01, k2: float = 0.03
) -> Tensor:
    """Mean SSIM (Wang et al. 2004) of each pair of maps, as scikit-image computes it by default.

    ``ssim(a, b)[i] == skimage.metrics.structural_similarity(a[i], b[i], data_range=data_range)`` for
    float64 inputs (to rounding, about 1e-12).

    Args:
        a: B x H x W maps.
        b: B x H x W maps of the same shape (SSIM is symmetric).
        data_range: The range R of the values (1.0 for min-max-normalised maps).
        win_size: Side of the uniform window (odd, at most min(H, W)).
        k1: Constant of the luminance term, C1 = (k1 R)^2.
        k2: Constant of the contrast-structure term, C2 = (k2 R)^2.

    Returns:
        (B,) float64 tensor of SSIM values in [-1, 1]; 1 for identical maps.

    Raises:
        ValueError: On mismatched shapes, maps smaller than the window, an even window or data_range <= 0.
        NonFiniteMapError: If a map holds NaN or Inf.
    """
    _check_pair(a, b, win_size)
    if not data_range > 0:
        raise ValueError(f"ssim data_range must be positive, got {data_range!r}")
    x, y = a.double()[:, None], b.double()[:, None]
    n = win_size * win_size
    cov_norm = n / (n - 1)  # sample covariance, scikit-image's use_sample_covariance=True

    def mean(t: Tensor) -> Tensor:
        return F.avg_pool2d(t, win_size, stride=1)  # only windows fully inside the map

    mu_x, mu_y = mean(x), mean(y)
    var_x = cov_norm * (mean(x * x) - mu_x * mu_x)
    var_y = cov_norm * (mean(y * y) - mu_y * mu_y)
    cov_xy = cov_norm * (mean(x * y) - mu_x * mu_y)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return (numerator / denominator).flatten(1).mean(dim=1)


def normalize_minmax(maps: Tensor) -> Tensor:
    """Each map rescaled to [0, 1] by its own minimum and maximum (float64).

    A constant map (max == min) has no structure to rescale and becomes all zeros; the SSIM task
    excludes samples whose *clean* map is constant (:data:`CONSTANT_MAP`), while a noisy map that
    collapsed to a constant is compared as zeros (a real loss of structure).

    Args:
        maps: B x H x W maps (finite).

    Returns:
        B x H x W float64 maps with min 0 and max 1 (or all zeros).
    """
    flat = maps.double().flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    scaled = torch.where(span > 0, (flat - low) / torch.where(span > 0, span, torch.ones_like(span)), 0.0)
    return scaled.view(maps.shape)


def is_constant(maps: Tensor) -> Tensor:
    """(B,) bool: True where a map holds a single value."""
    flat = maps.flatten(1)
    return flat.max(dim=1).values == flat.min(dim=1).values


def map_ssim(maps: Tensor, reference: Tensor, win_size: int = 7) -> Tensor:
    """SSIM of min-max-normalised maps with min-max-normalised reference maps, data range 1.

    Args:
        maps: B x H x W maps (for example of noisy images).
        reference: B x H x W reference maps (for example of the clean images).
        win_size: SSIM window side (odd).

    Returns:
        (B,) float64 SSIM values.
    """
    return ssim(normalize_minmax(maps), normalize_minmax(reference), data_range=1.0, win_size=win_size)


SSIM = Metric(
    name="ssim",
    fn=map_ssim,
    higher_is_better=True,
    description="SSIM (Wang et al. 2004; scikit-image defaults) of min-max-normalised maps with reference maps",
)
