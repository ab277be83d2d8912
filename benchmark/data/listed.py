"""What every dataset that lists its samples once, at construction, shares: the ids in a fixed order, their count, and
a lookup of a sample's entry that names an unknown id and what the valid ids look like."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from aft_bench.data.base import DataError

V = TypeVar("V")


class ListedSamples:
    """A base of datasets whose sample ids are listed in ``self._ids`` (set by the subclass's constructor)."""

    _ids: list[str]

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> list[str]:
        """The sample ids, in the dataset's fixed order."""
        return list(self._ids)

    @staticmethod
    def _lookup(table: Mapping[str, V], sample_id: str, unknown: str) -> V:
        """``table[sample_id]``.

        Raises:
            DataError: ``unknown`` (it names the id and what the valid ids look like) for an id not in ``table``.
        """
        try:
            return table[sample_id]
        except KeyError:
            raise DataError(unknown) from None
