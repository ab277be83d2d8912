"""How many CPU threads the toy's training uses (a small model can run slower on more threads)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

import torch


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; containers often allow fewer than the host has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pick_threads(probe: Callable[[], object], most: int) -> int:
    """The faster of 1 and ``most`` intra-op threads for ``probe`` (timed once each after a warm-up).

    On a busy machine torch's OpenMP threads wait at every operator for a thread the scheduler has
    pre-empted, and a small model's step can run ten times slower on 2 threads than on 1; timing a
    forward pass both ways (a fraction of a second) avoids that trap without giving up the cores of an
    idle machine.
    """
    timings: dict[int, float] = {}
    for threads in sorted({1, max(1, most)}):
        torch.set_num_threads(threads)
        probe()
        start = time.perf_counter()
        probe()
        timings[threads] = time.perf_counter() - start
    return min(timings, key=lambda n: timings[n])


@contextlib.contextmanager
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)
