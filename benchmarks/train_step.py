"""Times one training step of each objective against its cost floor, and AFT's against a straightforward loop.

Measured in one run on a random-weight open_clip model (default ViT-B-32), for each ``--objectives`` name:

- floor = K x (forward + input-gradient backward, no weight gradients) + F frozen forwards
  + 1 forward and backward for the parameters on P x the batch; each part timed on its own. F and P are
  the objective's own (:data:`FLOOR_PARTS`): AFT and FARE need the original's embedding of the clean batch
  (F = 1, P = 1); TeCoA compares with fixed class-prompt embeddings (F = 0, P = 1); PMG-AFT needs the
  original's logits at the adversarial point and the fine-tuned model's at both points (F = 1, P = 2);
- ours  = one step of aft_bench's trainer path (objective with PGD, backward, AdamW step);
- naive (AFT only) = the loop of the published FARE code: PGD with parameter gradients left on (every inner
  backward also computes weight gradients, then zeroes them) and an extra clean forward with grad.

Prints ours / floor (target <= 1.15 on CPU) and naive / ours, images/s and, with a peak given or
known for the GPU, model FLOP utilisation from torch's flop counter (forward FLOPs of one batch and
the FLOPs counted over a whole step). On GPU use ``--precision bf16`` and optionally ``--compile``
and ``--channels-last``.

    python benchmarks/train_step.py --batch 8              # CPU, reduced batch
    python benchmarks/train_step.py --batch 8 --objectives aft fare tecoa pmg-aft
    python benchmarks/train_step.py --arch ViT-B-16 --batch 128 --precision bf16 --compile
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from aft_bench.core.registries import OBJECTIVES
from aft_bench.models.loading import load_encoder
from aft_bench.training.config import TrainConfig
from aft_bench.training.objectives.base import TrainBatch
from aft_bench.training.randomness import SampleRandom
from aft_bench.training.tower import ImageTower, Reference

FLOOR_PARTS: dict[str, tuple[int, int]] = {"aft": (1, 1), "fare": (1, 1), "tecoa": (0, 1), "pmg-aft": (1, 2)}
"""Per objective: (frozen forwards of the original model, parameter forward-backward batch multiple)."""
CLASSES = 10  # class labels of the labelled objectives' synthetic batch
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "4090": 165.2, "L40S": 362.0}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rounds(parts: dict[str, Callable[[], object]], device: torch.device, rounds: int) -> dict[str, float]:
    """Median wall time of each part, timed in interleaved rounds (after one warm-up round).

    Interleaving gives every part the same share of whatever else the machine is doing.
    """
    times: dict[str, list[float]] = {name: [] for name in parts}
    for index in range(rounds + 1):
        for name, fn in parts.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if index:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--pgd-steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (after one warm-up round)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="hardware bf16 peak for MFU")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--objectives", nargs="+", default=["aft"], choices=sorted(FLOOR_PARTS),
                        help="objectives to time, each against its own floor")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    encoder = load_encoder(args.arch, device)  # an architecture name alone: random weights
    reference = Reference.from_encoder(encoder)
    tower = ImageTower.from_encoder(encoder, channels_last=args.channels_last).to(device).eval()
    fast = torch.compile(tower) if args.compile else tower
    objectives = {name: OBJECTIVES.get(name).from_config(TrainConfig(objective=name, pgd_steps=args.pgd_steps))
                  for name in args.objectives}
    optimizer = torch.optim.AdamW(tower.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=1e-4)
    h, w = encoder.image_size
    x = torch.rand(args.batch, 3, h, w, device=device)
    batch = TrainBatch(images=x, indices=list(range(args.batch)), captions=[None] * args.batch,
                       labels=torch.arange(args.batch, device=device) % CLASSES,
                       classnames=tuple(f"class {i}" for i in range(CLASSES)))
    x2 = torch.cat([x, x])
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    k = args.pgd_steps

    def input_grad() -> None:
        with autocast:
            xd = x.clone().requires_grad_(True)
            emb = F.normalize(fast(xd + 0.0), dim=-1)
            torch.autograd.grad(emb.pow(2).sum(), xd)  # w.r.t. the input only: no weight-gradient kernels

    def frozen_forward() -> None:
        with autocast:
            reference.image_features(x)

    def param_step(pixels: torch.Tensor = x) -> None:
        with autocast:
            loss = F.normalize(fast(pixels), dim=-1).sum()
        loss.backward()
        tower.zero_grad(set_to_none=True)

    def step(name: str) -> Callable[[], None]:
        def run() -> None:
            rng = SampleRandom(0, 0, batch.indices, device)
            with autocast:
                out = objectives[name](fast, fast, reference, batch, rng)
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return run

    def naive() -> None:
        with autocast:
            target = F.normalize(reference.image_features(x), dim=-1)
            delta = torch.empty_like(x).uniform_(-4 / 255, 4 / 255)
            for _ in range(k):
                delta.requires_grad_(True)
                noisy = x + delta + torch.randn_like(x) / 255
                loss = 0.5 * (F.normalize(fast(noisy), dim=-1) - target).pow(2).sum(-1).mean()
                loss.backward()  # parameters keep requires_grad: weight gradients computed and discarded
                grad = delta.grad
                tower.zero_grad(set_to_none=True)
                delta = ((delta.detach() + grad.sign() / 255).clamp(-4 / 255, 4 / 255) + x).clamp(0, 1) - x
            # Extra clean forward with grad (FARE's code computes it for its clean loss, weight 0 by default).
            F.normalize(fast(x), dim=-1)
            adv = F.normalize(fast(x + delta + torch.randn_like(x) / 255), dim=-1)
            loss = 0.5 * (adv - target).pow(2).sum(-1).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    parts = {"input": input_grad, "frozen": frozen_forward, "param": param_step, "param x2": lambda: param_step(x2),
             **{name: step(name) for name in objectives}}
    if not args.skip_naive and "aft" in objectives:
        parts["naive"] = naive
    t = timed_rounds(parts, device, args.repeats)
    t_input, t_frozen = t["input"], t["frozen"]
    t_naive = t.get("naive")
    ours = step(args.objectives[0])

    # Forward FLOPs with an input that requires grad: the no-grad inference fast path of
    # nn.MultiheadAttention is invisible to the flop counter.
    with FlopCounterMode(display=False) as counter:
        with autocast:
            tower(x.clone().requires_grad_(True) + 0.0)
    forward_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        ours()
    step_flops = counter.get_total_flops()

    print(f"{args.arch} batch {args.batch} {h}x{w} on {device} ({args.precision}, compile={args.compile}, "
          f"threads={torch.get_num_threads()}), PGD steps {k}")
    print(f"  forward + input-grad backward (no weight grad): {t_input * 1e3:9.1f} ms")
    print(f"  frozen forward (no grad):                      {t_frozen * 1e3:9.1f} ms")
    print(f"  forward + parameter backward (batch, 2 x batch): {t['param'] * 1e3:7.1f} ms, "
          f"{t['param x2'] * 1e3:.1f} ms")
    for name in objectives:
        frozen, multiple = FLOOR_PARTS[name]
        floor = k * t_input + frozen * t_frozen + t["param" if multiple == 1 else "param x2"]
        print(f"  {name:<8} step incl. AdamW {t[name] * 1e3:9.1f} ms, floor ({k} x input + {frozen} x frozen + "
              f"param x{multiple}) {floor * 1e3:9.1f} ms -> ratio to floor {t[name] / floor:.3f} (target <= 1.15)")
    if t_naive is not None:
        print(f"  naive FARE-style loop:                         {t_naive * 1e3:9.1f} ms  "
              f"-> naive / aft {t_naive / t['aft']:.3f}")
    t_ours = t[args.objectives[0]]
    print(f"  {args.objectives[0]}: images/s {args.batch / t_ours:.1f}; "
          f"forward GFLOPs/batch {forward_flops / 1e9:.1f}, "
          f"step GFLOPs {step_flops / 1e9:.1f} ({step_flops / max(forward_flops, 1):.1f} x forward)")
    peak = args.peak_tflops
    if not peak and device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for key, v in PEAK_BF16_TFLOPS.items() if key in name), 0.0)
    if peak:
        print(f"  MFU: {step_flops / t_ours / (peak * 1e12):.1%} of {peak:.0f} TFLOP/s")


if __name__ == "__main__":
    main()
