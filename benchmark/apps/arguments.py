"""The command-line pieces every ``aft-bench`` command shares (``run``, ``figure``, ``compare``, ``paper``, ``study``):
``key=value`` options, ``--attr-arg`` method arguments, output folders checked before any work, CPU threads, the
``--cache-samples`` help. The sub-commands with their own parsers import them from here, never from
:mod:`aft_bench.apps.cli`, which loads those parsers only when their command runs."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

CACHE_SAMPLES_HELP = (
    "keep the loaded (resized) samples of a file dataset (ImageNet-S, ImageNet-Segmentation, image folders) on disk "
    "and read them back on later passes (the next encoder, a later run) instead of decoding the files again; in "
    "CACHE/samples, CACHE being $AFT_BENCH_CACHE, else $XDG_CACHE_HOME/aft_bench, else ~/.cache/aft_bench; one "
    "folder per dataset, arguments and image size, about 200 KB a sample at 224 px; a changed source file is "
    "decoded again; results are the same with or without it"
)
"""The help of ``--cache-samples`` (:mod:`aft_bench.data.sample_cache`), on the commands that take ``--num-workers``."""


def key_values(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    """Parses ``key=value`` pairs (values read as YAML scalars: 3 -> int, true -> bool)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} expects key=value, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def attribution_args(items: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in key_values(items, "--attr-arg").items():
        method, dot, param = key.partition(".")
        if not dot:
            raise ValueError(f"--attr-arg expects method.param=value, got {key!r}")
        out.setdefault(method, {})[param] = value
    return out


def check_output_folder(folder: Path, flag: str = "--out") -> None:
    """Checks, before any work, that ``folder`` is or can become a folder this process can write in.

    Raises:
        ValueError: If a part of the path is a file, or its first existing folder cannot be written.
    """
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{flag} {folder}: {existing} is a file, not a folder; choose an {flag} path outside it")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".aft-bench-check-", dir=existing))
    except OSError as exc:
        raise ValueError(f"{flag} {folder}: cannot create folders in {existing} ({exc.strerror}); choose an {flag} "
                         "in a folder you can write to") from exc


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Runs the block on ``threads`` intra-op CPU threads (``torch.set_num_threads``; None: torch's default).

    Raises:
        ValueError: If ``threads`` is below 1 (before any work).
    """
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"--threads {threads}: give a positive number of CPU threads, or leave --threads out for "
                         "torch's default")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
