"""Sharded evaluation (torchrun semantics, two gloo processes on CPU): every rank scores its own share
of the samples, rank 0 merges by sample id, and the numbers are those of one process."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from aft_bench.attributions.simple_gradient import SimpleGradient
from aft_bench.core import distributed as dist_utils
from aft_bench.core.registries import ATTRIBUTIONS
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.runner import run
from aft_bench.results.files import read_results
from aft_bench.results.store import SampleStore


def _config(tiny48_ckpt: str, out: Path, **changes):
    overrides = dict(encoders=[tiny48_ckpt], attributions=["simple_gradient", "gradcam"], limit=11, batch_size=4,
                     out=str(out), device="cpu")
    overrides.update(changes)
    return resolve_config("pointing_game", overrides)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, config, log_dir: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    original = SampleStore.append

    def logged(self: SampleStore, records) -> None:  # which ids this rank scored, for the test to check
        records = list(records)
        with open(log_dir / f"rank{rank}.txt", "a") as fh:
            fh.writelines(f"{self.path.name} {r['id']}\n" for r in records)
        original(self, records)

    SampleStore.append = logged
    outcome = run(config)
    if rank:
        assert outcome.paths == [] and outcome.leaderboard is None and outcome.markdown == ""
    else:
        assert len(outcome.paths) == 2 and outcome.leaderboard is not None


def _stores(out: Path) -> dict[str, dict[str, dict]]:
    folder = out / "pointing_game" / "samples"
    return {p.name.split("__")[1]: SampleStore(p)._records for p in folder.glob("*.jsonl")}


def test_two_ranks_share_the_samples_and_match_one_process(tiny48_ckpt: str, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    # fork: the children inherit the imported modules (spawn would re-import torch and open_clip).
    mp.start_processes(_worker, args=(2, _free_port(), _config(tiny48_ckpt, tmp_path / "two"), log_dir), nprocs=2,
                       join=True, start_method="fork")
    run(_config(tiny48_ckpt, tmp_path / "one"))

    scored = {rank: (log_dir / f"rank{rank}.txt").read_text().split("\n")[:-1] for rank in (0, 1)}
    for attribution in ("simple_gradient", "gradcam"):
        per_rank = [{line.split()[1] for line in scored[r] if f"__{attribution}__" in line and f".rank{r}." in line}
                    for r in (0, 1)]  # appends to each rank's own file (rank 0 also appends when merging)
        assert sorted(map(len, per_rank)) == [5, 6] and not per_rank[0] & per_rank[1]  # 11 split, no padding

    one, two = _stores(tmp_path / "one"), _stores(tmp_path / "two")
    assert one.keys() == two.keys() == {"simple_gradient", "gradcam"}
    for attribution, records in one.items():
        assert records.keys() == two[attribution].keys() and len(records) == 11
        for sample_id, record in records.items():
            for metric, value in record["scores"].items():
                # Other batches, other float rounding (~1e-7 in the maps): AP ranks pixels, so one swapped pair of
                # near-equal pixels can move an image's AP by about one over its number of pixels.
                tolerance = {"abs": 0.01} if metric.startswith("ap") else {"rel": 1e-5, "abs": 1e-9}
                assert two[attribution][sample_id]["scores"][metric] == pytest.approx(value, **tolerance), metric
    assert not list((tmp_path / "two" / "pointing_game" / "samples").glob("*.rank*"))  # merged and removed

    results = {r.attribution: r for r in read_results(tmp_path / "two")}
    for result in read_results(tmp_path / "one"):
        sharded = results[result.attribution]
        assert sharded.n == result.n == 11 and sharded.run_key == result.run_key
        for metric, summary in result.metrics.items():
            tolerance = {"abs": 1.0} if metric.startswith("ap") else {"rel": 1e-5}  # percent; see above
            assert sharded.metrics[metric]["mean"] == pytest.approx(summary["mean"], **tolerance), metric
    assert (tmp_path / "two" / "pointing_game" / "leaderboard.md").read_text().count("tiny48") == 2


class _Counting(SimpleGradient):
    calls = 0

    def attribute(self, encoder, images, target):
        type(self).calls += images.shape[0]
        return super().attribute(encoder, images, target)


def test_store_files_of_a_killed_sharded_run_are_merged_first(registered, tiny48_ckpt: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    first = run(_config(tiny48_ckpt, tmp_path, attributions=["simple_gradient"]))
    samples = next((tmp_path / "pointing_game" / "samples").glob("*.jsonl"))
    lines = samples.read_text().splitlines()
    # As a killed 2-rank run leaves them: some merged records, each rank's own file, 2 samples not done.
    samples.write_text("\n".join(lines[:3]) + "\n")
    samples.with_name(f"{samples.stem}.rank0.jsonl").write_text("\n".join(lines[3:7]) + "\n")
    samples.with_name(f"{samples.stem}.rank1.jsonl").write_text("\n".join(lines[7:9]) + "\n")
    registered(ATTRIBUTIONS, "simple_gradient", _Counting)
    _Counting.calls = 0
    again = run(_config(tiny48_ckpt, tmp_path, attributions=["simple_gradient"]))
    assert _Counting.calls == 2  # only the samples no file held
    assert sorted(samples.parent.iterdir()) == [samples]
    assert {json.loads(line)["id"] for line in samples.read_text().splitlines()} == \
        {json.loads(line)["id"] for line in lines}
    for metric, summary in first.results[0].metrics.items():  # recomputed in another batch: float noise only
        assert again.results[0].metrics[metric]["mean"] == pytest.approx(summary["mean"], rel=1e-7)
        assert again.results[0].metrics[metric]["n"] == summary["n"] == 11


def test_a_task_that_cannot_shard_refuses_torchrun(tiny48_ckpt: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    job = dist_utils.DistContext(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    monkeypatch.setattr(dist_utils, "setup", lambda device="auto": job)
    config = resolve_config("roar", dict(encoders=[tiny48_ckpt], attributions=["simple_gradient"], limit=4,
                                         out=str(tmp_path)))
    with pytest.raises(ValueError, match="start it without torchrun.*pointing_game"):
        run(config)
    assert not (tmp_path / "roar").exists()


def test_devices_are_checked_before_any_work() -> None:
    assert dist_utils.resolve_device("cpu", 0) == torch.device("cpu")
    with pytest.raises(ValueError, match="'cude' is not a device"):
        dist_utils.resolve_device("cude", 0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            dist_utils.resolve_device("cuda", 0)
        assert dist_utils.resolve_device("auto", 0) == torch.device("cpu")
