"""A :class:`~aft_bench.data.base.Dataset` as a training set: sample ``index`` of epoch ``epoch`` as
(pixels, caption or None, label).

Training reads the same datasets as evaluation (:mod:`aft_bench.data`), through this one adapter: position
``index`` is the dataset's ``ids()[index]``; pixels are float32 in [0, 1] (uint8 samples divided by 255,
:func:`~aft_bench.data.base.float_pixels`); the caption is the sample's prompt where the prompts are the images'
captions (shapes, caption files, COCO) and None where they are class templates or empty (image folders); the label
is ``Sample.label``, and ``classnames`` is the dataset's class names for class-labelled data (which TeCoA and
PMG-AFT need) or None. A dataset whose samples change with the epoch (COCO draws one of each image's captions per
epoch) has ``load_epoch(sample_id, epoch)`` (:class:`EpochDataset`), which the adapter calls instead of ``load``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from aft_bench.data.base import Dataset, Sample, float_pixels


@runtime_checkable
class EpochDataset(Protocol):
    """A dataset whose samples depend on the epoch (:class:`~aft_bench.data.coco_captions.CocoCaptions`)."""

    def load_epoch(self, sample_id: str, epoch: int) -> Sample:
        """The sample ``sample_id`` as epoch ``epoch`` sees it; raises DataError naming the file."""
        ...


class TrainSource:
    """A dataset as a map-style training set (see the module docstring).

    Args:
        dataset: The dataset.
        description: Where the data comes from (recorded in the encoder card).
        captions: Whether the samples' prompts are their captions (else every caption is None).

    Attributes:
        dataset: The dataset.
        classnames: The class names in label order for class-labelled data, else None.
    """

    def __init__(self, dataset: Dataset, description: str, captions: bool) -> None:
        self.dataset, self.description, self.captions = dataset, description, bool(captions)
        self._ids = dataset.ids()
        self.classnames: tuple[str, ...] | None = tuple(dataset.classnames) if dataset.classnames else None

    def __len__(self) -> int:
        return len(self._ids)

    def sample(self, index: int, epoch: int = 0) -> Sample:
        """The dataset's sample at position ``index``, as epoch ``epoch`` sees it."""
        sample_id = self._ids[index]
        if isinstance(self.dataset, EpochDataset):
            return self.dataset.load_epoch(sample_id, epoch)
        return self.dataset.load(sample_id)

    def load(self, index: int, epoch: int = 0) -> tuple[Tensor, str | None, int]:
        """(3 x H x W float32 pixels in [0, 1], caption or None, class index or -1) of sample ``index`` in ``epoch``.

        Raises:
            DataError: Naming the file, when it is missing or unreadable.
        """
        sample = self.sample(index, epoch)
        return float_pixels(sample.image), sample.prompt if self.captions else None, sample.label

    def describe(self) -> str:
        """Where the data comes from (recorded in the encoder card)."""
        return self.description
