"""Known-answer tests for the pointing game, PG-energy and the shared metric checks in metrics/base.py."""

from __future__ import annotations

import math

import pytest
import torch

from aft_bench.metrics.base import (
    EMPTY_MASK,
    Metric,
    NonFiniteMapError,
    check_batch,
    exclusion_reason,
    exclusion_reasons,
)
from aft_bench.metrics.pointing import PG_ENERGY, POINTING_GAME, pg_energy, pointing_game


def _mask(h: int, w: int, fg: list[tuple[int, int]] = (), ignore: list[tuple[int, int]] = ()) -> torch.Tensor:
    m = torch.zeros(h, w, dtype=torch.int8)
    for r, c in fg:
        m[r, c] = 1
    for r, c in ignore:
        m[r, c] = -1
    return m


def _peak(h: int, w: int, at: tuple[int, int], value: float = 1.0) -> torch.Tensor:
    m = torch.zeros(h, w)
    m[at] = value
    return m


def _pg(map_: torch.Tensor, mask: torch.Tensor, **kw: float) -> float:
    return float(pointing_game(map_[None], mask[None], **kw)[0])


# --------------------------------------------------------------------------------------------- pointing game


def test_hit_and_miss_batched_and_dtype() -> None:
    maps = torch.stack([_peak(4, 5, (1, 2)), _peak(4, 5, (3, 4))])
    masks = torch.stack([_mask(4, 5, fg=[(1, 2)]), _mask(4, 5, fg=[(1, 2)])])
    out = pointing_game(maps, masks)
    assert out.dtype == torch.float64 and out.shape == (2,)
    assert out.tolist() == [1.0, 0.0]


def test_batch_equals_single_samples() -> None:
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 7, 9, generator=g)
    masks = torch.randint(-1, 2, (6, 7, 9), generator=g).to(torch.int8)
    for fn, kw in [(pointing_game, {}), (pointing_game, {"tolerance": 2}), (pg_energy, {})]:
        whole = fn(maps, masks, **kw)
        singles = torch.cat([fn(maps[i : i + 1], masks[i : i + 1], **kw) for i in range(6)])
        torch.testing.assert_close(whole, singles, equal_nan=True)


def test_empty_mask_is_nan_never_a_hit() -> None:
    map_ = _peak(3, 3, (1, 1))
    only_bg_and_ignore = _mask(3, 3, ignore=[(1, 1)])
    assert math.isnan(_pg(map_, only_bg_and_ignore))
    assert math.isnan(_pg(map_, only_bg_and_ignore, tolerance=10))
    assert math.isnan(float(pg_energy(map_[None], only_bg_and_ignore[None])[0]))
    assert exclusion_reason(map_, only_bg_and_ignore) == EMPTY_MASK
    assert exclusion_reason(map_, _mask(3, 3)) == EMPTY_MASK


def test_full_mask_is_not_excluded_and_always_hits() -> None:
    full = torch.ones(3, 4, dtype=torch.int8)
    map_ = torch.rand(3, 4)
    assert exclusion_reason(map_, full) is None
    assert _pg(map_, full) == 1.0
    assert float(pg_energy(map_[None], full[None])[0]) == pytest.approx(1.0)


def test_ties_take_first_maximal_pixel_in_row_major_order() -> None:
    map_ = torch.zeros(3, 3)
    map_[0, 2] = 5.0  # first maximum in row-major order
    map_[2, 0] = 5.0
    assert _pg(map_, _mask(3, 3, fg=[(2, 0)])) == 0.0  # the later maximum does not count
    assert _pg(map_, _mask(3, 3, fg=[(0, 2)])) == 1.0
    map_[1, 0] = 5.0  # (1, 0) comes before (2, 0) but after (0, 2)
    assert _pg(map_, _mask(3, 3, fg=[(1, 0), (2, 0)])) == 0.0


