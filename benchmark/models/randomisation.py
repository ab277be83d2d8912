"""Re-initialising an image tower block by block: the model-parameter randomisation test of Adebayo et al. (2018).

Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim (2018, "Sanity checks for saliency maps", NeurIPS) re-initialise a
trained network's layers from the top down, one more per step ("cascading"), or one at a time ("independent"), and
ask whether an attribution method's maps change: a method whose maps survive full randomisation does not explain
the model. Here the layers are the tower's *units*, top first (:func:`tower_units`):

* ViT (open_clip ``VisionTransformer``): ``head`` (final norm, projection, any attention pooling), ``block<L-1>`` ..
  ``block0``, ``stem`` (patch embedding, class and position embeddings, pre-norm);
* ModifiedResNet: ``head`` (the attention pool), ``layer4`` .. ``layer1``, ``stem`` (the three stem convolutions);
* timm towers (ConvNeXt, ...): ``head`` (the trunk's head and open_clip's projection), ``stage<S-1>`` ..
  ``stage0``, ``stem``;
* the other backends' towers (transformers CLIP, timm classifiers): ``head``, their blocks or stages, ``stem``
  (:meth:`aft_bench.models.encoder.Encoder.tower_parts`).

The units partition the tower's state: every trained parameter and every buffer belongs to exactly one.

Initialisation. Like Adebayo et al., each layer is re-drawn with its own initialiser: every module's
``reset_parameters`` (PyTorch's default of its type: Kaiming-uniform weights and uniform biases for linear and
convolution layers, ones and zeros for layer and batch norms, whose running statistics restart at 0 and 1), and
``_reset_parameters`` for multi-head attention (Xavier-uniform in-projection, zero biases). Parameters a tower
holds outside such layers (class and position embeddings, output projections, layer scales) are drawn from
N(0, 1/d), d their last dimension, the scale open_clip draws a ViT's embeddings with (``width ** -0.5``).
Parameters the architecture does not train (``requires_grad`` False: the fixed sine-cosine position embedding)
are kept. The draw is made once per (tower, seed) on a CPU copy from a forked, seeded RNG (children before their
parents, so an attention layer zeroes its output bias as at construction), so it is the same on every device and
in every step: a unit holds the same random weights in every cascading step and in its independent step, and two
encoders of one architecture randomise to the same network.

:class:`Randomiser` applies a set of randomised units to a deep copy of the encoder (the original, possibly a
cached object shared with other tasks, is never changed); switching sets copies only the units that change.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from aft_bench.core.seeding import sample_seed
from aft_bench.models.encoder import Encoder, UnsupportedEncoderError


@dataclass(frozen=True)
class Unit:
    """One re-initialisable part of an image tower.

    Attributes:
        label: Its name in results and figures (``head``, ``block3``, ``layer2``, ``stem``).
        keys: The ``encoder.visual.state_dict()`` keys it re-draws (its parameters the architecture trains, and
            its buffers).
    """

    label: str
    keys: tuple[str, ...]


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def tower_units(encoder: Encoder) -> list[Unit]:
    """The tower's units, top first: ``head``, the blocks from the last to the first, ``stem``.

    Raises:
        UnsupportedEncoderError: For a tower whose blocks are unknown, or a unit with nothing to re-draw (every
            parameter frozen with ``requires_grad_(False)``: unfreeze the encoder first).
    """
    blocks, stem = encoder.tower_parts()
    frozen = {name for name, p in encoder.visual.named_parameters() if not p.requires_grad}
    keys = [k for k in encoder.visual.state_dict() if k not in frozen]  # trained parameters and buffers
    in_blocks = [label for label, prefix in blocks]
    groups: dict[str, list[str]] = {"head": [], **{label: [] for label in reversed(in_blocks)}, "stem": []}
    for key in keys:
        owner = next((label for label, prefix in blocks if _under(key, [prefix])), None)
        groups[owner or ("stem" if _under(key, stem) else "head")].append(key)
    trained = {name for name, p in encoder.visual.named_parameters() if p.requires_grad}
    empty = [label for label, members in groups.items() if label != "head" and not trained.intersection(members)]
    if empty:
        raise UnsupportedEncoderError(f"encoder {encoder.name!r}: nothing to re-initialise in {empty} (are its "
                                      "parameters frozen with requires_grad_(False)?)")
    return [Unit(label, tuple(members)) for label, members in groups.items() if members]


def _reinitialise(module: nn.Module) -> None:
    """Re-draws the parameters ``module`` holds itself (not its children's) with its own initialiser."""
    reset = getattr(module, "reset_parameters", None) or getattr(module, "_reset_parameters", None)
    if callable(reset):
        reset()
        return
    for parameter in module.parameters(recurse=False):
        nn.init.normal_(parameter, std=parameter.shape[-1] ** -0.5 if parameter.dim() else 1.0)


def fresh_state(visual: nn.Module, seed: int) -> dict[str, Tensor]:
    """The state of ``visual`` with every module re-initialised (see the module docstring), on the CPU.

    ``visual`` itself is not changed. The same (architecture, seed) gives the same state.
    """
    twin = copy.deepcopy(visual).to("cpu")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(sample_seed(seed, "model-parameter randomisation"))
        for module in reversed(list(twin.modules())):  # descendants before their ancestors
            _reinitialise(module)
    return twin.state_dict()


def _shared_parts(encoder: Encoder) -> dict[int, object]:
    """A ``copy.deepcopy`` memo that keeps the tokenizer and the text tower shared with the copy (never written)."""
    model = encoder.model
    shared: list[object] = [encoder.tokenizer, *(child for name, child in model.named_children() if name != "visual"),
                            *model.parameters(recurse=False), *model.buffers(recurse=False)]
    return {id(part): part for part in shared}


class Randomiser:
    """A deep copy of an encoder whose units are switched between their trained and their re-drawn weights.

    The copy and the re-drawn weights are made on the first :meth:`randomise` (a run whose scores are all stored
    makes neither).

    Args:
        encoder: The trained encoder (never changed).
        seed: Seed of the re-drawn weights.

    Attributes:
        units: The tower's units, top first (:func:`tower_units`).
    """

    def __init__(self, encoder: Encoder, seed: int) -> None:
        self.units = tower_units(encoder)
        self._source, self._seed = encoder, seed
        self._copy: Encoder | None = None
        self._live: dict[str, Tensor] = {}
        self._fresh: dict[str, Tensor] = {}
        self._current: frozenset[str] = frozenset()

    @property
    def encoder(self) -> Encoder:
        """The working copy: its image tower a deep copy, its tokenizer and text tower shared with the original
        (safe: only image-tower weights are ever written); :meth:`randomise` sets its weights."""
        if self._copy is None:
            self._copy = copy.deepcopy(self._source, memo=_shared_parts(self._source)).eval()
            fresh = fresh_state(self._source.visual, self._seed)
            self._live = self._copy.visual.state_dict()  # views of the copy's tensors: writing them sets its weights
            self._fresh = {key: fresh[key].to(self._live[key].device) for unit in self.units for key in unit.keys}
        return self._copy

    @property
    def labels(self) -> list[str]:
        """The units' labels, top first."""
        return [unit.label for unit in self.units]

    @torch.no_grad()
    def randomise(self, labels: Iterable[str]) -> Encoder:
        """The working copy with exactly the units ``labels`` re-drawn (the others trained); returns it.

        Raises:
            ValueError: For a label that names no unit.
        """
        chosen = frozenset(labels)
        unknown = chosen - set(self.labels)
        if unknown:
            raise ValueError(f"no unit {sorted(unknown)} in this tower; its units are {self.labels}")
        working = self.encoder
        trained = self._source.visual.state_dict()  # views of the original's tensors, only ever read
        for unit in self.units:
            if (unit.label in chosen) != (unit.label in self._current):
                source = self._fresh if unit.label in chosen else trained
                for key in unit.keys:
                    self._live[key].copy_(source[key])
        self._current = chosen
        return working

    def cascading(self) -> list[list[str]]:
        """The cascading steps: the top unit, then the top two, ..., then every unit (Adebayo et al.'s order)."""
        return [self.labels[: i + 1] for i in range(len(self.units))]
