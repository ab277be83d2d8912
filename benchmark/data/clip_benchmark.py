"""Class names and prompt templates of CLIP Benchmark (LAION's ``clip_benchmark`` package, the protocol the
AFT paper's zero-shot evaluation follows; after Radford et al. 2021), read from its installed files.

``clip_benchmark`` ships them as JSON (``datasets/en_classnames.json``, ``datasets/en_zeroshot_
classification_templates.json``, keyed by dataset: ``cars``, ``flowers``, ``eurosat``, ``caltech101``,
...). They are read from the installed package's folder without importing it (its imports pull in
transformers and more); nothing is copied into aft-bench. Values ``clip_benchmark:<dataset>`` select them:
``--option templates=clip_benchmark:cars`` and ``--dataset-arg classnames=clip_benchmark:flowers``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from aft_bench.data.base import DataError

PREFIX = "clip_benchmark:"
CLASSNAMES_FILE = "en_classnames.json"
TEMPLATES_FILE = "en_zeroshot_classification_templates.json"


def is_clip_benchmark(value: object) -> bool:
    """Whether an option value names CLIP Benchmark data (``clip_benchmark:<dataset>``)."""
    return isinstance(value, str) and value.startswith(PREFIX)


def _table(file_name: str) -> dict[str, Any]:
    spec = importlib.util.find_spec("clip_benchmark")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"{PREFIX}... needs CLIP Benchmark's files: pip install clip-benchmark (it is read, not "
                        "imported), or give the names in a file")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / file_name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read CLIP Benchmark's {path}: {exc}") from exc


def _entry(value: str, file_name: str, what: str) -> Any:
    dataset = value[len(PREFIX):]
    table = _table(file_name)
    if dataset not in table:
        raise DataError(f"CLIP Benchmark has no {what} for {dataset!r}; it has them for {sorted(table)}")
    return table[dataset]


def clip_benchmark_classnames(value: str) -> list[str]:
    """The class names CLIP Benchmark uses for ``clip_benchmark:<dataset>``, in its label order."""
    return [str(name) for name in _entry(value, CLASSNAMES_FILE, "class names")]


def clip_benchmark_templates(value: str) -> list[str]:
    """The prompt templates CLIP Benchmark uses for ``clip_benchmark:<dataset>``, with ``{}`` for the class."""
    return [str(t).replace("{c}", "{}") for t in _entry(value, TEMPLATES_FILE, "prompt templates")]
