"""Perturbation penalties h(v) of the AFT inner maximisation and their Fenchel conjugates h*(u).

AFT (paper Eq. 7) solves ``max_delta L(x + z + delta) - h(delta)``. Section 3.1 shows that this is,
to first order, training with the penalty ``h*`` on the (smoothed) input gradient, so the choice of
``h`` decides which property of saliency maps is encouraged. Every class here gives:

- :meth:`Regularizer.penalty`: h(delta) per sample (fp32);
- :meth:`Regularizer.conjugate`: h*(u) per sample, the implied gradient penalty;
- :meth:`Regularizer.project`: the Euclidean projection onto dom h (where h is finite);
- :meth:`Regularizer.ascent_direction`: the steepest-ascent direction PGD steps along.

Forms (H_eta is the Huber function: u^2 / (2 eta) for |u| <= eta, |u| - eta / 2 otherwise):

- ``box`` (paper Eq. 5, the default): h(v) = eta / (2 eps) ||v||^2 if ||v||_inf <= eps, else +inf;
  h*(u) = eps * sum_i H_eta(u_i) (Eq. 4).
- ``box-pixelnorm`` (published code): h(v) = eta / (2 eps) * sum_p ||v_p||_2 on the same ball; h* has
  no closed form (see :class:`BoxPixelNorm`).
- ``group-pixel`` / ``group-patch`` (Eq. 22): h(v) = eta / (2 eps) ||v||^2 if every group has
  ||v_g||_2 <= eps, else +inf; h*(u) = eps * sum_g H_eta(||u_g||_2).
- ``elastic-net`` (Eq. 21): h*(u) = eps * sum_i H_eta(u_i) + eps2 ||u||^2 and, per coordinate with
  c = eps + 2 eps2 eta, h(v) = eta v^2 / (2 c) if |v| <= c, else (|v| - eps)^2 / (4 eps2) + eps eta / 2.

Each form has a factory ``(config: TrainConfig) -> Regularizer`` (radii converted from the recipe's 1/255
units) registered under its name in :data:`aft_bench.core.registries.REGULARIZERS`.

With ``eta = 0`` the box form is FARE's plain L_inf constraint (Schlarmann et al. 2024): h = 0 on the ball.
``box-pixelnorm`` is the penalty of the published AFT code (an un-squared L2 norm over the colour
channels of each pixel); it is offered so that both can be compared, the paper's Eq. 5 is the default.

The elastic-net h is the conjugate of Eq. 21, derived per coordinate: g(u) = eps H_eta(u) + eps2 u^2
has g'(u) = (eps / eta + 2 eps2) u on |u| <= eta, so for |v| <= c = eps + 2 eps2 eta the supremum of
uv - g(u) is at u = v / (eps / eta + 2 eps2), giving eta v^2 / (2 c); beyond, u = sign(v) (|v| - eps) / (2 eps2)
gives (|v| - eps)^2 / (4 eps2) + eps eta / 2. Both pieces meet at |v| = c with value eta c / 2. It is
finite everywhere (no hard ball), quadratic near 0 and strongly convex.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from aft_bench.core.registries import REGULARIZERS
from aft_bench.training.config import PIXEL, TrainConfig


def huber(u: Tensor, eta: float) -> Tensor:
    """Elementwise Huber function H_eta (paper Eq. 4); H_0(u) = |u|."""
    a = u.abs()
    if eta == 0:
        return a
    return torch.where(a <= eta, a * a / (2 * eta), a - eta / 2)


def _wide(t: Tensor) -> Tensor:
    """At least fp32 (bf16/fp16 inputs are widened; fp64 is kept)."""
    return t if t.dtype == torch.float64 else t.float()


def _per_sample(t: Tensor) -> Tensor:
    return t.flatten(1).sum(dim=1)


class Regularizer(ABC):
    """A penalty h on perturbations, with conjugate, projection and ascent geometry.

    Args:
        eps: Radius (pixel units, e.g. 4/255).
        eta: Smoothness of h* / strong convexity of h (pixel units, e.g. 1/255).
    """

    def __init__(self, eps: float, eta: float) -> None:
        if not eps > 0:
            raise ValueError(f"eps={eps!r}: the perturbation radius must be positive (e.g. --eps 4 for 4/255)")
        if eta < 0:
            raise ValueError(f"eta={eta!r}: must be >= 0")
        self.eps, self.eta = float(eps), float(eta)

    @property
    def init_radius(self) -> float:
        """L_inf radius of PGD's uniform random start."""
        return self.eps

    @abstractmethod
    def penalty(self, delta: Tensor) -> Tensor:
        """h(delta) per sample (B,), assuming delta lies in dom h."""

    @abstractmethod
    def conjugate(self, u: Tensor) -> Tensor:
        """h*(u) per sample (B,)."""

    @abstractmethod
    def project(self, delta: Tensor) -> Tensor:
        """Euclidean projection of delta onto dom h."""

    def ascent_direction(self, grad: Tensor) -> Tensor:
        """Steepest ascent under the L_inf geometry: the sign of the gradient."""
        return grad.sign()

    def describe(self) -> dict[str, float | str]:
        """Parameters recorded in a checkpoint card."""
        return {"regularizer": type(self).__name__, "eps": self.eps, "eta": self.eta}


