"""Encoder specs that name several encoders: the snapshots of one training run, and the points of a training grid.

- ``series:RUN`` is every snapshot of the run in folder ``RUN`` (``aft-bench train --snapshot-every K``), in step
  order, then its final encoder; ``series:RUN@K1,K2`` only the encoders at those steps.
- ``grid:OUT`` is the final encoder of every point of the grid in folder ``OUT`` (``aft-bench train --grid ...``),
  in the grid's order.

:func:`expand_encoder_specs` turns them into one ``ckpt:`` spec per encoder before anything else reads the encoder
list, so that every task and ``aft-bench figure`` treats a series as that many encoders (the paper's maps over
fine-tuning steps and over eps, Figs. 5d-e, 14 and 15). Each snapshot's card names its step (``train_steps``) and
each grid point's card its grid values (``grid``), which :mod:`aft_bench.reporting.curves` plots against.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

ENCODER_FILE = "encoder.safetensors"  # the trainer's output name (aft_bench.training.trainer.ENCODER_NAME)
ENCODER_CARD = "encoder.json"  # its card, written last; a transformers tower is an ``encoder/`` folder beside it
SNAPSHOTS = "snapshots"
GRID_MANIFEST = "grid.json"
_SNAPSHOT = re.compile(r"step-(\d+)")
_STEPS = re.compile(r"\d+(,\d+)*")


def snapshot_path(run: Path, step: int) -> Path:
    """Where the snapshot of ``run`` at ``step`` is written: ``RUN/snapshots/step-NNNNNNN/encoder.safetensors``."""
    return run / SNAPSHOTS / f"step-{step:07d}" / ENCODER_FILE


def encoder_in(folder: Path) -> Path | None:
    """The encoder a training run wrote into ``folder``, as a ``ckpt:`` path, or None when there is none yet: the
    safetensors file of the open_clip and timm backends, or the ``save_pretrained`` folder of the transformers
    backend, each beside its card (``encoder.json``)."""
    if not (folder / ENCODER_CARD).is_file():
        return None
    weights, pretrained = folder / ENCODER_FILE, folder / Path(ENCODER_FILE).stem
    if weights.is_file():
        return weights
    return pretrained if pretrained.is_dir() else None


def series_encoders(run: Path) -> dict[int, Path]:
    """Step -> encoder of every snapshot of ``run`` and of its final encoder (its step read from its card)."""
    found = {int(m.group(1)): path for folder in sorted((run / SNAPSHOTS).glob("step-*"))
             if (m := _SNAPSHOT.fullmatch(folder.name)) and (path := encoder_in(folder)) is not None}
    final = encoder_in(run)
    if final is not None:
        card = json.loads((run / ENCODER_CARD).read_text(encoding="utf-8"))
        found[int(card["train_steps"])] = final
    return dict(sorted(found.items()))


def _series(arg: str) -> list[str]:
    folder, at, steps = arg.rpartition("@")
    if not (at and _STEPS.fullmatch(steps)):
        folder, steps = arg, ""
    run = Path(folder)
    if not run.is_dir():
        raise FileNotFoundError(f"series:{arg}: {run} is not a folder; give the --out folder of an aft-bench train run")
    found = series_encoders(run)
    if not found:
        raise FileNotFoundError(f"series:{arg}: {run} holds no snapshot and no final encoder yet; train it with "
                                "--snapshot-every K (and let it finish or resume it)")
    if steps:
        wanted = [int(s) for s in steps.split(",")]
        missing = [s for s in wanted if s not in found]
        if missing:
            raise ValueError(f"series:{arg}: no encoder at step(s) {missing} in {run}; it has steps {list(found)}")
        found = {s: found[s] for s in wanted}
    return [f"ckpt:{path}" for path in found.values()]


def read_grid(out: Path) -> dict:
    """The manifest of the grid trained into ``out`` (keys, values and one folder per point).

    Raises:
        FileNotFoundError: When ``out`` holds no grid manifest.
    """
    path = out / GRID_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"grid:{out}: no {GRID_MANIFEST} there; give the --out folder of an aft-bench train "
                                "--grid run")
    return json.loads(path.read_text(encoding="utf-8"))


def _grid(arg: str) -> list[str]:
    out = Path(arg)
    specs = []
    for point in read_grid(out)["points"]:
        path = encoder_in(out / point["folder"])
        if path is None:
            raise FileNotFoundError(f"grid:{arg}: point {point['folder']} has not finished (no {ENCODER_CARD} in "
                                    f"{out / point['folder']}); run the same aft-bench train --grid command again to "
                                    "resume it")
        specs.append(f"ckpt:{path}")
    return specs


EXPANDERS: dict[str, Callable[[str], list[str]]] = {"series:": _series, "grid:": _grid}
"""Spec prefix -> the ``ckpt:`` specs it stands for."""


def expand_encoder_specs(specs: Sequence[str]) -> tuple[str, ...]:
    """``specs`` with every ``series:`` and ``grid:`` spec replaced by the encoders it names (others unchanged).

    Raises:
        FileNotFoundError: For a folder that is not a run or a grid, or a point or snapshot not written yet.
        ValueError: For a step the series does not have (the error lists those it has).
    """
    out: list[str] = []
    for spec in specs:
        prefix = next((p for p in EXPANDERS if spec.startswith(p)), None)
        out += EXPANDERS[prefix](spec.removeprefix(prefix)) if prefix else [spec]
    return tuple(out)
