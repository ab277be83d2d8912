"""The user study's cases (AFT paper appendix A.4; HIVE's distinct task, Kim et al. 2022): which images and
classes make a case, the correct / wrong split, the seeded orders, the maps' targets, and a page that names no
class, on a stub zero-shot classifier whose predictions are known."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_VIT_CFG, make_encoder
from PIL import Image

from aft_bench.apps.cli import main
from aft_bench.apps.study.cases import Case, sample_order, select_cases, shown_classes, study_order
from aft_bench.apps.study.manifest import read_manifest
from aft_bench.apps.study.maps import class_maps
from aft_bench.apps.study.render import data_uri, image_pixels, overlays
from aft_bench.attributions.base import Attribution
from aft_bench.attributions.gradcam import GradCAM
from aft_bench.core.registries import ATTRIBUTIONS, CLASSIFIERS, ENCODERS
from aft_bench.data.base import Dataset
from aft_bench.data.shapes import CLASSNAMES, ShapesDataset
from aft_bench.evaluation.classifiers import PromptOptions, ZeroShotClassifier
from aft_bench.evaluation.targets.text import TextTarget
from aft_bench.models.encoder import Encoder
from aft_bench.models.loading import load_encoder, save_encoder

K = len(CLASSNAMES)
SIZE = 24  # shapes test images in the stub studies
pytestmark = pytest.mark.usefixtures("one_thread")


def _designed_logits(index: int, label: int) -> torch.Tensor:
    """The stub head's logits of sample ``index``: even samples right (true class first, then label+1..+4);
    odd samples wrong, the true class ranked 2nd (index % 4 == 1) or 6th (index % 4 == 3) behind label+5, +6, ..."""
    logits = torch.zeros(K)
    if index % 2 == 0:
        ranking = [label + d for d in (0, 1, 2, 3, 4)]
    elif index % 4 == 1:
        ranking = [label + d for d in (5, 0, 6, 7, 8)]
    else:
        ranking = [label + d for d in (5, 6, 7, 8, 9, 0)]
    for position, cls in enumerate(ranking):
        logits[cls % K] = 10.0 - position
    return logits


def _expected_classes(index: int, label: int) -> set[int]:
    """The true class and the three best other classes of :func:`_designed_logits`."""
    offsets = (0, 1, 2, 3) if index % 2 == 0 else (0, 5, 6, 7)
    return {(label + d) % K for d in offsets}


class StubClassifier:
    """A zero-shot head with known predictions: it recognises each shapes image and returns its designed logits.
    Its class embeddings are fixed random unit vectors (the maps' targets). The table of a dataset is made once."""

    tables: dict[tuple[tuple[str, ...], tuple[int, int]], dict[bytes, torch.Tensor]] = {}

    def __init__(self, encoder: Encoder, dataset: Dataset, prompts: object, probe: object = None) -> None:
        self.encoder = encoder
        key = (tuple(dataset.ids()), encoder.image_size)
        if key not in self.tables:
            samples = (dataset.load(sample_id) for sample_id in key[0])
            self.tables[key] = {s.image.numpy().tobytes(): _designed_logits(int(s.id.rsplit("-", 1)[1]), s.label)
                                for s in samples}
        self.known = self.tables[key]
        dim = encoder.encode_text(["a photo of a thing."]).shape[-1]
        self.text = F.normalize(torch.randn(K, dim, generator=torch.Generator().manual_seed(0)), dim=-1)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.known[image.cpu().numpy().tobytes()] for image in images])


def tiny_vits(folder: Path) -> tuple[str, str]:
    """Two tiny random ViTs at 48 px (seeds 0 and 1) saved as checkpoints in ``folder``; their specs."""
    cfg = {**TINY_VIT_CFG, "vision_cfg": {**TINY_VIT_CFG["vision_cfg"], "image_size": 48}}
    specs = []
    for seed in (0, 1):
        encoder = make_encoder(cfg, f"vit{seed}", seed=seed)
        specs.append(f"ckpt:{save_encoder(encoder, folder / f'vit{seed}', encoder.card)}")
    return specs[0], specs[1]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return tiny_vits(tmp_path_factory.mktemp("study-encoders"))


@pytest.fixture
def stub(registered) -> None:
    registered(CLASSIFIERS, "zero_shot", StubClassifier)


