"""APGD and the robust-accuracy ensemble: the step-size schedule, the DLR loss, and robust accuracy on a
linear classifier, where the worst case inside the eps-ball is known in closed form."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from aft_bench.core.registry import UnknownNameError
from aft_bench.evaluation.attacks.apgd import apgd, checkpoints, cross_entropy, dlr_targeted
from aft_bench.evaluation.attacks.ensemble import robust_correct


def test_checkpoints_follow_the_paper_schedule() -> None:
    # p = 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (Croce & Hein 2020, Sec. 3.2)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1) == [1]
    with pytest.raises(ValueError, match="at least one step"):
        checkpoints(0)


def test_dlr_targeted_known_values_and_invariances() -> None:
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 5.0, 0.0, 2.0]])
    labels, targets = torch.tensor([0, 1]), torch.tensor([1, 3])
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2): -(4 - 3) / (4 - 1.5) and -(5 - 2) / (5 - 0.5)
    expected = torch.tensor([-1 / 2.5, -3 / 4.5])
    assert torch.allclose(dlr_targeted(logits, labels, targets), expected)
    assert torch.allclose(dlr_targeted(3 * logits + 7, labels, targets), expected)
    with pytest.raises(ValueError, match="at least 4 classes"):
        dlr_targeted(logits[:, :3], labels, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="target"):
        dlr_targeted(logits, labels, None)
    assert torch.allclose(cross_entropy(logits, labels), torch.nn.functional.cross_entropy(logits, labels,
                                                                                          reduction="none"))


def _linear_problem(eps: float, n: int = 64, classes: int = 5, seed: int = 0):
    """A linear classifier on 3 x 4 x 4 images in [0.1, 0.9], labels = its clean predictions, and for each sample
    the exact worst-case margin ``min_j (z_y - z_j) - eps * ||w_y - w_j||_1`` (no [0, 1] clipping is active)."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(classes, 48, generator=g, dtype=torch.float64)
    bias = torch.randn(classes, generator=g, dtype=torch.float64) * 0.1
    images = 0.5 + 0.8 * (torch.rand(n, 3, 4, 4, generator=g, dtype=torch.float64) - 0.5)

    def logits_fn(x: Tensor) -> Tensor:
        return x.flatten(1) @ weight.T + bias

    with torch.no_grad():
        z = logits_fn(images)
    labels = z.argmax(dim=1)
    gap = z.gather(1, labels[:, None]) - z  # z_y - z_j
    l1 = (weight[labels][:, None, :] - weight[None, :, :]).abs().sum(-1)  # ||w_y - w_j||_1
    worst = (gap - eps * l1).masked_fill(torch.nn.functional.one_hot(labels, classes).bool(), float("inf"))
    return logits_fn, images, labels, worst.amin(dim=1)


def _starts(seed: int):
    def starts(index: Tensor, tag: str) -> Tensor:
        g = torch.Generator().manual_seed(seed + sum(map(ord, tag)))
        return 2 * torch.rand(64, 3, 4, 4, generator=g, dtype=torch.float64)[index] - 1

    return starts


@pytest.mark.parametrize("attacks", [("apgd-ce",), ("apgd-t",), ("apgd-ce", "apgd-t")])
def test_robust_accuracy_matches_the_closed_form_on_a_linear_model(attacks: tuple[str, ...]) -> None:
    eps = 0.06  # images lie in [0.1, 0.9]: the eps-ball never reaches the [0, 1] bounds
    logits_fn, images, labels, worst = _linear_problem(eps)
    clear = worst.abs() > 0.05 * worst.abs().median()  # leave out samples within a hair of the boundary
    assert 10 < int((worst[clear] > 0).sum()) < int(clear.sum()) - 10  # both outcomes are represented
    robust = robust_correct(logits_fn, images, labels, eps, _starts(0), attacks=attacks, steps=100, n_targets=4)
    assert torch.equal(robust[clear], worst[clear] > 0)


def test_apgd_stays_in_the_ball_and_in_range() -> None:
    eps = 0.02
    logits_fn, images, labels, _ = _linear_problem(eps)
    images = images.clone()
    images[:8] = 0.005  # near the lower pixel bound: the projection must also clip to [0, 1]
    result = apgd(logits_fn, images, labels, eps, _starts(1)(torch.arange(64), "x"), steps=20)
    assert (result.adversarial - images).abs().max() <= eps + 1e-12
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    with torch.no_grad():
        assert torch.equal(logits_fn(result.adversarial).argmax(1) != labels, result.fooled)


def test_apgd_loss_never_decreases_from_the_start_and_unknown_names_fail() -> None:
    logits_fn, images, labels, _ = _linear_problem(0.01)
    start = _starts(2)(torch.arange(64), "y")
    none = apgd(logits_fn, images, labels, 0.01, start, steps=1)
    many = apgd(logits_fn, images, labels, 0.01, start, steps=50)
    assert (many.best_loss >= none.best_loss - 1e-12).all() and (many.best_loss > none.best_loss).any()
    with pytest.raises(ValueError, match="unknown APGD loss"):
        apgd(logits_fn, images, labels, 0.01, start, loss="hinge")
    with pytest.raises(UnknownNameError, match="unknown attack 'fgsm'"):
        robust_correct(logits_fn, images, labels, 0.01, _starts(0), attacks=("fgsm",))


def test_robust_is_a_subset_of_clean_correct_and_zero_eps_changes_nothing() -> None:
    logits_fn, images, labels, _ = _linear_problem(0.02)
    labels = labels.clone()
    labels[:5] = (labels[:5] + 1) % 5  # misclassified from the start
    robust = robust_correct(logits_fn, images, labels, 0.0, _starts(0), steps=5, n_targets=2)
    assert not robust[:5].any() and robust[5:].all()


def test_step_halving_homes_in_on_an_interior_maximum() -> None:
    """The loss peaks inside the ball, at c: sign steps of a fixed size would oscillate around c; APGD's
    halvings (condition 1: the loss rises in too few steps) must bring the best point close to it."""
    eps = 0.1
    x0 = torch.full((2, 1, 2, 2), 0.5, dtype=torch.float64)
    c = x0 + torch.tensor([0.037, -0.061, 0.013, -0.089], dtype=torch.float64).view(1, 1, 2, 2)

    def logits_fn(x: Tensor) -> Tensor:  # z1 - z0 = -50 ||x - c||^2, so the CE of class 0 peaks at x = c
        distance = ((x - c) ** 2).flatten(1).sum(1)
        return torch.stack([torch.zeros_like(distance), -50 * distance], dim=1)

    labels = torch.zeros(2, dtype=torch.long)
    start = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64).view(1, 1, 2, 2).expand(2, -1, -1, -1)
    result = apgd(logits_fn, x0, labels, eps, start, steps=100)
    assert not result.fooled.any()
    assert (result.adversarial - c).abs().max() < 0.05 * eps
    fixed = apgd(logits_fn, x0, labels, eps, start, steps=100, rho=0.0)  # condition 1 never fires
    assert (fixed.adversarial - c).abs().max() > (result.adversarial - c).abs().max()
