"""Time per image of the vlm_attention task against its cost floor, and its peak memory against the number of images.

On a random-weight LLaVA of LLaVA-1.5's layout scaled down for the CPU
(:func:`aft_bench.toys.vlm.synthetic.llava_15_shapes`:
336 px, patch 14, 576 image tokens, quick-GELU tower with feature layer -2, a Llama language model; widths / 8 by
default) with a random open_clip ViT of the tower's shape as the encoder under test, it measures

* the task: ``aft-bench run --task vlm_attention`` on the shapes world (the pair's scoring time over its images,
  data loading, composite maps, the six scores, best-over-tokens and the store included), per image;
* the floor, inside the same run: the time spent in its one greedy ``generate`` of the answers plus its one
  forward over prompt + answers that keeps only the needed attention rows (:func:`aft_bench.models.vlm.answer.generate`,
  :func:`aft_bench.models.vlm.answer.attention_rows`, timed by wrappers), per image, so that both sides see the same
  machine load; and, for reference, the same two calls timed alone on random pixels (best of two after a warm-up);

and prints ``task / floor`` (target <= 1.2), and the process's peak memory after runs of growing image counts
(peak RSS on the CPU, peak allocated on CUDA; flat = no per-image growth). It also prints, for the model measured
and for LLaVA-1.5-7B in bf16, what one image's attention tensors weigh with ``output_attentions=True`` against the
rows the task keeps. Absolute seconds depend on the machine and its load; the ratio is what one run measures. Run::

    python benchmarks/vlm_speed.py [--scale 8] [--batch 4] [--images 4 8 16] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from aft_bench.core.atomic import atomic_write_text
from aft_bench.data.shapes import CLASSNAMES
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.runner import run
from aft_bench.models.backends.open_clip import OpenClipEncoder
from aft_bench.models.backends.open_clip_models import build_model, tokenizer_for
from aft_bench.models.convert import open_clip_vision_cfg
from aft_bench.models.encoder import Encoder
from aft_bench.models.loading import save_encoder
from aft_bench.models.vlm import answer
from aft_bench.models.vlm.answer import MapChoices, attention_rows, generate
from aft_bench.models.vlm.loading import load_vlm
from aft_bench.models.vlm.prompt import class_question
from aft_bench.models.vlm.tower import install_tower
from aft_bench.toys.vlm.synthetic import LlavaShape, llava_15_shapes, random_llava_folder

TEXT_CFG = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
LLAVA_7B = {"llm_layers": 32, "heads": 32, "vision_layers": 23, "vision_heads": 16, "tokens": 576, "bytes": 2}
"""LLaVA-1.5-7B: Vicuna-7B's 32 layers x 32 heads, ViT-L/14-336's layers up to layer -2, 576 image tokens, bf16."""


def encoder_for(folder: Path) -> tuple[Encoder, dict]:
    """A random open_clip ViT of the shape of the folder's tower, and its config."""
    vlm = load_vlm(str(folder))
    cfg = {**open_clip_vision_cfg(vlm.vision_config), "text_cfg": TEXT_CFG}
    torch.manual_seed(1)
    encoder = OpenClipEncoder(build_model(cfg), tokenizer_for(cfg), name="random-tower", card={"model_cfg": cfg})
    return encoder.eval(), cfg


