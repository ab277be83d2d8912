"""PGD inner maximisation: known answers, feasibility, ascent, frozen parameters, fp32 perturbations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch.utils.flop_counter import FlopCounterMode

from aft_bench.core.seeding import sample_seed
from aft_bench.training.pgd import PGDConfig, pgd_maximize
from aft_bench.training.randomness import SampleRandom
from aft_bench.training.regularizers import BoxQuadratic, GroupQuadratic
from aft_bench.training.tower import ImageTower

EPS, ETA = 0.05, 0.05
SHAPE = (3, 2, 2)
D = 12

pytestmark = pytest.mark.usefixtures("one_thread")



def _linear_problem(seed: int = 0, batch: int = 3):
    """A linear encoder W with small weights (||W||_2^2 < eta / eps: the objective is strictly concave)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(5, D, generator=gen, dtype=torch.float64)
    w *= 0.7 / torch.linalg.matrix_norm(w, ord=2)  # ||W||^2 = 0.49 < eta / eps = 1
    x = torch.rand(batch, *SHAPE, generator=gen, dtype=torch.float64)
    x[0, 0] = 0.0  # pixels at the bounds make the [0, 1] constraint active
    x[1, 1] = 1.0
    target = (x.flatten(1) @ w.T) + 0.05 * torch.randn(batch, 5, generator=gen, dtype=torch.float64)
    return w, x, target


def _objective(w, x, target, delta):
    emb = (x + delta).flatten(1) @ w.T
    return 0.5 * ((emb - target) ** 2).sum(1) - ETA / (2 * EPS) * (delta.flatten(1) ** 2).sum(1)


def _lbfgsb_max(w, x, target):
    """The maximiser over the box (ball intersected with valid pixels) by scipy's bounded solver."""
    values = []
    for i in range(x.shape[0]):
        xi, ti = x[i].flatten().numpy(), target[i].numpy()
        wn = w.numpy()

        def neg(d, xi=xi, ti=ti, wn=wn):
            r = wn @ (xi + d) - ti
            return -(0.5 * r @ r - ETA / (2 * EPS) * d @ d), -(wn.T @ r - ETA / EPS * d)

        bounds = list(zip(np.maximum(-EPS, -xi), np.minimum(EPS, 1 - xi), strict=True))
        res = minimize(neg, np.zeros(D), jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"ftol": 1e-15, "gtol": 1e-12})
        values.append(-res.fun)
    return torch.tensor(values, dtype=torch.float64)


def test_pgd_reaches_the_bounded_maximiser_of_a_concave_problem():
    w, x, target = _linear_problem()
    alpha, steps = 1e-3, 300
    rng = SampleRandom(0, 0, range(x.shape[0]))

    def loss_fn(pixels):
        return 0.5 * ((pixels.double().flatten(1) @ w.T - target) ** 2).sum(1)

    result = pgd_maximize(loss_fn, x.float(), BoxQuadratic(EPS, ETA), PGDConfig(steps, alpha), rng=rng)
    reached = _objective(w, x, target, result.delta.double())
    best = _lbfgsb_max(w, x, target)
    # Sign steps of fixed size alpha oscillate within alpha of an interior optimum: with curvature at
    # most L = eta / eps the gap is at most L / 2 * D * alpha^2 (plus fp32 rounding of x + delta).
    tolerance = ETA / EPS / 2 * D * alpha**2 + 1e-6
    assert torch.all(reached <= best + 1e-9)
    assert torch.all(best - reached <= tolerance), (best - reached, tolerance)
    assert torch.all(best > _objective(w, x, target, torch.zeros_like(x)) + 1e-4)  # a non-trivial maximum


def test_pgd_matches_the_closed_form_of_the_linearised_problem():
    """max_delta g.delta - eta/(2 eps)||delta||^2 on the box: delta_i = clip(eps g_i / eta, lo_i, hi_i)."""
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(2, *SHAPE, generator=gen) * 0.05
    x = torch.rand(2, *SHAPE, generator=gen)
    x[0, 0, 0, 0], x[1, 2, 1, 1] = 0.99, 0.01
    alpha = 5e-4
    result = pgd_maximize(lambda p: (g * p).flatten(1).sum(1), x, BoxQuadratic(EPS, ETA), PGDConfig(400, alpha),
                          rng=SampleRandom(0, 0, [0, 1]))
    lo, hi = torch.clamp(-x, min=-EPS), torch.clamp(1 - x, max=EPS)
    closed = torch.minimum(torch.maximum(EPS * g / ETA, lo), hi)
    assert torch.allclose(result.delta, closed, atol=alpha + 1e-6)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("regularizer", [BoxQuadratic(4 / 255, 1 / 255), GroupQuadratic(4 / 255, 1 / 255)],
                         ids=["box", "group-pixel"])
