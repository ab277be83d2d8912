"""Two processes running the same command into one folder share the work through the pair's store lock: every
sample is scored once and both report the same numbers; a run with another store never waits for that lock."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from filelock import FileLock

from aft_bench.attributions.simple_gradient import SimpleGradient
from aft_bench.core.registries import ATTRIBUTIONS
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.runner import run
from aft_bench.results.locks import LOCKS_DIR
from aft_bench.results.store import SampleStore

LIMIT = 6


def _config(tiny48_ckpt: str, out: Path, **changes):
    overrides = dict(encoders=[tiny48_ckpt], attributions=["simple_gradient", "gradcam"], limit=LIMIT,
                     batch_size=2, out=str(out), device="cpu")
    overrides.update(changes)
    return resolve_config("pointing_game", overrides)


class _Slow(SimpleGradient):
    """Simple gradient that takes its time, so that two runs started together overlap."""

    def attribute(self, encoder, images, target):
        time.sleep(0.3)
        return super().attribute(encoder, images, target)


def _worker(index: int, config, log_dir: Path, start: threading.Barrier) -> None:
    torch.set_num_threads(1)
    original = SampleStore.append

    def logged(self: SampleStore, records) -> None:  # the records this process computed (one process: no shards)
        records = list(records)
        with open(log_dir / f"computed{index}.txt", "a") as fh:
            fh.writelines(f"{self.path.name.split('__')[1]} {r['id']}\n" for r in records)
        original(self, records)

    SampleStore.append = logged
    start.wait(timeout=60)
    outcome = run(config)
    numbers = {r.attribution: r.numbers() for r in outcome.results}
    (log_dir / f"numbers{index}.json").write_text(json.dumps(numbers))


def test_two_processes_with_the_same_command_score_each_sample_once(registered, tiny48_ckpt: str,
                                                                    tmp_path: Path) -> None:
    registered(ATTRIBUTIONS, "simple_gradient", _Slow)  # the forked children inherit the registration
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    start = mp.get_context("fork").Barrier(2)
    mp.start_processes(_worker, args=(_config(tiny48_ckpt, tmp_path / "out"), log_dir, start), nprocs=2,
                       join=True, start_method="fork")
    lines = [line for i in (0, 1) if (log_dir / f"computed{i}.txt").exists()
             for line in (log_dir / f"computed{i}.txt").read_text().splitlines()]
    for attribution in ("simple_gradient", "gradcam"):
        ids = [line.split()[1] for line in lines if line.split()[0] == attribution]
        assert len(ids) == len(set(ids)) == LIMIT, attribution  # every sample once, by one of the two
    first, second = (json.loads((log_dir / f"numbers{i}.json").read_text()) for i in (0, 1))
    assert first == second and set(first) == {"simple_gradient", "gradcam"}


def test_a_held_lock_makes_the_same_run_wait_and_never_another(registered, tiny48_ckpt: str, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    config = _config(tiny48_ckpt, tmp_path, attributions=["gradcam"])
    first = run(config)
    locks = list((tmp_path / "pointing_game" / LOCKS_DIR).glob("*.lock"))
    assert len(locks) == 1
    held = FileLock(locks[0])
    held.acquire()
    try:
        other = run(_config(tiny48_ckpt, tmp_path, attributions=["gradcam"], seed=1))  # another store: no wait
        assert other.results and other.results[0].run_key != first.results[0].run_key
        outcome: list = []
        with caplog.at_level(logging.WARNING, logger="aft_bench.evaluation.task"):
            same = threading.Thread(target=lambda: outcome.append(run(config)))
            same.start()
            same.join(timeout=1.5)
            assert same.is_alive() and not outcome  # waiting for the lock
            assert "another process is scoring these samples" in caplog.text and str(locks[0]) in caplog.text
    finally:
        held.release()
    same.join(timeout=60)
    assert outcome and outcome[0].results[0].numbers() == first.results[0].numbers()
    assert outcome[0].reused == first.paths  # it read the finished store and repeated the stored result
