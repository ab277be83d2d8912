"""The one streaming loop: bad samples raised or skipped and counted (in this process and in DataLoader workers),
chunks in id order, all-bad chunks, ``Batch.select`` / ``Batch.to`` and the seeded ``select_ids``."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
from torch.utils.data import get_worker_info

from aft_bench.data.base import Batch, DataError, Sample, select_ids
from aft_bench.data.shapes import ShapesDataset
from aft_bench.evaluation.streaming import EXAMPLES_PER_KIND, BadSamples, Chunk, problem_kind, stream, stream_batches

SIZE = 8


class FlakyShapes:
    """Eight 16 x 16 shapes samples; the indices in ``bad`` raise DataError with the given message (plus where it
    was raised: ``in worker K`` inside a DataLoader worker, ``in main`` otherwise)."""

    def __init__(self, bad: dict[int, str] | None = None, size: int = SIZE) -> None:
        self.inner = ShapesDataset((16, 16), "test", size=size)
        self.classnames = self.inner.classnames
        self.bad = bad or {}

    def __len__(self) -> int:
        return len(self.inner)

    def ids(self) -> list[str]:
        return self.inner.ids()

    def load(self, sample_id: str) -> Sample:
        index = int(sample_id.rsplit("-", 1)[1])
        if index in self.bad:
            info = get_worker_info()
            where = f"in worker {info.id}" if info is not None else "in main"
            raise DataError(f"{self.bad[index]} ({where})")
        return self.inner.load(sample_id)


def _id(index: int) -> str:
    return f"shapes-test-0-{index}"


def _chunks(dataset: FlakyShapes, policy: BadSamples, batch_size: int = 3, num_workers: int = 0) -> list[Chunk]:
    return list(stream(dataset, dataset.ids(), batch_size=batch_size, policy=policy, num_workers=num_workers,
                       progress=False))


BAD = {1: "/d/1.png: unreadable image; broken header", 4: "/d/4.png: unreadable image; truncated",
       5: "/d/5.png: mask of the wrong size; 3 x 3"}


# ---------------------------------------------------------------------------------------- BadSamples
def test_policy_skip_counts_by_kind_of_problem_and_keeps_the_files() -> None:
    policy = BadSamples("skip")
    remedy = "re-download or regenerate the file, or pass --on-error skip to skip it"
    first = f"/data/very/long/folder/{'x' * 150}/a.png: unreadable or corrupt image (OSError: truncated); {remedy}"
    assert policy.handle("a", first) == "unreadable or corrupt image"
    assert policy.handle("b", f"/data/b.jpg: unreadable or corrupt image (SyntaxError: bad); {remedy}") == \
        "unreadable or corrupt image"
    assert policy.handle("c", "/m/c.png: mask of 10 x 12 pixels, image of 12 x 12") == \
        "mask of N x N pixels, image of N x N"
    assert policy.handle("d", "/m/d.png: mask of 7 x 7 pixels, image of 9 x 9") == \
        "mask of N x N pixels, image of N x N"
    assert policy.handle("e", "no place named") == "no place named"
    assert policy.counts == Counter({"unreadable or corrupt image": 2, "mask of N x N pixels, image of N x N": 2,
                                     "no place named": 1})
    assert policy.examples["unreadable or corrupt image"] == [("a", first.split(": ")[0]), ("b", "/data/b.jpg")]
    assert policy.examples["no place named"] == [("e", "")]


def test_policy_keeps_a_few_examples_per_kind() -> None:
    policy = BadSamples("skip")
    for index in range(EXAMPLES_PER_KIND + 3):
        policy.handle(str(index), f"f{index}.png: unreadable")
    assert policy.counts == Counter({"unreadable": EXAMPLES_PER_KIND + 3})
    assert len(policy.examples["unreadable"]) == EXAMPLES_PER_KIND


def test_problem_kind_splits_place_and_problem() -> None:
    assert problem_kind("/a/b.png: unreadable or corrupt image (OSError: x); fix it") == (
        "unreadable or corrupt image", "/a/b.png")
    assert problem_kind("broken: ") == ("broken", "")  # a place with no problem after it: the whole message
    assert problem_kind(": ") == ("unknown problem", "")


def test_policy_raise_names_the_sample_and_the_skip_flag() -> None:
    policy = BadSamples()
    assert policy.on_error == "raise"
    with pytest.raises(DataError) as info:
        policy.handle("img-42", "unreadable image: img-42.png")
    message = str(info.value)
    assert "img-42" in message and "unreadable image: img-42.png" in message and "--on-error skip" in message
    assert policy.counts == Counter()


def test_the_skip_hint_is_given_once_when_the_dataset_already_gives_it() -> None:
    with pytest.raises(DataError) as info:
        BadSamples().handle("s1", "/a.png: unreadable; re-download it, or pass --on-error skip to skip it")
    assert str(info.value).count("--on-error skip") == 1 and str(info.value).startswith("sample s1: /a.png")


@pytest.mark.parametrize("value", ["fail", "Skip", "", None])
def test_policy_refuses_unknown_on_error(value: object) -> None:
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
        BadSamples(value)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- stream
def test_skip_reports_bad_ids_in_their_chunks_and_batches_the_rest_in_order() -> None:
    dataset, clean = FlakyShapes(BAD), ShapesDataset((16, 16), "test", size=SIZE)
    policy = BadSamples("skip")
    chunks = _chunks(dataset, policy, batch_size=3)
    assert len(chunks) == 3  # ids 0-2, 3-5, 6-7
    assert [c.bad for c in chunks] == [[(_id(1), "unreadable image")],
                                       [(_id(4), "unreadable image"), (_id(5), "mask of the wrong size")], []]
    assert [c.batch.ids for c in chunks] == [[_id(0), _id(2)], [_id(3)], [_id(6), _id(7)]]
    assert [c.size for c in chunks] == [3, 3, 2]
    assert policy.counts == Counter({"unreadable image": 2, "mask of the wrong size": 1})
    for chunk in chunks:
        expected = Batch.collate([clean.load(i) for i in chunk.batch.ids])
        assert torch.equal(chunk.batch.images, expected.images)
        assert torch.equal(chunk.batch.labels, expected.labels)
        assert torch.equal(chunk.batch.masks, expected.masks)
        assert chunk.batch.prompts == expected.prompts


def test_stream_batches_yields_only_the_good_batches() -> None:
    policy = BadSamples("skip")
    flaky = FlakyShapes({2: "x.png: gone", 3: "y.png: gone"})
    batches = list(stream_batches(flaky, FlakyShapes().ids()[:6], batch_size=2, policy=policy, progress=False))
    assert [b.ids for b in batches] == [[_id(0), _id(1)], [_id(4), _id(5)]]
    assert policy.counts == Counter({"gone": 2})


def test_a_chunk_of_only_bad_samples_has_no_batch() -> None:
    policy = BadSamples("skip")
    chunks = _chunks(FlakyShapes({2: "x.png: gone", 3: "y.png: gone"}), policy, batch_size=2)
    assert chunks[1].batch is None and chunks[1].bad == [(_id(2), "gone"), (_id(3), "gone")] and chunks[1].size == 2
    assert [c.batch.ids for c in chunks if c.batch is not None] == [[_id(0), _id(1)], [_id(4), _id(5)],
                                                                     [_id(6), _id(7)]]


def test_every_sample_bad_gives_no_batch_at_all() -> None:
    policy = BadSamples("skip")
    chunks = _chunks(FlakyShapes({i: f"{i}.png: gone" for i in range(SIZE)}), policy, batch_size=5)
    assert [c.batch for c in chunks] == [None, None] and [c.size for c in chunks] == [5, 3]
    assert policy.counts == Counter({"gone": SIZE})


def test_raise_fails_at_the_chunk_of_the_first_bad_sample() -> None:
    dataset = FlakyShapes({4: "unreadable image: truncated"})
    seen: list[list[str]] = []
    with pytest.raises(DataError) as info:
        for chunk in stream(dataset, dataset.ids(), batch_size=2, policy=BadSamples("raise"), progress=False):
            seen.append(chunk.batch.ids)
    assert seen == [[_id(0), _id(1)], [_id(2), _id(3)]]
    message = str(info.value)
    assert _id(4) in message and "unreadable image: truncated (in main)" in message and "--on-error skip" in message


def test_stream_follows_the_order_of_the_ids_given() -> None:
    dataset = FlakyShapes()
    ids = [_id(5), _id(0), _id(3)]
    chunks = list(stream(dataset, ids, batch_size=2, policy=BadSamples(), device="cpu", progress=False))
    assert [c.batch.ids for c in chunks] == [[_id(5), _id(0)], [_id(3)]]
    assert chunks[0].batch.images.device.type == "cpu"
    assert torch.equal(chunks[0].batch.images[0], dataset.load(_id(5)).image)


def test_no_ids_no_chunks() -> None:
    policy = BadSamples("skip")
    assert list(stream(FlakyShapes(), [], batch_size=4, policy=policy, progress=False)) == []
    assert policy.counts == Counter()


# ---------------------------------------------------------------------------------------- workers
def test_two_workers_give_the_same_batches_as_the_main_process() -> None:
    dataset = FlakyShapes()
    one = _chunks(dataset, BadSamples(), batch_size=3, num_workers=0)
    two = _chunks(dataset, BadSamples(), batch_size=3, num_workers=2)
    assert [c.batch.ids for c in two] == [c.batch.ids for c in one] == [dataset.ids()[0:3], dataset.ids()[3:6],
                                                                       dataset.ids()[6:8]]
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a.batch.images, b.batch.images) and torch.equal(a.batch.labels, b.batch.labels)
        assert torch.equal(a.batch.masks, b.batch.masks) and a.batch.prompts == b.batch.prompts


def test_a_bad_sample_in_a_worker_is_skipped_and_counted() -> None:
    policy = BadSamples("skip")
    chunks = _chunks(FlakyShapes(BAD), policy, batch_size=3, num_workers=2)
    assert [c.batch.ids for c in chunks] == [[_id(0), _id(2)], [_id(3)], [_id(6), _id(7)]]
    assert [c.bad for c in chunks] == [[(_id(1), "unreadable image")],
                                       [(_id(4), "unreadable image"), (_id(5), "mask of the wrong size")], []]
    assert policy.counts == Counter({"unreadable image": 2, "mask of the wrong size": 1})


def test_a_bad_sample_in_a_worker_raises_data_error_in_the_main_process() -> None:
    with pytest.raises(DataError, match=r"in worker [01]\)") as info:
        _chunks(FlakyShapes({4: "unreadable image: truncated"}), BadSamples("raise"), batch_size=3, num_workers=2)
    assert type(info.value) is DataError
    assert _id(4) in str(info.value) and "--on-error skip" in str(info.value)


# ---------------------------------------------------------------------------------------- Batch
def _hand_batch(with_masks: bool = True) -> Batch:
    samples = [Sample(id=f"s{i}", image=torch.full((3, 2, 2), float(i)), prompt=f"p{i}", label=10 + i,
                      mask=torch.full((2, 2), i % 2, dtype=torch.int8) if with_masks or i != 3 else None)
               for i in range(4)]
    return Batch.collate(samples)


def test_select_keeps_ids_prompts_labels_and_masks_aligned() -> None:
    batch = _hand_batch()
    picked = batch.select([2, 0, 3])
    assert picked.ids == ["s2", "s0", "s3"] and picked.prompts == ["p2", "p0", "p3"]
    assert picked.labels.tolist() == [12, 10, 13]
    assert [float(img[0, 0, 0]) for img in picked.images] == [2.0, 0.0, 3.0]
    assert [int(m[0, 0]) for m in picked.masks] == [0, 0, 1]
    again = batch.select([1, 1])
    assert again.ids == ["s1", "s1"] and again.labels.tolist() == [11, 11] and len(again) == 2
    empty = batch.select([])
    assert empty.ids == [] and tuple(empty.images.shape) == (0, 3, 2, 2) and empty.labels.numel() == 0


def test_select_without_masks_stays_without_masks() -> None:
    batch = _hand_batch(with_masks=False)
    assert batch.masks is None
    picked = batch.select([3, 1])
    assert picked.masks is None and picked.ids == ["s3", "s1"] and picked.labels.tolist() == [13, 11]


def test_to_keeps_the_values_and_the_lists() -> None:
    batch = _hand_batch()
    moved = batch.to("cpu", non_blocking=True)
    assert moved.ids == batch.ids and moved.prompts == batch.prompts
    assert torch.equal(moved.images, batch.images) and torch.equal(moved.labels, batch.labels)
    assert torch.equal(moved.masks, batch.masks) and moved.masks.dtype == torch.int8


# ---------------------------------------------------------------------------------------- select_ids
def test_select_ids_is_a_seeded_subset_in_dataset_order() -> None:
    ids = [f"id{i:03d}" for i in range(100)]
    chosen = select_ids(ids, 10, seed=3)
    assert len(chosen) == 10 and len(set(chosen)) == 10 and set(chosen) <= set(ids)
    assert chosen == sorted(chosen, key=ids.index)
    assert chosen == [ids[i] for i in sorted(random.Random(3).sample(range(100), 10))]
    assert select_ids(ids, 10, seed=3) == chosen
    assert select_ids(ids, 10, seed=4) != chosen
    assert select_ids(list(reversed(ids)), 10, seed=3) == [ids[99 - i] for i in
                                                             sorted(random.Random(3).sample(range(100), 10))]


@pytest.mark.parametrize("limit", [None, 5, 6])
def test_select_ids_keeps_everything_when_the_limit_covers_it(limit: int | None) -> None:
    ids = ["e", "b", "d", "a", "c"]
    assert select_ids(ids, limit, seed=0) == ids


def test_select_ids_one_less_than_all_drops_exactly_one() -> None:
    ids = [f"x{i}" for i in range(7)]
    chosen = select_ids(ids, 6, seed=11)
    assert len(chosen) == 6 and [i for i in ids if i in chosen] == chosen