def test_pgd_stays_feasible_and_raises_the_objective(tiny_vit, momentum, regularizer):
    tower = ImageTower.from_encoder(tiny_vit).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=gen)
    x[0] = 0.0  # all-black and all-white images: the pixel bounds cut the ball
    x[1] = 1.0
    with torch.no_grad():
        target = torch.nn.functional.normalize(tower(x), dim=-1)

    def loss_fn(pixels):
        return 0.5 * (torch.nn.functional.normalize(tower(pixels), dim=-1) - target).pow(2).sum(-1)

    config = PGDConfig(steps=10, step_size=1 / 255, momentum=momentum)
    result = pgd_maximize(loss_fn, x, regularizer, config, rng=SampleRandom(0, 0, range(4)))
    delta = result.delta
    adv = x + delta
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    if isinstance(regularizer, GroupQuadratic):
        assert delta.norm(dim=1).max() <= regularizer.eps * (1 + 1e-5)
    else:
        assert delta.abs().max() <= regularizer.eps + 1e-7
    with torch.no_grad():
        final = loss_fn(adv) - regularizer.penalty(delta)
    history = result.history
    assert history.shape == (10, 4)
    # The inner objective rises: the final iterate beats the start for every image, and every later
    # iterate beats the start on average over the batch.
    assert torch.all(final > history[0])
    assert torch.all(history[1:].mean(dim=1) > history[0].mean())


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_inner_loop_takes_no_parameter_gradients_and_keeps_fp32_under_bf16(tiny_vit):
    tower = ImageTower.from_encoder(tiny_vit).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def loss_fn(pixels):
        return tower(pixels).pow(2).sum(-1)

    def one_step():
        return pgd_maximize(loss_fn, x, BoxQuadratic(4 / 255, 1 / 255), PGDConfig(steps=1),
                            rng=SampleRandom(0, 0, [0, 1]))

    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = pgd_maximize(loss_fn, x, BoxQuadratic(4 / 255, 1 / 255), PGDConfig(steps=3),
                              rng=SampleRandom(0, 0, [0, 1]))
    assert result.delta.dtype == torch.float32
    assert all(p.requires_grad and p.grad is None for p in tower.parameters())  # nothing accumulated
    # No weight-gradient kernels: one PGD step costs a forward plus the input-gradient backward
    # (about 2 forwards), clearly less than a forward and a full backward (about 3 forwards).
    forward = _flops(lambda: loss_fn(x + torch.zeros_like(x, requires_grad=True)))
    full = _flops(lambda: loss_fn(x + torch.zeros_like(x, requires_grad=True)).sum().backward())
    tower.zero_grad(set_to_none=True)
    step = _flops(one_step)
    assert step <= 2.3 * forward < full


def test_sample_streams_do_not_depend_on_the_batch_split():
    whole = SampleRandom(7, 3, [10, 11, 12])
    first, rest = SampleRandom(7, 3, [10]), SampleRandom(7, 3, [11, 12])
    for _ in range(2):  # successive draws continue each sample's stream
        a = whole.normal((3, 4, 4), 0.1)
        b = torch.cat([first.normal((3, 4, 4), 0.1), rest.normal((3, 4, 4), 0.1)])
        assert torch.equal(a, b)
    assert not torch.equal(SampleRandom(7, 4, [10]).normal((5,), 1.0), SampleRandom(7, 3, [10]).normal((5,), 1.0))


def test_sample_streams_use_the_projects_one_seeding_scheme():
    """Sample 10 at step 3 of a seed-7 run draws from aft_bench.core.seeding's generator for ("10", 3)."""
    rng = SampleRandom(7, 3, [10, 11])
    normal, uniform = rng.normal((4,), 0.5), rng.uniform((2,), -1.0, 1.0)
    for row, index in enumerate((10, 11)):
        gen = torch.Generator().manual_seed(sample_seed(7, str(index), 3))
        assert torch.equal(normal[row], torch.randn(4, generator=gen) * 0.5)
        assert torch.equal(uniform[row], torch.rand(2, generator=gen) * 2.0 - 1.0)


def test_random_start_needs_generators():
    with pytest.raises(ValueError, match="rng"):
        pgd_maximize(lambda p: p.sum((1, 2, 3)), torch.zeros(1, 3, 2, 2), BoxQuadratic(EPS, ETA), PGDConfig())
    with pytest.raises(ValueError, match="momentum"):
        PGDConfig(momentum=1.0)
