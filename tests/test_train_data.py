"""Training data sources, rank sharding, the lr schedule and checkpoint RNG round trips."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from aft_bench.data.base import DataError
from aft_bench.data.caption_file import CaptionFile
from aft_bench.data.image_tree import ImageTree
from aft_bench.training.batches import ShardedBatches
from aft_bench.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from aft_bench.training.data_spec import make_source
from aft_bench.training.schedule import WarmupCosine


def test_rank_shards_partition_each_global_batch_and_resume_at_the_position():
    source = make_source("shapes:24", (16, 16))
    whole = iter(ShardedBatches(source, 8, seed=3))
    ranks = [iter(ShardedBatches(source, 8, seed=3, rank=r, world_size=2)) for r in range(2)]
    for _ in range(4):  # crosses an epoch boundary (3 batches per epoch)
        full = next(whole)
        parts = [next(r) for r in ranks]
        assert full.indices == parts[0].indices + parts[1].indices
        assert torch.equal(full.images, torch.cat([p.images for p in parts]))
    first = ShardedBatches(source, 8, seed=3)
    stream = iter(first)
    expected = [next(stream).indices for _ in range(5)]
    resumed = ShardedBatches(source, 8, seed=3)
    resumed.load_state_dict({"epoch": 0, "batch": 2, "skipped": 0})
    stream = iter(resumed)
    assert [next(stream).indices for _ in range(3)] == expected[2:]
    with pytest.raises(ValueError, match="multiple"):
        ShardedBatches(source, 7, world_size=2)


def test_folder_and_caption_sources(tmp_path):
    for i, name in enumerate(["a/x.png", "a/b/y.JPG", "z.jpeg"]):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 30, 3), 40 * i, dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    folder = make_source(str(tmp_path), (8, 8))
    assert isinstance(folder.dataset, ImageTree) and folder.classnames is None
    assert folder.dataset.ids() == ["a/b/y.JPG", "a/x.png", "z.jpeg"]
    image, caption, label = folder.load(1)
    assert image.shape == (3, 8, 8) and caption is None and label == -1
    rows = [{"image": "a/x.png", "text": "dark"}, {"image": str(tmp_path / "z.jpeg"), "text": "light"}]
    (tmp_path / "caps.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    captions = make_source(str(tmp_path / "caps.jsonl"), (8, 8))
    assert isinstance(captions.dataset, CaptionFile) and len(captions) == 2 and captions.load(1)[1:] == ("light", -1)
    (tmp_path / "bad.csv").write_text("file_name,label\nx.png,1\n")
    with pytest.raises(DataError, match="no column"):
        make_source(str(tmp_path / "bad.csv"), (8, 8))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        make_source(str(tmp_path / "empty"), (8, 8))
    with pytest.raises(DataError, match="shapes"):
        make_source("imagenet-train", (8, 8))


def test_warmup_cosine_known_values():
    schedule = WarmupCosine(total_steps=10, warmup_steps=2, min_ratio=0.1)
    assert [schedule(s) for s in (0, 1)] == [0.5, 1.0]
    assert schedule(2) == pytest.approx(1.0)
    assert schedule(6) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert schedule(10) == pytest.approx(0.1)


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    save_checkpoint(tmp_path / "c.pt", {"step": 0, "rng": [rng_state()]})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"][0])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="unreadable"):
        load_checkpoint(tmp_path / "junk.pt")
