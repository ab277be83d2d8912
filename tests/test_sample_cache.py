"""The sample cache (``--cache-samples``): bit-identical samples, a second pass that decodes nothing, invalidation by
source files and by key, corrupt entries, datasets it refuses, concurrent filling by DataLoader workers, and the
run's option (wrapping, run keys unchanged)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import Batch, DataError, Sample
from aft_bench.data.class_filter import ClassFilter
from aft_bench.data.io import read_image_uint8
from aft_bench.data.sample_cache import KEY_FILE, FileDataset, SampleCache
from aft_bench.data.transforms import resize_center_crop_uint8
from aft_bench.evaluation.config import RunConfig, resolve_config
from aft_bench.evaluation.context import RunContext, check_arguments
from aft_bench.evaluation.streaming import BadSamples, stream

SIZE = (24, 20)


def _write_image(path: Path, seed: int, shape: tuple[int, int] = (36, 30)) -> None:
    """A random RGB image (PNG or JPEG by suffix)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


class _Files:
    """Image files of a folder (``<k>.png`` or ``.jpg``), read with the project's reader and resized; masks (pixels
    brighter than mid-grey in red) and float pixels on request. Counts its loads."""

    def __init__(self, root: str | Path, image_size: tuple[int, int], suffix: str = ".png", masks: bool = True,
                 floats: bool = False, on_error: str = "raise") -> None:
        self.root = Path(root)
        self.image_size, self.masks, self.floats = image_size, masks, floats
        self.classnames = ["even", "odd"]
        self._files = sorted(self.root.glob(f"*{suffix}"))
        self.loads = 0

    def __len__(self) -> int:
        return len(self._files)

    def ids(self) -> list[str]:
        return [p.stem for p in self._files]

    def source_files(self, sample_id: str) -> list[Path]:
        return [p for p in self._files if p.stem == sample_id]

    def load(self, sample_id: str) -> Sample:
        self.loads += 1
        (path,) = self.source_files(sample_id)
        pixels, stored = read_image_uint8(path)
        image = resize_center_crop_uint8(pixels, self.image_size, stored)
        mask = (image[0] > 128).to(torch.int8) - (image[1] > 250).to(torch.int8) if self.masks else None
        return Sample(sample_id, image.float().div(255.0) if self.floats else image, f"image {sample_id}",
                      int(sample_id) % 2, mask)


class _Versioned(_Files):
    data_version: ClassVar[int] = 7


class _NoFiles(_Files):
    source_files = None  # type: ignore[assignment]  # a dataset that cannot name its files


def _folder(root: Path, n: int = 4, suffix: str = ".png") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        _write_image(root / f"{k}{suffix}", k)
    return root


def _assert_same(a: Sample, b: Sample) -> None:
    assert (a.id, a.prompt, a.label) == (b.id, b.prompt, b.label)
    assert a.image.dtype == b.image.dtype and a.image.shape == b.image.shape and torch.equal(a.image, b.image)
    assert (a.mask is None) == (b.mask is None)
    if a.mask is not None:
        assert a.mask.dtype == b.mask.dtype == torch.int8 and torch.equal(a.mask, b.mask)


@pytest.mark.parametrize(("suffix", "floats", "masks"),
                         [(".png", False, True), (".jpg", False, False), (".png", True, False), (".jpg", True, True)])
def test_samples_are_the_datasets_bit_for_bit_and_the_second_pass_decodes_nothing(
        tmp_path: Path, suffix: str, floats: bool, masks: bool) -> None:
    root = _folder(tmp_path / "data", suffix=suffix)
    reference = _Files(root, SIZE, suffix, masks, floats)
    dataset = _Files(root, SIZE, suffix, masks, floats)
    cache = SampleCache(dataset, SIZE, {"suffix": suffix, "masks": masks, "floats": floats},
                        folder=tmp_path / "cache")
    assert cache.ids() == reference.ids() and len(cache) == 4 and cache.classnames == ["even", "odd"]
    first = [cache.load(i) for i in cache.ids()]
    assert dataset.loads == 4
    second = [cache.load(i) for i in cache.ids()]
    assert dataset.loads == 4  # read from the cache
    again = SampleCache(_Files(root, SIZE, suffix, masks, floats), SIZE, {"suffix": suffix, "masks": masks,
                        "floats": floats}, folder=tmp_path / "cache")
    third = [again.load(i) for i in again.ids()]
    assert again.dataset.loads == 0  # a later run reads it too
    for k, sample_id in enumerate(reference.ids()):
        expected = reference.load(sample_id)
        assert expected.image.dtype == (torch.float32 if floats else torch.uint8)
        for got in (first[k], second[k], third[k]):
            _assert_same(got, expected)
    entries = list(cache.folder.rglob("*.safetensors"))
    assert len(entries) == 4 and (cache.folder / KEY_FILE).is_file()
    assert all(".tmp" not in p.name for p in cache.folder.rglob("*"))


