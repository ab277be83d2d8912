"""One pass over the data per encoder (each sample loaded once for all the run's methods, resume per pair) and
the streaming loop's workers (same batches as in-process loading, bounded by the number of batches)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from aft_bench.attributions.simple_gradient import SimpleGradient
from aft_bench.core.registries import ATTRIBUTIONS, DATASETS
from aft_bench.data.base import DataError, Sample
from aft_bench.data.shapes import ShapesDataset
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.runner import run
from aft_bench.evaluation.streaming import MAX_WORKERS, BadSamples, default_workers, stream
from aft_bench.results.store import SampleStore

LOADS: Counter[str] = Counter()


class _Counted(ShapesDataset):
    """Shapes that counts the loads of each sample (in this process: the runs below load without workers)."""

    def load(self, sample_id: str) -> Sample:
        LOADS[sample_id] += 1
        return super().load(sample_id)


class _Dies(SimpleGradient):
    """Simple Gradient that stops the run at its second batch, once."""

    armed = True

    def attribute(self, encoder, images, target):  # noqa: ANN001, ANN201
        type(self).calls = getattr(type(self), "calls", 0) + 1
        if type(self).armed and type(self).calls == 2:
            raise KeyboardInterrupt
        return super().attribute(encoder, images, target)


def _config(ckpt: str, out: Path, methods: list[str], **changes):  # noqa: ANN202
    overrides = dict(encoders=[ckpt], attributions=methods, dataset="counted", limit=8, batch_size=4, out=str(out),
                     num_workers=0)  # loads counted in this process
    return resolve_config("pointing_game", {**overrides, **changes})


def test_three_methods_load_each_sample_once_and_score_as_three_runs(registered, tiny48_ckpt: str,
                                                                    tmp_path: Path) -> None:
    registered(DATASETS, "counted", _Counted)
    LOADS.clear()
    together = run(_config(tiny48_ckpt, tmp_path / "one", ["simple_gradient", "gradcam", "random"])).results
    assert len(LOADS) == 8 and set(LOADS.values()) == {1}  # one pass, whatever the number of methods
    assert [r.attribution for r in together] == ["simple_gradient", "gradcam", "random"]
    for result in together:
        alone = run(_config(tiny48_ckpt, tmp_path / result.attribution, [result.attribution])).results[0]
        assert alone.n == result.n == 8 and alone.run_key == result.run_key
        for name, summary in alone.metrics.items():
            assert result.metrics[name]["mean"] == pytest.approx(summary["mean"], rel=1e-9, abs=1e-12), name
        assert result.duration_s >= 0


def test_resume_loads_only_what_some_pair_still_needs(registered, tiny48_ckpt: str, tmp_path: Path) -> None:
    registered(DATASETS, "counted", _Counted)
    registered(ATTRIBUTIONS, "dies", _Dies)
    out = tmp_path / "run"
    run(_config(tiny48_ckpt, out, ["gradcam"]))  # gradcam complete; dies has nothing yet
    _Dies.calls, _Dies.armed = 0, True
    with pytest.raises(KeyboardInterrupt):  # dies stops in its second batch: its first 4 samples are stored
        run(_config(tiny48_ckpt, out, ["gradcam", "dies"]))
    folder = out / "pointing_game" / "samples"
    stores = {path.name.split("__")[1]: SampleStore(path) for path in folder.glob("*.jsonl")}
    assert len(stores["gradcam"]) == 8 and len(stores["dies"]) == 4
    LOADS.clear()
    _Dies.calls, _Dies.armed = 0, False
    results = run(_config(tiny48_ckpt, out, ["gradcam", "dies"])).results
    assert sum(LOADS.values()) == 4 and set(LOADS.values()) == {1}  # only the 4 samples dies lacks, once each
    assert [r.n for r in results] == [8, 8] and _Dies.calls == 1


class _Flaky(ShapesDataset):
    """Shapes whose third sample cannot be read."""

    def load(self, sample_id: str) -> Sample:
        if self.ids().index(sample_id) == 2:
            raise DataError(f"shapes/{sample_id}.png: unreadable or corrupt image; re-generate it")
        return super().load(sample_id)


@pytest.mark.parametrize("workers", [2, None])
def test_workers_stream_the_same_batches(workers: int | None) -> None:
    dataset = _Flaky(image_size=(32, 32), size=10)
    ids = dataset.ids()
    chunks = {w: list(stream(dataset, ids, batch_size=3, policy=BadSamples("skip"), num_workers=w, progress=False))
              for w in (0, workers)}
    for a, b in zip(chunks[0], chunks[workers], strict=True):
        assert a.bad == b.bad and a.batch.ids == b.batch.ids
        assert torch.equal(a.batch.images, b.batch.images) and torch.equal(a.batch.masks, b.batch.masks)
    assert [len(c.bad) for c in chunks[workers]] == [1, 0, 0, 0]


def test_default_workers_are_the_cores_capped() -> None:
    assert 1 <= default_workers() <= MAX_WORKERS
    assert default_workers() <= len(__import__("os").sched_getaffinity(0))
