"""Hub and cache access, offline by default: every backend looks its pretrained weights up in the local caches, names
the folder it searched when they are missing, and loads them with the Hugging Face hub client held offline.
``AFT_BENCH_ONLINE=1`` lets a library download what is missing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

ENV_ONLINE = "AFT_BENCH_ONLINE"
"""``1``: let the libraries download missing weights (default: local caches only)."""


def online() -> bool:
    """Whether missing weights may be downloaded (``AFT_BENCH_ONLINE=1``); by default only caches are read."""
    return os.environ.get(ENV_ONLINE, "").strip().lower() in ("1", "true", "yes")


def hub_cache() -> Path:
    """The local Hugging Face hub cache (``HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_folder(repo: str) -> Path:
    """Where the hub cache keeps repository ``ORG/NAME`` (named in messages when a file is missing)."""
    return hub_cache() / f"models--{repo.replace('/', '--')}"


def cached_file(repo: str, names: tuple[str, ...]) -> Path | None:
    """The first of ``names`` of hub repository ``repo`` that is in the local cache, or None (never downloads)."""
    from huggingface_hub import try_to_load_from_cache

    for name in names:
        found = try_to_load_from_cache(repo, name, cache_dir=str(hub_cache()))
        if isinstance(found, str):
            return Path(found)
    return None


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """The Hugging Face hub client answers from its cache only while the block runs (no requests, no retries)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before
