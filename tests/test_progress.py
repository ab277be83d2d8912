"""The progress policy: a tqdm bar on a terminal, periodic INFO log lines otherwise."""

from __future__ import annotations

import io
import logging

import pytest
from tqdm.auto import tqdm

from aft_bench.core.progress import LogProgress, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_terminal_gets_a_live_tqdm_bar() -> None:
    stream = _Terminal()
    with progress_bar(total=3, desc="work", stream=stream) as bar:
        assert isinstance(bar, tqdm)
        bar.update(3)
    assert "work" in stream.getvalue()


def test_a_file_gets_log_lines_every_interval_and_no_carriage_returns(caplog: pytest.LogCaptureFixture) -> None:
    stream, clock = io.StringIO(), _Clock()
    assert isinstance(progress_bar(total=2, stream=stream), LogProgress)
    bar = LogProgress(total=10, desc="train aft", unit="step", interval=5.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="aft_bench.core.progress"):
        for second in range(10):
            clock.now = float(second + 1)
            bar.set_postfix(loss="0.5")
            bar.update(1)
        bar.close()
        bar.close()  # once only
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["train aft: 5/10 steps (1 step/s, 5 s elapsed, ~5 s left) loss=0.5",
                     "train aft: 10/10 steps (1 step/s, 10 s elapsed) loss=0.5"]  # not repeated by close
    assert stream.getvalue() == ""


def test_iterating_a_log_progress_counts_and_reports_at_the_end(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="aft_bench.core.progress"):
        items = list(progress_bar(range(4), desc="render", unit="chunk", stream=io.StringIO(), initial=0))
    assert items == [0, 1, 2, 3]
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["render: 4/4 chunks"]


def test_disabled_is_silent_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="aft_bench.core.progress"):
        bar = progress_bar(total=3, enabled=False, stream=stream)
        bar.update(3)
        bar.close()
    assert caplog.records == [] and stream.getvalue() == ""


def test_a_resumed_loop_reports_from_its_initial_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    bar = LogProgress(total=8, desc="t", initial=6, interval=1.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="aft_bench.core.progress"):
        clock.now = 2.0
        bar.update(2)
    assert caplog.records[0].getMessage() == "t: 8/8 its (1 it/s, 2 s elapsed)"
