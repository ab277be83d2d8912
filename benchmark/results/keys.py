"""Run keys and file-name-safe names: a short stable hash of everything that changes a run's numbers."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any


def run_key(parts: Mapping[str, Any]) -> str:
    """A short stable hash of everything that changes a run's numbers."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def safe_name(name: str) -> str:
    """A file-name-safe version of an encoder/attribution name (``ViT-B-16:openai`` -> ``ViT-B-16_openai``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] or "unnamed"
