"""Time per map of the attribution methods, as ratios measured in one run (issue 4, "Speed").

On a random-weight open_clip ViT (default ViT-B-32) at one batch size (default 8), reports for each
method the seconds per map and its ratio to the cost floor of gradient methods: one forward plus
one input-gradient backward of the batch, divided by the batch size. For M2IB (Wang et al. 2023) it
also times, with the same settings,

- a loop of our implementation over one image at a time, and
- a loop in the style of the authors' release: per image and step, the whole model runs on the
  noise copies with the bottleneck hooked in after the block, and ``loss.backward()`` fills the
  model's parameter gradients too (timed on ``--reference-images`` images, per map).

Absolute seconds depend on the machine and its load; the ratios are what the run measures. Run::

    python benchmarks/attribution_speed.py [--arch ViT-B-32] [--batch 8] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from aft_bench.attributions.m2ib import M2IB, apply_bottleneck, noise_statistics
from aft_bench.evaluation.targets.text import TextTarget
from aft_bench.models.backends.open_clip import OpenClipEncoder
from aft_bench.models.backends.open_clip_models import build_model, model_config, tokenizer_for
from aft_bench.models.encoder import Encoder

# Methods timed when importable (the gradient methods live in other modules of the package).
METHODS: dict[str, str] = {
    "simple_gradient": "aft_bench.attributions.simple_gradient:SimpleGradient",
    "smoothgrad": "aft_bench.attributions.smoothgrad:SmoothGrad",
    "gradcam": "aft_bench.attributions.gradcam:GradCAM",
    "attention_map": "aft_bench.attributions.attention_map:AttentionMap",
    "rollout": "aft_bench.attributions.rollout:Rollout",
    "grad_eclip": "aft_bench.attributions.grad_eclip:GradECLIP",
    "m2ib": "aft_bench.attributions.m2ib:M2IB",
}

# Hyperparameters of the untimed warm-up call (a full M2IB fit would cost as much as the timed one).
WARM_UP_ARGS: dict[str, dict] = {"m2ib": {"steps": 1, "samples": 1}, "smoothgrad": {"n_samples": 1}}


def load(reference: str) -> type | None:
    module, _, attr = reference.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best wall time of ``repeats`` calls (seconds)."""
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def floor_pass(encoder: Encoder, images: Tensor, target: TextTarget) -> Tensor:
    """One forward and one input-gradient backward of the whole batch."""
    pixels = images.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(target.score(encoder(pixels)).sum(), pixels)
    return grad


def reference_style_m2ib(encoder: Encoder, image: Tensor, target: TextTarget, method: M2IB) -> Tensor:
    """M2IB of one image as the authors' release computes it (the speed to beat, same settings).

    Every step runs the whole tower on ``samples`` copies of the image with the bottleneck hooked in
    after the block, and ``loss.backward()`` also fills the parameters' gradients.
    """
    args = method.fit_args
    visual = encoder.visual
    block = encoder.blocks[int(0.75 * encoder.num_blocks)]
    shape = (1, visual.positional_embedding.shape[0], visual.transformer.width)
    alpha = torch.full(shape, float(args["alpha_init"]), device=image.device, requires_grad=True)
    optimizer = torch.optim.Adam([alpha], lr=args["lr"])
    state: dict[str, Tensor] = {}
    generator = torch.Generator(device=image.device).manual_seed(args["seed"])

    def bottleneck(_module: torch.nn.Module, _inputs: object, output: Tensor) -> Tensor:
        features = encoder.batch_first(output)
        stats = noise_statistics(features.detach().float(), args["noise"])
        eps = torch.randn(features.shape, generator=generator, device=features.device)
        z, state["kl"] = apply_bottleneck(features, torch.sigmoid(alpha), eps, stats)
        return encoder.block_layout(z)

    copies = image.expand(args["samples"], -1, -1, -1)
    text = target.repeat_interleave(args["samples"])
    handle = block.register_forward_hook(bottleneck)
    try:
        for _ in range(args["steps"]):
            optimizer.zero_grad()
            embeddings = encoder(copies)
            loss = args["beta"] * state["kl"].mean() - text.score(embeddings).mean()
            loss.backward()
            optimizer.step()
    finally:
        handle.remove()
        encoder.model.zero_grad(set_to_none=True)
    return state["kl"].detach()[0, 1:].sum(-1)


