"""Time per map of every attribution method on every encoder backend, as ratios to each backend's cost floor.

Builds ViT-B-16-sized models with random weights, one per backend: an open_clip ``ViT-B-16``, the same tower
converted to a ``transformers`` CLIP (:mod:`aft_bench.models.convert`, so both compute the same numbers), a timm
``vit_base_patch16_224`` classifier and a timm ``resnet50`` (a CNN). For each it times the floor (one forward plus
one input-gradient backward of the batch, per map) and every method, and prints ``time / floor``: what a method
costs on a backend relative to that backend's own forward and backward, so that the explicit attention paths and
tower splits of the backends can be compared. Absolute seconds depend on the machine and its load; the ratios are
what one run measures. Run::

    python benchmarks/backend_speed.py [--batch 4] [--device cpu] [--backends open_clip transformers timm_vit]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

from aft_bench.core.atomic import atomic_write_text
from aft_bench.core.registries import ATTRIBUTIONS
from aft_bench.evaluation.targets.text import TextTarget
from aft_bench.models.backends.timm import TimmEncoder
from aft_bench.models.backends.transformers import HFClipEncoder
from aft_bench.models.convert import open_clip_to_hf
from aft_bench.models.encoder import Encoder


def _speed_module():
    """benchmarks/attribution_speed.py (its floor pass, timer and warm-up settings are reused here)."""
    spec = importlib.util.spec_from_file_location("attribution_speed", Path(__file__).with_name("attribution_speed.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SPEED = _speed_module()


def open_clip_vit() -> Encoder:
    return SPEED.build_encoder("ViT-B-16", torch.device("cpu"))


def transformers_vit() -> Encoder:
    source = open_clip_vit()
    return HFClipEncoder(open_clip_to_hf(source.visual), None, "ViT-B-16 (transformers, converted)",
                         source.mean.flatten().tolist(), source.std.flatten().tolist())


def timm_model(name: str) -> Callable[[], Encoder]:
    def build() -> Encoder:
        torch.manual_seed(0)
        return TimmEncoder(timm.create_model(name, pretrained=False).eval(), f"timm {name} (random weights)")

    return build


BACKENDS: dict[str, Callable[[], Encoder]] = {
    "open_clip": open_clip_vit, "transformers": transformers_vit,
    "timm_vit": timm_model("vit_base_patch16_224"), "timm_resnet": timm_model("resnet50"),
}


def measure(encoder: Encoder, methods: list[str], batch: int, repeats: int, device: torch.device) -> dict:
    """Floor and per-method seconds per map of ``encoder`` (methods it refuses are skipped)."""
    encoder = encoder.to(device).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, *encoder.image_size, generator=g).to(device)
    with torch.no_grad():
        dim = encoder(images[:1]).shape[1]
    target = TextTarget(F.normalize(torch.randn(batch, dim, generator=g), dim=-1).to(device))
    one = (images[:1], TextTarget(target.embeddings[:1]))
    SPEED.floor_pass(encoder, *one)  # warm-up
    floor = SPEED.timed(lambda: SPEED.floor_pass(encoder, images, target), device, repeats) / batch
    per_map: dict[str, float] = {}
    for name in methods:
        cls = ATTRIBUTIONS.get(name)
        method = cls()
        if encoder.kind not in method.supports:
            continue
        cls(**SPEED.WARM_UP_ARGS.get(name, {}))(encoder, *one)
        per_map[name] = SPEED.timed(lambda m=method: m(encoder, images, target), device, repeats) / batch
    return {"encoder": encoder.name, "kind": encoder.kind, "floor_s_per_map": floor, "s_per_map": per_map}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per method (best is kept)")
    parser.add_argument("--backends", nargs="*", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument("--methods", nargs="*", default=[n for n in ATTRIBUTIONS.names() if n != "random"])
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(f"batch {args.batch}, device {device}, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()}")
    results = {}
    for name in args.backends:
        results[name] = measure(BACKENDS[name](), args.methods, args.batch, args.repeats, device)
        ratios = {m: round(t / results[name]["floor_s_per_map"], 2) for m, t in results[name]["s_per_map"].items()}
        print(f"{name}: floor {results[name]['floor_s_per_map'] * 1e3:.1f} ms/map, x floor {ratios}", flush=True)
    print(f"{'method':<18}" + "".join(f"{name:>14}" for name in results))
    print(f"{'floor ms/map':<18}" + "".join(f"{r['floor_s_per_map'] * 1e3:>14.1f}" for r in results.values()))
    for method in args.methods:
        cells = [r["s_per_map"].get(method) for r in results.values()]
        ratios = [f"{cell / r['floor_s_per_map']:>13.1f}x" if cell is not None else f"{'-':>14}"
                  for cell, r in zip(cells, results.values(), strict=True)]
        print(f"{method:<18}" + "".join(ratios))
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