def test_a_touched_or_rewritten_source_file_is_decoded_again(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data")
    dataset = _Files(root, SIZE)
    cache = SampleCache(dataset, SIZE, folder=tmp_path / "cache")
    before = cache.load("1")
    stat = os.stat(root / "1.png")
    os.utime(root / "1.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: same bytes, newer
    _assert_same(cache.load("1"), before)
    assert dataset.loads == 2
    cache.load("1")
    assert dataset.loads == 2  # the rewritten entry holds the new fingerprint
    _write_image(root / "1.png", seed=99)
    after = cache.load("1")
    assert dataset.loads == 3 and not torch.equal(after.image, before.image)
    _assert_same(after, _Files(root, SIZE).load("1"))
    cache.load("0")
    assert dataset.loads == 4  # the other samples are cached on their own


def test_image_size_arguments_version_and_root_each_key_another_folder(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data", n=1)
    other_root = _folder(tmp_path / "other", n=1)
    folder = tmp_path / "cache"

    def key(dataset: _Files, size: tuple[int, int] = SIZE, args: dict | None = None) -> Path:
        return SampleCache(dataset, size, {"masks": True} if args is None else args, folder=folder).folder

    base = key(_Files(root, SIZE))
    assert key(_Files(root, SIZE)) == base  # the same dataset, arguments and size: the same folder
    assert base.name.startswith("Files-24x20-")  # safe_name strips the underscore
    others = [key(_Files(root, (20, 20)), (20, 20)), key(_Files(root, SIZE), args={"masks": False}),
              key(_Versioned(root, SIZE)), key(_Files(other_root, SIZE))]
    assert len({base, *others}) == 5
    small = SampleCache(_Files(root, (20, 20)), (20, 20), folder=folder)
    assert small.load("0").image.shape == (3, 20, 20)


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "empty", "another sample's"])
def test_a_corrupt_entry_is_decoded_again_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                           damage: str) -> None:
    root = _folder(tmp_path / "data", n=2)
    dataset = _Files(root, SIZE)
    cache = SampleCache(dataset, SIZE, folder=tmp_path / "cache")
    expected = cache.load("0")
    cache.load("1")
    entry = cache.entry("0")
    data = entry.read_bytes()
    if damage == "truncated":
        entry.write_bytes(data[: len(data) - 100])
    elif damage == "flipped byte":  # in the pixels, past the header: only the checksum sees it
        entry.write_bytes(data[:-50] + bytes([data[-50] ^ 0x10]) + data[-49:])
    elif damage == "empty":
        entry.write_bytes(b"")
    else:
        entry.write_bytes(cache.entry("1").read_bytes())
    with caplog.at_level(logging.WARNING, logger="aft_bench.data.sample_cache"):
        _assert_same(cache.load("0"), expected)
        _assert_same(cache.load("0"), expected)
    assert dataset.loads == 3  # decoded again once; the rewritten entry serves the next load
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(entry) in warnings[0].getMessage()
    assert "decoding the sample again" in warnings[0].getMessage()


