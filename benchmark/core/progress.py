"""One progress policy for every loop a user waits for: a live bar on a terminal, log lines elsewhere.

On a terminal, :func:`progress_bar` is a tqdm bar. When the stream is not a terminal (a log file, a CI job,
a pipe), a bar would either stay silent (tqdm's ``disable=None``) or flood the file with carriage returns;
there it is a :class:`LogProgress` instead, which writes one ``logging`` INFO line every ``interval`` seconds
(and one at the end) with the count, the rate, the time left and the postfix. Both offer the part of tqdm's
interface the project uses: iteration, :meth:`~LogProgress.update`, :meth:`~LogProgress.set_postfix`,
:meth:`~LogProgress.close` and use as a context manager.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

LOG_INTERVAL = 5.0  # seconds between two log lines when the output is not a terminal


class LogProgress:
    """A progress report as periodic log lines (the non-terminal form of :func:`progress_bar`).

    Args:
        iterable: Items to iterate over (optional; else drive it with :meth:`update`).
        total: Expected count (``None``: unknown; the line then has no ETA).
        desc: Label at the start of each line.
        unit: Name of one item.
        initial: Count already done (a resumed run).
        interval: Seconds between two lines.
        clock: Monotonic time in seconds (injected by tests).
        logger: Where the lines go.
    """

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, interval: float = LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, logger: logging.Logger = log) -> None:
        self.iterable, self.desc, self.unit, self.interval = iterable, desc, unit, interval
        self.total = total if total is not None or iterable is None else _length(iterable)
        self.n = self.start_n = self.reported = initial
        self.clock, self.logger = clock, logger
        self.started = self.last = clock()
        self.postfix: dict[str, Any] = {}
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LogProgress: nothing to iterate over (give an iterable or call update)")
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Counts ``n`` more items; logs a line when ``interval`` seconds passed since the last one."""
        self.n += n
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self._emit(now)

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        """Values shown at the end of the next line (as tqdm's ``set_postfix``; ``refresh`` is ignored)."""
        self.postfix = values

    def close(self) -> None:
        """Logs the final line once (when anything was counted since the last line)."""
        if not self.closed:
            self.closed = True
            if self.n != self.reported:
                self._emit(self.clock())

    def _emit(self, now: float) -> None:
        self.reported = self.n
        elapsed = max(now - self.started, 1e-9)
        rate = (self.n - self.start_n) / elapsed
        parts = [f"{self.n}/{self.total}" if self.total is not None else str(self.n), f"{self.unit}s",
                 f"({rate:.3g} {self.unit}/s, {elapsed:.0f} s elapsed"]
        if self.total is not None and rate > 0 and self.n < self.total:
            parts[-1] += f", ~{(self.total - self.n) / rate:.0f} s left"
        parts[-1] += ")"
        parts += [f"{key}={value}" for key, value in self.postfix.items()]
        self.logger.info("%s: %s", self.desc or "progress", " ".join(parts))


def _length(iterable: Iterable[Any]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def is_terminal(stream: IO[str] | None) -> bool:
    """Whether ``stream`` is an interactive terminal (a closed or missing stream is not)."""
    try:
        return stream is not None and stream.isatty()
    except ValueError:  # closed
        return False


def progress_bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, enabled: bool = True, leave: bool = True,
                 stream: IO[str] | None = None, interval: float = LOG_INTERVAL) -> Any:
    """The progress report of one loop: a tqdm bar on a terminal, else a :class:`LogProgress`.

    Args:
        iterable: Items to iterate over (or ``None`` and drive it with ``update``).
        total: Expected count.
        desc: Label.
        unit: Name of one item.
        initial: Count already done.
        enabled: ``False`` gives a silent bar (other ranks, ``progress=False``).
        leave: Keep the terminal bar after it finishes.
        stream: Where the bar is drawn (default ``sys.stderr``, read at call time); decides the form.
        interval: Seconds between two log lines in the non-terminal form.

    Returns:
        An object with tqdm's iteration, ``update``, ``set_postfix``, ``close`` and context-manager use.
    """
    stream = sys.stderr if stream is None else stream
    if not enabled or is_terminal(stream):
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, file=stream,
                    disable=not enabled)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, interval=interval)
