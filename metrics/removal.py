"""Pixel removal by saliency: the pure functions behind ROAR and ROAD.

ROAR (Hooker et al. 2019, "A benchmark for interpretability methods in deep neural networks") removes
the top-k% pixels of every image by a saliency map, replacing them by the per-channel dataset mean, and
retrains; ROAD (Rong et al. 2022, "A consistent and efficient evaluation strategy for attribution
methods") removes them by *noisy linear imputation* instead and evaluates without retraining. The AFT
paper reports ROAR curves (section 4.1, Fig. 3). The task runners live in ``aft_bench.tasks.roar`` and
``aft_bench.tasks.road``; everything here is a function of arrays, without model code.

Conventions fixed here:
    * **Ranking.** Pixel ``p`` of an H x W map (raster index ``p = y * W + x``) gets rank ``r(p)`` in
      ``0 .. H*W - 1`` by descending score, ties broken by ascending raster index (a stable sort by
      ``(-score, p)``): a constant map removes pixels in raster order. NaN scores are refused.
    * **Count.** Fraction ``f`` of ``N`` pixels removes ``k = floor(f * N + 1/2)`` pixels (round half
      up, with ``f * N`` first rounded to 9 decimals so that 0.3 * 10 is 3, not 2.9999999999999996).
    * **Order.** ``"morf"`` (most relevant first, ROAR's and ROAD's default) removes ranks ``< k``;
      ``"lerf"`` (least relevant first) removes ranks ``>= N - k``.
    * **Area under the curve.** Trapezoid rule over the given fractions, divided by the span of the
      fractions (``max - min``): the mean height of the curve, in the unit of the values (an accuracy
      in percent gives an AUC in percent). A single fraction gives its own value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve
from torch import Tensor

ORDERS: tuple[str, ...] = ("morf", "lerf")
"""Removal orders: most relevant first, least relevant first."""

NEIGHBOUR_WEIGHTS: tuple[tuple[int, int, float], ...] = (
    (-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
    (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12),
)
"""(dy, dx, weight) of the 8 neighbours in ROAD's linear imputation (Rong et al. 2022, section 4):
direct neighbours weigh 1/6, diagonal ones 1/12 (together 1)."""


def removal_count(num_pixels: int, fraction: float) -> int:
    """The number of pixels a removal fraction takes: ``floor(fraction * num_pixels + 1/2)``.

    Args:
        num_pixels: Pixels per image (positive).
        fraction: Share to remove, in [0, 1].

    Raises:
        ValueError: If ``fraction`` is outside [0, 1] or ``num_pixels`` is not positive.
    """
    check_fraction(fraction)
    if num_pixels < 1:
        raise ValueError(f"removal_count: num_pixels={num_pixels} must be positive")
    return int(math.floor(round(fraction * num_pixels, 9) + 0.5))


def check_fraction(fraction: float) -> float:
    """Returns ``fraction`` as a float after checking it lies in [0, 1]."""
    value = float(fraction)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"removal fraction {fraction!r} must lie in [0, 1] (0.1 = 10% of the pixels)")
    return value


def pixel_ranks(maps: Tensor) -> Tensor:
    """Rank of every pixel of each map by descending score (0 = most salient), ties by raster index.

    Args:
        maps: B x H x W saliency maps (any real dtype).

    Returns:
        B x H x W int64 ranks; each map's ranks are a permutation of ``0 .. H*W - 1``.

    Raises:
        ValueError: If ``maps`` is not B x H x W or holds NaN.
    """
    if maps.dim() != 3 or maps.shape[1] * maps.shape[2] == 0:
        raise ValueError(f"pixel_ranks takes B x H x W maps with pixels, got shape {tuple(maps.shape)}")
    flat = maps.detach().reshape(maps.shape[0], -1).to(torch.float64)
    if bool(torch.isnan(flat).any()):
        bad = int(torch.isnan(flat).sum())
        raise ValueError(f"pixel_ranks: maps hold {bad} NaN values; fix the attribution or skip those samples")
    flat = flat + 0.0  # -0.0 -> +0.0, so signed zeros tie
    order = torch.sort(-flat, dim=1, stable=True).indices
    ranks = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    ranks.scatter_(1, order, positions)
    return ranks.reshape(maps.shape)


def removal_masks(ranks: Tensor, fraction: float, order: str = "morf") -> Tensor:
    """Which pixels a fraction removes, given the ranks of :func:`pixel_ranks`.

    Args:
        ranks: B x H x W pixel ranks (any integer dtype; each map a permutation of ``0 .. H*W - 1``).
        fraction: Share of pixels to remove, in [0, 1]; exactly :func:`removal_count` pixels per image.
        order: ``"morf"`` removes the most salient pixels, ``"lerf"`` the least salient ones.

    Returns:
        B x H x W bool, True on removed pixels.
    """
    if order not in ORDERS:
        raise ValueError(f"removal order {order!r} is unknown; use one of {ORDERS}")
    if ranks.dim() != 3:
        raise ValueError(f"removal_masks takes B x H x W ranks, got shape {tuple(ranks.shape)}")
    num_pixels = ranks.shape[1] * ranks.shape[2]
    k = removal_count(num_pixels, fraction)
    ranks = ranks.to(torch.int64)
    return ranks < k if order == "morf" else ranks >= num_pixels - k


def top_k_masks(maps: Tensor, fraction: float, order: str = "morf") -> Tensor:
    """Removal masks straight from saliency maps: ``removal_masks(pixel_ranks(maps), fraction, order)``."""
    return removal_masks(pixel_ranks(maps), fraction, order)


def random_maps(keys: Sequence[int], height: int, width: int, seed: int) -> Tensor:
    """The random-removal baseline (Hooker et al. 2019): a uniform random score per pixel.

    Image ``i`` draws from ``numpy.random.default_rng(SeedSequence([seed, keys[i]]))``, so its map
    depends on ``(seed, key)`` only, never on the batch it comes in. Ties have probability zero.

    Args:
        keys: One non-negative integer per image (for example a stable hash of the sample id).
        height, width: Map size.
        seed: Run seed.

    Returns:
        len(keys) x height x width float64 maps in [0, 1).
    """
    if seed < 0 or any(k < 0 for k in keys):
        raise ValueError(f"random_maps: seed {seed} and keys must be non-negative integers")
    maps = [np.random.default_rng(np.random.SeedSequence([int(seed), int(k)])).random((height, width))
            for k in keys]
    if not maps:
        return torch.empty((0, height, width), dtype=torch.float64)
    return torch.from_numpy(np.stack(maps))


def replace_with_mean(images: Tensor, masks: Tensor, mean: Tensor | Sequence[float]) -> Tensor:
    """ROAR's removal: masked pixels of every channel take that channel's dataset mean.

    Args:
        images: B x C x H x W pixels.
        masks: B x H x W bool, True on pixels to replace.
        mean: (C,) per-channel values (the mean of the training images).

    Returns:
        A new B x C x H x W tensor; unmasked pixels are unchanged.
    """
    if images.dim() != 4 or tuple(masks.shape) != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"replace_with_mean: images {tuple(images.shape)} must be B x C x H x W and masks "
                         f"B x H x W, got masks {tuple(masks.shape)}")
    fill = torch.as_tensor(mean, dtype=images.dtype, device=images.device).reshape(1, -1, 1, 1)
    if fill.shape[1] != images.shape[1]:
        raise ValueError(f"replace_with_mean: {fill.shape[1]} mean values for {images.shape[1]} channels")
    return torch.where(masks[:, None].to(torch.bool), fill.expand_as(images), images)


def linear_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """ROAD's linear imputation of one image (Rong et al. 2022, without noise).

    Every removed pixel takes the weighted mean (:data:`NEIGHBOUR_WEIGHTS`) of its in-image
    neighbours, removed ones included, which makes the removed values the solution of one sparse linear
    system per image (solved for all channels at once): for removed pixel i with in-image neighbours
    N(i), ``sum_{j in N(i)} w_ij * (x_i - x_j) = 0``. The system is non-singular as long as one pixel
    is kept: every group of connected removed pixels then borders a kept one.

    Args:
        image: C x H x W float array.
        removed: H x W bool, True on pixels to impute.

    Returns:
        A new C x H x W float64 array with removed pixels imputed.

    Raises:
        ValueError: If every pixel is removed (nothing to impute from) or the shapes differ.
    """
    channels, height, width = image.shape
    if removed.shape != (height, width):
        raise ValueError(f"linear_imputation: mask shape {removed.shape} differs from image size {(height, width)}")
    out = image.astype(np.float64, copy=True).reshape(channels, -1)
    flat_removed = removed.reshape(-1).astype(bool)
    unknown = np.flatnonzero(flat_removed)
    n = unknown.size
    if n == 0:
        return out.reshape(image.shape)
    if n == flat_removed.size:
        raise ValueError("linear_imputation: every pixel is removed, so there is nothing to impute from; "
                         "use removal fractions below 1")
    variable = np.full(flat_removed.size, -1, dtype=np.int64)
    variable[unknown] = np.arange(n)
    ys, xs = np.divmod(unknown, width)
    diagonal = np.zeros(n)
    rhs = np.zeros((n, channels))
    rows, cols, vals = [np.arange(n)], [np.arange(n)], []
    for dy, dx, weight in NEIGHBOUR_WEIGHTS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        eq = np.flatnonzero(inside)
        neighbour = ny[eq] * width + nx[eq]
        diagonal[eq] += weight
        is_unknown = flat_removed[neighbour]
        rows.append(eq[is_unknown])
        cols.append(variable[neighbour[is_unknown]])
        vals.append(np.full(int(is_unknown.sum()), -weight))
        known_eq, known_px = eq[~is_unknown], neighbour[~is_unknown]
        np.add.at(rhs, known_eq, weight * out[:, known_px].T)
    matrix = coo_matrix((np.concatenate([diagonal, *vals]), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(n, n)).tocsc()
    solution = spsolve(matrix, rhs)
    out[:, unknown] = np.asarray(solution).reshape(n, channels).T
    return out.reshape(image.shape)


def noisy_linear_imputation(
    images: Tensor, masks: Tensor, noise_std: float = 0.01, rngs: Sequence[np.random.Generator] | None = None,
) -> Tensor:
    """ROAD's noisy linear imputation (Rong et al. 2022) of a batch, clipped to [0, 1].

    Removed pixels get :func:`linear_imputation` plus Gaussian noise of standard deviation
    ``noise_std`` (independent per pixel and channel; Rong et al. use 0.01), then every pixel is
    clipped to [0, 1], the pixel range of this package. Kept pixels are unchanged.

    Args:
        images: B x C x H x W pixels in [0, 1].
        masks: B x H x W bool, True on removed pixels.
        noise_std: Noise standard deviation in pixel units (0 = plain linear imputation).
        rngs: One numpy generator per image for the noise (required when ``noise_std > 0``), so an
            image's noise does not depend on its batch.

    Returns:
        A new B x C x H x W tensor of the images' dtype and device.
    """
    if images.dim() != 4 or tuple(masks.shape) != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"noisy_linear_imputation: images {tuple(images.shape)} must be B x C x H x W and "
                         f"masks B x H x W, got masks {tuple(masks.shape)}")
    if noise_std < 0:
        raise ValueError(f"noisy_linear_imputation: noise_std={noise_std} must be non-negative")
    if noise_std > 0 and (rngs is None or len(rngs) != images.shape[0]):
        raise ValueError("noisy_linear_imputation: pass one numpy Generator per image in rngs for the noise")
    array = images.detach().to("cpu", torch.float64).numpy()
    removed = masks.detach().to("cpu", torch.bool).numpy()
    out = np.empty_like(array)
    for i in range(array.shape[0]):
        out[i] = linear_imputation(array[i], removed[i])
        if noise_std > 0 and removed[i].any():
            noise = rngs[i].normal(0.0, noise_std, (array.shape[1], int(removed[i].sum())))  # type: ignore[index]
            out[i][:, removed[i]] += noise
    np.clip(out, 0.0, 1.0, out=out)
    return torch.from_numpy(out).to(device=images.device, dtype=images.dtype)


def curve_auc(fractions: Sequence[float], values: Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    """Normalised area under curves sampled at ``fractions``: trapezoid area / (max - min fraction).

    Args:
        fractions: F distinct removal fractions (any order; sorted here together with the values).
        values: ... x F curve heights (one curve per leading index).

    Returns:
        ... float64 array: the mean height of each curve over the fraction range (one point: its value).
    """
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0 or y.shape[-1:] != x.shape:
        raise ValueError(f"curve_auc: {x.size} fractions but values of shape {y.shape} (last axis must match)")
    if np.unique(x).size != x.size:
        raise ValueError(f"curve_auc: fractions {x.tolist()} repeat a value")
    order = np.argsort(x)
    x, y = x[order], y[..., order]
    if x.size == 1:
        return y[..., 0]
    area = (((y[..., 1:] + y[..., :-1]) / 2) * np.diff(x)).sum(axis=-1)
    return area / (x[-1] - x[0])


def fraction_label(fraction: float) -> str:
    """Metric-name suffix of a fraction in percent: 0.1 -> ``"10"``, 0.125 -> ``"12.5"``."""
    return f"{round(check_fraction(fraction) * 100, 6):g}"
