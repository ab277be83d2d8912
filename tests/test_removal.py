"""Known answers for the pixel-removal functions of ROAR and ROAD (aft_bench.metrics.removal)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aft_bench.metrics.removal import (
    NEIGHBOUR_WEIGHTS,
    curve_auc,
    fraction_label,
    linear_imputation,
    noisy_linear_imputation,
    pixel_ranks,
    random_maps,
    removal_count,
    removal_masks,
    replace_with_mean,
    top_k_masks,
)


@pytest.mark.parametrize(("pixels", "fraction", "expected"), [
    (10, 0.3, 3), (4, 0.5, 2), (3, 0.5, 2), (5, 0.1, 1), (7, 0.0, 0), (7, 1.0, 7), (1024, 0.1, 102),
    (4096, 0.25, 1024), (50176, 0.9, 45158), (9, 0.05, 0),
])
def test_removal_count_rounds_half_up(pixels: int, fraction: float, expected: int) -> None:
    assert removal_count(pixels, fraction) == expected


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_removal_count_rejects_bad_fractions(fraction: float) -> None:
    with pytest.raises(ValueError, match="must lie in"):
        removal_count(10, fraction)


@pytest.mark.parametrize("size", [(4, 4), (7, 5), (32, 32), (17, 64)])
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 0.77, 0.9, 1.0])
def test_exactly_k_top_pixels_removed(size: tuple[int, int], fraction: float) -> None:
    maps = torch.rand((3, *size), generator=torch.Generator().manual_seed(0))
    masks = top_k_masks(maps, fraction)
    k = removal_count(size[0] * size[1], fraction)
    assert masks.dtype == torch.bool and masks.flatten(1).sum(dim=1).tolist() == [k] * 3
    for m, mask in zip(maps, masks, strict=True):
        if 0 < k < mask.numel():
            assert float(m[mask].min()) >= float(m[~mask].max())


def test_constant_map_removes_pixels_in_raster_order() -> None:
    masks = top_k_masks(torch.zeros(1, 3, 4), 0.5)
    expected = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(masks[0], expected)
    lerf = removal_masks(pixel_ranks(torch.zeros(1, 3, 4)), 0.25, "lerf")
    assert torch.flatten(lerf[0]).nonzero().flatten().tolist() == [9, 10, 11]


def test_ties_broken_by_raster_index_and_signed_zero() -> None:
    maps = torch.tensor([[[3.0, 1.0], [3.0, 2.0]], [[-0.0, 0.0], [-1.0, 0.0]]])
    ranks = pixel_ranks(maps)
    assert ranks[0].flatten().tolist() == [0, 3, 1, 2]  # the two 3s keep raster order
    assert ranks[1].flatten().tolist() == [0, 1, 3, 2]  # -0.0 ties with 0.0
    assert top_k_masks(maps[:1], 0.25)[0].flatten().tolist() == [True, False, False, False]


def test_ranks_are_permutations_and_nan_refused() -> None:
    maps = torch.randint(0, 3, (2, 9, 11)).float()  # many ties
    ranks = pixel_ranks(maps)
    for r in ranks:
        assert sorted(r.flatten().tolist()) == list(range(99))
    maps[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="1 NaN"):
        pixel_ranks(maps)


def test_morf_and_lerf_are_complements() -> None:
    ranks = pixel_ranks(torch.rand(2, 10, 10))
    assert torch.equal(removal_masks(ranks, 0.3, "morf"), ~removal_masks(ranks, 0.7, "lerf"))
    with pytest.raises(ValueError, match="unknown"):
        removal_masks(ranks, 0.3, "middle")


def test_replace_with_mean_sets_masked_pixels_only() -> None:
    images = torch.rand(2, 3, 5, 6)
    masks = top_k_masks(torch.rand(2, 5, 6), 0.4)
    mean = [0.1, 0.5, 0.9]
    out = replace_with_mean(images, masks, mean)
    for c, value in enumerate(mean):
        assert torch.all(out[:, c][masks] == torch.tensor(value))
        assert torch.equal(out[:, c][~masks], images[:, c][~masks])
    assert int(masks.sum()) == 2 * removal_count(30, 0.4)
    with pytest.raises(ValueError, match="2 mean values for 3 channels"):
        replace_with_mean(images, masks, [0.1, 0.2])


def _weighted_neighbour_mean(image: np.ndarray, y: int, x: int) -> np.ndarray:
    total, weight = 0.0, 0.0
    for dy, dx, w in NEIGHBOUR_WEIGHTS:
        if 0 <= y + dy < image.shape[1] and 0 <= x + dx < image.shape[2]:
            total, weight = total + w * image[:, y + dy, x + dx], weight + w
    return total / weight


def test_imputation_of_one_pixel_is_the_weighted_neighbour_mean() -> None:
    image = np.arange(27, dtype=np.float64).reshape(3, 3, 3) ** 1.5
    removed = np.zeros((3, 3), dtype=bool)
    removed[1, 1] = True
    out = linear_imputation(image, removed)
    direct = image[:, 0, 1] + image[:, 1, 0] + image[:, 1, 2] + image[:, 2, 1]
    diagonal = image[:, 0, 0] + image[:, 0, 2] + image[:, 2, 0] + image[:, 2, 2]
    np.testing.assert_allclose(out[:, 1, 1], direct / 6 + diagonal / 12)  # weights sum to 1
    np.testing.assert_array_equal(out[:, ~removed], image[:, ~removed])
    corner = np.zeros((3, 3), dtype=bool)
    corner[0, 0] = True
    expected = (image[:, 0, 1] / 6 + image[:, 1, 0] / 6 + image[:, 1, 1] / 12) / (1 / 6 + 1 / 6 + 1 / 12)
    np.testing.assert_allclose(linear_imputation(image, corner)[:, 0, 0], expected)


def test_imputation_solves_the_neighbour_equations() -> None:
    rng = np.random.default_rng(1)
    image = rng.random((3, 12, 9))
    removed = rng.random((12, 9)) < 0.7
    out = linear_imputation(image, removed)
    for y, x in np.argwhere(removed):
        np.testing.assert_allclose(out[:, y, x], _weighted_neighbour_mean(out, y, x), atol=1e-10)
    # against a dense solve of the same equations, built pixel by pixel
    unknown = [tuple(p) for p in np.argwhere(removed)]
    index = {p: i for i, p in enumerate(unknown)}
    a = np.zeros((len(unknown), len(unknown)))
    b = np.zeros((len(unknown), 3))
    for (y, x), i in index.items():
        for dy, dx, w in NEIGHBOUR_WEIGHTS:
            q = (y + dy, x + dx)
            if 0 <= q[0] < 12 and 0 <= q[1] < 9:
                a[i, i] += w
                if q in index:
                    a[i, index[q]] -= w
                else:
                    b[i] += w * image[:, q[0], q[1]]
    dense = np.linalg.solve(a, b)
    np.testing.assert_allclose(np.stack([out[:, y, x] for y, x in unknown]), dense, atol=1e-10)


def test_imputation_edge_cases() -> None:
    image = np.full((3, 6, 6), 0.25)
    removed = np.ones((6, 6), dtype=bool)
    removed[5, 5] = False
    np.testing.assert_allclose(linear_imputation(image, removed), image)  # constant stays constant
    with pytest.raises(ValueError, match="every pixel is removed"):
        linear_imputation(image, np.ones((6, 6), dtype=bool))
    np.testing.assert_array_equal(linear_imputation(image, np.zeros((6, 6), dtype=bool)), image)


def test_noisy_imputation_noise_and_determinism() -> None:
    images = torch.full((2, 3, 64, 64), 0.5)
    masks = top_k_masks(torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(3)), 0.9)

    def rngs(seed: int) -> list[np.random.Generator]:
        return [np.random.default_rng([seed, i]) for i in range(2)]

    plain = noisy_linear_imputation(images, masks, 0.0)
    assert torch.allclose(plain, images)
    a = noisy_linear_imputation(images, masks, 0.01, rngs(0))
    assert torch.equal(a, noisy_linear_imputation(images, masks, 0.01, rngs(0)))
    assert not torch.equal(a, noisy_linear_imputation(images, masks, 0.01, rngs(1)))
    keep = ~masks[:, None].expand_as(images)
    assert torch.equal(a[keep], images[keep])
    noise = (a - 0.5)[~keep].double()
    assert abs(float(noise.mean())) < 1e-3 and float(noise.std()) == pytest.approx(0.01, rel=0.05)
    bright = noisy_linear_imputation(torch.ones(1, 3, 8, 8), masks[:1, :8, :8], 0.5, rngs(0)[:1])
    assert float(bright.max()) <= 1.0  # clipped to the pixel range
    with pytest.raises(ValueError, match="one numpy Generator per image"):
        noisy_linear_imputation(images, masks, 0.01)


def test_random_maps_depend_on_seed_and_key_only() -> None:
    a = random_maps([5, 9], 4, 6, seed=0)
    assert a.shape == (2, 4, 6) and torch.equal(a, random_maps([5, 9], 4, 6, seed=0))
    assert torch.equal(a[1], random_maps([9], 4, 6, seed=0)[0])  # independent of the batch
    assert not torch.equal(a, random_maps([5, 9], 4, 6, seed=1))
    masks = top_k_masks(a, 0.5)
    assert torch.equal(masks, top_k_masks(random_maps([5, 9], 4, 6, seed=0), 0.5))
    assert masks.flatten(1).sum(1).tolist() == [12, 12]


def test_curve_auc_known_answers() -> None:
    assert curve_auc([0.1, 0.5, 0.9], [0.4, 0.4, 0.4]) == pytest.approx(0.4)
    assert curve_auc([0.0, 1.0], [1.0, 0.0]) == pytest.approx(0.5)
    fractions = [0.1 * i for i in range(1, 10)]
    assert curve_auc(fractions, fractions) == pytest.approx(0.5)
    assert curve_auc([0.9, 0.1, 0.5], [0.0, 1.0, 1.0]) == pytest.approx((0.4 * 1.0 + 0.4 * 0.5) / 0.8)
    assert curve_auc([0.3], [0.7]) == pytest.approx(0.7)
    both = curve_auc([0.0, 0.5, 1.0], np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
    np.testing.assert_allclose(both, [0.25, 0.75])
    x, y = np.array([0.1, 0.2, 0.5, 0.9]), np.array([0.9, 0.3, 0.2, 0.6])
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz
    np.testing.assert_allclose(curve_auc(x, y), trapezoid(y, x) / 0.8)
    with pytest.raises(ValueError, match="repeat"):
        curve_auc([0.1, 0.1], [1.0, 2.0])
    with pytest.raises(ValueError, match="last axis"):
        curve_auc([0.1, 0.2], [1.0])


def test_fraction_labels() -> None:
    assert [fraction_label(f) for f in (0.1, 0.3, 0.7, 0.125, 0.0, 1.0)] == ["10", "30", "70", "12.5", "0", "100"]