def test_a_data_error_propagates_unchanged_and_nothing_is_cached(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data", n=2)
    (root / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    dataset = _Files(root, SIZE)
    raised: list[DataError] = []
    load = dataset.load

    def recording_load(sample_id: str) -> Sample:
        try:
            return load(sample_id)
        except DataError as exc:
            raised.append(exc)
            raise

    dataset.load = recording_load  # type: ignore[method-assign]
    cache = SampleCache(dataset, SIZE, folder=tmp_path / "cache")
    with pytest.raises(DataError, match="1.png: unreadable or corrupt image") as cached:
        cache.load("1")
    assert len(raised) == 1 and cached.value is raised[0]  # the dataset's own exception
    assert not cache.entry("1").exists() and not cache.entry("1").parent.exists()


def test_a_dataset_without_source_files_is_refused_naming_it(tmp_path: Path) -> None:
    dataset = _NoFiles(_folder(tmp_path / "data", n=1), SIZE)
    assert not isinstance(dataset, FileDataset) and isinstance(_Files(tmp_path / "data", SIZE), FileDataset)
    refusal = r"dataset 'my_set' \(.*_NoFiles\) does not list the files.*works for datasets read from image files"
    with pytest.raises(ValueError, match=refusal):
        SampleCache(dataset, SIZE, name="my_set", folder=tmp_path / "cache")
    config = RunConfig(task="pointing_game", encoders=(), attributions=(), dataset="my_set", cache_samples=True)
    with DATASETS.temporary("my_set", _NoFiles), pytest.raises(ValueError, match=refusal):
        check_arguments(config)  # before any model loads
    with DATASETS.temporary("my_set", _Files):
        check_arguments(config)


def test_a_cache_that_cannot_be_written_warns_once_and_serves_the_dataset(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _folder(tmp_path / "data", n=2)
    blocked = tmp_path / "a file"
    blocked.write_text("not a folder")
    dataset = _Files(root, SIZE)
    with caplog.at_level(logging.WARNING, logger="aft_bench.data.sample_cache"):
        cache = SampleCache(dataset, SIZE, folder=blocked)
        for sample_id in ("0", "1", "0"):
            _assert_same(cache.load(sample_id), _Files(root, SIZE).load(sample_id))
    assert dataset.loads == 3
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [f"cannot write the sample cache {cache.folder}"]


def test_workers_fill_the_cache_concurrently(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data", n=8)
    dataset = _Files(root, SIZE)
    cache = SampleCache(dataset, SIZE, folder=tmp_path / "cache")
    streamed = [c.batch for c in stream(cache, cache.ids(), batch_size=2, policy=BadSamples(), num_workers=2,
                                        progress=False)]
    assert dataset.loads == 0  # every load ran in a worker process
    assert len(list(cache.folder.rglob("*.safetensors"))) == 8
    expected = Batch.collate([cache.load(i) for i in cache.ids()]).to("cpu")  # the stream's pixels, as it gives them
    assert torch.equal(torch.cat([b.images for b in streamed if b is not None]), expected.images)
    assert dataset.loads == 0  # what the workers stored serves this process


def test_the_option_wraps_the_runs_dataset_and_leaves_run_keys_alone(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFT_BENCH_CACHE", str(tmp_path / "cache"))
    root = _folder(tmp_path / "data")
    overrides = {"dataset": "tmp_files", "data_root": str(root), "encoders": [], "attributions": []}
    plain = resolve_config("pointing_game", overrides)
    cached = resolve_config("pointing_game", {**overrides, "cache_samples": True})
    assert not plain.cache_samples and cached.cache_samples
    assert cached.numbers_key() == plain.numbers_key()
    assert "cache_samples" not in plain.to_dict() and cached.to_dict()["cache_samples"] is True
    encoder = type("Encoder", (), {"card": {"name": "fake"}})()
    with DATASETS.temporary("tmp_files", _Files):
        assert RunContext.local(cached).run_key("fake", encoder) == RunContext.local(plain).run_key("fake", encoder)
        assert isinstance(RunContext.local(plain).dataset(SIZE), _Files)
        dataset = RunContext.local(cached).dataset(SIZE)
        assert isinstance(dataset, SampleCache) and dataset.folder.parent == tmp_path / "cache" / "samples"
        assert dataset.root == root and dataset.source_files("2") == [root / "2.png"]  # forwarded
        _assert_same(dataset.load("2"), _Files(root, SIZE).load("2"))
        assert dataset.dataset.loads == 1
        second = RunContext.local(cached).dataset(SIZE)  # the next encoder of the run
        _assert_same(second.load("2"), _Files(root, SIZE).load("2"))
        assert second.dataset.loads == 0
        filtered = RunContext.local(RunConfig(**{**cached.to_dict(), "dataset_args": {"classes": "odd"}})).dataset(
            SIZE)
        assert isinstance(filtered, ClassFilter) and isinstance(filtered.dataset, SampleCache)
        assert filtered.dataset.folder == dataset.folder  # the class filter does not change the samples' key
        assert filtered.ids() == ["1", "3"] and filtered.load("3").label == 0


def test_the_command_line_flag_sets_the_option() -> None:
    from aft_bench.apps.cli import build_parser

    assert build_parser().parse_args(["run", "--cache-samples"]).cache_samples is True
    assert build_parser().parse_args(["run"]).cache_samples is None  # unset: the task YAML or the default


def test_imagenet_s_through_the_cache_is_bit_identical_and_sees_a_rewritten_mask(tmp_path: Path) -> None:
    from aft_bench.data.imagenet_s import ImageNetS, write_synthetic

    root = write_synthetic(tmp_path / "ImageNetS10", 3, size=(40, 52))
    plain = ImageNetS(root, SIZE)
    cached = SampleCache(plain, SIZE, folder=tmp_path / "cache")
    assert [str(p) for p in plain.source_files(plain.ids()[0])][-1].endswith("ImageNetS_categories_im10.txt")
    for _ in range(2):  # writes, then reads back
        for sample_id in plain.ids():
            a, b = plain.load(sample_id), cached.load(sample_id)
            assert a.image.dtype == b.image.dtype == torch.uint8
            assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask) and (a.prompt, a.label) == (
                b.prompt, b.label)
    sample_id = plain.ids()[0]
    _, mask_path = plain.paths(sample_id)
    Image.fromarray(np.zeros((40, 52, 3), dtype=np.uint8)).save(mask_path)  # no object any more
    os.utime(mask_path, ns=(os.stat(mask_path).st_atime_ns, os.stat(mask_path).st_mtime_ns + 10**9))
    assert not (cached.load(sample_id).mask == 1).any()


def test_the_compare_and_paper_commands_take_the_flag() -> None:
    from aft_bench.apps.compare.arguments import build_parser

    args = build_parser().parse_args(["--suite", "paper", "--encoders", "toy", "--cache-samples"])
    assert args.cache_samples is True
