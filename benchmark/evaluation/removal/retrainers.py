"""The models ROAR retrains on images with pixels removed (Hooker et al. 2019, "A benchmark for
interpretability methods in deep neural networks").

Each retrainer takes the removed training and test images of one fraction and returns the test accuracy
of one freshly trained model per seed:

* ``probe`` (default): a linear probe on the frozen encoder's unit-norm embeddings of the removed
  images (:func:`aft_bench.evaluation.probe.linear.fit_linear`: full-batch L-BFGS from zeros, deterministic). The probe
  has no random initialisation, so a seed draws the share ``subsample`` of the training images it is
  fitted on: seeds then differ and their spread is the sampling spread of the retrained model.
* ``cnn``: a small CNN trained from scratch (:class:`TinyCNN`), as ROAR retrains its ResNet; a seed
  sets its initialisation, its subsample and the order of its mini-batches.

Options read here (``--option key=value``): ``probe_steps``, ``probe_weight_decay`` (shared with the
probe target), ``cnn_epochs`` (default 10), ``cnn_lr`` (default 3e-3), ``cnn_width`` (default 16). Every entry of
the ``RETRAINERS`` registry is built as ``factory(encoder, num_classes, mean, probe, cnn)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aft_bench.core.options import finite_number, option, positive_int
from aft_bench.core.registries import RETRAINERS
from aft_bench.evaluation.probe.linear import accuracy, fit_linear
from aft_bench.evaluation.probe.options import ProbeOptions
from aft_bench.evaluation.removal.data import RemovedSplit
from aft_bench.models.encoder import Encoder

log = logging.getLogger(__name__)


def seeded_subset(n: int, share: float, seed: int) -> Tensor:
    """Sorted indices of a seeded random ``share`` of ``range(n)`` (at least one; all when share is 1)."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"option subsample={share!r}: give a share in (0, 1]")
    if share == 1.0:
        return torch.arange(n)
    count = max(1, int(math.floor(share * n + 0.5)))
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count].sort().values


class Retrainer(Protocol):
    """Trains one model per seed on removed training images; returns test accuracies in [0, 1]."""

    def evaluate(self, train: RemovedSplit, test: RemovedSplit, seeds: list[int], subsample: float) -> dict[int, float]:
        ...


def _positive_number(value: Any, key: str) -> float:
    number = finite_number(value, key)
    if number <= 0:
        raise ValueError(f"option {key}={value!r}: give a positive number")
    return number


@dataclass(frozen=True)
class CnnOptions:
    """The ``cnn_*`` options of the CNN retrainer."""

    epochs: int = option(10, parse=positive_int, help="training epochs")
    lr: float = option(3e-3, parse=_positive_number, help="Adam learning rate")
    width: int = option(16, parse=positive_int, help="channels of the first convolution")


@RETRAINERS.register("probe", help="ROAR: a linear probe on the frozen encoder's embeddings of the removed images")
class ProbeRetrainer:
    """Linear probe on the frozen encoder's embeddings of the removed images (the default)."""

    def __init__(self, encoder: Encoder, num_classes: int, mean: Tensor, probe: ProbeOptions,
                 cnn: CnnOptions) -> None:
        self.encoder, self.num_classes = encoder, num_classes
        self.steps, self.weight_decay = probe.steps, probe.weight_decay

    @torch.no_grad()
    def embed(self, source: RemovedSplit) -> tuple[Tensor, Tensor]:
        """Unit-norm embeddings (N x D, float32, on the encoder's device) and labels (N) of the removed images."""
        features, labels = [], []
        for images, batch_labels in source.batches():
            features.append(self.encoder(images.to(self.encoder.device)).float())
            labels.append(batch_labels)
        if not features:
            raise ValueError(f"the {source.split.name} split has no usable image left")
        return torch.cat(features), torch.cat(labels)

    def evaluate(self, train: RemovedSplit, test: RemovedSplit, seeds: list[int], subsample: float) -> dict[int, float]:
        x_train, y_train = self.embed(train)
        x_test, y_test = self.embed(test)
        out = {}
        for seed in seeds:
            index = seeded_subset(len(y_train), subsample, seed)
            linear, _ = fit_linear(x_train[index.to(x_train.device)], y_train[index], self.num_classes,
                                   self.weight_decay, self.steps)
            out[seed] = float(accuracy(linear, x_test, y_test.to(x_test.device)))
        return out


class TinyCNN(nn.Module):
    """Three stride-2 3x3 convolutions with batch norm and ReLU (width, 2 width, 4 width channels),
    global average pooling and a linear classifier; inputs are pixels minus the dataset mean."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for out in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@RETRAINERS.register("cnn", help="ROAR: a small CNN trained from scratch on the removed images")
class CnnRetrainer:
    """A :class:`TinyCNN` trained from scratch with Adam on the removed training images."""

    def __init__(self, encoder: Encoder, num_classes: int, mean: Tensor, probe: ProbeOptions,
                 cnn: CnnOptions) -> None:
        self.device, self.num_classes = encoder.device, num_classes
        self.mean = mean.float().reshape(1, 3, 1, 1).to(self.device)
        self.epochs, self.lr, self.width = cnn.epochs, cnn.lr, cnn.width

    def _model(self, seed: int) -> TinyCNN:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return TinyCNN(self.num_classes, self.width).to(self.device)

    def _fit(self, train: RemovedSplit, seed: int, subsample: float) -> TinyCNN:
        positions = train.positions()
        subset = [positions[i] for i in seeded_subset(len(positions), subsample, seed).tolist()]
        model = self._model(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        order = torch.Generator().manual_seed(seed)
        model.train()
        with torch.enable_grad():
            for _ in range(self.epochs):
                shuffled = [subset[i] for i in torch.randperm(len(subset), generator=order).tolist()]
                for images, labels in train.batches(shuffled):
                    if len(labels) < 2:
                        continue  # batch norm needs two samples
                    logits = model(images.to(self.device) - self.mean)
                    loss = F.cross_entropy(logits, labels.to(self.device))
                    if not torch.isfinite(loss):
                        raise ValueError(f"CNN retraining diverged (loss {float(loss)}); lower --option cnn_lr")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
        return model.eval()

    @torch.no_grad()
    def _accuracy(self, model: TinyCNN, test: RemovedSplit) -> float:
        correct, total = 0, 0
        for images, labels in test.batches():
            predicted = model(images.to(self.device) - self.mean).argmax(dim=1).cpu()
            correct += int((predicted == labels).sum())
            total += len(labels)
        if total == 0:
            raise ValueError(f"the {test.split.name} split has no usable image left")
        return correct / total

    def evaluate(self, train: RemovedSplit, test: RemovedSplit, seeds: list[int], subsample: float) -> dict[int, float]:
        return {seed: self._accuracy(self._fit(train, seed, subsample), test) for seed in seeds}

