"""A planted non-robust feature for the shapes world: a faint class-specific pattern over the whole image.

Ilyas et al. (2019, "Adversarial examples are not bugs, they are features") show that classifiers come to rely
on features that predict the label but that humans cannot see, and that adversarial training removes that
reliance. The AFT paper's account of CLIP's spread-out input gradients (sections 1 and 3) is this mechanism.
The shapes world can carry such a feature by construction, so that a benchmark run can check it is found: every
image gets ``amplitude / 255`` times a fixed pattern of its class added before the final clip to [0, 1].

The pattern of a class is a seeded random +-1 tile of ``PATTERN_PERIOD`` x ``PATTERN_PERIOD`` pixels per channel,
repeated over the image from the top-left corner: the same in every 8 x 8 patch of the toy ViT (so a patch
embedding can pick it up linearly) and mirror-symmetric left to right within the tile, so that the mirror
augmentation of the toy's training leaves it unchanged on images whose width is a multiple of the period. At an
amplitude below the fine-tuning's eps (4/255), an L-infinity adversary can remove a pattern (and, for A <= 2,
also write another class's in its place: |A| + |A| <= eps), which is what adversarial fine-tuning trains against.
"""

from __future__ import annotations

import functools

import numpy as np

SHORTCUT_AMPLITUDE = 3.5
"""Amplitude (1/255 units) of the pattern of the ``toy-shortcut`` world: below the toy fine-tunes' eps of 4/255, so an
adversary can erase it. Chosen from the measured curve (README, "The planted-shortcut world"): at 1 and 2 the toy
CLIP hardly uses the pattern; at 3.5 its gradients follow it."""

PATTERN_PERIOD = 8
"""Side of the repeated tile, in pixels (the toy ViT's patch size)."""

_PATTERN_STREAM = 7919
"""Separates the patterns' random stream from the samples' (``SeedSequence([seed, _PATTERN_STREAM, label])``)."""


def check_amplitude(amplitude: object) -> float:
    """``amplitude`` (in 1/255 units) as a float, refused unless finite and in [0, 255)."""
    if isinstance(amplitude, bool) or not isinstance(amplitude, (int, float, np.number)) or not (
            0.0 <= float(amplitude) < 255.0):
        raise ValueError(f"shortcut={amplitude!r}: give the pattern's amplitude in 1/255 units, a number in [0, 255) "
                         "(0: no planted pattern)")
    return float(amplitude)


@functools.lru_cache(maxsize=64)
def _tile(seed: int, label: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _PATTERN_STREAM, int(label)]))
    half = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(PATTERN_PERIOD, PATTERN_PERIOD // 2, 3))
    tile = np.concatenate([half, half[:, ::-1]], axis=1)  # mirror-symmetric left to right
    tile.flags.writeable = False
    return tile


def class_pattern(label: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """The +-1 pattern of class ``label`` (H x W x 3 float32) for world ``seed``: its tile repeated from (0, 0)."""
    height, width = size
    reps = (-(-height // PATTERN_PERIOD), -(-width // PATTERN_PERIOD), 1)
    return np.tile(_tile(seed, label), reps)[:height, :width]


def add_pattern(image: np.ndarray, label: int, amplitude: float, seed: int = 0) -> None:
    """Adds ``amplitude / 255`` times the pattern of ``label`` to ``image`` (H x W x 3 float32) in place, unclipped."""
    if amplitude:
        image += (amplitude / 255.0) * class_pattern(label, image.shape[:2], seed)
