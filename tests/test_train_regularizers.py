"""Regularizers: values, conjugates checked numerically (h* from h, and h** = h), projections, the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from aft_bench.core.registries import REGULARIZERS
from aft_bench.core.registry import UnknownNameError
from aft_bench.training.arguments import config_from_args
from aft_bench.training.config import TrainConfig
from aft_bench.training.objectives.base import build_regularizer
from aft_bench.training.regularizers import BoxPixelNorm, BoxQuadratic, ElasticNet, GroupQuadratic, huber

EPS, ETA = 0.3, 0.2


def _grid_sup(values: np.ndarray, grid: np.ndarray, fn) -> np.ndarray:
    """sup over a 1-D grid of t * v - fn(t), for each v."""
    return np.max(values[:, None] * grid[None, :] - fn(grid)[None, :], axis=1)


def _h1(reg, v: np.ndarray) -> np.ndarray:
    """Per-coordinate h of a separable regularizer (via its per-sample penalty on 1-element inputs)."""
    t = torch.tensor(v, dtype=torch.float64).view(-1, 1, 1, 1).expand(-1, 3, 1, 1).contiguous()
    return reg.penalty(t).double().numpy() / 3


def _hstar1(reg, u: np.ndarray) -> np.ndarray:
    t = torch.tensor(u, dtype=torch.float64).view(-1, 1, 1, 1).expand(-1, 3, 1, 1).contiguous()
    return reg.conjugate(t).double().numpy() / 3


def test_huber_known_values():
    u = torch.tensor([0.0, 0.1, -0.2, 0.5, -1.0])
    expected = torch.tensor([0.0, 0.01 / 0.4, 0.04 / 0.4, 0.5 - 0.1, 1.0 - 0.1])
    assert torch.allclose(huber(u, 0.2), expected)
    assert torch.equal(huber(u, 0.0), u.abs())


def test_box_quadratic_values_and_projection():
    reg = BoxQuadratic(EPS, ETA)
    delta = torch.full((2, 3, 2, 2), 0.1)
    assert torch.allclose(reg.penalty(delta), torch.full((2,), ETA / (2 * EPS) * 12 * 0.01))
    assert reg.project(torch.tensor([1.0, -1.0, 0.1])).tolist() == pytest.approx([EPS, -EPS, 0.1])
    assert torch.equal(BoxQuadratic(EPS, 0.0).penalty(delta), torch.zeros(2))


@pytest.mark.parametrize("reg", [BoxQuadratic(EPS, ETA), ElasticNet(EPS, ETA, eps2=0.7)],
                         ids=["box", "elastic-net"])
def test_separable_conjugate_pairs(reg):
    """h*(u) = sup_v uv - h(v) on dom h, and h**(v) = sup_u uv - h*(u) = h(v), per coordinate."""
    radius = EPS if isinstance(reg, BoxQuadratic) else 6.0
    v_grid = np.linspace(-radius, radius, 40001)
    u = np.linspace(-1.5, 1.5, 31)
    np.testing.assert_allclose(_grid_sup(u, v_grid, lambda v: _h1(reg, v)), _hstar1(reg, u), atol=1e-6)
    u_grid = np.linspace(-20, 20, 80001)
    v = np.linspace(-0.9 * radius, 0.9 * radius, 25) if radius < 1 else np.linspace(-2.0, 2.0, 25)
    np.testing.assert_allclose(_grid_sup(v, u_grid, lambda t: _hstar1(reg, t)), _h1(reg, v), atol=1e-5)


def test_box_conjugate_is_infinite_outside_the_ball():
    """Outside dom h, sup_u uv - h*(u) grows without bound (h** = +inf there)."""
    reg = BoxQuadratic(EPS, ETA)
    v = np.array([1.2 * EPS])
    sups = [_grid_sup(v, np.linspace(-r, r, 20001), lambda t: _hstar1(reg, t))[0] for r in (10, 100, 1000)]
    assert sups[1] > sups[0] + 1 and sups[2] > sups[1] + 10


def test_elastic_net_limits_and_continuity():
    reg = ElasticNet(EPS, ETA, eps2=0.05)
    c = reg.knee
    assert c == pytest.approx(EPS + 2 * 0.05 * ETA)
    left, right = _h1(reg, np.array([c - 1e-9, c + 1e-9]))
    assert left == pytest.approx(right, abs=1e-8) and left == pytest.approx(ETA * c / 2)
    # As eps2 -> 0 the quadratic piece tends to Eq. 5's eta / (2 eps) v^2.
    small = ElasticNet(EPS, ETA, eps2=1e-9)
    assert _h1(small, np.array([0.2]))[0] == pytest.approx(ETA / (2 * EPS) * 0.04, rel=1e-6)
    with pytest.raises(ValueError, match="eps2"):
        ElasticNet(EPS, ETA, eps2=0.0)


@pytest.mark.parametrize("group", ["pixel", "patch"])
def test_group_conjugate_pair(group):
    """h*(u) = eps sum_g H(||u_g||): sup_v <u, v> - h(v) over the group balls matches, and h** = h."""
    reg = GroupQuadratic(EPS, ETA, group=group, patch=2)
    rng = np.random.default_rng(0)
    shape = (1, 3, 2, 2)
    for scale in (0.05, 0.5, 3.0):
        u = rng.normal(size=shape) * scale
        ut = torch.tensor(u)
        # h*(u): maximise <u, v> - eta/(2 eps)||v||^2 per group subject to ||v_g|| <= eps -> closed form
        # v_g = u_g * min(eps/eta, eps/||u_g||); compare with the conjugate formula.
        groups = reg._groups(ut)
        norms = groups.norm(dim=-1, keepdim=True)
        v = reg._ungroup(groups * torch.minimum(torch.full_like(norms, EPS / ETA), EPS / norms), ut.shape)
        assert reg.project(v).allclose(v)
        direct = (ut * v).sum() - reg.penalty(v)[0]
        assert direct.item() == pytest.approx(reg.conjugate(ut)[0].item(), rel=1e-9)
        # h**(v) numerically: sup_u <u, v> - h*(u) for a feasible v equals h(v).
        vt = reg.project(torch.tensor(rng.normal(size=shape) * 0.1))
        flat_v = vt.flatten().numpy()

        def neg(x: np.ndarray, flat_v: np.ndarray = flat_v) -> float:
            return -(x @ flat_v - reg.conjugate(torch.tensor(x).view(shape))[0].item())

        best = minimize(neg, np.zeros(flat_v.size), method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15})
        assert -best.fun == pytest.approx(reg.penalty(vt)[0].item(), rel=1e-4, abs=1e-9)


def test_group_projection_and_direction():
    reg = GroupQuadratic(EPS, ETA, group="pixel")
    delta = torch.randn(2, 3, 4, 4)
    projected = reg.project(delta)
    assert (projected.norm(dim=1) <= EPS + 1e-6).all()
    inside = delta * 0.01
    assert torch.allclose(reg.project(inside), inside)
    direction = reg.ascent_direction(torch.randn(2, 3, 4, 4))
    assert torch.allclose(direction.norm(dim=1), torch.full((2, 4, 4), 3**0.5))
    with pytest.raises(ValueError, match="multiple"):
        GroupQuadratic(EPS, ETA, group="patch", patch=3).project(torch.zeros(1, 3, 4, 4))


def test_pixelnorm_variant_values():
    reg = BoxPixelNorm(EPS, ETA)
    delta = torch.zeros(1, 3, 2, 2)
    delta[0, :, 0, 0] = torch.tensor([0.1, 0.2, 0.2])  # channel norm 0.3 at one pixel
    assert reg.penalty(delta).item() == pytest.approx(ETA / (2 * EPS) * 0.3)
    with pytest.raises(NotImplementedError, match="box"):
        reg.conjugate(delta)


def test_bad_radii_are_refused():
    with pytest.raises(ValueError, match="eps"):
        BoxQuadratic(0.0, ETA)
    with pytest.raises(ValueError, match="eta"):
        BoxQuadratic(EPS, -1.0)


# ---------------------------------------------------------------------------------------- the registry
CONFIG = TrainConfig(eps=4.0, eta=2.0, eps2=0.5, group_patch=8)  # 1/255 units


@pytest.mark.parametrize(("name", "cls", "settings"), [
    ("box", BoxQuadratic, {}),
    ("box-pixelnorm", BoxPixelNorm, {}),
    ("group-pixel", GroupQuadratic, {"group": "pixel", "patch": 1}),
    ("group-patch", GroupQuadratic, {"group": "patch", "patch": 8}),
    ("elastic-net", ElasticNet, {"eps2": 0.5}),
])
def test_each_registered_name_builds_its_regularizer_in_pixel_units(name, cls, settings):
    reg = build_regularizer(CONFIG.replace(regularizer=name))
    assert type(reg) is cls
    assert reg.describe() == {"regularizer": cls.__name__, "eps": 4 / 255, "eta": 2 / 255, **settings}


def test_regularizer_names_come_from_the_registry():
    assert REGULARIZERS.names() == ["box", "box-pixelnorm", "group-pixel", "group-patch", "elastic-net"]
    with pytest.raises(UnknownNameError, match="Did you mean 'elastic-net'"):
        build_regularizer(CONFIG.replace(regularizer="elastic_net"))
    plain = BoxQuadratic(0.5, 0.0)
    with REGULARIZERS.temporary("test-fixed", lambda config: plain):
        assert build_regularizer(CONFIG.replace(regularizer="test-fixed")) is plain
        assert config_from_args(["--regularizer", "test-fixed"]).regularizer == "test-fixed"  # the flag follows
    assert "test-fixed" not in REGULARIZERS
