"""The per-sample store that makes runs resumable: append-only JSON lines keyed by sample id, and the shard files
of the ranks of a ``torchrun`` job that join it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


# ---------------------------------------------------------------------------------------- samples
class SampleStore:
    """Append-only JSON-lines store of per-sample records keyed by sample id.

    Each record is ``{"id": ..., "scores": {...}}``, ``{"id": ..., "excluded": reason}`` or
    ``{"id": ..., "skipped": reason}``. Records are flushed and fsynced after every batch, so a killed
    run loses at most the batch in flight; a partly written last line is ignored on reading.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, dict[str, Any]] = dict(self._read())

    def _read(self) -> Iterator[tuple[str, dict[str, Any]]]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the last line of a killed run may be cut off
                yield record["id"], record

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, sample_id: str) -> dict[str, Any] | None:
        return self._records.get(sample_id)

    def ids(self) -> list[str]:
        """The stored sample ids, in the order they were first stored."""
        return list(self._records)

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Appends records durably (one fsync per call)."""
        records = list(records)
        if not records:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            if fh.tell() and not self._ends_with_newline():
                fh.write("\n")
            for record in records:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
                self._records[record["id"]] = record
            fh.flush()
            os.fsync(fh.fileno())

    def absorb(self, other: str | Path) -> int:
        """Appends the records of another store file that this one lacks, then deletes that file.

        How a sharded run's per-rank files (and those a killed sharded run left) join the main store.

        Returns:
            The number of records taken over.
        """
        other = Path(other)
        taken = [record for sample_id, record in SampleStore(other)._records.items() if sample_id not in self]
        self.append(taken)
        other.unlink()
        return len(taken)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"


def shard_path(samples_path: Path, rank: int) -> Path:
    """The store file rank ``rank`` of a ``torchrun`` job appends to, beside the pair's store ``samples_path``."""
    return samples_path.with_name(f"{samples_path.stem}.rank{rank}.jsonl")


def shard_files(samples_path: Path) -> list[Path]:
    """The rank files beside the store ``samples_path`` (a sharded run's, or those a killed one left), sorted."""
    return sorted(samples_path.parent.glob(f"{samples_path.stem}.rank*.jsonl"))
