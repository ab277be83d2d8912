"""The shapes world: the embedded default dataset, procedurally generated (no downloads).

Every image holds one captioned target object (a shape in a colour, ``len(SHAPES) * len(COLOURS)``
classes) drawn clearly larger than 1-3 distractor objects of other classes, on a textured, noisy
background (low-frequency colour gradient, stripes / checker / wave texture, pixel noise). The target's
exact pixel mask comes with it: 1 on target pixels, 0 elsewhere, including target pixels that a
distractor covers (distractors are always drawn on top and may hide at most ``MAX_OCCLUSION`` of it).
With ``shortcut=A`` every image also carries a faint pattern of its class (``A / 255``, a planted non-robust
feature: :mod:`aft_bench.data.shortcut`); the object, the mask and every other pixel draw are unchanged.

It stands in for ImageNet-S in the pointing game of the AFT paper ("Boosting the visual
interpretability of CLIP via adversarial fine-tuning", Sec. 4) on machines without real data, and is
what the bundled toy CLIP is trained on. Sample ``i`` of split ``s`` with seed ``S`` is a pure function of
``(S, s, i)``: its random generator is seeded with ``SeedSequence([S, split id, i])``, so any subset can
be drawn in any order and the splits are disjoint by construction. Shapes are drawn as signed distance
fields on the pixel grid (anti-aliased edges, vectorised numpy) at the requested size directly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import DataError, Sample
from aft_bench.data.shortcut import add_pattern, check_amplitude

SdfFn = Callable[[np.ndarray, np.ndarray, float, float], np.ndarray]


def _circle_sdf(x: np.ndarray, y: np.ndarray, radius: float, angle: float) -> np.ndarray:
    return np.hypot(x, y) - 0.9 * radius


def _polygon_sdf(x: np.ndarray, y: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) from points (x, y) to a closed polygon, all edges at once."""
    x0, y0 = verts[:, 0, None, None], verts[:, 1, None, None]
    nxt = np.roll(verts, -1, axis=0)
    ex, ey = nxt[:, 0, None, None] - x0, nxt[:, 1, None, None] - y0
    wx, wy = x[None] - x0, y[None] - y0
    t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    dist = np.sqrt(((wx - t * ex) ** 2 + (wy - t * ey) ** 2).min(axis=0))
    spans = (y0 > y[None]) != (y0 + ey > y[None])  # even-odd rule: edges a ray to +x crosses
    crossing_x = x0 + (y[None] - y0) * ex / np.where(ey == 0, 1.0, ey)
    inside = np.count_nonzero(spans & (x[None] < crossing_x), axis=0) % 2 == 1
    return np.where(inside, -dist, dist)


def _polygon(unit_verts: np.ndarray) -> SdfFn:
    """An SDF for the polygon ``unit_verts`` (extent ~1) scaled by ``radius`` and rotated by ``angle``."""

    def sdf(x: np.ndarray, y: np.ndarray, radius: float, angle: float) -> np.ndarray:
        c, s = math.cos(angle), math.sin(angle)
        verts = (unit_verts @ np.array([[c, s], [-s, c]], dtype=np.float32)) * radius
        return _polygon_sdf(x, y, verts.astype(np.float32))

    return sdf


def _radial(radii: list[float], start: float = math.pi / 2) -> np.ndarray:
    angles = start + 2 * math.pi * np.arange(len(radii)) / len(radii)
    return np.stack([np.cos(angles), -np.sin(angles)], axis=1) * np.asarray(radii)[:, None]


