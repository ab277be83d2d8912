"""Neuron-concept alignment scores: CLIP-Dissect's soft-WPMI and Network Dissection's IoU.

Pure tensor functions, no model code. Two methods the AFT paper uses in section 4.2:

- CLIP-Dissect (Oikarinen & Weng, ICLR 2023, arXiv:2204.10965): each neuron's activations over a probe
  set of images are compared with a probe CLIP's image-concept similarities by soft-WPMI
  (:func:`soft_wpmi`); a neuron's concept is the argmax over concepts.
- Network Dissection (Bau et al., CVPR 2017): each unit's activation map, thresholded at the unit's
  top-quantile over the dataset (:class:`TopQuantile`), is compared with pixel-labelled concepts by
  IoU accumulated over the dataset as counts (:class:`IoUAccumulator`); a unit is a detector of its
  best concept when the IoU exceeds 0.04 (:func:`best_concepts`, :func:`detector_summary`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from aft_bench.metrics.base import Metric

SOFTMAX_SCALE = 10.0
P_START, P_END = 0.998, 0.97
MIN_PROB = 1e-7
IOU_THRESHOLD = 0.04
_CHUNK_ELEMENTS = 1 << 24  # top-k x units x concepts elements per soft-WPMI chunk


# ---------------------------------------------------------------------------------------- CLIP-Dissect
def concept_probabilities(image_embeddings: Tensor, concept_embeddings: Tensor, scale: float = SOFTMAX_SCALE) -> Tensor:
    """P(c | x): softmax over concepts of ``scale`` x the cosine of image x and concept text c (N x C).

    Args:
        image_embeddings: N x D probe-CLIP image embeddings (normalised here).
        concept_embeddings: C x D probe-CLIP text embeddings of the concepts (normalised here).
        scale: Softmax temperature factor (CLIP-Dissect's ``a``, 10).
    """
    cos = F.normalize(image_embeddings, dim=-1) @ F.normalize(concept_embeddings, dim=-1).T
    return torch.softmax(scale * cos, dim=1)


def example_weights(k: int, start: float = P_START, end: float = P_END, dtype: torch.dtype = torch.float64) -> Tensor:
    """Weights p_1..p_k of the k most activating images, falling linearly: ``start - (i / k) (start - end)``.

    As in Oikarinen & Weng's release the step is ``(start - end) / k``, so the last weight is
    ``end + (start - end) / k`` (0.97028 for k = 100), not ``end`` itself.
    """
    if k < 1:
        raise ValueError(f"soft-WPMI needs at least one top image, got k={k}")
    return start - torch.arange(k, dtype=dtype) / k * (start - end)


def soft_wpmi(
    activations: Tensor,
    probabilities: Tensor | Callable[[Tensor], Tensor],
    top_k: int = 100,
    p_start: float = P_START,
    p_end: float = P_END,
    min_prob: float = MIN_PROB,
    lam: float = 1.0,
) -> Tensor:
    """Soft weighted pointwise mutual information of every (neuron, concept) pair (U x C).

    With E_n the ``k = min(top_k, N)`` images that activate neuron n most and p_i their weights
    (:func:`example_weights`, rank order), following Oikarinen & Weng (2022, eq. 4 and their release):

    - ``log P(c | E_n) = sum_i log(1 + p_i (P(c | x_i) - 1) + min_prob)`` (the probability that c is in
      the soft set E_n, each image included with probability p_i);
    - ``log P(c) = logsumexp_n log P(c | E_n) - log U`` (the mean over all U neurons of P(c | E_n));
    - ``score = log P(c | E_n) - lam * log P(c)`` (lam = 1 for soft-WPMI).

    Args:
        activations: N x U activation of each neuron (column) on each probe image (row).
        probabilities: N x C matrix of P(c | x) (:func:`concept_probabilities`), or a function mapping
            image indices (any shape) to their rows (shape + (C,)), so the full N x C matrix need not exist.
        top_k: Number of most activating images per neuron (clamped to N).
        p_start, p_end: First and (nominal) last weight.
        min_prob: Added inside the log (avoids log 0).
        lam: Weight of the concept prior.
    """
    if activations.ndim != 2:
        raise ValueError(f"activations must be images x neurons, got shape {tuple(activations.shape)}")
    rows = probabilities if callable(probabilities) else _row_getter(probabilities, activations.shape[0])
    n_images, n_units = activations.shape
    k = min(top_k, n_images)
    top = torch.topk(activations, k=k, dim=0).indices  # k x U, rank order
    first = rows(top[:, :1])  # k x 1 x C: learn C and dtype
    dtype = torch.promote_types(first.dtype, torch.float32)
    weights = example_weights(k, p_start, p_end, dtype=dtype).to(first.device).view(k, 1, 1)
    chunk = max(1, _CHUNK_ELEMENTS // (k * first.shape[-1]))
    log_given = []
    for start in range(0, n_units, chunk):
        probs = rows(top[:, start:start + chunk]).to(dtype)  # k x u x C
        log_given.append(torch.log1p(weights * (probs - 1) + min_prob).sum(dim=0))
    log_p_given = torch.cat(log_given)  # U x C
    log_prior = torch.logsumexp(log_p_given, dim=0, keepdim=True) - math.log(n_units)
    return log_p_given - lam * log_prior


def _row_getter(probabilities: Tensor, n_images: int) -> Callable[[Tensor], Tensor]:
    if probabilities.ndim != 2 or probabilities.shape[0] != n_images:
        raise ValueError(
            f"probabilities must be images x concepts with {n_images} rows, got shape {tuple(probabilities.shape)}"
        )
    return lambda index: probabilities[index.to(probabilities.device)]


def embedding_rows(image_embeddings: Tensor, concept_embeddings: Tensor,
                   scale: float = SOFTMAX_SCALE) -> Callable[[Tensor], Tensor]:
    """Rows of :func:`concept_probabilities` computed on demand (for :func:`soft_wpmi` with many concepts)."""
    images = F.normalize(image_embeddings, dim=-1)
    concepts = F.normalize(concept_embeddings, dim=-1)

    def rows(index: Tensor) -> Tensor:
        cos = images[index.to(images.device)] @ concepts.T
        return torch.softmax(scale * cos, dim=-1)

    return rows


def assign_concepts(scores: Tensor) -> tuple[Tensor, Tensor]:
    """Each neuron's concept (argmax over concepts; the first on ties) and its score: (U,), (U,)."""
    best, index = scores.max(dim=1)
    return index, best


# ---------------------------------------------------------------------------------------- quantiles
def upper_quantile_count(total: int, q: float) -> int:
    """How many of the largest of ``total`` values determine their linearly interpolated q-quantile."""
    return total - math.floor(q * (total - 1)) if total > 0 else 0


class TopQuantile:
    """Exact per-unit q-quantile (linear interpolation, as ``numpy.quantile``) of a stream of values.

    Only the ``upper_quantile_count(max_count, q)`` largest values per unit are kept: for q = 0.995
    that is 0.5% of the stream, so the memory is ``0.005 * images * h * w * units`` numbers instead of
    all of them (for Broden with ViT-B/16: about 190 MB), and the threshold is exact, not sketched.
    Incoming values are buffered and merged with one top-k per buffer-full (amortised linear time).

    Args:
        num_units: Number of units (rows).
        q: Quantile in [0, 1) (Network Dissection: 0.995).
        max_count: Upper bound on the values per unit that will be seen (images x h x w).
    """

    def __init__(self, num_units: int, q: float, max_count: int) -> None:
        if not 0.0 <= q < 1.0:
            raise ValueError(f"quantile must be in [0, 1), got {q}")
        if max_count < 1:
            raise ValueError(f"max_count must be positive, got {max_count}")
        self.num_units, self.q, self.max_count = num_units, q, max_count
        self.capacity = upper_quantile_count(max_count, q)
        self.count = 0
        self._kept: Tensor | None = None
        self._pending: list[Tensor] = []
        self._pending_size = 0

    def update(self, values: Tensor) -> None:
        """Adds ``values`` (units x n, or units x anything: flattened per unit)."""
        values = values.detach().reshape(values.shape[0], -1)
        if values.shape[0] != self.num_units:
            raise ValueError(f"expected {self.num_units} units, got {values.shape[0]}")
        if not torch.isfinite(values).all():
            raise ValueError("activations hold NaN/Inf values; the quantile threshold would be undefined")
        self.count += values.shape[1]
        if self.count > self.max_count:
            raise ValueError(f"TopQuantile saw {self.count} values per unit, more than max_count={self.max_count}")
        self._pending.append(values)
        self._pending_size += values.shape[1]
        if self._pending_size >= self.capacity:
            self._merge()

    def _merge(self) -> None:
        parts = ([self._kept] if self._kept is not None else []) + self._pending
        merged = torch.cat(parts, dim=1)
        keep = min(self.capacity, merged.shape[1])
        self._kept = torch.topk(merged, k=keep, dim=1, sorted=False).values
        self._pending, self._pending_size = [], 0

    def result(self) -> Tensor:
        """The q-quantile of each unit's values (U,)."""
        if self.count == 0:
            raise ValueError("TopQuantile.result() before any update")
        self._merge()
        assert self._kept is not None
        descending = torch.sort(self._kept.double(), dim=1, descending=True).values
        position = self.q * (self.count - 1)
        lo, frac = math.floor(position), position - math.floor(position)
        hi = min(lo + 1, self.count - 1)
        v_lo = descending[:, self.count - 1 - lo]
        v_hi = descending[:, self.count - 1 - hi]
        return v_lo + frac * (v_hi - v_lo)


# ---------------------------------------------------------------------------------------- IoU
def unit_masks(activations: Tensor, thresholds: Tensor, size: tuple[int, int]) -> Tensor:
    """Activation maps (U x h x w) upsampled bilinearly to ``size`` and thresholded: U x H x W bool.

    A pixel belongs to unit k's region when its upsampled activation is strictly above the unit's
    threshold T_k (Bau et al. 2017, section 2.2), as in NetDissect-Lite (``mask > threshold[unit_id]`` in
    ``FeatureOperator.tally_job``, feature_operation.py of CSAILVision/NetDissect-Lite). With ``>=`` a
    nearly dead ReLU unit (positive on fewer than 0.5% of the pixels, so T_k = 0) would cover every
    pixel and match every image-level label (scene, texture) with a high IoU.
    """
    up = F.interpolate(activations[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    return up > thresholds.to(up).view(-1, 1, 1)


class IoUAccumulator:
    """Intersection and union counts of unit masks and concept labels over a dataset (Bau et al. 2017).

    For unit k and concept c of category g: ``IoU = |M_k & L_c| / |M_k | L_c|`` with every term summed
    over the dataset. As in the authors' NetDissect code, unit pixels enter the union of concept c only
    on images where category g is annotated (some pixel carries a label of g, or an image-level label
    of g such as a scene): union = unit pixels on those images + label pixels - intersection. Only
    integer counts are kept (units x concepts), never masks.

    Args:
        label_category: For every label id (index 0 = unlabelled), the index of its category.
        num_units: Number of units.
    """

    def __init__(self, label_category: Sequence[int] | Tensor, num_units: int) -> None:
        self.label_category = torch.as_tensor(label_category, dtype=torch.long)
        self.num_labels = len(self.label_category)
        self.num_categories = int(self.label_category.max()) + 1 if self.num_labels else 0
        self.num_units = num_units
        self.intersection = torch.zeros(num_units, self.num_labels, dtype=torch.long)
        self.label_pixels = torch.zeros(self.num_labels, dtype=torch.long)
        self.unit_pixels = torch.zeros(num_units, self.num_categories, dtype=torch.long)
        self.images = 0

    def update(self, masks: Tensor, labels: Mapping[int, Tensor]) -> None:
        """Adds one image.

        Args:
            masks: U x H x W bool unit masks (:func:`unit_masks`).
            labels: Category index -> M x H x W integer label maps of that category (0 = unlabelled;
                several maps when labels overlap, e.g. Broden's part layers; an image-level label is
                a map filled with its id).
        """
        if masks.shape[0] != self.num_units:
            raise ValueError(f"expected {self.num_units} unit masks, got {masks.shape[0]}")
        flat = masks.reshape(self.num_units, -1)
        unit_count = flat.sum(dim=1).cpu()
        flat = flat.float()
        for category, maps in labels.items():
            maps = maps.reshape(-1, *maps.shape[-2:]) if maps.ndim >= 2 else maps
            if tuple(maps.shape[-2:]) != tuple(masks.shape[-2:]):
                raise ValueError(f"label maps of category {category} have size {tuple(maps.shape[-2:])}, "
                                 f"unit masks {tuple(masks.shape[-2:])}")
            present, indicator = _indicator(maps.reshape(maps.shape[0], -1).to(masks.device))
            if present.numel() == 0:
                continue
            if int(present.max()) >= self.num_labels:
                raise ValueError(f"label id {int(present.max())} out of range (there are {self.num_labels} labels)")
            inter = (flat @ indicator.float().T).round().long().cpu()
            self.intersection[:, present.cpu()] += inter
            self.label_pixels[present.cpu()] += indicator.sum(dim=1).cpu()
            self.unit_pixels[:, category] += unit_count
        self.images += 1

    def merge(self, other: IoUAccumulator) -> IoUAccumulator:
        """Adds another accumulator's counts (shards); returns self."""
        self.intersection += other.intersection
        self.label_pixels += other.label_pixels
        self.unit_pixels += other.unit_pixels
        self.images += other.images
        return self

    def union(self) -> Tensor:
        """U x L union counts."""
        unit_side = self.unit_pixels[:, self.label_category]
        return unit_side + self.label_pixels[None] - self.intersection

    def iou(self) -> Tensor:
        """U x L IoU (float64); 0 where the union is empty; label 0 (unlabelled) is always 0."""
        union = self.union()
        iou = torch.where(union > 0, self.intersection.double() / union.clamp(min=1).double(), 0.0)
        if self.num_labels:
            iou[:, 0] = 0.0
        return iou


def _indicator(maps: Tensor) -> tuple[Tensor, Tensor]:
    """Labels present in M x P label maps (0 excluded) and their n x P pixel indicator (a union over maps)."""
    present, inverse = torch.unique(maps, return_inverse=True)
    indicator = torch.zeros(len(present), maps.shape[1], dtype=torch.bool, device=maps.device)
    indicator.scatter_(0, inverse, torch.ones_like(inverse, dtype=torch.bool))
    keep = present != 0
    return present[keep], indicator[keep]


def best_concepts(iou: Tensor, threshold: float = IOU_THRESHOLD) -> tuple[Tensor, Tensor, Tensor]:
    """Each unit's best concept (argmax of IoU), that IoU, and whether it is a detector (IoU > threshold)."""
    best, index = iou.max(dim=1)
    return index, best, best > threshold


def detector_summary(
    concept: Tensor, is_detector: Tensor, label_category: Sequence[int] | Tensor, categories: Sequence[str],
) -> dict[str, dict[str, int]]:
    """Detectors and unique detected concepts, in total and per category.

    Returns:
        ``{"all": {"detectors": n, "unique_concepts": m}, category: {...}, ...}``.
    """
    label_category = torch.as_tensor(label_category, dtype=torch.long)
    chosen = concept[is_detector.bool()].cpu()
    cats = label_category[chosen]
    out = {"all": {"detectors": int(chosen.numel()), "unique_concepts": int(torch.unique(chosen).numel())}}
    for index, name in enumerate(categories):
        mine = chosen[cats == index]
        out[name] = {"detectors": int(mine.numel()), "unique_concepts": int(torch.unique(mine).numel())}
    return out


DETECTORS = Metric(name="detectors", higher_is_better=True, scale=1.0,
                   description="units whose best concept score passes the detection threshold (CLIP-Dissect: "
                               "soft-WPMI, Oikarinen & Weng 2022; Network Dissection: IoU > 0.04, Bau et al. 2017)")
UNIQUE_CONCEPTS = Metric(name="unique_concepts", higher_is_better=True, scale=1.0,
                         description="distinct concepts among the detectors")