def _build(out: Path, encoders: tuple[str, ...], *extra: str) -> int:
    return main(["study", "build", "--encoders", *encoders, "--cases", "4", "--dataset-arg", f"size={SIZE}",
                 "--out", str(out), *extra])


def _page_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="study-data">(.*?)</script>', html, re.S)
    assert match is not None
    return json.loads(match.group(1))


# ---------------------------------------------------------------------------------------- pure selection
def test_shown_classes_are_the_true_class_and_the_three_best_others() -> None:
    right = torch.tensor([0.1, 5.0, 0.3, 4.0, 3.0, 2.0, 0.2])
    assert shown_classes(right, 1) == ([1, 3, 4, 5], [1, 2, 3, 4])  # a correct case: the top-4 predicted
    wrong = torch.tensor([9.0, 0.5, 8.0, 7.0, 6.0, 0.1])
    assert shown_classes(wrong, 1) == ([1, 0, 2, 3], [5, 1, 2, 3])  # top-3 wrong + the true class, not 4 (rank 4)
    ties = torch.tensor([1.0, 2.0, 2.0, 2.0, 2.0])
    assert shown_classes(ties, 0) == ([0, 1, 2, 3], [5, 1, 2, 3])  # ties ranked by class index
    with pytest.raises(ValueError, match="at least 4 classes"):
        shown_classes(torch.ones(3), 0)
    with pytest.raises(ValueError, match="outside the 5 classes"):
        shown_classes(ties, 5)


def _stream(n: int) -> list[tuple[str, int, torch.Tensor]]:
    return [(f"s{i}", i % K, _designed_logits(i, i % K)) for i in range(n)]


def test_select_cases_takes_the_first_right_and_wrong_in_order_with_known_classes() -> None:
    pulled = []
    cases = select_cases("enc", (pulled.append(row) or row for row in _stream(40)), n_correct=3, n_wrong=2, seed=0)
    assert [c.sample_id for c in cases] == ["s0", "s1", "s2", "s3", "s4"]  # 0, 2, 4 right; 1, 3 wrong
    assert len(pulled) == 5  # read no further than needed: no image beyond the last case is classified
    assert [c.correct for c in cases] == [True, False, True, False, True]
    for case in cases:
        index = int(case.sample_id[1:])
        assert set(case.classes) == _expected_classes(index, case.label)
        assert case.classes[case.answer - 1] == case.label
        assert case.predicted == (case.label if index % 2 == 0 else (case.label + 5) % K)
    wrong_rank_6 = cases[3]  # s3: the true class is ranked 6th
    assert wrong_rank_6.ranks[wrong_rank_6.answer - 1] == 6 and sorted(wrong_rank_6.ranks) == [1, 2, 3, 6]
    ids = [c.id for c in cases]
    assert len(set(ids)) == 5 and all(re.fullmatch(r"[0-9a-f]{12}", i) for i in ids)


def test_map_order_is_seeded_per_case() -> None:
    again = select_cases("enc", _stream(40), 10, 10, seed=0)
    assert again == select_cases("enc", _stream(40), 10, 10, seed=0)
    other = select_cases("enc", _stream(40), 10, 10, seed=1)
    assert [c.sample_id for c in other] == [c.sample_id for c in again]  # the same samples in the same order...
    assert [c.classes for c in other] != [c.classes for c in again]  # ...with their maps shuffled otherwise
    assert {c.answer for c in again} == {1, 2, 3, 4}  # the true map is not always in one place
    assert [c.id for c in select_cases("other", _stream(40), 10, 10, seed=0)] != [c.id for c in again]


def test_select_cases_that_run_out_name_what_they_found() -> None:
    with pytest.raises(ValueError, match=r"'enc': found 3 of 5 correct and 2 of 2 wrong .* in all 6 images"):
        select_cases("enc", _stream(6), n_correct=5, n_wrong=2, seed=0)


def test_orders_are_seeded_permutations() -> None:
    ids = [f"s{i}" for i in range(50)]
    order = sample_order(ids, 0)
    assert sorted(order) == sorted(ids) and order != ids and order == sample_order(ids, 0) != sample_order(ids, 1)
    cases = select_cases("enc", _stream(40), 10, 10, seed=0)
    shuffled = study_order(cases, 0)
    assert sorted(c.id for c in shuffled) == sorted(c.id for c in cases) and shuffled != cases
    assert shuffled == study_order(cases, 0) != study_order(cases, 1)