_ARM, _WIDTH = 1.0, 0.34
SHAPE_SDFS: dict[str, SdfFn] = {
    "circle": _circle_sdf,
    "square": _polygon(np.array([[-0.78, -0.78], [0.78, -0.78], [0.78, 0.78], [-0.78, 0.78]])),
    "triangle": _polygon(_radial([1.12] * 3) + np.array([0.0, 0.1])),
    "star": _polygon(_radial([1.15, 0.5] * 5)),
    "cross": _polygon(np.array([[_WIDTH, _WIDTH], [_ARM, _WIDTH], [_ARM, -_WIDTH], [_WIDTH, -_WIDTH],
                                [_WIDTH, -_ARM], [-_WIDTH, -_ARM], [-_WIDTH, -_WIDTH], [-_ARM, -_WIDTH],
                                [-_ARM, _WIDTH], [-_WIDTH, _WIDTH], [-_WIDTH, _ARM], [_WIDTH, _ARM]])),
}
SHAPES: tuple[str, ...] = tuple(SHAPE_SDFS)
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.88, 0.12, 0.10),
    "green": (0.12, 0.72, 0.18),
    "blue": (0.12, 0.30, 0.92),
    "yellow": (0.96, 0.86, 0.12),
    "purple": (0.60, 0.18, 0.80),
}
CLASSNAMES: list[str] = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]
VOCABULARY: list[str] = [*SHAPES, *COLOURS]
PROMPT_TEMPLATE = "a photo of a {}."
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZES: dict[str, int] = {"train": 500, "val": 500, "test": 200}
"""Samples of a split when ``ShapesDataset`` is given no ``size`` (the whole shapes "dataset" of a default run)."""

TARGET_DIAMETER = (0.5, 0.7)  # target extent, as a fraction of min(H, W)
DISTRACTOR_DIAMETER = (0.12, 0.20)
MAX_TILT = 0.3  # objects are tilted by at most this many radians, so each shape has one recognisable pose
MAX_OCCLUSION = 0.12  # largest share of target pixels that distractors may cover
COLOUR_JITTER = 0.05  # uniform per-channel jitter of an object's palette colour
MIN_SIZE = 16
_PLACEMENT_TRIES = 12


