"""The min-max objective shared by AFT and FARE: PGD inside, the encoder's loss outside.

A subclass says how embeddings are compared (:meth:`AdversarialObjective.discrepancy`), which
targets the frozen original encoder provides (:meth:`AdversarialObjective.targets`) and whether
embeddings are unit-normalised. The shared :meth:`AdversarialObjective.__call__` then

1. computes the targets once per batch, without grad;
2. maximises ``discrepancy(f(x + z + delta)) - h(delta)`` with PGD (fresh z per sample per step,
   paper appendix A.2), taking no parameter gradients;
3. returns the outer loss at x + z + delta* (paper Eq. 7; without z when ``outer_noise`` is off,
   as in the published code).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from aft_bench.core.registries import REGULARIZERS
from aft_bench.training.config import PIXEL, TrainConfig
from aft_bench.training.pgd import PGDConfig, pgd_maximize
from aft_bench.training.randomness import SampleRandom
from aft_bench.training.regularizers import Regularizer
from aft_bench.training.tower import Reference


@dataclass
class TrainBatch:
    """A rank's share of one global batch.

    Attributes:
        images: B x 3 x H x W pixels in [0, 1] on the training device.
        indices: Global dataset indices (key the per-sample random streams).
        captions: One caption per image (``None`` entries for image-only data).
        labels: (B,) class indices into ``classnames`` for class-labelled data, else ``None``.
        classnames: The training set's class names (class-labelled data only).
    """

    images: Tensor
    indices: list[int]
    captions: list[str | None]
    labels: Tensor | None = None
    classnames: tuple[str, ...] | None = None


@dataclass
class StepOutput:
    """What one objective evaluation gives the trainer.

    Attributes:
        loss: Scalar outer loss to back-propagate.
        inner: Mean inner objective at delta* (loss minus penalty), detached.
        delta_norm: Mean per-image L2 norm of delta*, detached.
        history: Mean inner objective at each PGD iterate (K,), detached.
    """

    loss: Tensor
    inner: Tensor
    delta_norm: Tensor
    history: Tensor


def build_regularizer(config: TrainConfig) -> Regularizer:
    """The regularizer named by ``config.regularizer`` in the REGULARIZERS registry.

    Raises:
        UnknownNameError: For a name the registry does not hold (with the known names and a did-you-mean).
    """
    return REGULARIZERS.get(config.regularizer)(config)


def pgd_config(config: TrainConfig) -> PGDConfig:
    """PGD settings of a recipe (step size converted from 1/255 units)."""
    return PGDConfig(steps=config.pgd_steps, step_size=config.pgd_step_size * PIXEL,
                     momentum=config.pgd_momentum, random_start=config.random_start)


class AdversarialObjective(ABC):
    """min_theta E_x max_delta D(f_theta(x + z + delta), target(x)) - h(delta).

    Args:
        regularizer: The penalty h and its domain.
        pgd: Inner-loop settings.
        sigma: Std of the Gaussian smoothing noise z in pixel units (0 = none).
        outer_noise: Use x + z + delta* in the outer loss (Eq. 7) rather than x + delta*.
    """

    normalize_embeddings: ClassVar[bool] = True
    needs_captions: ClassVar[bool] = False

    def __init__(self, regularizer: Regularizer, pgd: PGDConfig, sigma: float = 0.0, outer_noise: bool = True) -> None:
        if sigma < 0:
            raise ValueError(f"sigma={sigma!r}: the smoothing noise std must be >= 0")
        self.regularizer, self.pgd, self.sigma, self.outer_noise = regularizer, pgd, float(sigma), outer_noise

    @classmethod
    def from_config(cls, config: TrainConfig) -> AdversarialObjective:
        """Builds the objective from a recipe."""
        return cls(build_regularizer(config), pgd_config(config), sigma=config.sigma * PIXEL,
                   outer_noise=config.outer_noise)

    def describe(self) -> dict[str, Any]:
        """Settings recorded in the trained encoder's card (pixel units)."""
        return {**self.regularizer.describe(), "sigma": self.sigma, "outer_noise": self.outer_noise,
                "pgd_steps": self.pgd.steps, "pgd_step_size": self.pgd.step_size,
                "pgd_momentum": self.pgd.momentum, "random_start": self.pgd.random_start}

    @abstractmethod
    def targets(self, reference: Reference, batch: TrainBatch) -> Any:
        """What the perturbed embedding is compared with, from the frozen original encoder."""

    @abstractmethod
    def discrepancy(self, embedding: Tensor, targets: Any) -> Tensor:
        """Per-sample loss (B,) between embeddings and targets."""

    def outer_loss(self, model: nn.Module, reference: Reference, clean: Tensor, adversarial: Tensor,
                   targets: Any) -> Tensor:
        """Per-sample outer loss (B,) at the attack's point ``adversarial``: by default the inner discrepancy.

        Objectives whose outer loss has more terms than the attacked one (PMG-AFT) override this; ``clean``
        are the unperturbed pixels.
        """
        return self.discrepancy(self.embed(model, adversarial), targets)

    def embed(self, model: nn.Module, pixels: Tensor) -> Tensor:
        """Image embeddings of ``model`` (unit-normalised unless the objective says otherwise)."""
        features = model(pixels).float()
        return F.normalize(features, dim=-1) if self.normalize_embeddings else features

    def _smooth(self, pixels: Tensor, rng: SampleRandom) -> Tensor:
        if self.sigma == 0:
            return pixels
        return pixels + rng.normal(pixels.shape[1:], self.sigma)

    def __call__(self, model: nn.Module, inner_model: nn.Module, reference: Reference, batch: TrainBatch,
                 rng: SampleRandom) -> StepOutput:
        """One evaluation of the min-max objective on a batch.

        Args:
            model: The trainable tower as the outer loss sees it (possibly DDP-wrapped or compiled).
            inner_model: The same tower, unwrapped, used inside PGD (gradients w.r.t. delta only).
            reference: The frozen original encoder.
            batch: The rank's images, dataset indices and captions.
            rng: Per-sample random streams for the start point and the noise.
        """
        x = batch.images.float()
        targets = self.targets(reference, batch)

        def inner_loss(pixels: Tensor) -> Tensor:
            return self.discrepancy(self.embed(inner_model, self._smooth(pixels, rng)), targets)

        result = pgd_maximize(inner_loss, x, self.regularizer, self.pgd, rng=rng)
        adversarial = x + result.delta
        outer_input = self._smooth(adversarial, rng) if self.outer_noise else adversarial
        per_sample = self.outer_loss(model, reference, x, outer_input, targets)
        penalty = self.regularizer.penalty(result.delta)
        return StepOutput(
            loss=per_sample.mean(),
            inner=(per_sample.detach() - penalty).mean(),
            delta_norm=result.delta.flatten(1).norm(dim=1).mean(),
            history=result.history.mean(dim=1) if result.history.numel() else result.history.new_zeros(0),
        )
