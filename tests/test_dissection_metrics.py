"""Known answers for the dissection metrics: soft-WPMI (CLIP-Dissect), the streaming quantile
threshold and the IoU counts of Network Dissection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aft_bench.metrics import dissection
from aft_bench.metrics.dissection import (
    IoUAccumulator,
    TopQuantile,
    assign_concepts,
    best_concepts,
    concept_probabilities,
    detector_summary,
    embedding_rows,
    example_weights,
    soft_wpmi,
    unit_masks,
    upper_quantile_count,
)


# ---------------------------------------------------------------------------------------- soft-WPMI
def test_example_weights_follow_the_published_schedule() -> None:
    assert example_weights(1).tolist() == [0.998]
    assert example_weights(2).tolist() == pytest.approx([0.998, 0.984])
    w = example_weights(100)
    assert w[0] == pytest.approx(0.998) and w[-1] == pytest.approx(0.97 + 0.028 / 100)
    assert torch.all(w[1:] < w[:-1])
    with pytest.raises(ValueError, match="at least one"):
        example_weights(0)


def test_soft_wpmi_two_by_two_by_hand() -> None:
    # neuron 0 fires on image 0, neuron 1 on image 1; k = 1 so each neuron's set is its top image
    acts = torch.tensor([[3.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
    probs = torch.tensor([[0.8, 0.2], [0.3, 0.7]], dtype=torch.float64)
    scores = soft_wpmi(acts, probs, top_k=1)
    p = 0.998
    given = [[math.log(1 + p * (probs[img, c].item() - 1) + 1e-7) for c in range(2)] for img in (0, 1)]
    for n in range(2):
        for c in range(2):
            prior = math.log((math.exp(given[0][c]) + math.exp(given[1][c])) / 2)
            assert scores[n, c].item() == pytest.approx(given[n][c] - prior, rel=1e-12)
    assert assign_concepts(scores)[0].tolist() == [0, 1]


def test_soft_wpmi_two_top_images_by_hand() -> None:
    # k = 2: neuron 0 ranks image 1 above image 0, neuron 1 the reverse; weights 0.998 then 0.984
    acts = torch.tensor([[1.0, 5.0], [2.0, 4.0]], dtype=torch.float64)
    probs = torch.tensor([[0.6, 0.4], [0.1, 0.9]], dtype=torch.float64)
    scores = soft_wpmi(acts, probs, top_k=2, lam=0.0)  # lam = 0: the score is log P(c | E)

    def term(w: float, pr: float) -> float:
        return math.log(1 + w * (pr - 1) + 1e-7)

    for c in range(2):
        assert scores[0, c].item() == pytest.approx(term(0.998, probs[1, c].item()) + term(0.984, probs[0, c].item()))
        assert scores[1, c].item() == pytest.approx(term(0.998, probs[0, c].item()) + term(0.984, probs[1, c].item()))


def test_soft_wpmi_finds_the_planted_concepts() -> None:
    n_images, n_concepts = 60, 3
    concept_of_image = torch.arange(n_images) % n_concepts
    probs = torch.full((n_images, n_concepts), 0.05, dtype=torch.float64)
    probs[torch.arange(n_images), concept_of_image] = 0.9
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(n_images, 4, generator=gen, dtype=torch.float64)
    acts = noise.clone()
    for neuron, concept in enumerate([0, 1, 2, 1]):  # neuron 3 is a second detector of concept 1
        acts[concept_of_image == concept, neuron] += 10.0
    scores = soft_wpmi(acts, probs, top_k=10)
    concept, best = assign_concepts(scores)
    assert concept.tolist() == [0, 1, 2, 1]
    assert torch.all(best > 0)
    # a neuron whose top images are random scores below the planted ones
    scores_random = soft_wpmi(torch.cat([acts, noise[:, :1]], dim=1), probs, top_k=10)
    assert assign_concepts(scores_random)[1][4] < assign_concepts(scores_random)[1][:4].min()


def test_soft_wpmi_on_demand_rows_and_chunks_match(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(1)
    images, texts = torch.randn(40, 8, generator=gen), torch.randn(7, 8, generator=gen)
    acts = torch.randn(40, 5, generator=gen)
    probs = concept_probabilities(images, texts)
    assert torch.allclose(probs.sum(dim=1), torch.ones(40))
    cos = torch.nn.functional.normalize(images, dim=1) @ torch.nn.functional.normalize(texts, dim=1).T
    assert torch.allclose(probs, torch.softmax(10 * cos, dim=1))
    full = soft_wpmi(acts, probs, top_k=6)
    monkeypatch.setattr(dissection, "_CHUNK_ELEMENTS", 6 * 7 * 2)  # two neurons per chunk
    chunked = soft_wpmi(acts, embedding_rows(images, texts), top_k=6)
    assert torch.allclose(full, chunked, atol=1e-5)


def test_soft_wpmi_clamps_k_and_checks_shapes() -> None:
    acts, probs = torch.rand(3, 2), torch.full((3, 4), 0.25)
    assert soft_wpmi(acts, probs, top_k=100).shape == (2, 4)  # k = 3 images only
    with pytest.raises(ValueError, match="images x neurons"):
        soft_wpmi(torch.rand(3), probs)
    with pytest.raises(ValueError, match="3 rows"):
        soft_wpmi(acts, torch.rand(5, 4))


# ---------------------------------------------------------------------------------------- quantiles
@pytest.mark.parametrize("q", [0.0, 0.5, 0.9, 0.995])
def test_top_quantile_streaming_equals_numpy(q: float) -> None:
    gen = torch.Generator().manual_seed(2)
    values = torch.randn(3, 2000, generator=gen, dtype=torch.float64)
    values[1] = values[1].round()  # many ties
    sketch = TopQuantile(3, q, max_count=2100)
    for start, stop in [(0, 7), (7, 700), (700, 1999), (1999, 2000)]:
        sketch.update(values[:, start:stop])
    expected = np.quantile(values.numpy(), q, axis=1)
    assert np.allclose(sketch.result().numpy(), expected, rtol=0, atol=1e-12)
    assert sketch._kept is not None and sketch._kept.shape[1] <= upper_quantile_count(2100, q)


def test_top_quantile_small_and_constant() -> None:
    sketch = TopQuantile(2, 0.995, max_count=4)
    sketch.update(torch.tensor([[1.0, 2.0], [5.0, 5.0]]))
    sketch.update(torch.tensor([[3.0, 4.0], [5.0, 5.0]]))
    assert sketch.result().tolist() == pytest.approx([3.985, 5.0])  # 1 + 0.995 * 3 on 1..4
    with pytest.raises(ValueError, match="more than max_count"):
        sketch.update(torch.zeros(2, 1))
    with pytest.raises(ValueError, match="NaN"):
        TopQuantile(1, 0.5, 3).update(torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        TopQuantile(1, 1.0, 3)


# ---------------------------------------------------------------------------------------- IoU
def test_unit_masks_bilinear_threshold_by_hand() -> None:
    acts = torch.tensor([[[0.0, 1.0], [0.0, 0.0]], [[2.0, 2.0], [2.0, 2.0]]])
    # unit 0 upsampled: row 0 = [0, .25, .75, 1], row 1 = [0, .1875, .5625, .75], rows 2-3 smaller
    masks = unit_masks(acts, torch.tensor([0.75, 2.0]), (4, 4))
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0, 3] = True  # up[0, 2] = up[1, 3] = 0.75 equal the threshold: outside (strict >)
    assert torch.equal(masks[0], expected)
    assert not masks[1].any()  # a unit constant at its threshold has no region
    lower = unit_masks(acts, torch.tensor([0.5, 1.999]), (4, 4))
    expected[0, 2] = expected[1, 2] = expected[1, 3] = True  # 0.75, 0.5625, 0.75 > 0.5
    assert torch.equal(lower[0], expected)
    assert lower[1].all()


def test_nearly_dead_unit_is_no_detector_of_an_image_level_label() -> None:
    # A ReLU unit positive at 3 of 20 x 8 x 8 = 1280 positions (0.23% < 0.5%): its 0.995 quantile is 0.
    # With ">=" every pixel would be in its region and it would match a scene label covering every pixel
    # (IoU 1); NetDissect-Lite's "mask > threshold" keeps only the 3 positive pixels.
    images, h, w = 20, 8, 8
    acts = torch.zeros(images, 2, h, w)
    acts[2, 0, 1, 1], acts[7, 0, 5, 2], acts[13, 0, 0, 7] = 0.5, 2.0, 1.0
    gen = torch.Generator().manual_seed(4)
    acts[:, 1] = torch.rand(images, h, w, generator=gen)  # a live unit, for comparison
    sketch = TopQuantile(2, 0.995, max_count=images * h * w)
    for image in acts:
        sketch.update(image)
    thresholds = sketch.result()
    assert thresholds[0].item() == 0.0
    label_category = [0, 0, 1]  # label 1: a scene (category 0, image level); label 2: a part (category 1)
    acc = IoUAccumulator(label_category, num_units=2)
    region = torch.zeros(images, h, w, dtype=torch.bool)
    for i, image in enumerate(acts):
        masks = unit_masks(image, thresholds, (h, w))  # same size: the upsampling is the identity
        region[i] = masks[0]
        part = torch.zeros(1, h, w, dtype=torch.long)
        part[0, :2, :2] = 2
        acc.update(masks, {0: torch.ones(1, h, w, dtype=torch.long), 1: part})
    assert region.sum().item() == 3
    assert region[2, 1, 1] and region[7, 5, 2] and region[13, 0, 7]
    iou = acc.iou()
    assert iou[0, 1].item() == pytest.approx(3 / (images * h * w))  # the scene: 3 pixels of 1280
    assert iou[0, 2].item() == pytest.approx(1 / (3 + 4 * images - 1))  # (1, 1) on image 2 is in the part
    concept, best, detector = best_concepts(iou)
    assert not detector[0] and best[0].item() < 0.04


def test_iou_by_hand() -> None:
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True  # 4 pixels
    masks[1, 3, :] = True  # bottom row
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :2, :3] = 1  # 6 pixels of concept 1
    labels[0, 3, :2] = 2  # 2 pixels of concept 2
    acc = IoUAccumulator([0, 0, 0], num_units=2)
    acc.update(masks, {0: labels})
    iou = acc.iou()
    assert iou[0, 1].item() == pytest.approx(4 / 6)
    assert iou[0, 2].item() == pytest.approx(0 / 6)
    assert iou[1, 2].item() == pytest.approx(2 / 4)
    assert iou[1, 1].item() == pytest.approx(0 / 10)
    assert iou[:, 0].tolist() == [0.0, 0.0]  # unlabelled never scores
    concept, best, detector = best_concepts(iou, threshold=0.6)
    assert concept.tolist() == [1, 2] and detector.tolist() == [True, False]


def _reference_iou(masks: list[np.ndarray], labels: list[dict[int, np.ndarray]], label_category: list[int]
                   ) -> np.ndarray:
    """Whole-dataset IoU with NetDissect's category-conditioned union, in plain numpy."""
    units, n_labels = masks[0].shape[0], len(label_category)
    inter = np.zeros((units, n_labels))
    label_px = np.zeros(n_labels)
    unit_cat = np.zeros((units, max(label_category) + 1))
    for mask, per_cat in zip(masks, labels, strict=True):
        for cat, maps in per_cat.items():
            if not (maps > 0).any():
                continue
            unit_cat[:, cat] += mask.reshape(units, -1).sum(1)
            for c in range(1, n_labels):
                lab = (maps == c).any(axis=0)
                label_px[c] += lab.sum()
                inter[:, c] += (mask & lab[None]).reshape(units, -1).sum(1)
    union = unit_cat[:, label_category] + label_px[None] - inter
    out = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    out[:, 0] = 0
    return out