@pytest.mark.parametrize("value", [0.0, 3.5])
def test_constant_and_all_zero_map_point_at_first_pixel(value: float) -> None:
    map_ = torch.full((4, 4), value)
    assert _pg(map_, _mask(4, 4, fg=[(0, 0)])) == 1.0
    assert _pg(map_, _mask(4, 4, fg=[(0, 1), (3, 3)])) == 0.0
    # with the first pixel ignored the point is the first non-ignore pixel
    assert _pg(map_, _mask(4, 4, fg=[(0, 1)], ignore=[(0, 0)])) == 1.0


def test_argmax_in_ignore_region_is_skipped() -> None:
    map_ = torch.zeros(4, 4)
    map_[0, 0] = 10.0  # maximum, but ignored: counting it would be a miss
    map_[2, 3] = 1.0  # maximum over the non-ignore pixels, in the object
    mask = _mask(4, 4, fg=[(2, 3)], ignore=[(0, 0)])
    assert _pg(map_, mask) == 1.0
    assert _pg(map_, _mask(4, 4, fg=[(2, 3)])) == 0.0  # same map, nothing ignored: miss


def test_tolerance_is_strict_as_in_torchray() -> None:
    # TorchRay (torchray/benchmark/pointing_game.py) accepts a mask pixel when its squared distance to
    # the point is < tolerance**2: a mask pixel exactly at the tolerance is a miss.
    map_ = _peak(12, 12, (5, 5))
    straight = _mask(12, 12, fg=[(5, 8)])  # distance 3
    assert _pg(map_, straight) == 0.0
    assert _pg(map_, straight, tolerance=3) == 0.0  # exactly at the tolerance: miss
    assert _pg(map_, straight, tolerance=3.001) == 1.0  # just inside: hit
    assert _pg(map_, straight, tolerance=4) == 1.0
    assert _pg(map_, straight, tolerance=2.999) == 0.0
    diagonal = _mask(12, 12, fg=[(8, 9)])  # 3-4-5 triangle: distance exactly 5
    assert _pg(map_, diagonal, tolerance=5) == 0.0
    assert _pg(map_, diagonal, tolerance=5.01) == 1.0
    assert _pg(map_, diagonal, tolerance=6) == 1.0
    corner = _mask(12, 12, fg=[(6, 6)])  # distance sqrt(2)
    assert _pg(map_, corner, tolerance=1) == 0.0
    assert _pg(map_, corner, tolerance=1.5) == 1.0
    # the nearest mask pixel decides: one at distance 2 (inside 2.5) beside one at distance 5 (outside)
    both = _mask(12, 12, fg=[(5, 7), (10, 5)])
    assert _pg(map_, both, tolerance=2.5) == 1.0
    assert _pg(map_, both, tolerance=2) == 0.0


@pytest.mark.parametrize("tolerance", [0, 0.5, 1])
def test_tolerance_up_to_one_pixel_hits_only_inside_the_mask(tolerance: float) -> None:
    # tolerance 0 is the paper's protocol (the point itself must be foreground); TorchRay's strict rule
    # gives the same for 0 < tolerance <= 1 (only distance 0 is < tolerance**2).
    map_ = _peak(5, 5, (2, 2))
    assert _pg(map_, _mask(5, 5, fg=[(2, 2)]), tolerance=tolerance) == 1.0
    assert _pg(map_, _mask(5, 5, fg=[(2, 3), (1, 2), (3, 3)]), tolerance=tolerance) == 0.0  # neighbours only
    assert _pg(map_, _mask(5, 5, fg=[(2, 3)]), tolerance=1.01) == 1.0  # the neighbour once inside the radius


