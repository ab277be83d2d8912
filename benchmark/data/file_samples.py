"""What the datasets of one image file per sample, listed once at construction, share: the ids in a fixed order,
each one's file, the refusal of an unknown or repeated id, and ``source_files`` for ``--cache-samples``
(:mod:`aft_bench.data.sample_cache`). Used by :mod:`~aft_bench.data.image_tree`,
:mod:`~aft_bench.data.caption_file` and :mod:`~aft_bench.data.coco_captions`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from aft_bench.data.base import DataError
from aft_bench.data.listed import ListedSamples


class FileSamples(ListedSamples):
    """A listed sequence of (sample id, image file); subclasses call :meth:`_list` once, then read
    :meth:`_position`."""

    #: Dataset name used in messages.
    dataset_name = "file samples"

    def _list(self, ids: Sequence[str], files: Sequence[Path], where: object) -> None:
        """Stores the samples in the given order.

        Raises:
            DataError: Naming ``where`` (the folder or file listed) and the ids that stand in it twice.
        """
        self._ids, self._files = list(ids), list(files)
        self._index = {sample_id: i for i, sample_id in enumerate(self._ids)}
        if len(self._index) < len(self._ids):
            twice = sorted(sample_id for sample_id, n in Counter(self._ids).items() if n > 1)
            raise DataError(f"{where}: the samples {twice[:5]} stand in it twice; list each once")

    def _position(self, sample_id: str) -> int:
        """The position of ``sample_id`` in :meth:`ids`; raises DataError for an unknown id."""
        return self._lookup(self._index, sample_id,
                            f"unknown {self.dataset_name} sample id {sample_id!r}; see ids() for valid ids")

    def path(self, sample_id: str) -> Path:
        """The image file of a sample."""
        return self._files[self._position(sample_id)]

    def source_files(self, sample_id: str) -> list[Path]:
        """The files ``load`` reads (the image), for ``--cache-samples``."""
        return [self.path(sample_id)]
