"""The random-removal baseline: a known map per (seed, image), independent of the batch, the encoder and the target."""

from __future__ import annotations

import zlib

import numpy as np
import torch

from aft_bench.attributions.random import RandomBaseline, content_key
from aft_bench.core.registries import ATTRIBUTIONS


def _images(n: int = 3, size: tuple[int, int] = (6, 5)) -> torch.Tensor:
    return torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(0))


def test_known_map_from_the_seed_and_the_pixels(tiny_vit):
    images = _images()
    maps = RandomBaseline(seed=4)(tiny_vit, images, None)
    assert maps.shape == (3, 6, 5) and maps.dtype == torch.float32
    for image, got in zip(images, maps, strict=True):
        key = zlib.crc32(image.numpy().astype(np.float32).tobytes())
        assert content_key(image) == key
        expected = np.random.default_rng(np.random.SeedSequence([4, key])).random((6, 5))
        torch.testing.assert_close(got, torch.from_numpy(expected).float())
    assert (maps >= 0).all() and (maps < 1).all()


def test_same_image_same_map_in_any_batch(tiny_vit, tiny_cnn):
    images = _images()
    method = RandomBaseline(seed=4)
    maps = method(tiny_vit, images, None)
    other_batch = torch.cat([_images(2, (6, 5)) * 0.5, images[2:], images[:1]])  # new companions and positions
    again = method(tiny_cnn, other_batch, None)  # another encoder, too: the map ignores it
    assert torch.equal(again[2], maps[2]) and torch.equal(again[3], maps[0])
    assert not torch.equal(maps[0], maps[1])


def test_seeds_give_different_maps(tiny_vit):
    images = _images()
    first = RandomBaseline(seed=4)(tiny_vit, images, None)
    assert torch.equal(RandomBaseline(seed=4)(tiny_vit, images, None), first)
    assert not torch.equal(RandomBaseline(seed=5)(tiny_vit, images, None), first)


def test_registered_as_random():
    assert ATTRIBUTIONS.get("random") is RandomBaseline and RandomBaseline.name == "random"