def _reference_pg(map_: torch.Tensor, mask: torch.Tensor, tolerance: float) -> float:
    """Brute force over pixels: the first non-ignore maximum; a hit when it is foreground or a foreground
    pixel lies at squared distance < tolerance**2."""
    h, w = map_.shape
    cells = [(r, c) for r in range(h) for c in range(w) if int(mask[r, c]) != -1]
    best = max(float(map_[r, c]) for r, c in cells)
    pr, pc = next((r, c) for r, c in cells if float(map_[r, c]) == best)
    fg = [(r, c) for r, c in cells if int(mask[r, c]) == 1]
    if not fg:
        return math.nan
    return float(any((r, c) == (pr, pc) or (r - pr) ** 2 + (c - pc) ** 2 < tolerance**2 for r, c in fg))


@pytest.mark.parametrize("tolerance", [0, 1, 1.5, 2, 2.5, 4])
def test_pointing_game_matches_brute_force(tolerance: float) -> None:
    g = torch.Generator().manual_seed(7)
    maps = torch.floor(torch.rand(40, 6, 7, generator=g) * 4)  # many ties for the maximum
    masks = (torch.rand(40, 6, 7, generator=g) < 0.1).to(torch.int8)
    masks[torch.rand(40, 6, 7, generator=g) < 0.15] = -1
    got = pointing_game(maps, masks, tolerance=tolerance).tolist()
    expected = [_reference_pg(maps[i], masks[i], tolerance) for i in range(40)]
    assert got == pytest.approx(expected, nan_ok=True)
    assert 0 < sum(v for v in expected if v == v) < 40  # both hits and misses occur


def test_tolerance_ignores_ignore_pixels_and_uses_non_ignore_argmax() -> None:
    map_ = _peak(8, 8, (4, 4))
    map_[0, 0] = 9.0
    mask = _mask(8, 8, fg=[(4, 6)], ignore=[(0, 0), (4, 5)])
    assert _pg(map_, mask, tolerance=2.5) == 1.0  # point (4, 4) since (0, 0) is ignored; fg at distance 2
    assert _pg(map_, mask, tolerance=2) == 0.0  # distance 2 is not < 2
    only_ignored_near = _mask(8, 8, fg=[(7, 7)], ignore=[(0, 0), (4, 5)])
    assert _pg(map_, only_ignored_near, tolerance=2.5) == 0.0  # an ignore pixel nearby is not a hit


def test_negative_tolerance_raises() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(torch.zeros(1, 2, 2), torch.ones(1, 2, 2, dtype=torch.int8), tolerance=-1)


def test_integer_maps_are_accepted() -> None:
    map_ = torch.zeros(1, 3, 3, dtype=torch.int64)
    map_[0, 1, 1] = 2
    assert pointing_game(map_, _mask(3, 3, fg=[(1, 1)])[None]).tolist() == [1.0]


# ------------------------------------------------------------------------------------------------ PG-energy


def test_energy_known_ratio() -> None:
    map_ = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mask = torch.tensor([[1, 0], [0, 1]], dtype=torch.int8)
    assert float(pg_energy(map_[None], mask[None])[0]) == pytest.approx(5.0 / 10.0, abs=1e-15)


def test_energy_excludes_ignore_pixels() -> None:
    map_ = torch.tensor([[1.0, 1.0], [2.0, 100.0]])
    mask = torch.tensor([[1, 0], [0, -1]], dtype=torch.int8)
    assert float(pg_energy(map_[None], mask[None])[0]) == pytest.approx(1.0 / 4.0, abs=1e-15)
    # mass on an ignored foreground-looking region does not count as inside either
    mask2 = torch.tensor([[-1, 0], [1, 0]], dtype=torch.int8)
    assert float(pg_energy(map_[None], mask2[None])[0]) == pytest.approx(2.0 / 103.0, abs=1e-15)


def test_energy_clamps_negative_values() -> None:
    map_ = torch.tensor([[2.0, -5.0], [-1.0, 6.0]])
    mask = torch.tensor([[1, 1], [0, 0]], dtype=torch.int8)
    assert float(pg_energy(map_[None], mask[None])[0]) == pytest.approx(2.0 / 8.0, abs=1e-15)