class BoxQuadratic(Regularizer):
    """h(v) = eta / (2 eps) ||v||^2 on the L_inf ball of radius eps (paper Eq. 5; h* is Eq. 4).

    With eta = 0 this is FARE's hard L_inf constraint without penalty (Schlarmann et al. 2024).
    """

    def penalty(self, delta: Tensor) -> Tensor:
        if self.eta == 0:
            return delta.new_zeros(delta.shape[0])
        return self.eta / (2 * self.eps) * _per_sample(_wide(delta) ** 2)

    def conjugate(self, u: Tensor) -> Tensor:
        return self.eps * _per_sample(huber(u, self.eta))

    def project(self, delta: Tensor) -> Tensor:
        return delta.clamp(-self.eps, self.eps)


class BoxPixelNorm(BoxQuadratic):
    """The published AFT code's penalty: eta / (2 eps) * sum over pixels of the un-squared channel L2 norm.

    h(v) = eta / (2 eps) sum_p ||v_p||_2 on the L_inf ball (v_p: the colour channels of pixel p). It is
    convex but not strongly convex, so Theorem 1 of the paper does not cover it. Its conjugate is the
    infimal convolution h*(u) = sum_p min_{||a||_2 <= eta / (2 eps)} eps ||u_p - a||_1, which has no
    closed form; :meth:`conjugate` raises.
    """

    def penalty(self, delta: Tensor) -> Tensor:
        if delta.ndim != 4:
            raise ValueError(f"box-pixelnorm needs B x C x H x W perturbations, got shape {tuple(delta.shape)}")
        return self.eta / (2 * self.eps) * _per_sample(_wide(delta).norm(dim=1))

    def conjugate(self, u: Tensor) -> Tensor:
        raise NotImplementedError(
            "box-pixelnorm (the published code's penalty) has no closed-form conjugate; use 'box' (paper Eq. 5)"
        )