def _stripes(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    return np.tanh(3 * np.sin(2 * math.pi * u / period + rng.uniform(0, 2 * math.pi)))


def _checker(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    phase = rng.uniform(0, 2 * math.pi, 2)
    wave_u, wave_v = np.sin(2 * math.pi * u / period + phase[0]), np.sin(2 * math.pi * v / period + phase[1])
    return np.tanh(6 * wave_u * wave_v)


def _waves(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    fu, fv = rng.uniform(0.3, 1.0, 2) * (2 * math.pi / period)
    phase = rng.uniform(0, 2 * math.pi, 2)
    return 0.5 * (np.sin(fu * u + phase[0]) + np.sin(fv * v + phase[1] + 0.5 * np.sin(fu * u)))


_TEXTURES = (_stripes, _checker, _waves)


def render_background(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Muted two-colour gradient plus a random texture (stripes, checker or waves), H x W x 3 float32.

    Colours stay near grey so the saturated object colours are the only strong colour cue.
    """
    side = min(xs.shape)
    greys = rng.uniform(0.3, 0.7, (2, 1)) + rng.uniform(-0.08, 0.08, (2, 3))
    c0, c1 = greys.astype(np.float32)
    theta = rng.uniform(0, 2 * math.pi)
    u = xs * math.cos(theta) + ys * math.sin(theta)
    t = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
    image = c0 + (c1 - c0) * t[..., None]
    phi = rng.uniform(0, 2 * math.pi)
    u = xs * math.cos(phi) + ys * math.sin(phi)
    v = ys * math.cos(phi) - xs * math.sin(phi)
    texture = _TEXTURES[int(rng.integers(len(_TEXTURES)))](rng, u, v, rng.uniform(0.08, 0.25) * side)
    tint = (1 + rng.uniform(-0.3, 0.3, 3)) * rng.uniform(0.03, 0.09)
    return (image + texture[..., None] * tint.astype(np.float32)).astype(np.float32)


def caption(label: int) -> str:
    """The prompt of class ``label``: ``"a photo of a {colour} {shape}."``."""
    return PROMPT_TEMPLATE.format(CLASSNAMES[label])


def class_index(colour: str, shape: str) -> int:
    """Index into ``CLASSNAMES`` of a (colour, shape) pair."""
    return list(COLOURS).index(colour) * len(SHAPES) + SHAPES.index(shape)


@dataclass(frozen=True)
class ShapeObject:
    """One drawn object: class, geometry in pixels (radius = half its nominal extent) and colour."""

    shape: str
    colour: str
    center: tuple[float, float]  # (x, y) in pixels
    radius: float
    angle: float
    rgb: tuple[float, float, float]

    @property
    def label(self) -> int:
        return class_index(self.colour, self.shape)


@dataclass(frozen=True)
class ShapesScene:
    """A rendered sample with the layers a test needs to check the mask against.

    Attributes:
        image: H x W x 3 float32 in [0, 1].
        mask: H x W bool, True on visible target pixels.
        label: Target class index.
        target: The target object.
        distractors: Distractor objects, drawn in this order on top of the target.
        target_alpha: H x W float32 coverage of the target before occlusion.
        occluder_alpha: H x W float32 coverage of all distractors together.
    """

    image: np.ndarray
    mask: np.ndarray
    label: int
    target: ShapeObject
    distractors: tuple[ShapeObject, ...]
    target_alpha: np.ndarray
    occluder_alpha: np.ndarray


def _check_size(image_size: tuple[int, int] | int) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s >= MIN_SIZE for s in size):
        raise DataError(f"image_size={image_size!r}: give (height, width) as two integers >= {MIN_SIZE}")
    return int(size[0]), int(size[1])


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise DataError(f"unknown shapes split {split!r}; use one of {sorted(SPLITS)}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"shapes seed={seed!r}: use a non-negative integer")
    if not isinstance(index, (int, np.integer)) or index < 0:
        raise DataError(f"shapes index={index!r}: use a non-negative integer")
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS[split], int(index)]))


@functools.lru_cache(maxsize=8)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y), read-only, float32."""
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float32) + 0.5,
                         np.arange(width, dtype=np.float32) + 0.5, indexing="ij")
    xs.flags.writeable = False
    ys.flags.writeable = False
    return xs, ys


def _sample_object(rng: np.random.Generator, label: int, diameter: float,
                   size: tuple[int, int]) -> ShapeObject:
    height, width = size
    colour, shape = list(COLOURS)[label // len(SHAPES)], SHAPES[label % len(SHAPES)]
    radius = diameter * min(height, width) / 2
    margin = 1.1 * radius
    center = (float(rng.uniform(margin, width - margin)), float(rng.uniform(margin, height - margin)))
    rgb = np.clip(np.asarray(COLOURS[colour]) + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, 3), 0.0, 1.0)
    return ShapeObject(shape, colour, center, radius, float(rng.uniform(-MAX_TILT, MAX_TILT)),
                       tuple(float(c) for c in rgb))


def _coverage(obj: ShapeObject, size: tuple[int, int]) -> tuple[tuple[slice, slice], np.ndarray]:
    """Anti-aliased coverage of ``obj`` inside its bounding box: (box slices, alpha in [0, 1])."""
    xs, ys = _grid(*size)
    reach = 1.2 * obj.radius + 2
    (cx, cy), (height, width) = obj.center, size
    box = (slice(max(0, int(cy - reach)), min(height, int(cy + reach) + 1)),
           slice(max(0, int(cx - reach)), min(width, int(cx + reach) + 1)))
    sdf = SHAPE_SDFS[obj.shape](xs[box] - cx, ys[box] - cy, obj.radius, obj.angle)
    return box, np.clip(0.5 - sdf, 0.0, 1.0).astype(np.float32)


def _paint(image: np.ndarray, obj: ShapeObject, box: tuple[slice, slice], alpha: np.ndarray,
           rng: np.random.Generator) -> None:
    """Composites ``obj`` over ``image`` in place, with a faint linear shading across the object."""
    xs, ys = _grid(*image.shape[:2])
    direction, strength = rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.12)
    ramp = ((xs[box] - obj.center[0]) * math.cos(direction)
            + (ys[box] - obj.center[1]) * math.sin(direction)) * (strength / obj.radius)
    colour = np.asarray(obj.rgb, dtype=np.float32) * (1 + ramp[..., None])
    a = alpha[..., None]
    image[box] = image[box] * (1 - a) + colour * a


def render_shapes_scene(seed: int, split: str, index: int, image_size: tuple[int, int] | int = (64, 64),
                        shortcut: float = 0.0, pattern_label: int | None = None,
                        pattern_offset: int = 0) -> ShapesScene:
    """Renders sample ``index`` of ``split`` with ``seed``, keeping the object layers.

    Args:
        seed: Non-negative world seed.
        split: One of ``SPLITS`` ("train", "val", "test").
        index: Non-negative sample index; any index can be drawn on its own.
        image_size: (H, W) in pixels (or one int for a square), at least ``MIN_SIZE``.
        shortcut: Amplitude (1/255 units) of the planted class pattern added before the final clip (0: none).
            The pattern uses no draw of the sample's generator, so everything else is the same at any amplitude.
        pattern_label: Whose pattern is planted: None for the sample's own class (the shortcut world), another
            class index to swap it (the reliance measure of :mod:`aft_bench.tasks.shortcut_reliance`).
        pattern_offset: With ``pattern_label=None``, plant the pattern of class ``(label + pattern_offset) mod C``
            (0: the own class); for callers that swap before the label is drawn (the toy's conflict images,
            :func:`aft_bench.toys.clip.data.render_pool`).

    Returns:
        The scene; see :class:`ShapesScene`.
    """
    size = _check_size(image_size)
    shortcut = check_amplitude(shortcut)
    rng = _rng(seed, split, index)
    xs, ys = _grid(*size)
    image = render_background(rng, xs, ys)
    num_classes = len(CLASSNAMES)
    label = int(rng.integers(num_classes))
    target = _sample_object(rng, label, float(rng.uniform(*TARGET_DIAMETER)), size)
    target_box, target_cov = _coverage(target, size)
    target_alpha = np.zeros(size, dtype=np.float32)
    target_alpha[target_box] = target_cov
    target_px = target_alpha >= 0.5
    allowed = MAX_OCCLUSION * max(int(target_px.sum()), 1)
    occluder = np.zeros(size, dtype=np.float32)
    distractors: list[tuple[ShapeObject, tuple[slice, slice], np.ndarray]] = []
    for _ in range(int(rng.integers(1, 4))):
        other = int(rng.integers(num_classes - 1))
        other += other >= label  # any class but the target's
        diameter = float(rng.uniform(*DISTRACTOR_DIAMETER))
        for _ in range(_PLACEMENT_TRIES):
            obj = _sample_object(rng, other, diameter, size)
            if math.dist(obj.center, target.center) < 0.6 * target.radius:
                continue
            box, cov = _coverage(obj, size)
            trial = occluder.copy()
            trial[box] = np.maximum(trial[box], cov)
            if np.count_nonzero(target_px & (trial >= 0.5)) <= allowed:
                occluder = trial
                distractors.append((obj, box, cov))
                break
    _paint(image, target, target_box, target_cov, rng)
    for obj, box, cov in distractors:
        _paint(image, obj, box, cov, rng)
    image += rng.normal(0.0, rng.uniform(0.01, 0.04), image.shape).astype(np.float32)
    if pattern_label is not None and not 0 <= pattern_label < num_classes:
        raise DataError(f"pattern_label={pattern_label!r}: use a class index in [0, {num_classes})")
    planted = (label + int(pattern_offset)) % num_classes if pattern_label is None else int(pattern_label)
    add_pattern(image, planted, shortcut, seed)
    np.clip(image, 0.0, 1.0, out=image)
    return ShapesScene(image=image, mask=target_px & (occluder < 0.5), label=label, target=target,
                       distractors=tuple(d[0] for d in distractors), target_alpha=target_alpha,
                       occluder_alpha=occluder)


def render_shapes_sample(seed: int, split: str, index: int, image_size: tuple[int, int] | int = (64, 64),
                         shortcut: float = 0.0, pattern_offset: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """Renders one sample: (image H x W x 3 float32 in [0, 1], target mask H x W bool, label); ``shortcut`` and
    ``pattern_offset`` as for :func:`render_shapes_scene`."""
    scene = render_shapes_scene(seed, split, index, image_size, shortcut, pattern_offset=pattern_offset)
    return scene.image, scene.mask, scene.label


def generate_batch(seed: int, split: str, start: int, count: int, image_size: tuple[int, int] | int = (64, 64),
                   shortcut: float = 0.0, pattern_offsets: Sequence[int] | None = None
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """Samples ``start .. start + count - 1`` stacked for training (``shortcut`` as for
    :func:`render_shapes_scene`; ``pattern_offsets``, one per sample, its ``pattern_offset``; None: all 0).

    Returns:
        images N x 3 x H x W float32 in [0, 1], masks N x H x W int8 (1 target, 0 other), labels N int64 (the
        objects' classes).
    """
    if count < 1:
        raise DataError(f"generate_batch count={count}: ask for at least one sample")
    offsets = [0] * count if pattern_offsets is None else list(pattern_offsets)
    if len(offsets) != count:
        raise DataError(f"generate_batch: {len(offsets)} pattern offsets for {count} samples; give one per sample")
    rendered = [render_shapes_sample(seed, split, start + i, image_size, shortcut, offsets[i]) for i in range(count)]
    images = torch.from_numpy(np.stack([r[0] for r in rendered])).permute(0, 3, 1, 2).contiguous()
    masks = torch.from_numpy(np.stack([r[1] for r in rendered]).astype(np.int8))
    labels = torch.tensor([r[2] for r in rendered], dtype=torch.long)
    return images, masks, labels


@DATASETS.register("shapes", help="generated shapes world with captions and pixel masks (embedded default)")
class ShapesDataset:
    """The first ``size`` samples of one split of the shapes world, as a :class:`Dataset`.

    Args:
        image_size: (H, W) the samples are rendered at (no resizing).
        split: "train", "val" or "test".
        size: Number of samples (ids ``shapes-{split}-{seed}-{index}`` for index < size); None: the split's
            default in ``DEFAULT_SIZES`` (200 test images, so the default pointing game scores 200; 500 train and
            val images for probes and ROAR's retraining).
        seed: World seed.
        shortcut: Amplitude (1/255 units) of the planted class pattern (:mod:`aft_bench.data.shortcut`); 0: none.
        root: Ignored (nothing is read from disk); accepted so task runners pass it uniformly.
        on_error: Ignored (generation cannot fail on a valid id); accepted for the same reason.
    """

    classnames: list[str] = CLASSNAMES

    def __init__(self, image_size: tuple[int, int] | int = (64, 64), split: str = "test", size: int | None = None,
                 seed: int = 0, shortcut: float = 0.0, root: object = None, on_error: str = "raise") -> None:
        self.image_size = _check_size(image_size)
        try:
            self.shortcut = check_amplitude(shortcut)
        except ValueError as error:
            raise DataError(f"shapes dataset: {error}") from None
        _rng(seed, split, 0)  # validates split and seed
        size = DEFAULT_SIZES[split] if size is None else size
        if not isinstance(size, (int, np.integer)) or size < 1:
            raise DataError(f"ShapesDataset size={size!r}: use a positive integer")
        self.split, self.size, self.seed = split, int(size), int(seed)
        self._prefix = f"shapes-{split}-{self.seed}-"

    def __len__(self) -> int:
        return self.size

    def ids(self) -> list[str]:
        """``shapes-{split}-{seed}-{index}`` for every index, in index order."""
        return [f"{self._prefix}{i}" for i in range(self.size)]

    def _index(self, sample_id: str) -> int:
        tail = sample_id[len(self._prefix):] if sample_id.startswith(self._prefix) else ""
        if not tail.isdigit() or int(tail) >= self.size or str(int(tail)) != tail:
            raise DataError(f"sample id {sample_id!r} is not in this dataset; expected "
                            f"'{self._prefix}<index>' with index < {self.size}")
        return int(tail)

    def load(self, sample_id: str) -> Sample:
        """Renders the sample named ``sample_id`` (image 3 x H x W float32, mask int8, caption prompt)."""
        return self.load_variant(sample_id)

    def load_variant(self, sample_id: str, pattern_label: int | None = None, shortcut: float | None = None) -> Sample:
        """The sample ``sample_id`` with another planted pattern: ``pattern_label``'s (None: its own class's) at
        amplitude ``shortcut`` (None: the dataset's; 0 removes the pattern). Everything else is unchanged."""
        index = self._index(sample_id)
        scene = render_shapes_scene(self.seed, self.split, index, self.image_size,
                                    self.shortcut if shortcut is None else shortcut, pattern_label)
        return Sample(id=sample_id, image=torch.from_numpy(scene.image).permute(2, 0, 1).contiguous(),
                      prompt=caption(scene.label), label=scene.label,
                      mask=torch.from_numpy(scene.mask.astype(np.int8)))

