"""Cost of one APGD iteration against its floor, as a ratio measured in one run (the zero_shot task).

On a random-weight open_clip encoder (default ViT-B-32) with a zero-shot head of ``--classes`` prompts,
reports the time per image of

- the floor: one forward and one input-gradient backward of the classifier's cross-entropy, and
- one APGD-CE iteration (``--steps`` iterations timed together, divided by the steps),

and their ratio: the attack's own bookkeeping (projection, momentum, best-point tracking, step-size
checks) costs what the ratio exceeds 1. It also prints the worst-case time per attacked image of the
paper's protocol (APGD-CE then APGD-T on 9 targets, 100 iterations each, per radius) at this speed.
Run::

    python benchmarks/apgd_speed.py [--arch ViT-B-32] [--batch 8] [--steps 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform

import torch
import torch.nn.functional as F
from attribution_speed import build_encoder, timed

from aft_bench.evaluation.attacks.apgd import apgd


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32", help="open_clip architecture (random weights)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="APGD iterations timed together")
    parser.add_argument("--classes", type=int, default=100, help="zero-shot classes (prompts)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls (best is kept)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    encoder = build_encoder(args.arch, device)
    with torch.no_grad():
        text = encoder.encode_text([f"a photo of a class {k}." for k in range(args.classes)])
    size = encoder.image_size
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, *size, generator=generator).to(device)
    start = (2 * torch.rand(args.batch, 3, *size, generator=generator) - 1).to(device)

    def logits(x: torch.Tensor) -> torch.Tensor:
        return 100 * encoder(x) @ text.T

    with torch.no_grad():
        labels = logits(images).argmax(dim=1)

    def floor() -> None:
        pixels = images.detach().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(logits(pixels), labels, reduction="none").sum(), pixels)

    floor()  # warm-up
    apgd(logits, images, labels, 4 / 255, start, steps=1)
    floor_s = timed(floor, device, args.repeats) / args.batch
    attack_s = timed(lambda: apgd(logits, images, labels, 4 / 255, start, steps=args.steps), device,
                     args.repeats) / (args.batch * (args.steps + 1))  # the start is one more gradient evaluation
    figures = {"floor_ms_per_image": 1000 * floor_s, "apgd_iteration_ms_per_image": 1000 * attack_s,
               "ratio": attack_s / floor_s, "protocol_s_per_image_per_radius": attack_s * 10 * 101}
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"{args.arch} random weights, batch {args.batch}, {args.classes} classes, {args.device}, torch threads "
          f"{torch.get_num_threads()}, load average {load}, {platform.processor() or platform.machine()}")
    print(f"floor (forward + input-gradient backward): {figures['floor_ms_per_image']:8.1f} ms per image")
    print(f"APGD-CE iteration:                         {figures['apgd_iteration_ms_per_image']:8.1f} ms per image"
          f"  -> {figures['ratio']:.2f} x floor")
    print(f"worst case of the paper's protocol (APGD-CE + APGD-T x 9 targets, 100 iterations each): "
          f"{figures['protocol_s_per_image_per_radius']:.1f} s per attacked image and radius")
    return figures


if __name__ == "__main__":
    main()
