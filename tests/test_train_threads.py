"""CPU threads for training: the idle CPUs by default, a fixed count on request, the setting restored."""

from __future__ import annotations

import logging

import pytest
import torch

from aft_bench.training.threads import auto_threads, use_threads


@pytest.mark.parametrize(("cpus", "load", "processes", "expected"), [
    (2, 0.1, 1, 2),  # idle: every CPU
    (2, 1.3, 1, 1),  # one CPU busy elsewhere: a loaded machine gets one thread, not two fighting for one core
    (2, 7.0, 1, 1),  # overloaded: still one
    (16, 3.9, 1, 13),
    (16, 0.0, 4, 4),  # four torchrun ranks share the CPUs
])
def test_auto_threads_counts_the_cpus_not_already_busy(cpus: int, load: float, processes: int, expected: int) -> None:
    assert auto_threads(cpus, load, processes) == expected


def test_use_threads_sets_logs_and_restores(caplog: pytest.LogCaptureFixture) -> None:
    before = torch.get_num_threads()
    with caplog.at_level(logging.INFO, logger="aft_bench.training.threads"), use_threads(1, "fitting") as threads:
        assert threads == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    assert "fitting on 1 CPU thread(s)" in caplog.text
    with pytest.raises(ValueError, match="threads=0"):
        with use_threads(0, "x"):
            pass
