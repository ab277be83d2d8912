"""uint8 samples (ImageNet-S, ImageNet-Segmentation): uint8 through collation and the workers' transfer, float32
``level / 255`` from ``Batch.to`` and every streamed chunk, the same numbers as the float path of data version 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from aft_bench.data.base import Batch, Sample, float_pixels
from aft_bench.data.imagenet_s import ImageNetS, write_synthetic
from aft_bench.data.io import read_image_uint8
from aft_bench.data.transforms import _resize_crop
from aft_bench.evaluation.streaming import BadSamples, stream

SIZE = (32, 32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("uint8") / "ImageNetS10", 6, size=(48, 64))


def _sample(image: Tensor, name: str = "a") -> Sample:
    return Sample(id=name, image=image, prompt="p", label=0, mask=None)


def test_float_pixels_divides_levels_and_keeps_floats() -> None:
    levels = torch.tensor([0, 1, 128, 255], dtype=torch.uint8)
    assert torch.equal(float_pixels(levels), torch.tensor([0, 1, 128, 255], dtype=torch.float32) / 255)
    assert float_pixels(levels).dtype == torch.float32 and float_pixels(levels)[-1] == 1.0
    floats = torch.rand(3)
    assert float_pixels(floats) is floats


def test_collate_keeps_uint8_and_to_gives_float() -> None:
    images = [torch.randint(0, 256, (3, 4, 4), dtype=torch.uint8) for _ in range(3)]
    batch = Batch.collate([_sample(x, str(i)) for i, x in enumerate(images)])
    assert batch.images.dtype == torch.uint8  # a quarter of the bytes in the workers' transfer
    moved = batch.to("cpu")
    assert moved.images.dtype == torch.float32 and torch.equal(moved.images, torch.stack(images).float() / 255)
    assert batch.images.dtype == torch.uint8  # the original batch is untouched
    pinned = batch.to("cpu", pin=torch.cuda.is_available())
    assert torch.equal(pinned.images, moved.images)


def test_collate_of_mixed_dtypes_is_float() -> None:
    levels = torch.full((3, 2, 2), 51, dtype=torch.uint8)
    floats = torch.full((3, 2, 2), 0.5)
    batch = Batch.collate([_sample(levels, "a"), _sample(floats, "b")])
    assert batch.images.dtype == torch.float32
    assert torch.equal(batch.images[0], torch.full((3, 2, 2), 51 / 255)) and torch.equal(batch.images[1], floats)


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_imagenet_s_pixels_are_version_2_floats(folder: Path, workers: int) -> None:
    dataset = ImageNetS(folder, SIZE)
    ids = dataset.ids()
    assert dataset.load(ids[0]).image.dtype == torch.uint8
    chunks = list(stream(dataset, ids, batch_size=2, policy=BadSamples(), num_workers=workers, progress=False))
    images = torch.cat([c.batch.images for c in chunks])
    assert images.dtype == torch.float32
    for image, sample_id in zip(images, ids, strict=True):
        pixels, stored = read_image_uint8(dataset.paths(sample_id)[0])
        version_2 = _resize_crop(pixels, SIZE, stored).float().div_(255.0)  # data version 2's float pixels
        assert torch.equal(image, version_2)
