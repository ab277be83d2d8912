"""CLIP Benchmark's class names and prompt templates, read from an installed clip_benchmark's files (a fake
package here, which fails if anything imports it) for the zero-shot head and the datasets."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.io import savemat
from test_labelled_datasets import COLOURS, write_image

from aft_bench.data.base import DataError
from aft_bench.data.clip_benchmark import clip_benchmark_classnames, clip_benchmark_templates
from aft_bench.data.flowers102 import Flowers102
from aft_bench.data.image_folder import ImageFolder
from aft_bench.evaluation.classifiers import PromptOptions, ZeroShotClassifier, prompt_templates


@pytest.fixture
def fake_clip_benchmark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    package = tmp_path / "site" / "clip_benchmark"
    (package / "datasets").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('aft-bench must read clip_benchmark, not import it')\n")
    (package / "datasets" / "en_classnames.json").write_text(json.dumps({
        "eurosat": ["annual crop land", "forest"], "flowers": ["pink primrose", "globe thistle"]}))
    (package / "datasets" / "en_zeroshot_classification_templates.json").write_text(json.dumps({
        "eurosat": ["a centered satellite photo of {c}.", "a satellite photo of a {c}."]}))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    return package


def test_names_and_templates_are_read_not_imported(fake_clip_benchmark: Path) -> None:
    assert clip_benchmark_classnames("clip_benchmark:eurosat") == ["annual crop land", "forest"]
    assert clip_benchmark_templates("clip_benchmark:eurosat") == ["a centered satellite photo of {}.",
                                                                  "a satellite photo of a {}."]
    assert "clip_benchmark" not in sys.modules
    with pytest.raises(DataError, match=r"no class names for 'cars'; it has them for \['eurosat', 'flowers'\]"):
        clip_benchmark_classnames("clip_benchmark:cars")


def test_image_folder_and_zero_shot_head_use_them(fake_clip_benchmark: Path, tmp_path: Path, tiny_vit) -> None:
    for k, folder in enumerate(("AnnualCrop", "Forest")):
        write_image(tmp_path / "eurosat" / folder / "a.jpg", COLOURS[k])
    data = ImageFolder(8, root=tmp_path / "eurosat", classnames="clip_benchmark:eurosat")
    assert data.classnames == ["annual crop land", "forest"]
    config = PromptOptions(templates="clip_benchmark:eurosat")
    makers = prompt_templates(config, data)
    assert [m("forest") for m in makers] == ["a centered satellite photo of forest.", "a satellite photo of a forest."]
    head = ZeroShotClassifier(tiny_vit, data, config)
    each = [tiny_vit.encode_text([m(n) for n in data.classnames]) for m in makers]
    torch.testing.assert_close(head.text, F.normalize(each[0] + each[1], dim=-1))
    write_image(tmp_path / "eurosat" / "River" / "a.jpg", COLOURS[2])
    with pytest.raises(DataError, match="2 class names for the 3 class folders"):
        ImageFolder(8, root=tmp_path / "eurosat", classnames="clip_benchmark:eurosat")


def test_a_missing_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install clip-benchmark"):
        clip_benchmark_classnames("clip_benchmark:flowers")


def test_flowers_take_clip_benchmarks_names(fake_clip_benchmark: Path, tmp_path: Path) -> None:
    savemat(tmp_path / "imagelabels.mat", {"labels": np.array([[2, 1]])})
    savemat(tmp_path / "setid.mat", {"trnid": np.array([[1]]), "valid": np.array([[1]]), "tstid": np.array([[1, 2]])})
    for number in (1, 2):
        write_image(tmp_path / "jpg" / f"image_{number:05d}.jpg", COLOURS[number])
    data = Flowers102(8, root=tmp_path, classnames="clip_benchmark:flowers")
    assert data.classnames == ["pink primrose", "globe thistle"] and data.labels() == [1, 0]
