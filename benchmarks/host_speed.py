"""Host-side cost of an evaluation run, measured against the targets of issue 17, in one run.

On a generated ImageNet-S-format folder (``--images`` pairs of ``--size`` JPEG images and PNG masks,
:func:`aft_bench.data.imagenet_s.write_synthetic`), with one torch thread as a DataLoader worker runs:

- decode: ``ImageNetS.load`` per image (read, convert, resize image and mask to 224 px, uint8 levels);
- cached decode: ``ImageNetS.load`` through the sample cache (``--cache-samples``, filled by a first pass): what
  a later pass reads instead of decoding (not part of the host total, which is a first pass);
- collate: stacking the samples into batches (in a worker); float: ``Batch.to`` of those batches on the CPU, where
  the levels become float32 (on a GPU this runs on the device);
- metrics: the pointing game's ``score`` (all eight metrics and their chance levels) on 512 maps at 224 px;
- store: appending the records to a per-sample store;
- host work per image: decode + collate + float + metrics + store (target <= 8 ms);
- one pass: the data-loading time of a pointing-game run with 3 methods over that of a run with 1
  (target <= 1.2), on a cheap random-weight encoder at 224 px and cheap maps;
- workers: end-to-end images/s of that run with W workers over W x the 1-worker images/s (target >= 0.7), past the
  run's fixed costs (a run of all images minus a run of half of them, the least of two each), with the CPU seconds
  per image of the main process (m: model, maps, metrics, store) and of the workers (w: decode,
  collate). On a machine with no more cores than W, the main process and the workers share them, so the run can at
  best reach ``max(w, m) / (w + m)`` of W x the 1-worker rate (``worker_efficiency_bound``, printed: the 1-worker
  run already keeps both cores busy when w and m are close); on a GPU the main process's work is mostly on the
  device. So the loader alone is measured too: images/s that :func:`aft_bench.evaluation.streaming.stream` delivers
  with W workers to a consumer that only makes the pixels float, past its start, over W x its 1-worker rate
  (``loader_efficiency``).

Host figures are CPU seconds of this process (``time.process_time``, one thread), so that other work on a
shared machine inflates them less than wall time; the run figures are wall time. ``--before CHECKOUT`` measures
the same figures on another checkout of the project first (a copy of the code before a change, e.g. from
``git archive HEAD``), in a subprocess on the same folder, and prints after/before ratios; ``--json FILE`` writes
the figures. ``--profile`` prints cProfile's top functions of the host path (decode, metrics, store).

    git archive HEAD benchmark tasks metrics | tar -x -C /tmp/before
    python benchmarks/host_speed.py --before /tmp/before --profile
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aft_bench.attributions.base import Attribution, Target
from aft_bench.core.registries import ATTRIBUTIONS, DATASETS
from aft_bench.data.base import Batch
from aft_bench.data.imagenet_s import ImageNetS
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.runner import run
from aft_bench.evaluation.sample_task import Pair
from aft_bench.evaluation.streaming import BadSamples, stream
from aft_bench.models.backends.open_clip import OpenClipEncoder
from aft_bench.models.backends.open_clip_models import build_model, tokenizer_for
from aft_bench.models.encoder import Encoder
from aft_bench.models.loading import save_encoder
from aft_bench.results.store import SampleStore
from aft_bench.tasks.pointing_game import PointingGame, PointingGameOptions

SIZE = 224
METRIC_MAPS, METRIC_BATCH = 512, 64
CHEAP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": SIZE, "patch_size": 32, "width": 32, "layers": 1, "head_width": 16,
                   "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TARGETS = {"host_ms_per_image": ("<=", 8.0), "metrics_ms_per_image": ("<=", 5.0),
           "loading_3_over_1": ("<=", 1.2), "worker_efficiency": (">=", 0.7), "loader_efficiency": (">=", 0.7)}


class CheapMap(Attribution):
    """A map that costs next to nothing (the image's mean channel), so a run measures the host path."""

    name = "cheap"

    def attribute(self, encoder: Encoder, images: Tensor, target: Target) -> Tensor:
        return images.mean(dim=1)


class TimedImageNetS(ImageNetS):
    """ImageNet-S that adds the seconds spent in :meth:`load` to a file (works across worker processes)."""

    log_path: Path | None = None

    def load(self, sample_id: str):  # noqa: ANN201 - the parent's Sample
        start = time.perf_counter()
        sample = super().load(sample_id)
        if self.log_path is not None:
            with open(self.log_path, "a") as fh:
                fh.write(f"{time.perf_counter() - start}\n")
        return sample


def _ms(seconds: float, n: int) -> float:
    return seconds / n * 1e3


def measure_host(root: Path, profile: bool) -> dict[str, float]:
    """Per-image milliseconds of decode, collate, metrics and store on one thread."""
    dataset = ImageNetS(root, (SIZE, SIZE))
    ids = dataset.ids()
    dataset.load(ids[0])  # warm-up (imports, tables)
    profiler = cProfile.Profile() if profile else None
    with profiler or contextlib.nullcontext():
        start = time.process_time()
        samples = [dataset.load(i) for i in ids]
        decode = time.process_time() - start
        start = time.process_time()
        batches = [Batch.collate(samples[i : i + METRIC_BATCH]) for i in range(0, len(samples), METRIC_BATCH)]
        collate = time.process_time() - start
        start = time.process_time()
        floats = [b.to("cpu") for b in batches]
        to_float = time.process_time() - start
        del floats
        config = resolve_config("pointing_game", {"dataset": "imagenet_s", "data_root": str(root)})
        ctx = RunContext.local(config, options=PointingGameOptions())
        pair = Pair("cheap", None, "cheap", None, dataset)  # type: ignore[arg-type]
        task = PointingGame()
        generator = torch.Generator().manual_seed(0)
        masks = torch.cat([b.masks for b in batches])
        chunks = []
        for i in range(0, METRIC_MAPS, METRIC_BATCH):
            index = torch.arange(i, i + METRIC_BATCH) % masks.shape[0]
            chunks.append(Batch(ids=[ids[j] for j in index.tolist()], images=torch.empty(0),
                                prompts=[""] * METRIC_BATCH, labels=torch.zeros(METRIC_BATCH, dtype=torch.long),
                                masks=masks[index]))
        maps = [torch.rand(METRIC_BATCH, SIZE, SIZE, generator=generator) for _ in chunks]
        start = time.process_time()
        records = [task.score(ctx, pair, m, b) for m, b in zip(maps, chunks, strict=True)]
        metrics = time.process_time() - start
        with tempfile.TemporaryDirectory() as tmp:
            store = SampleStore(Path(tmp) / "store.jsonl")
            start = time.process_time()
            for batch_records, b in zip(records, chunks, strict=True):
                store.append({"id": f"{k}-{sample_id}", **r} for k, (sample_id, r) in
                             enumerate(zip(b.ids, batch_records, strict=True)))
            stored = time.process_time() - start
    out = {"decode_ms_per_image": _ms(decode, len(ids)), "collate_ms_per_image": _ms(collate, len(ids)),
           "float_ms_per_image": _ms(to_float, len(ids)), "metrics_ms_per_image": _ms(metrics, METRIC_MAPS),
           "store_ms_per_image": _ms(stored, METRIC_MAPS)}
    out["host_ms_per_image"] = sum(out.values())
    out["cached_decode_ms_per_image"] = _ms(_cached_decode(dataset, ids), len(ids))
    if profiler is not None:
        print("cProfile of the host path (decode, collate, metrics, store), top 5 by own time:")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(5)
    return out


def _cached_decode(dataset: ImageNetS, ids: list[str]) -> float:
    """CPU seconds of loading ``ids`` through a sample cache that a first pass filled (NaN for a ``--before`` checkout
    without the cache)."""
    try:
        from aft_bench.data.sample_cache import SampleCache
    except ImportError:
        return float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        cache = SampleCache(dataset, (SIZE, SIZE), folder=tmp)
        for i in ids:
            cache.load(i)
        start = time.process_time()
        for i in ids:
            cache.load(i)
        return time.process_time() - start


@contextlib.contextmanager
def _registered(log_path: Path) -> Iterator[None]:
    TimedImageNetS.log_path = log_path
    with contextlib.ExitStack() as stack:
        for name in ("cheap_a", "cheap_b", "cheap_c"):
            stack.enter_context(ATTRIBUTIONS.temporary(name, CheapMap))
        stack.enter_context(DATASETS.temporary("imagenet_s_timed", TimedImageNetS))
        yield


def _encoder_spec(folder: Path) -> str:
    torch.manual_seed(0)
    model = build_model(copy.deepcopy(CHEAP_CFG))
    encoder = OpenClipEncoder(model, tokenizer_for(CHEAP_CFG), name="cheap224", card={"model_cfg": CHEAP_CFG})
    path = save_encoder(encoder, folder / "cheap224", {"model_cfg": CHEAP_CFG, "name": "cheap224"})
    return f"ckpt:{path}"


def _run(root: Path, folder: Path, spec: str, methods: list[str], workers: int, tag: str, limit: int | None = None
         ) -> tuple[float, float, float, float]:
    """(wall seconds of the run, seconds spent loading samples, CPU seconds of this process, CPU seconds of its
    finished workers) of a fresh pointing-game run (of ``limit`` images, default all)."""
    log_path = folder / f"{tag}.load.txt"
    log_path.unlink(missing_ok=True)
    config = resolve_config("pointing_game", {
        "encoders": [spec], "attributions": methods, "dataset": "imagenet_s_timed", "data_root": str(root),
        "batch_size": 32, "num_workers": workers, "out": str(folder / tag), "fresh": True, "limit": limit})
    with _registered(log_path):
        children = _children_cpu()
        cpu, start = time.process_time(), time.perf_counter()
        run(config)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        children = _children_cpu() - children
    loading = sum(float(x) for x in log_path.read_text().split()) if log_path.exists() else 0.0
    return wall, loading, cpu, children


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children (the loader's workers, once joined)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _loader_rate(root: Path, workers: int) -> float:
    """Images/s that :func:`stream` delivers with ``workers`` to a consumer that only makes the pixels float, past its
    start (forking the workers, the first batches): the difference between a pass over every image twice and one
    over every image four times, the least of two each."""
    dataset = ImageNetS(root, (SIZE, SIZE))

    def seconds(ids: list[str]) -> float:
        start = time.perf_counter()
        for _ in stream(dataset, ids, batch_size=32, policy=BadSamples(), num_workers=workers, progress=False):
            pass
        return time.perf_counter() - start

    short, long = (min(seconds(dataset.ids() * repeats) for _ in range(2)) for repeats in (2, 4))
    return 2 * len(dataset) / (long - short)


def _steady(root: Path, folder: Path, spec: str, workers: int, n: int) -> tuple[float, float, float]:
    """(images/s, main CPU ms per image, worker CPU ms per image) of a cheap run past its fixed costs (loading the
    encoder, starting workers, writing the leaderboard): the differences between a run of all ``n`` images and one
    of ``n // 2``, each the least of two runs."""
    half, full = ([_run(root, folder, spec, ["cheap_a"], workers, f"w{workers}-{limit}-{k}", limit)
                   for k in range(2)] for limit in (n // 2, n))
    extra = n - n // 2
    wall, cpu, children = (min(r[i] for r in full) - min(r[i] for r in half) for i in (0, 2, 3))
    return extra / wall, _ms(cpu, extra), _ms(children, extra)


def measure_runs(root: Path, workers: int) -> dict[str, float]:
    """Data loading of 3 methods over 1, and the worker scaling of a cheap run."""
    n = len(ImageNetS(root, (SIZE, SIZE)))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = _encoder_spec(folder)
        _, load1, _, _ = _run(root, folder, spec, ["cheap_a"], 0, "one")
        _, load3, _, _ = _run(root, folder, spec, ["cheap_a", "cheap_b", "cheap_c"], 0, "three")
        rate1, main_ms, worker_ms = _steady(root, folder, spec, 1, n)
        ratew, _, _ = _steady(root, folder, spec, workers, n)
    loader1, loaderw = _loader_rate(root, 1), _loader_rate(root, workers)
    figures = {"loading_1_method_s": load1, "loading_3_methods_s": load3, "loading_3_over_1": load3 / load1,
               "images_per_s_1_worker": rate1, f"images_per_s_{workers}_workers": ratew,
               "worker_efficiency": ratew / (workers * rate1), "main_cpu_ms_per_image": main_ms,
               "worker_cpu_ms_per_image": worker_ms}
    if (os.cpu_count() or 1) <= workers:  # the main process and the workers share the cores
        figures["worker_efficiency_bound"] = max(main_ms, worker_ms) / (main_ms + worker_ms)
    return {**figures, "loader_images_per_s_1_worker": loader1, f"loader_images_per_s_{workers}_workers": loaderw,
            "loader_efficiency": loaderw / (workers * loader1), "workers": workers}


def _before(args: argparse.Namespace, root: Path, tmp: Path) -> dict[str, Any]:
    """The figures of the checkout ``args.before``: this script in a subprocess that imports that code."""
    shim = tmp / "before" / "aft_bench"
    shim.mkdir(parents=True)
    for entry in (args.before / "benchmark").iterdir():
        if entry.name not in ("tasks", "metrics"):
            (shim / entry.name).symlink_to(entry.resolve())
    for sub in ("tasks", "metrics"):
        (shim / sub).symlink_to((args.before / sub).resolve())
    out = tmp / "before.json"
    command = [sys.executable, __file__, "--root", str(root), "--workers", str(args.workers), "--json", str(out)]
    env = {**os.environ, "PYTHONPATH": str(shim.parent)}
    subprocess.run(command + (["--skip-runs"] if args.skip_runs else []), check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="image/mask pairs to generate (default 300)")
    parser.add_argument("--size", type=int, nargs=2, default=(375, 500), metavar=("H", "W"))
    parser.add_argument("--root", type=Path, help="reuse (or create) the generated folder here")
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 2),
                        help="W of the worker-scaling figure (default: the cores, at most 2)")
    parser.add_argument("--skip-runs", action="store_true", help="host path only (no end-to-end runs)")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top 5 of the host path")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--before", type=Path, metavar="CHECKOUT",
                        help="measure a checkout of the code before a change first and print after/before ratios")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, 1 torch thread")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp) / "ImageNetS10"
        if not (root / "validation").is_dir():
            from aft_bench.data.imagenet_s import write_synthetic

            write_synthetic(root, args.images, tuple(args.size))
        before = _before(args, root, Path(tmp)) if args.before else {}
        figures: dict[str, Any] = measure_host(root, args.profile)
        if not args.skip_runs:
            figures.update(measure_runs(root, args.workers))
    print(f"{'figure':<28} {'value':>10} {'before':>10} {'after/before':>12}  target")
    for name, value in figures.items():
        old = before.get(name)
        ratio = f"{value / old:12.3f}" if isinstance(old, int | float) and old else " " * 12
        target = " ".join(str(t) for t in TARGETS.get(name, ()))
        print(f"{name:<28} {value:10.3f} {old if old is not None else float('nan'):10.3f} {ratio}  {target}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