def test_batch_accumulation_equals_whole_dataset() -> None:
    rng = np.random.default_rng(3)
    label_category = [0, 0, 0, 0, 1, 1]  # labels 1-3 in category 0 (two overlapping planes), 4-5 in category 1
    masks, labels = [], []
    for image in range(7):
        masks.append(rng.random((3, 5, 6)) > 0.6)
        per_cat = {0: rng.integers(0, 4, (2, 5, 6))}
        if image % 3:  # category 1 annotated on some images only
            per_cat[1] = rng.choice([0, 4, 5], (1, 5, 6))
        labels.append(per_cat)
    whole = IoUAccumulator(label_category, num_units=3)
    for mask, per_cat in zip(masks, labels, strict=True):
        whole.update(torch.from_numpy(mask), {k: torch.from_numpy(v) for k, v in per_cat.items()})
    expected = _reference_iou(masks, labels, label_category)
    assert np.allclose(whole.iou().numpy(), expected)
    halves = [IoUAccumulator(label_category, 3), IoUAccumulator(label_category, 3)]
    for i, (mask, per_cat) in enumerate(zip(masks, labels, strict=True)):
        halves[i % 2].update(torch.from_numpy(mask), {k: torch.from_numpy(v) for k, v in per_cat.items()})
    merged = halves[0].merge(halves[1])
    assert torch.equal(merged.intersection, whole.intersection) and torch.equal(merged.union(), whole.union())
    assert merged.images == 7


def test_iou_rejects_mismatched_inputs() -> None:
    acc = IoUAccumulator([0, 0], num_units=1)
    with pytest.raises(ValueError, match="size"):
        acc.update(torch.ones(1, 4, 4, dtype=torch.bool), {0: torch.ones(1, 3, 3, dtype=torch.long)})
    with pytest.raises(ValueError, match="out of range"):
        acc.update(torch.ones(1, 2, 2, dtype=torch.bool), {0: torch.full((1, 2, 2), 5)})
    with pytest.raises(ValueError, match="expected 1 unit"):
        acc.update(torch.ones(2, 2, 2, dtype=torch.bool), {})


def test_detector_summary_per_category() -> None:
    concept = torch.tensor([1, 1, 2, 3, 0])
    detector = torch.tensor([True, True, True, True, False])
    summary = detector_summary(concept, detector, [0, 0, 0, 1], ["object", "colour"])
    assert summary == {
        "all": {"detectors": 4, "unique_concepts": 3},
        "object": {"detectors": 3, "unique_concepts": 2},
        "colour": {"detectors": 1, "unique_concepts": 1},
    }
