"""A results folder read once and kept up to date: a new result is written unless it repeats the newest stored
result of its row."""

from __future__ import annotations

import logging
from pathlib import Path

from aft_bench.results.files import read_result_file, read_result_files, result_stem, write_into
from aft_bench.results.result import RunResult

log = logging.getLogger(__name__)


class ResultsFolder:
    """The results of one task folder (``<out>/<task>``): read once, then kept up to date in memory.

    :meth:`add` writes a new result, unless the newest stored result of its row (:meth:`RunResult.row_key`)
    has the same numbers: then that one stands and nothing is written. Files that another process wrote into
    the folder meanwhile are picked up for the result's own file stem only, so adding stays cheap.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._files: dict[Path, RunResult] = dict(read_result_files(self.folder)) if self.folder.is_dir() else {}

    @property
    def results(self) -> list[RunResult]:
        """Every result known, oldest first."""
        return sorted(self._files.values(), key=lambda r: r.date)

    def add(self, result: RunResult) -> tuple[Path, RunResult, bool]:
        """Writes ``result`` (atomically, never overwriting), or reuses the stored result it repeats.

        Returns:
            The result's file, the result that stands (``result`` or the stored one) and whether it was reused.
        """
        stem = result_stem(result)
        for path in sorted(set(self.folder.glob(f"{stem}__*.json")) - set(self._files)):
            stored = read_result_file(path)
            if stored is not None:
                self._files[path] = stored
        same_row = [(path, stored) for path, stored in self._files.items() if stored.row_key() == result.row_key()]
        if same_row:
            path, newest = max(same_row, key=lambda item: (item[1].date, item[0].name))
            if newest.numbers() == result.numbers():
                log.info("%s x %s: same numbers as %s, which stands (nothing written)", result.encoder,
                         result.attribution, path)
                return path, newest, True
        path = write_into(result, self.folder)
        self._files[path] = result
        return path, result, False