def test_energy_of_massless_map_is_zero() -> None:
    mask = torch.tensor([[[1, 0], [0, 0]]], dtype=torch.int8)
    assert pg_energy(torch.zeros(1, 2, 2), mask).tolist() == [0.0]
    assert pg_energy(-torch.ones(1, 2, 2), mask).tolist() == [0.0]
    # mass only on ignore pixels is no mass either
    masked = torch.tensor([[[1, -1], [0, 0]]], dtype=torch.int8)
    assert pg_energy(torch.tensor([[[0.0, 7.0], [0.0, 0.0]]]), masked).tolist() == [0.0]


def test_energy_scale_invariant_and_in_unit_interval() -> None:
    g = torch.Generator().manual_seed(1)
    maps = torch.rand(5, 6, 6, generator=g)
    masks = torch.randint(0, 2, (5, 6, 6), generator=g).to(torch.int8)
    masks[:, 0, 0] = 1
    a = pg_energy(maps, masks)
    torch.testing.assert_close(a, pg_energy(maps * 1e3, masks))
    assert bool(((a >= 0) & (a <= 1)).all())


# -------------------------------------------------------------------------------------- base: checks, Metric


def test_non_finite_map_raises_with_count() -> None:
    map_ = torch.zeros(3, 3)
    map_[0, 0] = float("nan")
    map_[1, 1] = float("inf")
    mask = _mask(3, 3, fg=[(2, 2)])
    with pytest.raises(NonFiniteMapError, match="2 non-finite"):
        exclusion_reason(map_, mask)
    with pytest.raises(NonFiniteMapError, match=r"2 non-finite .* samples \[1\]"):
        exclusion_reasons(torch.stack([torch.zeros(3, 3), map_]), torch.stack([mask, mask]))
    for metric in (POINTING_GAME, PG_ENERGY):
        with pytest.raises(NonFiniteMapError):
            metric(map_[None], mask[None])
    assert issubclass(NonFiniteMapError, ValueError)


def test_exclusion_reasons_batched() -> None:
    maps = torch.rand(3, 2, 2)
    full = torch.ones(2, 2, dtype=torch.int8)
    masks = torch.stack([_mask(2, 2, fg=[(0, 0)]), _mask(2, 2, ignore=[(0, 0)]), full])
    assert exclusion_reasons(maps, masks) == [None, EMPTY_MASK, None]


@pytest.mark.parametrize(
    ("maps", "masks", "match"),
    [
        (torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.int8), "B x H x W"),
        (torch.zeros(1, 2, 2), torch.zeros(1, 2, 3, dtype=torch.int8), "differs"),
        (torch.zeros(1, 2, 2), torch.full((1, 2, 2), 2, dtype=torch.int8), "outside"),
        (torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), "integer"),
    ],
)
def test_bad_inputs_raise(maps: torch.Tensor, masks: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_batch(maps, masks)


def test_metric_records() -> None:
    assert (POINTING_GAME.name, PG_ENERGY.name) == ("pg", "pg_energy")
    assert POINTING_GAME.higher_is_better and PG_ENERGY.higher_is_better
    maps = _peak(5, 5, (0, 0))[None]
    masks = _mask(5, 5, fg=[(0, 2)])[None]
    assert POINTING_GAME(maps, masks).tolist() == [0.0]
    assert POINTING_GAME(maps, masks, tolerance=2).tolist() == [0.0]  # distance 2 is not < 2
    assert POINTING_GAME(maps, masks, tolerance=3).tolist() == [1.0]
    custom = Metric(
        name="x", fn=lambda m, k: m.sum(dim=(1, 2)).double(), higher_is_better=False, description="sum"
    )
    assert custom(maps, masks).tolist() == [1.0]
    with pytest.raises(AttributeError):
        POINTING_GAME.name = "other"  # type: ignore[misc]
