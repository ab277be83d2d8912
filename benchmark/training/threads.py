"""How many CPU threads torch uses while training, and restoring the setting afterwards.

A small model on a busy machine runs far slower on more threads: torch's OpenMP threads wait at every
operator for a thread the scheduler has pre-empted (a toy fine-tune step took 40 s on 2 threads and 3.6 s on
1 on a loaded 2-core machine). :func:`auto_threads` therefore counts only the CPUs that are not already
busy. The thread count also changes the floating-point result of CPU reductions, so builds that must give
the same weights everywhere (the toy encoders) use a fixed count instead.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; containers often allow fewer than the host has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def auto_threads(cpus: int | None = None, load: float | None = None, processes: int = 1) -> int:
    """The CPUs not already busy: available CPUs minus the whole part of the 1-minute load average, shared
    among ``processes`` (at least 1).

    Args:
        cpus: Available CPUs (default :func:`available_cpus`).
        load: Runnable processes, averaged (default ``os.getloadavg()[0]``; 0 where the system has none).
        processes: Training processes on this machine that share them (torchrun's ``LOCAL_WORLD_SIZE``).
    """
    cpus = available_cpus() if cpus is None else cpus
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cpus, cpus - math.floor(load)) // max(1, processes))


@contextlib.contextmanager
def use_threads(threads: int, what: str) -> Iterator[int]:
    """Runs the block with ``threads`` torch intra-op threads (logged), then restores the previous setting.

    Args:
        threads: Thread count (at least 1).
        what: What runs on them, for the log line.

    Raises:
        ValueError: If ``threads`` is below 1.
    """
    if threads < 1:
        raise ValueError(f"threads={threads}: give at least 1 CPU thread")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    log.info("%s on %d CPU thread(s) (%d available)", what, threads, available_cpus())
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
