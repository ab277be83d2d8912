"""Loading workers by default: forked after the parent ran OpenMP-parallel torch operators they neither hang nor
change a pixel, run on one torch thread, and a run's unset ``num_workers`` means the available cores."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.data import get_worker_info

from aft_bench.data.base import Sample
from aft_bench.evaluation import streaming
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.streaming import BadSamples, stream

FORK_AFTER_OPENMP = textwrap.dedent("""
    import torch
    from torch.utils.data import get_worker_info
    from aft_bench.data.base import Sample
    from aft_bench.evaluation.streaming import BadSamples, stream

    class TorchOps:
        # every load runs torch operators large enough to be split across threads
        def ids(self):
            return [str(i) for i in range(8)]

        def load(self, sample_id):
            g = torch.Generator().manual_seed(int(sample_id))
            x = torch.randn(3, 256, 256, generator=g)
            image = torch.sigmoid(x.exp().sin() + (x[0] @ x[1])[None] / 256)
            info = get_worker_info()
            where = f"{info.id if info else 'main'}:{torch.get_num_threads()}"
            return Sample(id=sample_id, image=image, prompt=where)

    torch.set_num_threads(2)
    x = torch.randn(4_000_000)
    assert torch.get_num_threads() == 2 and float((x.exp() + x.sin()).sum()) == float((x.exp() + x.sin()).sum())
    _ = torch.randn(512, 512) @ torch.randn(512, 512)  # OpenMP-parallel in this process before any fork
    data = TorchOps()
    main = list(stream(data, data.ids(), batch_size=2, policy=BadSamples(), num_workers=0, progress=False))
    forked = list(stream(data, data.ids(), batch_size=2, policy=BadSamples(), num_workers=2, progress=False))
    assert all(torch.equal(a.batch.images, b.batch.images) for a, b in zip(main, forked, strict=True))
    assert {p for c in main for p in c.batch.prompts} == {"main:2"}
    assert {p for c in forked for p in c.batch.prompts} == {"0:1", "1:1"}, [c.batch.prompts for c in forked]
    print("ok")
""")


def test_forked_workers_after_openmp_in_the_parent_finish_with_the_same_pixels() -> None:
    # in a fresh interpreter (the parent's OpenMP state is what matters), under a timeout: a hang fails the test
    done = subprocess.run([sys.executable, "-c", FORK_AFTER_OPENMP], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


class WhereLoaded:
    """Six tiny samples whose prompt says which worker loaded them (``main`` in this process)."""

    def ids(self) -> list[str]:
        return [str(i) for i in range(6)]

    def load(self, sample_id: str) -> Sample:
        info = get_worker_info()
        image = torch.full((3, 4, 4), int(sample_id) / 8)
        return Sample(id=sample_id, image=image, prompt="main" if info is None else f"worker {info.id}")


def test_unset_workers_mean_the_default_and_load_the_same_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_config("pointing_game", {}).num_workers is None  # the run's default: not given
    assert resolve_config("pointing_game", {"num_workers": 0}).num_workers == 0
    assert 1 <= streaming.default_workers() <= streaming.MAX_WORKERS
    monkeypatch.setattr(streaming, "default_workers", lambda: 2)
    data = WhereLoaded()
    main = list(stream(data, data.ids(), batch_size=2, policy=BadSamples(), num_workers=0, progress=False))
    default = list(stream(data, data.ids(), batch_size=2, policy=BadSamples(), num_workers=None, progress=False))
    assert [c.batch.ids for c in default] == [c.batch.ids for c in main]
    assert all(torch.equal(a.batch.images, b.batch.images) for a, b in zip(main, default, strict=True))
    assert {p for c in default for p in c.batch.prompts} == {"worker 0", "worker 1"}
    one_batch = list(stream(data, data.ids()[:2], batch_size=2, policy=BadSamples(), num_workers=None,
                            progress=False))
    assert one_batch[0].batch.prompts == ["main", "main"]  # a single batch loads in this process


def test_a_negative_worker_count_is_refused() -> None:
    with pytest.raises(ValueError, match="--num-workers -1"):
        resolve_config("pointing_game", {"num_workers": -1})
