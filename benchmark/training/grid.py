"""A grid of training runs: ``aft-bench train ... --grid 'eps=1,2,4,8'`` trains one run per point.

The grid is ``KEY=V1,V2,...`` terms separated by spaces (every combination of their values, the first key
slowest), or a YAML file mapping keys to lists of values. Keys are recipe fields of
:class:`~aft_bench.training.config.TrainConfig` (``eps``, ``lr``, ``pgd_steps``, ``objective``, ...); each value
is converted and checked as its flag would be, for every point before any training starts. Point ``eps=2`` trains
into ``OUT/eps=2/`` (several keys: ``OUT/eps=2,lr=1e-05/``), resumable like any run; ``OUT/grid.json`` lists the
points, and each point's encoder card records its values under ``grid``. ``grid:OUT`` names the points' encoders
(:mod:`aft_bench.models.series`), so the paper's sweeps over eps (Figs. 5d, 14) are one train and one run command.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aft_bench.core.atomic import atomic_write_text
from aft_bench.core.registry import UnknownNameError
from aft_bench.models.series import GRID_MANIFEST
from aft_bench.training.config import TrainConfig

log = logging.getLogger(__name__)
NOT_GRIDDED = ("preset", "grid", "encoder")
"""Recipe fields a grid does not vary (a preset is a starting point; a grid over encoders is several runs)."""


@dataclass(frozen=True)
class GridPoint:
    """One run of a grid: its folder under the grid's ``--out``, its values and its full recipe."""

    folder: str
    values: dict[str, Any]
    config: TrainConfig


def _field_value(name: str, value: Any) -> Any:
    """``value`` (text from the command line, or a YAML scalar) as the type of field ``name``.

    Raises:
        ValueError: Naming the key and the type it takes.
    """
    hint = typing.get_type_hints(TrainConfig)[name]
    kind = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    if kind is str:
        return str(value)
    text = value if isinstance(value, str) else None
    try:
        if kind is bool:
            parsed = yaml.safe_load(text) if text is not None else value
            if isinstance(parsed, bool):
                return parsed
        elif kind is int and not isinstance(value, bool | float):
            return int(value)
        elif kind is float and not isinstance(value, bool):
            return float(value)
    except ValueError:
        pass
    raise ValueError(f"--grid {name}={value!r}: {name} takes a {kind.__name__}")


def parse_grid(text: str) -> dict[str, list[Any]]:
    """The grid's keys and typed values, in order.

    Raises:
        UnknownNameError: For a key that is not a recipe field a grid may vary (with a did-you-mean).
        ValueError: For a term that is not ``KEY=V1,V2``, a repeated key, or a value of the wrong type.
        FileNotFoundError: For a ``.yaml``/``.yml`` grid file that does not exist.
    """
    if text.endswith((".yaml", ".yml")):
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"--grid {text}: the grid file does not exist")
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or not all(isinstance(v, list) and v for v in raw.values()):
            raise ValueError(f"--grid {text}: the file must map each key to a non-empty list of values")
        terms = [(str(k), list(v)) for k, v in raw.items()]
    else:
        terms = []
        for term in text.split():
            key, sep, values = term.partition("=")
            if not sep or not key or not values or "" in values.split(","):
                raise ValueError(f"--grid {text!r}: each term is KEY=V1,V2,... (e.g. 'eps=1,2,4,8 lr=1e-5,2e-5')")
            terms.append((key.replace("-", "_"), values.split(",")))
    if not terms:
        raise ValueError(f"--grid {text!r}: give at least one KEY=V1,V2,... term")
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    allowed = [n for n in fields if n not in TrainConfig.NON_RECIPE and n not in NOT_GRIDDED]
    grid: dict[str, list[Any]] = {}
    for key, values in terms:
        if key not in allowed:
            raise UnknownNameError("grid key", key, allowed)
        if key in grid:
            raise ValueError(f"--grid {text!r}: {key} is given twice")
        grid[key] = [_field_value(key, v) for v in values]
    return grid


def _label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def grid_points(config: TrainConfig) -> list[GridPoint]:
    """Every point of ``config.grid``, each a checked recipe training into its own folder under ``config.out``.

    Raises:
        ValueError: For a bad grid or a point whose recipe is invalid (before any training).
    """
    grid = parse_grid(config.grid or "")
    base = config.name or config.preset or f"{Path(config.encoder).name}-{config.objective}"
    points = []
    for combination in itertools.product(*grid.values()):
        values = dict(zip(grid, combination, strict=True))
        folder = ",".join(f"{k}={_label(v)}" for k, v in values.items())
        point = config.replace(**values, grid=None, out=str(Path(config.out) / folder), name=f"{base} {folder}")
        points.append(GridPoint(folder, values, point))
    return points


def write_manifest(config: TrainConfig, points: list[GridPoint]) -> Path:
    """Writes ``OUT/grid.json`` (atomically), or checks that the one there describes the same grid.

    Raises:
        ValueError: When ``OUT`` already holds another grid.
    """
    path = Path(config.out) / GRID_MANIFEST
    manifest = {"grid": config.grid, "recipe": config.replace(grid=None).recipe(),
                "points": [{"folder": p.folder, "values": p.values} for p in points]}
    text = json.dumps(manifest, indent=2, sort_keys=True)
    if path.is_file() and json.loads(path.read_text(encoding="utf-8")) != json.loads(text):
        raise ValueError(f"--out {config.out} holds another grid ({path}); choose another --out, or repeat that "
                         "grid's command to resume it")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def run_grid(config: TrainConfig) -> list[Any]:
    """Trains (or resumes) every point of ``config.grid`` in order; returns their :class:`TrainResult` s."""
    from aft_bench.training.trainer import train  # torch, only once the grid checks out

    points = grid_points(config)
    write_manifest(config, points)
    results = []
    for number, point in enumerate(points, start=1):
        log.info("grid point %d of %d: %s -> %s", number, len(points), point.folder, point.config.out)
        results.append(train(point.config, card_extra={"grid": point.values}))
    return results
