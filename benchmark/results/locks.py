"""Store locks: two runs of the same pair into one folder share the work through the pair's store.

Whoever scores a pair holds its lock (``<out>/<task>/.locks/<store>.lock``); another process that finds the lock
held says so, waits until it is released and then reads the finished store, recomputing nothing. A run with another
run key has another store and lock and never waits. Under ``torchrun`` only rank 0 takes the lock, so the ranks of
one job never lock each other out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

LOCKS_DIR = ".locks"
"""The folder of a task folder that holds its store locks."""
LOCK_POLL_S = 0.5
"""Seconds between two looks at a store lock that another process holds."""


@contextmanager
def store_lock(folder: Path, samples_path: Path, what: str, holder: bool = True) -> Iterator[None]:
    """Holds the lock of the store ``samples_path`` in the task folder ``folder`` (when ``holder``: rank 0 of a
    ``torchrun`` job; the other ranks follow rank 0's barriers and take no lock).

    The lock is taken without blocking; if another process holds it (the same pair, scored by another run of the
    same command), a warning naming ``what`` says so and this process waits, polling every :data:`LOCK_POLL_S`
    seconds, until it is released: then the store holds the other process's scores. The lock of a killed process
    is released by the operating system.
    """
    if not holder:
        yield
        return
    path = folder / LOCKS_DIR / f"{samples_path.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        log.warning("%s: another process is scoring these samples (it holds %s); waiting for it to finish, then "
                    "reading its scores", what, path)
        lock.acquire(poll_interval=LOCK_POLL_S)
    try:
        yield
    finally:
        lock.release()
