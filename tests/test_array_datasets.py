"""CIFAR-10/100, STL-10 and PCAM on fixtures written in their real on-disk formats; the allow-list
unpickler refuses a pickle that would run code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from aft_bench.core.registries import DATASETS
from aft_bench.data.base import DataError, Dataset
from aft_bench.data.cifar import CIFAR10, CIFAR100
from aft_bench.data.pcam import PCAM
from aft_bench.data.safe_pickle import load_array_pickle
from aft_bench.data.stl10 import STL10


def _images(n: int, side: int) -> np.ndarray:
    """N x side x side x 3 uint8 images: image k is dark except pixel (row 1, col 0) = (k, 100 + k, 200)."""
    out = np.zeros((n, side, side, 3), dtype=np.uint8)
    for k in range(n):
        out[k, 1, 0] = (k, 100 + k, 200)
    return out


def _check_pixel(sample_image: torch.Tensor, k: int) -> None:
    expected = torch.tensor([k, 100 + k, 200], dtype=torch.float32) / 255
    torch.testing.assert_close(sample_image[:, 1, 0], expected)
    assert float(sample_image[:, 0, 1].abs().sum()) == 0.0  # not transposed


def _dump_py2_style(obj: object, path: Path) -> None:
    """Pickles like the CIFAR archives: protocol 2, numpy's array rebuilt through numpy.core.multiarray."""
    data = pickle.dumps(obj, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(data)


def _cifar10(root: Path, n: int = 5) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    planes = _images(n, 32).transpose(0, 3, 1, 2).reshape(n, 3072)  # R plane, G plane, B plane, row by row
    _dump_py2_style({b"batch_label": b"testing batch 1 of 1", b"labels": [k % 3 for k in range(n)],
                     b"data": planes, b"filenames": [f"img_{k}.png".encode() for k in range(n)]},
                    folder / "test_batch")
    _dump_py2_style({b"label_names": [b"airplane", b"automobile", b"bird"], b"num_cases_per_batch": n},
                    folder / "batches.meta")


def test_cifar10_reads_the_python_batches(tmp_path: Path) -> None:
    _cifar10(tmp_path)
    data = CIFAR10(32, root=tmp_path)  # the archive's folder is found inside the root
    assert isinstance(data, Dataset) and DATASETS.get("cifar10") is CIFAR10
    assert data.classnames == ["airplane", "automobile", "bird"] and len(data) == 5
    assert data.ids()[:2] == ["test/000000", "test/000001"] and data.labels() == [0, 1, 2, 0, 1]
    sample = data.load("test/000004")
    assert sample.label == 1 and sample.prompt == "a photo of a automobile." and sample.mask is None
    _check_pixel(sample.image, 4)
    with pytest.raises(DataError, match="data_batch_1 is missing"):
        CIFAR10(32, root=tmp_path, split="train")  # data_batch_1 .. 5 are not in the fixture
    with pytest.raises(DataError, match="unknown CIFAR-10 sample id"):
        data.load("test/000005")


def test_cifar100_uses_the_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    _dump_py2_style({b"fine_labels": [1, 0], b"coarse_labels": [5, 5], b"data": np.zeros((2, 3072), np.uint8)},
                    folder / "test")
    _dump_py2_style({b"fine_label_names": [b"apple", b"aquarium_fish"], b"coarse_label_names": [b"x"]},
                    folder / "meta")
    data = CIFAR100(8, root=folder)
    assert data.classnames == ["apple", "aquarium fish"] and data.labels() == [1, 0]
    assert data.load("test/000000").prompt == "a photo of a aquarium fish."


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    path, marker = tmp_path / "test_batch", tmp_path / "pwned"
    path.write_bytes(pickle.dumps({b"data": _Evil(marker)}, protocol=2))
    with pytest.raises(DataError, match=r"asks to load (posix|os|nt)\.system.*refusing"):
        load_array_pickle(path)
    assert not marker.exists()  # the command never ran
    path.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a readable pickle"):
        load_array_pickle(path)


def test_cifar_with_a_wrong_file_names_it(tmp_path: Path) -> None:
    _cifar10(tmp_path)
    _dump_py2_style({b"labels": [0]}, tmp_path / "cifar-10-batches-py" / "test_batch")
    with pytest.raises(DataError, match=r"test_batch lacks b'data'"):
        CIFAR10(32, root=tmp_path)


def test_stl10_reads_column_major_planes(tmp_path: Path) -> None:
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    images = _images(3, 96)
    images.transpose(0, 3, 2, 1).tofile(folder / "test_X.bin")  # per image: c, then x (column), then y
    np.array([3, 1, 2], dtype=np.uint8).tofile(folder / "test_y.bin")
    (folder / "class_names.txt").write_text("airplane\nbird\ncar\n")
    data = STL10(96, root=tmp_path)
    assert data.classnames == ["airplane", "bird", "car"] and data.labels() == [2, 0, 1]
    sample = data.load("test/000002")
    assert sample.prompt == "a photo of a bird."
    _check_pixel(sample.image, 2)
    np.zeros(10, np.uint8).tofile(folder / "test_X.bin")
    with pytest.raises(DataError, match="has 10 bytes, expected 3 images"):
        STL10(96, root=tmp_path)


def test_pcam_reads_the_hdf5_pair(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_test_x.h5", "w") as handle:
        handle["x"] = _images(4, 96)
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_test_y.h5", "w") as handle:
        handle["y"] = np.array([0, 1, 1, 0], dtype=np.uint8).reshape(4, 1, 1, 1)
    data = PCAM(48, root=tmp_path)
    assert data.labels() == [0, 1, 1, 0] and len(data.classnames) == 2
    sample = data.load("test/000001")
    assert sample.prompt == "a photo of a lymph node containing metastatic tumor tissue."
    assert tuple(sample.image.shape) == (3, 48, 48)
    full = PCAM(96, root=tmp_path).load("test/000003")
    _check_pixel(full.image, 3)
    pickle.loads(pickle.dumps(data))  # data-loader workers get a copy that reopens the file
    with pytest.raises(DataError, match="valid"):
        PCAM(48, root=tmp_path, split="valid")
