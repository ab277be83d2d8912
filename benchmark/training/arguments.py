"""``aft-bench train``'s command line, generated from :class:`~aft_bench.training.config.TrainConfig`.

One flag per field: ``--field-name`` (underscores become dashes), typed from the field's annotation, its
help text and choices from the field's metadata (:func:`aft_bench.training.config.option`). A boolean field
becomes a switch that flips its default: ``--no-outer-noise`` for one on by default, ``--compile`` for one
off by default. Unset flags keep the preset's value, else the default. Parsing imports neither torch nor
the trainer, so ``aft-bench train --help`` and a misspelt flag answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import typing
from collections.abc import Sequence
from typing import Any

from aft_bench.training.config import TrainConfig
from aft_bench.training.presets import PRESETS

log = logging.getLogger(__name__)


def _value_type(hint: Any) -> type:
    """The type a flag's text converts to: the annotation, without ``| None``."""
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return args[0] if args else hint


def _help(spec: dataclasses.Field, note: str) -> str:
    return " ".join(filter(None, [spec.metadata["help"], note])).replace("%", "%%")


def _add_flag(parser: argparse.ArgumentParser, spec: dataclasses.Field, hint: Any) -> None:
    """Adds the one flag of field ``spec`` (annotation ``hint``) to ``parser``."""
    name = spec.name.replace("_", "-")
    if hint is bool:
        on = spec.default is True
        parser.add_argument(f"--no-{name}" if on else f"--{name}", dest=spec.name,
                            action="store_false" if on else "store_true", default=argparse.SUPPRESS,
                            help=_help(spec, "On by default; this flag turns it off." if on else "Off by default."))
        return
    known = spec.metadata["choices"] or spec.metadata["names"]
    parser.add_argument(f"--{name}", dest=spec.name, type=_value_type(hint), default=argparse.SUPPRESS,
                        choices=sorted(known) if known is not None else None,
                        help=_help(spec, "" if spec.default is None else f"Default: {spec.default}."))


def build_parser() -> argparse.ArgumentParser:
    """The ``aft-bench train`` argument parser: one flag per :class:`TrainConfig` field."""
    parser = argparse.ArgumentParser(
        prog="aft-bench train", allow_abbrev=False,
        description="Adversarially fine-tune a CLIP image tower with AFT (paper Eq. 7) or FARE. Radii and "
                    "steps are in 1/255 units; options not given keep the preset's value, else the default.")
    hints = typing.get_type_hints(TrainConfig)
    for spec in dataclasses.fields(TrainConfig):
        _add_flag(parser, spec, hints[spec.name])
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """The recipe of a command line: defaults, overridden by the preset, overridden by explicit flags.

    Raises:
        SystemExit: With status 2 for an unknown flag or a bad value (argparse's message on stderr).
    """
    values = vars(build_parser().parse_args(argv))
    preset = values.get("preset")
    return TrainConfig(**{**(PRESETS[preset] if preset else {}), **values})


def run_train(argv: Sequence[str] | None = None) -> int:
    """``aft-bench train``: parses ``argv``, trains (or resumes), and logs where the result is.

    Configures no logging and catches nothing: the caller (the ``aft-bench`` command line) does both.

    Returns:
        0 (the exit status) once the run finished or stopped at ``--stop-at-step``.

    Raises:
        SystemExit: For bad flags (status 2).
        UnknownNameError: For an unknown objective, regularizer or encoder name.
        ValueError: For bad input: a bad option value, a corrupt image or caption file
            (:class:`~aft_bench.data.base.DataError`), a checkpoint that cannot continue this run
            (:class:`~aft_bench.training.checkpoint.ResumeError`).
        NonFiniteError: When the loss or gradient becomes non-finite (an :class:`~aft_bench.core.errors.UserError`).
    """
    config = config_from_args(argv)
    if config.grid:
        from aft_bench.training.grid import run_grid

        results = run_grid(config)
        if results and results[0].main_process and all(r.encoder_path is not None for r in results):
            log.info("trained %d grid points under %s (use --encoders grid:%s)", len(results), config.out, config.out)
        return 0
    from aft_bench.training.trainer import train  # torch and the models, only once the flags parse

    result = train(config)
    if not result.main_process:
        return 0
    if result.encoder_path is not None:
        log.info("trained encoder: %s (use --encoders ckpt:%s)", result.encoder_path, result.encoder_path)
        if config.snapshot_every:
            log.info("its snapshots and the final encoder: --encoders series:%s", config.out)
    else:
        log.info("stopped at step %d of %d; run the same command again to resume", result.step, result.total_steps)
    return 0