def peak_bytes(device: torch.device) -> int:
    """Peak allocated CUDA memory, or the process's peak resident set on the CPU (Linux reports KiB)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def floor_per_image(folder: Path, encoder: Encoder, batch: int, max_new_tokens: int, device: torch.device,
                    repeats: int = 2) -> float:
    """Seconds per image of one generate + one row-keeping forward of a batch (after one warm-up)."""
    vlm = load_vlm(str(folder), device)
    install_tower(encoder, vlm)
    prompt = vlm.prompt_ids(class_question(CLASSNAMES))
    pixels = encoder.to(device).normalize(torch.rand(batch, 3, *encoder.image_size, device=device)).to(vlm.dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        answers = generate(vlm, pixels, prompt, max_new_tokens)
        attention_rows(vlm, pixels, prompt, [a or [0] for a in answers], MapChoices())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best / batch


class Timed:
    """Wraps ``answer.generate`` and ``answer.attention_rows`` while active, summing their seconds."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds, self._saved = device, 0.0, {}

    def __enter__(self) -> Timed:
        for name in ("generate", "attention_rows"):
            self._saved[name] = original = getattr(answer, name)
            setattr(answer, name, self._wrap(original))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self._saved.items():
            setattr(answer, name, original)

    def _wrap(self, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = function(*args, **kwargs)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds += time.perf_counter() - start
            return out

        return timed


def attention_bytes(shape: LlavaShape, prompt_tokens: int, answer_tokens: int) -> dict[str, float]:
    """MiB per image of the attention tensors: all of them (``output_attentions``) against the kept rows."""
    s = prompt_tokens + answer_tokens
    t = (shape.image_size // shape.patch_size) ** 2 + 1
    full = shape.text_layers * shape.text_heads * s * s + (shape.vision_layers - 1) * shape.vision_heads * t * t
    kept = shape.text_layers * answer_tokens * s + (shape.vision_layers - 1) * t * t
    return {"output_attentions_mib": full * 4 / 2**20, "kept_mib": kept * 4 / 2**20}


def llava_7b_bytes(length: int, answer_tokens: int) -> dict[str, float]:
    """MiB per image for LLaVA-1.5-7B (a sequence of ``length`` tokens, about this prompt's with its 576 image
    tokens): ``output_attentions`` in bf16 against the kept float32 rows and vision matrices."""
    t = LLAVA_7B["tokens"] + 1
    full = (LLAVA_7B["llm_layers"] * LLAVA_7B["heads"] * length**2
            + LLAVA_7B["vision_layers"] * LLAVA_7B["vision_heads"] * t * t)
    kept = LLAVA_7B["llm_layers"] * answer_tokens * length + LLAVA_7B["vision_layers"] * t * t
    return {"output_attentions": full * LLAVA_7B["bytes"] / 2**20, "kept": kept * 4 / 2**20}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=8, help="LLaVA-1.5 widths divided by this")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--images", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    shape = llava_15_shapes(args.scale)
    work = Path(tempfile.mkdtemp(prefix="vlm-speed-"))
    folder = random_llava_folder(work / "llava", CLASSNAMES, shape)
    encoder, cfg = encoder_for(folder)
    ckpt = save_encoder(encoder, work / "tower", {"model_cfg": cfg, "name": "random-tower"})
    alone = floor_per_image(folder, encoder, args.batch, args.max_new_tokens, device)
    runs = []
    for n in sorted(args.images):
        config = resolve_config("vlm_attention", dict(
            encoders=[f"ckpt:{ckpt}"], dataset="shapes", dataset_args={"size": max(args.images)}, limit=n,
            batch_size=args.batch, device=args.device, out=str(work / f"out{n}"),
            options={"vlm": str(folder), "max_new_tokens": args.max_new_tokens}))
        with Timed(device) as floor:
            result = run(config).results[0]
        runs.append({"images": n, "task_s_per_image": result.duration_s / n, "floor_s_per_image": floor.seconds / n,
                     "ratio": result.duration_s / floor.seconds, "peak_mib": peak_bytes(device) / 2**20})
    largest = runs[-1]
    task, floor = largest["task_s_per_image"], largest["floor_s_per_image"]
    prompt = len(load_vlm(str(folder)).prompt_ids(class_question(CLASSNAMES)))
    figures = {
        "shape": vars(shape), "device": str(device), "batch": args.batch, "max_new_tokens": args.max_new_tokens,
        "floor_s_per_image": floor, "task_s_per_image": task, "ratio": task / floor, "runs": runs,
        "floor_alone_s_per_image": alone,
        "attention_per_image": attention_bytes(shape, prompt, args.max_new_tokens),
        "llava_7b_attention_per_image_mib": llava_7b_bytes(prompt + args.max_new_tokens, args.max_new_tokens),
    }
    print(f"{largest['images']} images: task {task * 1e3:.1f} ms/image, floor (its generate + row-keeping forward) "
          f"{floor * 1e3:.1f} ms/image: ratio task / floor = {task / floor:.3f} (target <= 1.2); the floor's calls "
          f"alone on random pixels: {alone * 1e3:.1f} ms/image")
    for r in runs:
        print(f"  {r['images']:>4} images: task {r['task_s_per_image'] * 1e3:.1f} ms/image, ratio {r['ratio']:.3f}, "
              f"peak {r['peak_mib']:.0f} MiB")
    print(f"attention per image, this model: {json.dumps(figures['attention_per_image'])}; LLaVA-1.5-7B: "
          f"{json.dumps(figures['llava_7b_attention_per_image_mib'])}")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