class GroupQuadratic(Regularizer):
    """h(v) = eta / (2 eps) ||v||^2 with every group's L2 norm at most eps (conjugate of paper Eq. 22).

    h*(u) = eps * sum_g H_eta(||u_g||_2), the smoothed group norm of Eq. 22. Groups are the colour
    channels of one pixel (``group="pixel"``) or the channels and pixels of one ``patch x patch`` tile
    (``group="patch"``). PGD steps along the per-group normalised gradient (the steepest ascent under
    the group L2 geometry), scaled by sqrt(group size) so a step moves as far as a sign step.

    Args:
        eps: Group L2 radius.
        eta: Smoothness.
        group: "pixel" or "patch".
        patch: Patch side for ``group="patch"`` (the image sides must be multiples of it).
    """

    def __init__(self, eps: float, eta: float, group: str = "pixel", patch: int = 16) -> None:
        super().__init__(eps, eta)
        if group not in ("pixel", "patch"):
            raise ValueError(f"group={group!r}: use 'pixel' or 'patch'")
        if patch < 1:
            raise ValueError(f"patch={patch!r}: must be a positive integer")
        self.group, self.patch = group, int(patch) if group == "patch" else 1

    def _groups(self, t: Tensor) -> Tensor:
        """B x G x S view: G groups of S coordinates."""
        if t.ndim != 4:
            raise ValueError(f"group regularizer needs B x C x H x W tensors, got shape {tuple(t.shape)}")
        b, c, h, w = t.shape
        p = self.patch
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of the group patch {p}; choose --group-patch")
        t = t.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return t.reshape(b, (h // p) * (w // p), c * p * p)

    def _ungroup(self, g: Tensor, shape: torch.Size) -> Tensor:
        b, c, h, w = shape
        p = self.patch
        g = g.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return g.reshape(shape)

    @property
    def init_radius(self) -> float:
        # A start in [-r, r]^S with r = eps / sqrt(S) (S = 3 p^2 for RGB) lies inside every group's ball.
        return self.eps / math.sqrt(3 * self.patch * self.patch)

    def penalty(self, delta: Tensor) -> Tensor:
        if self.eta == 0:
            return delta.new_zeros(delta.shape[0])
        return self.eta / (2 * self.eps) * _per_sample(_wide(delta) ** 2)

    def conjugate(self, u: Tensor) -> Tensor:
        return self.eps * huber(self._groups(u).norm(dim=-1), self.eta).sum(dim=1)

    def project(self, delta: Tensor) -> Tensor:
        g = self._groups(delta)
        norms = g.norm(dim=-1, keepdim=True)
        scale = (self.eps / norms.clamp_min(1e-30)).clamp(max=1.0)
        return self._ungroup(g * scale, delta.shape)

    def ascent_direction(self, grad: Tensor) -> Tensor:
        g = self._groups(grad)
        size = g.shape[-1]
        direction = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-30) * math.sqrt(size)
        return self._ungroup(direction, grad.shape)

    def describe(self) -> dict[str, float | str]:
        return {**super().describe(), "group": self.group, "patch": self.patch}


class ElasticNet(Regularizer):
    """The conjugate of the smoothed elastic net h*(u) = eps sum_i H_eta(u_i) + eps2 ||u||^2 (paper Eq. 21).

    h is separable and finite everywhere (see the module docstring for the derivation):
    h(v) = sum_i eta v_i^2 / (2 c) if |v_i| <= c, else (|v_i| - eps)^2 / (4 eps2) + eps eta / 2,
    with c = eps + 2 eps2 eta. There is no hard ball; PGD still starts uniformly in [-eps, eps].

    Args:
        eps: Weight eps_1 of the Huber term (pixel units).
        eta: Huber smoothness.
        eps2: Weight eps_2 of the squared L2 term (> 0).
    """

    def __init__(self, eps: float, eta: float, eps2: float) -> None:
        super().__init__(eps, eta)
        if not eps2 > 0:
            raise ValueError(f"eps2={eps2!r}: the elastic-net L2 weight must be positive (--eps2)")
        self.eps2 = float(eps2)

    @property
    def knee(self) -> float:
        """c = eps + 2 eps2 eta, where h changes from its quadratic to its shifted quadratic piece."""
        return self.eps + 2 * self.eps2 * self.eta

    def _h1(self, v: Tensor) -> Tensor:
        a, c = _wide(v).abs(), self.knee
        inner = self.eta * a * a / (2 * c)
        outer = (a - self.eps) ** 2 / (4 * self.eps2) + self.eps * self.eta / 2
        return torch.where(a <= c, inner, outer)

    def penalty(self, delta: Tensor) -> Tensor:
        return _per_sample(self._h1(delta))

    def conjugate(self, u: Tensor) -> Tensor:
        return _per_sample(self.eps * huber(u, self.eta) + self.eps2 * u * u)

    def project(self, delta: Tensor) -> Tensor:
        return delta

    def describe(self) -> dict[str, float | str]:
        return {**super().describe(), "eps2": self.eps2}


@REGULARIZERS.register("box", help="h(v) = eta/(2 eps) ||v||^2 inside the L_inf ball of radius eps (paper Eq. 5)")
def box_regularizer(config: TrainConfig) -> Regularizer:
    """``box``: :class:`BoxQuadratic` (paper Eq. 5) with the recipe's eps and eta."""
    return BoxQuadratic(config.eps * PIXEL, config.eta * PIXEL)


@REGULARIZERS.register("box-pixelnorm",
                       help="the published code's penalty: eta/(2 eps) x sum of per-pixel channel L2 norms, in the "
                            "ball")
def box_pixelnorm_regularizer(config: TrainConfig) -> Regularizer:
    """``box-pixelnorm``: :class:`BoxPixelNorm` (the published code's penalty) with the recipe's eps and eta."""
    return BoxPixelNorm(config.eps * PIXEL, config.eta * PIXEL)


@REGULARIZERS.register("group-pixel",
                       help="eta/(2 eps) ||v||^2, each pixel's channel L2 norm <= eps (conjugate of paper Eq. 22)")
def group_pixel_regularizer(config: TrainConfig) -> Regularizer:
    """``group-pixel``: :class:`GroupQuadratic` (paper Eq. 22) over each pixel's colour channels."""
    return GroupQuadratic(config.eps * PIXEL, config.eta * PIXEL, group="pixel")


@REGULARIZERS.register("group-patch",
                       help="the same with groups of --group-patch x --group-patch pixels (conjugate of paper Eq. 22)")
def group_patch_regularizer(config: TrainConfig) -> Regularizer:
    """``group-patch``: :class:`GroupQuadratic` (paper Eq. 22) over ``group_patch`` x ``group_patch`` tiles."""
    return GroupQuadratic(config.eps * PIXEL, config.eta * PIXEL, group="patch", patch=config.group_patch)


@REGULARIZERS.register("elastic-net",
                       help="the conjugate of the smoothed elastic net (paper Eq. 21): separable, no hard ball")
def elastic_net_regularizer(config: TrainConfig) -> Regularizer:
    """``elastic-net``: :class:`ElasticNet` (paper Eq. 21) with the recipe's eps, eta and eps2."""
    return ElasticNet(config.eps * PIXEL, config.eta * PIXEL, eps2=config.eps2)
