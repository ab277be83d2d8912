"""SSIM of maps against scikit-image's structural_similarity (defaults, data_range=1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from aft_bench.metrics.base import NonFiniteMapError
from aft_bench.metrics.ssim import SSIM, is_constant, map_ssim, normalize_minmax, ssim


def _reference(a: torch.Tensor, b: torch.Tensor, **kwargs: float) -> list[float]:
    return [structural_similarity(x.double().numpy(), y.double().numpy(), data_range=1.0, **kwargs)
            for x, y in zip(a, b, strict=True)]


@pytest.mark.parametrize("shape", [(7, 7), (13, 29), (64, 48), (31, 8), (32, 32)])
def test_random_maps_match_skimage(shape: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    a = torch.rand(3, *shape, generator=gen, dtype=torch.float64)
    b = (a + 0.3 * torch.randn(3, *shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    b[2] = torch.rand(*shape, generator=gen, dtype=torch.float64)  # unrelated pair
    assert ssim(a, b).tolist() == pytest.approx(_reference(a, b), abs=1e-6)


def _structured(h: int, w: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h, dtype=torch.float64),
                            torch.linspace(0, 1, w, dtype=torch.float64), indexing="ij")
    blob = torch.exp(-((xs - 0.3) ** 2 + (ys - 0.6) ** 2) / 0.02)
    checker = ((torch.arange(h)[:, None] // 4 + torch.arange(w)[None, :] // 4) % 2).double()
    half = torch.zeros(h, w, dtype=torch.float64)
    half[:, : w // 2] = 1.0
    return torch.stack([blob, checker, xs, half])


@pytest.mark.parametrize("shape", [(24, 24), (20, 37)])
def test_structured_maps_match_skimage(shape: tuple[int, int]) -> None:
    a = _structured(*shape)
    b = torch.roll(a, shifts=(2, 3), dims=(1, 2)) * 0.8 + 0.1
    assert ssim(a, b).tolist() == pytest.approx(_reference(a, b), abs=1e-6)


def test_other_window_sizes_match_skimage() -> None:
    gen = torch.Generator().manual_seed(3)
    a, b = torch.rand(2, 2, 15, 19, generator=gen, dtype=torch.float64)
    for win in (3, 5, 11):
        assert ssim(a, b, win_size=win).tolist() == pytest.approx(_reference(a, b, win_size=win), abs=1e-6)


def test_float32_inputs_close_to_float64_reference() -> None:
    gen = torch.Generator().manual_seed(4)
    a, b = torch.rand(2, 4, 33, 33, generator=gen)
    assert ssim(a, b).tolist() == pytest.approx(_reference(a, b), abs=1e-6)


def test_identical_and_symmetric() -> None:
    a = torch.cat([torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(5)), torch.zeros(1, 16, 16)])
    assert ssim(a, a).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-12)
    b = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(6))
    assert ssim(a, b).tolist() == pytest.approx(ssim(b, a).tolist(), abs=1e-12)


def test_minmax_normalisation() -> None:
    maps = torch.stack([torch.arange(16.0).view(4, 4) * 3 - 5, torch.full((4, 4), 2.0)])
    norm = normalize_minmax(maps)
    assert norm[0].min() == 0 and norm[0].max() == 1 and torch.equal(norm[1], torch.zeros(4, 4, dtype=torch.float64))
    assert is_constant(maps).tolist() == [False, True]
    # scale and offset do not change the SSIM of normalised maps
    base = torch.rand(1, 12, 12, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    other = torch.rand(1, 12, 12, generator=torch.Generator().manual_seed(8))
    assert map_ssim(base * 1e-4 + 3, other).item() == pytest.approx(map_ssim(base, other).item(), abs=1e-9)
    expected = structural_similarity(normalize_minmax(base)[0].numpy(), normalize_minmax(other)[0].numpy(),
                                     data_range=1.0)
    assert SSIM(base, other).item() == pytest.approx(expected, abs=1e-6)
    assert SSIM.higher_is_better is True


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="smaller than the 7 x 7 SSIM window"):
        ssim(torch.rand(1, 6, 20), torch.rand(1, 6, 20))
    with pytest.raises(ValueError, match="same shape"):
        ssim(torch.rand(1, 8, 8), torch.rand(1, 8, 9))
    with pytest.raises(ValueError, match="odd"):
        ssim(torch.rand(1, 8, 8), torch.rand(1, 8, 8), win_size=4)
    with pytest.raises(ValueError, match="data_range"):
        ssim(torch.rand(1, 8, 8), torch.rand(1, 8, 8), data_range=0)
    bad = torch.rand(2, 8, 8)
    bad[1, 2, 2] = float("inf")
    with pytest.raises(NonFiniteMapError, match=r"second maps hold 1 .* samples \[1\]"):
        ssim(torch.rand(2, 8, 8), bad)
    assert np.isfinite(ssim(torch.rand(1, 8, 8), torch.rand(1, 8, 8)).item())
