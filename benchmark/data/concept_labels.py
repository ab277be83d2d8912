"""Pixel concept labels of a dataset in one label space, what Network Dissection (Bau et al. 2017) scores units
against: the shapes world's shapes and colours on the visible pixels of every object, or the labels of a dataset with
Broden's label API (pixel and image labels per category, cropped like the image)."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from aft_bench.data.base import DataError, Dataset
from aft_bench.data.shapes import COLOURS, SHAPE_SDFS, SHAPES, ShapesDataset, render_shapes_scene


class ConceptLabels(Protocol):
    """Pixel concept labels of a dataset, in one label space.

    Attributes:
        categories: Category names. label_names: Label id -> name (id 0 = unlabelled).
        label_category: Label id -> index into ``categories``.
    """

    categories: list[str]
    label_names: list[str]
    label_category: list[int]

    def labels(self, sample_id: str, size: tuple[int, int]) -> dict[int, Tensor]:
        """Category index -> M x h x w label maps of the sample, aligned with its image."""
        ...


class ShapesConcepts:
    """The shapes world's concepts: each shape and each colour, on the visible pixels of every object."""

    def __init__(self, dataset: ShapesDataset) -> None:
        self.dataset = dataset
        self.categories = ["shape", "colour"]
        self.label_names = ["-", *SHAPES, *COLOURS]
        self.label_category = [0] + [0] * len(SHAPES) + [1] * len(COLOURS)

    def labels(self, sample_id: str, size: tuple[int, int]) -> dict[int, Tensor]:
        index = int(sample_id.rsplit("-", 1)[-1])
        scene = render_shapes_scene(self.dataset.seed, self.dataset.split, index, self.dataset.image_size)
        height, width = scene.image.shape[:2]
        ys, xs = np.meshgrid(np.arange(height, dtype=np.float32) + 0.5, np.arange(width, dtype=np.float32) + 0.5,
                             indexing="ij")
        shape_map = np.zeros((height, width), dtype=np.int64)
        colour_map = np.zeros((height, width), dtype=np.int64)
        for obj in (scene.target, *scene.distractors):  # drawing order: later objects cover earlier ones
            sdf = SHAPE_SDFS[obj.shape](xs - obj.center[0], ys - obj.center[1], obj.radius, obj.angle)
            inside = sdf <= 0  # coverage >= 0.5, the mask convention of the shapes world
            shape_map[inside] = 1 + SHAPES.index(obj.shape)
            colour_map[inside] = 1 + len(SHAPES) + list(COLOURS).index(obj.colour)
        maps = torch.from_numpy(np.stack([shape_map, colour_map]))
        if (height, width) != tuple(size):
            maps = F.interpolate(maps[:, None].float(), size=size, mode="nearest")[:, 0].long()
        return {0: maps[:1], 1: maps[1:]}


class LabelMapConcepts:
    """Concepts of a dataset with Broden's label API (``load_labels``, ``label_names``, ``primary_category``)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.categories = list(dataset.categories)
        count = max(dataset.label_names, default=0) + 1
        self.label_names = [dataset.label_names.get(i, "-") for i in range(count)]
        primary = getattr(dataset, "primary_category", {})
        self.label_category = [self.categories.index(primary[i]) if primary.get(i) in self.categories else 0
                               for i in range(count)]

    def labels(self, sample_id: str, size: tuple[int, int]) -> dict[int, Tensor]:
        sh, sw = self.dataset.label_shape(sample_id)
        side = min(sh, sw)  # label maps at their own resolution, cropped like the image
        target = (max(1, round(side * size[0] / min(size))), max(1, round(side * size[1] / min(size))))
        raw = self.dataset.load_labels(sample_id, size=target)
        out: dict[int, Tensor] = {}
        for index, category in enumerate(self.categories):
            maps = [m.long() for m in raw.pixel.get(category, [])]
            maps += [torch.full(target, label, dtype=torch.long) for label in raw.image.get(category, [])]
            if maps:
                out[index] = torch.stack(maps)
        return out


def concept_labels(dataset: Dataset, name: str) -> ConceptLabels:
    """The concept labels of ``dataset`` (shapes world or a Broden-like dataset)."""
    if isinstance(dataset, ShapesDataset):
        return ShapesConcepts(dataset)
    if callable(getattr(dataset, "load_labels", None)):
        return LabelMapConcepts(dataset)
    raise DataError(f"dataset {name!r} has no pixel concept labels: network dissection runs on shapes or broden")
