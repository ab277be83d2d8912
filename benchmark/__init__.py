"""aft-bench: interpretability benchmark for CLIP image encoders, and the AFT/FARE fine-tuning.

Importing the package is cheap; the Python API loads torch on first use::

    import aft_bench
    encoder = aft_bench.load_encoder("toy")
    config = aft_bench.resolve_config("pointing_game", {"limit": 50})
    outcome = aft_bench.run(config)
    print(outcome.markdown)

Importing it also sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already sets it: OpenMP threads that
wait for work sleep instead of spinning. This changes no number (only how idle threads wait) and matters when
the cores are shared: with other busy processes on a 2-core machine, a tiny model's forward and backward on two
spinning threads took 1.7-2.0 s against 0.05-0.18 s with sleeping ones (measured side by side under load average
8). It acts only where aft_bench is imported before torch (the ``aft-bench`` command, the test suite).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_API = {
    "load_encoder": "aft_bench.models.loading",
    "save_encoder": "aft_bench.models.loading",
    "Encoder": "aft_bench.models.encoder",
    "RunConfig": "aft_bench.evaluation.config",
    "resolve_config": "aft_bench.evaluation.config",
    "run": "aft_bench.evaluation.runner",
    "read_results": "aft_bench.results.files",
    "make_markdown": "aft_bench.results.table",
    "make_csv": "aft_bench.results.table",
    "TextTarget": "aft_bench.evaluation.targets.text",
    "ENCODERS": "aft_bench.core.registries",
    "ATTRIBUTIONS": "aft_bench.core.registries",
    "TASKS": "aft_bench.core.registries",
    "DATASETS": "aft_bench.core.registries",
    "METRICS": "aft_bench.core.registries",
    "OBJECTIVES": "aft_bench.core.registries",
}
__all__ = sorted(_API) + ["__version__", "get_attribution"]


def get_attribution(name: str, **hparams: Any) -> Any:
    """An attribution method by registry name, e.g. ``get_attribution("smoothgrad", n=32)``."""
    from aft_bench.core.registries import ATTRIBUTIONS

    return ATTRIBUTIONS.get(name)(**hparams)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'aft_bench' has no attribute {name!r}")