def test_case_round_trips_through_its_record() -> None:
    case = select_cases("enc", _stream(4), 1, 1, seed=0)[1]
    record = case.to_dict(CLASSNAMES)
    assert Case.from_dict(record) == case and record["class"] == CLASSNAMES[case.label]
    with pytest.raises(ValueError, match="stated position"):
        Case.from_dict({**record, "answer": case.answer % 4 + 1})


# ---------------------------------------------------------------------------------------- maps and pictures
def test_each_map_explains_its_own_class_prompt(encoders: tuple[str, str]) -> None:
    encoder = load_encoder(encoders[0])
    image = ShapesDataset(image_size=(48, 48), size=1).load("shapes-test-0-0").image
    text = F.normalize(torch.randn(K, 32, generator=torch.Generator().manual_seed(3)), dim=-1)
    other = ShapesDataset(image_size=(48, 48), size=2).load("shapes-test-0-1").image
    first, second = class_maps(encoder, GradCAM(), text, [image, other], [[7, 2, 19, 0], [4, 7]], batch_size=4)
    assert first.shape == (4, 48, 48) and second.shape == (2, 48, 48)
    for picture, maps, shown in ((image, first, [7, 2, 19, 0]), (other, second, [4, 7])):
        for position, cls in enumerate(shown):
            alone = GradCAM()(encoder, picture[None], TextTarget(text[cls][None]))[0]
            torch.testing.assert_close(maps[position], alone, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(first[0], first[1])


def test_overlays_blend_jet_over_grey_and_embed_as_jpeg() -> None:
    image = torch.full((3, 8, 8), 0.5)
    heat = torch.zeros(1, 8, 8)
    heat[0, :, 4:] = 1.0
    (picture,) = overlays(image, heat)
    np.testing.assert_allclose(picture[0, 0], np.round(255 * (0.25 + 0.5 * np.array([0, 0, 0.5]))), atol=1)  # jet(0)
    np.testing.assert_allclose(picture[0, 7], np.round(255 * (0.25 + 0.5 * np.array([0.5, 0, 0]))), atol=1)  # jet(1)
    assert image_pixels(image)[0, 0].tolist() == [128, 128, 128]
    uri = data_uri(picture)
    assert uri.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as decoded:
        assert decoded.size == (8, 8) and decoded.format == "JPEG"


# ---------------------------------------------------------------------------------------- the build
def test_build_with_a_stub_head_has_known_cases_and_a_page_without_names(
        encoders: tuple[str, str], stub: None, tmp_path: Path) -> None:
    assert _build(tmp_path / "a", encoders) == 0
    manifest = read_manifest(tmp_path / "a")
    assert manifest.encoder_specs() == list(encoders) and len(manifest.cases) == 8
    ids = ShapesDataset(image_size=(48, 48), size=SIZE).ids()
    for spec in encoders:
        mine = [c for c in manifest.cases if c.encoder == spec]
        assert sorted(c.correct for c in mine) == [False, False, True, True]
        order = sample_order(ids, 0)
        right = [s for s in order if int(s.rsplit("-", 1)[1]) % 2 == 0][:2]
        wrong = [s for s in order if int(s.rsplit("-", 1)[1]) % 2 == 1][:2]
        assert sorted(c.sample_id for c in mine) == sorted(right + wrong)
        for case in mine:
            assert set(case.classes) == _expected_classes(int(case.sample_id.rsplit("-", 1)[1]), case.label)
    assert manifest.encoders[0]["card"]["name"] == "vit0" and manifest.config["seed"] == 0

    html = (tmp_path / "a" / "study.html").read_text()
    data = _page_data(html)
    assert [c["id"] for c in data["cases"]] == [c.id for c in manifest.cases]  # the page's order is the manifest's
    assert all(set(c) == {"id", "image", "maps"} and len(c["maps"]) == 4 for c in data["cases"])
    assert data["study_id"] == manifest.study_id
    text = html.lower()
    for name in [*CLASSNAMES, *ids[:SIZE], *(e for e in encoders), "vit0", "correct", "answer\""]:
        assert name.lower() not in text, name
    assert "http://" not in text and "https://" not in text  # nothing to fetch: works offline from a file

    assert _build(tmp_path / "a", encoders) == 0  # the same seed again: the same study, byte for byte
    assert (tmp_path / "a" / "study.html").read_text() == html
    assert read_manifest(tmp_path / "a").study_id == manifest.study_id


def test_another_seed_makes_another_study_and_never_writes_over_one(
        encoders: tuple[str, str], stub: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _build(tmp_path / "a", encoders) == 0
    before = (tmp_path / "a" / "manifest.json").read_text()
    assert _build(tmp_path / "a", encoders, "--seed", "1") == 1
    assert "holds study" in capsys.readouterr().err and (tmp_path / "a" / "manifest.json").read_text() == before
    assert _build(tmp_path / "b", encoders, "--seed", "1") == 0
    first, other = read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    assert other.study_id != first.study_id and [c.id for c in other.cases] != [c.id for c in first.cases]


def test_build_refuses_before_any_model_loads(encoders: tuple[str, str], registered, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    def no_loading(device: str = "cpu"):
        raise AssertionError("an encoder was loaded before the arguments were checked")

    registered(ENCODERS, "toy", no_loading)
    assert main(["study", "build", "--out", str(tmp_path), "--cases", "3"]) == 1
    assert "--cases 3: give an even number" in capsys.readouterr().err
    assert main(["study", "build", "--encoders", "toy", "--attribution", "gradkam", "--out", str(tmp_path)]) == 2
    assert "Did you mean 'gradcam'" in capsys.readouterr().err
    assert main(["study", "build", "--encoders", "toy", "--option", "templates=nope", "--out", str(tmp_path)]) == 1
    assert "templates='nope'" in capsys.readouterr().err
    assert main(["study", "build", "--encoders", "toy", "--attr-arg", "rollout.x=1", "--out", str(tmp_path)]) == 1
    assert not any(tmp_path.iterdir())


def test_a_dataset_with_too_few_right_predictions_is_named(encoders: tuple[str, str], stub: None,
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "build", "--encoders", encoders[0], "--cases", "8", "--dataset-arg", "size=5",
                 "--out", str(tmp_path)]) == 1
    assert "found 3 of 4 correct and 2 of 4 wrong zero-shot predictions in all 5 images" in capsys.readouterr().err


class _Flat(Attribution):
    """An attribution that ignores the target: the same map for every class (``value`` everywhere)."""

    name = "flat"
    value = 0.5

    def attribute(self, encoder: Encoder, images: torch.Tensor, target: object) -> torch.Tensor:
        return torch.full((images.shape[0], *images.shape[2:]), self.value)


class _Broken(_Flat):
    value = float("nan")


def test_class_blind_and_non_finite_maps_are_reported(encoders: tuple[str, str], stub: None, registered,
                                                      tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    registered(ATTRIBUTIONS, "flat", _Flat)
    registered(ATTRIBUTIONS, "broken", _Broken)
    with caplog.at_level("WARNING"):
        assert _build(tmp_path / "flat", encoders[:1], "--attribution", "flat") == 0
    assert "4 of its 4 cases show 4 identical maps (attribution 'flat'" in caplog.text
    assert _build(tmp_path / "broken", encoders[:1], "--attribution", "broken") == 1
    assert "maps of sample 'shapes-test-0-" in capsys.readouterr().err and not (tmp_path / "broken").exists()


def test_the_real_zero_shot_head_ranks_the_shown_classes(encoders: tuple[str, str], tmp_path: Path) -> None:
    assert main(["study", "build", "--encoders", encoders[0], "--cases", "2", "--out", str(tmp_path)]) == 0
    encoder = load_encoder(encoders[0])
    dataset = ShapesDataset(image_size=encoder.image_size)
    head = ZeroShotClassifier(encoder, dataset, PromptOptions())
    cases = read_manifest(tmp_path).cases
    assert sorted(c.correct for c in cases) == [False, True]
    for case in cases:
        sample = dataset.load(case.sample_id)
        logits = head.logits(sample.image[None])[0].detach()
        assert case.predicted == int(logits.argmax()) and case.label == sample.label
        classes, ranks = shown_classes(logits, sample.label)
        assert sorted(zip(case.classes, case.ranks, strict=True)) == sorted(zip(classes, ranks, strict=True))