def build_encoder(arch: str, device: torch.device) -> Encoder:
    cfg = model_config(arch)
    torch.manual_seed(0)
    return OpenClipEncoder(build_model(cfg), tokenizer_for(cfg), name=f"{arch} (random weights)").to(device).eval()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32", help="open_clip ViT architecture (random weights)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per method (best is kept)")
    parser.add_argument(
        "--reference-images",
        type=int,
        default=2,
        help="images timed for the release-style M2IB loop (per map; 0 skips it)",
    )
    parser.add_argument("--methods", nargs="*", default=list(METHODS), help="subset of methods to time")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    encoder = build_encoder(args.arch, device)
    g = torch.Generator().manual_seed(0)
    size = encoder.image_size
    images = torch.rand(args.batch, 3, *size, generator=g).to(device)
    target = TextTarget(
        F.normalize(torch.randn(args.batch, encoder.model.visual.output_dim, generator=g), dim=-1).to(device)
    )
    one = (images[:1], TextTarget(target.embeddings[:1]))
    per_map: dict[str, float] = {}

    floor_pass(encoder, *one)  # warm-up
    floor = timed(lambda: floor_pass(encoder, images, target), device, args.repeats) / args.batch
    print(
        f"{args.arch} random weights, batch {args.batch}, device {device}, torch threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()}"
    )
    print(f"floor (forward + input-gradient backward): {floor * 1e3:.1f} ms per map")
    print(f"{'method':<18}{'ms per map':>12}{'x floor':>10}")
    for name in args.methods:
        cls = load(METHODS[name])
        if cls is None:
            print(f"{name:<18}{'not importable':>22}")
            continue
        method = cls()
        cls(**WARM_UP_ARGS.get(name, {}))(encoder, *one)
        per_map[name] = timed(lambda m=method: m(encoder, images, target), device, args.repeats) / args.batch
        print(f"{name:<18}{per_map[name] * 1e3:>12.1f}{per_map[name] / floor:>10.1f}")

    result = {
        "arch": args.arch,
        "batch": args.batch,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "loadavg": os.getloadavg(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "floor_s_per_map": floor,
        "s_per_map": per_map,
    }
    if "m2ib" in per_map:
        method = M2IB()
        loop = (
            timed(
                lambda: [
                    method(encoder, images[i : i + 1], TextTarget(target.embeddings[i : i + 1]))
                    for i in range(args.batch)
                ],
                device,
                args.repeats,
            )
            / args.batch
        )
        result["m2ib_loop_s_per_map"] = loop
        print(
            f"m2ib one image at a time (ours): {loop * 1e3:.1f} ms per map; batched is {loop / per_map['m2ib']:.2f}x "
            "faster"
        )
        if args.reference_images > 0:
            n = min(args.reference_images, args.batch)
            reference = (
                timed(
                    lambda: [
                        reference_style_m2ib(
                            encoder, images[i : i + 1], TextTarget(target.embeddings[i : i + 1]), method
                        )
                        for i in range(n)
                    ],
                    device,
                    args.repeats,
                )
                / n
            )
            result["m2ib_release_style_s_per_map"] = reference
            print(
                f"m2ib release-style loop ({n} images): {reference * 1e3:.1f} ms per map; batched is "
                f"{reference / per_map['m2ib']:.2f}x faster"
            )
    if args.json:
        with tempfile.NamedTemporaryFile("w", dir=args.json.parent or ".", delete=False, suffix=".tmp") as tmp:
            json.dump(result, tmp, indent=2)
        os.replace(tmp.name, args.json)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
