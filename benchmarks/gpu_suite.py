"""The GPU benchmark of the evaluation and training paths, in one run (at most about 8 minutes on one H200).

Prints, in this order (each section also reports its own wall time; a failing section prints its error and the
suite goes on):

1. ``train``: the AFT step of ViT-B-16 in bf16 at batch 128 and K = 10 PGD steps (benchmarks/train_step.py):
   step time, its ratio to the cost floor, and MFU, with the FLOP count it assumes (torch's flop counter of
   one whole step, printed as "step GFLOPs");
2. ``attributions``: images/s of each attribution method on ViT-B-16 at batch 64, and M2IB batched against
   one image at a time (benchmarks/attribution_speed.py);
3. ``pointing``: the pointing game's end-to-end images/s (decode, maps, metrics, stores) on a generated
   ImageNet-S-format folder, with the default DataLoader workers, 3 methods in one pass, bf16 attribution forwards;
4. ``apgd``: APGD-CE iterations/s on ViT-B-16 at batch 64 (benchmarks/apgd_speed.py).

``--tiny`` runs every section on the CPU with a tiny random-weight ViT and a few images (the test suite does,
to keep the script working where no GPU is lent). Random weights throughout: timing needs no real weights.

    python benchmarks/gpu_suite.py                 # on a GPU machine
    python benchmarks/gpu_suite.py --tiny          # CPU smoke run
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling benchmark scripts

import apgd_speed  # noqa: E402
import attribution_speed  # noqa: E402
import train_step  # noqa: E402

from aft_bench.data.imagenet_s import write_synthetic  # noqa: E402
from aft_bench.evaluation.config import resolve_config  # noqa: E402
from aft_bench.evaluation.runner import run  # noqa: E402
from aft_bench.models.backends.open_clip import OpenClipEncoder  # noqa: E402
from aft_bench.models.backends.open_clip_models import build_model, tokenizer_for  # noqa: E402
from aft_bench.models.encoder import Encoder  # noqa: E402
from aft_bench.models.loading import save_encoder  # noqa: E402

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
POINTING_METHODS = ["simple_gradient", "gradcam", "rollout"]


def _tiny_encoder(device: torch.device) -> Encoder:
    torch.manual_seed(0)
    model = build_model(copy.deepcopy(TINY_CFG))
    return OpenClipEncoder(model, tokenizer_for(TINY_CFG), name="tiny", card={"model_cfg": TINY_CFG}).to(device).eval()


def _tiny_spec(folder: Path) -> str:
    encoder = _tiny_encoder(torch.device("cpu"))
    return f"ckpt:{save_encoder(encoder, folder / 'tiny', {'model_cfg': TINY_CFG, 'name': 'tiny'})}"


def train_section(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """benchmarks/train_step.py in this process (its ``main`` reads ``sys.argv``, set here for the call)."""
    if args.tiny:
        options = ["--arch", _tiny_spec(folder), "--batch", "2", "--pgd-steps", "2", "--repeats", "1",
                   "--device", "cpu", "--skip-naive"]
    else:
        options = ["--arch", "ViT-B-16", "--batch", "128", "--pgd-steps", "10", "--repeats", "3", "--device",
                   args.device, "--precision", "bf16", "--skip-naive"]
    argv = sys.argv
    sys.argv = [str(HERE / "train_step.py"), *options]
    try:
        train_step.main()
    finally:
        sys.argv = argv
    return {"options": options}


def attribution_section(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """benchmarks/attribution_speed.py in this process: images/s per method, M2IB batched vs one at a time."""
    options = ["--arch", "ViT-B-16", "--batch", "64", "--device", args.device, "--repeats", "2",
               "--reference-images", "2"]
    if args.tiny:
        options = ["--arch", "tiny", "--batch", "2", "--device", "cpu", "--repeats", "1", "--reference-images", "1"]
    result = attribution_speed.main(options)
    for name, seconds in result["s_per_map"].items():
        print(f"  {name:<18} {1 / seconds:10.1f} images/s")
    if "m2ib_loop_s_per_map" in result:
        print(f"  m2ib batched {1 / result['s_per_map']['m2ib']:.1f} images/s, one image at a time "
              f"{1 / result['m2ib_loop_s_per_map']:.1f} images/s "
              f"({result['m2ib_loop_s_per_map'] / result['s_per_map']['m2ib']:.2f}x)")
    return result


def pointing_section(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """A pointing-game run over a generated ImageNet-S folder, 3 methods in one pass, default workers, bf16
    attribution forwards on the GPU (fp32 with ``--tiny``)."""
    images = 8 if args.tiny else args.pointing_images
    start = time.perf_counter()
    root = write_synthetic(folder / "ImageNetS10", images)
    print(f"  generated {images} image/mask pairs (375 x 500) in {time.perf_counter() - start:.1f} s")
    spec = _tiny_spec(folder) if args.tiny else "ViT-B-16"
    config = resolve_config("pointing_game", {
        "encoders": [spec], "attributions": POINTING_METHODS, "dataset": "imagenet_s", "data_root": str(root),
        "batch_size": 4 if args.tiny else 64, "device": "cpu" if args.tiny else args.device,
        "num_workers": args.workers, "precision": "fp32" if args.tiny else "bf16", "out": str(folder / "out"),
        "fresh": True})
    start = time.perf_counter()
    outcome = run(config)
    wall = time.perf_counter() - start
    rate = images / wall
    workers = "default" if args.workers is None else args.workers
    print(f"  {len(outcome.results)} methods x {images} images in one pass: {wall:.1f} s, {rate:.1f} images/s "
          f"({rate * len(POINTING_METHODS):.1f} maps/s), workers: {workers}, precision: {config.precision}")
    return {"images_per_s": rate, "wall_s": wall}


def apgd_section(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """benchmarks/apgd_speed.py in this process; iterations/s of the whole batch."""
    batch = 2 if args.tiny else 64
    options = ["--arch", "ViT-B-16", "--batch", str(batch), "--steps", "10", "--device", args.device,
               "--classes", "1000"]
    if args.tiny:
        options = ["--arch", "tiny", "--batch", str(batch), "--steps", "2", "--device", "cpu", "--classes", "10"]
    figures = apgd_speed.main(options)
    per_iteration = figures["apgd_iteration_ms_per_image"] * batch / 1e3
    print(f"  APGD-CE: {1 / per_iteration:.2f} iterations/s at batch {batch}")
    return figures


SECTIONS: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
    "train": train_section, "attributions": attribution_section, "pointing": pointing_section, "apgd": apgd_section,
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models and data on the CPU (a smoke test)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--workers", type=int, default=None, help="pointing-game loader workers (default: the run's)")
    parser.add_argument("--pointing-images", type=int, default=512)
    args = parser.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --tiny on the CPU")
    name = "cpu (tiny)" if args.tiny else torch.cuda.get_device_name(args.device)
    print(f"gpu_suite on {name}, torch {torch.__version__}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}")
    results: dict[str, Any] = {}
    if args.tiny:  # the sibling scripts build their encoders by architecture name: give them the tiny one
        attribution_speed.build_encoder = apgd_speed.build_encoder = lambda arch, device: _tiny_encoder(device)
    with tempfile.TemporaryDirectory() as tmp:
        for section in args.sections:
            print(f"== {section}")
            start = time.perf_counter()
            try:
                results[section] = SECTIONS[section](args, Path(tmp))
            except Exception:  # noqa: BLE001 - report and go on with the other sections
                traceback.print_exc()
                results[section] = {"error": traceback.format_exc(limit=1)}
            print(f"   ({section}: {time.perf_counter() - start:.1f} s)")
    return results


if __name__ == "__main__":
    main()
