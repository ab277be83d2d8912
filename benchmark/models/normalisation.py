"""Normalisation overrides: any encoder spec may end in ``?mean=NAME`` or ``?mean=A,B,C&std=A,B,C``.

Some encoders are used with another mean and std than their library's default: MONET (the dermatology CLIP of
Kim et al. 2024) is a ViT-L/14 in OpenAI's format used with ImageNet's mean and std, so its spec is
``ViT-L-14:openai@monet.pt?mean=imagenet``. A named set (``openai``, ``imagenet``, ``inception``) given as ``mean``
brings its std too, unless ``std=`` says otherwise. The override is recorded in the encoder's name and card
(``normalisation``: the override, the new and the replaced values), so results keep it apart.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from aft_bench.models.encoder import IMAGENET_MEAN, IMAGENET_STD, OPENAI_MEAN, OPENAI_STD, Encoder

#: named normalisations for ``?mean=NAME``: (mean, std)
NORMALISATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "openai": (OPENAI_MEAN, OPENAI_STD),
    "clip": (OPENAI_MEAN, OPENAI_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def split_normalisation(spec: str) -> tuple[str, dict[str, tuple[float, ...]]]:
    """``SPEC?mean=..&std=..`` -> (SPEC, {"mean": ..., "std": ...}); a spec without ``?mean=``/``?std=`` is returned
    unchanged with no override.

    Raises:
        ValueError: For an unknown key, an unknown named set or a value that is not three numbers.
    """
    base, sep, query = spec.rpartition("?")
    if not sep or not query.startswith(("mean=", "std=")):
        return spec, {}
    override: dict[str, tuple[float, ...]] = {}
    for item in query.split("&"):
        key, _, value = item.partition("=")
        if key not in ("mean", "std"):
            raise ValueError(f"encoder {spec!r}: unknown normalisation key {key!r} after '?'; use mean= and std=")
        if value in NORMALISATIONS:
            named = dict(zip(("mean", "std"), NORMALISATIONS[value], strict=True))
            override[key] = named[key]
            if key == "mean":  # a named mean brings its std, unless std= says otherwise
                override.setdefault("std", named["std"])
            continue
        try:
            numbers = tuple(float(v) for v in value.split(","))
        except ValueError:
            numbers = ()
        if len(numbers) != 3 or (key == "std" and min(numbers) <= 0):
            raise ValueError(f"encoder {spec!r}: {key}={value!r} is neither a named set "
                             f"({', '.join(NORMALISATIONS)}) nor three numbers A,B,C (std > 0)")
        override[key] = numbers
    return base, override


def override_normalisation(encoder: Encoder, spec: str, override: Mapping[str, tuple[float, ...]]) -> None:
    """Replaces the encoder's mean/std and records the change (and the spec) in its name and card."""
    before = {"mean": encoder.mean.flatten().tolist(), "std": encoder.std.flatten().tolist()}
    for key, values in override.items():
        getattr(encoder, key).copy_(torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1))
    encoder.name = spec
    encoder.card["normalisation"] = {
        "override": spec.rpartition("?")[2], "mean": encoder.mean.flatten().tolist(),
        "std": encoder.std.flatten().tolist(), "replaced": before,
    }
