"""The user cache: where it lives, build-once under a lock, and what an interrupted build leaves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import hidden_names

from aft_bench.core import cache


def test_cache_dir_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFT_BENCH_CACHE", str(tmp_path / "explicit"))
    assert cache.cache_dir() == tmp_path / "explicit" and (tmp_path / "explicit").is_dir()
    monkeypatch.delenv("AFT_BENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "aft_bench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "aft_bench"


def test_cached_builds_once_and_reuses(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(directory: Path) -> None:
        calls.append(directory)
        (directory / "artefact.txt").write_text("built")

    first = cache.cached("thing-1", build, root=tmp_path)
    second = cache.cached("thing-1", build, root=tmp_path)
    assert first == second == tmp_path / "thing-1"
    assert calls == [tmp_path / ".thing-1.partial"]  # built beside the target, then renamed into place
    assert (first / "artefact.txt").read_text() == "built"
    assert hidden_names(tmp_path) == []


def test_cached_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def broken(directory: Path) -> None:
        (directory / "half.txt").write_text("half")
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        cache.cached("thing-2", broken, root=tmp_path)
    assert not (tmp_path / "thing-2").exists() and hidden_names(tmp_path) == []
    path = cache.cached("thing-2", lambda d: (d / "ok.txt").write_text("ok"), root=tmp_path)
    assert sorted(p.name for p in path.iterdir()) == ["ok.txt"]


def _build_and_die(root: Path, key: str, resumable: bool) -> None:
    """Runs a build in another process that writes one file and is then killed with SIGKILL."""
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from aft_bench.core.cache import cached

        def build(directory):
            (directory / "step-1.txt").write_text("done")
            os.kill(os.getpid(), signal.SIGKILL)

        cached({key!r}, build, root=Path({str(root)!r}), resumable={resumable})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def test_build_killed_mid_way_is_redone_from_an_empty_directory(tmp_path: Path) -> None:
    _build_and_die(tmp_path, "thing-3", resumable=False)
    assert not (tmp_path / "thing-3").exists()
    assert (tmp_path / ".thing-3.partial" / "step-1.txt").is_file()  # what the killed process left
    seen: list[list[str]] = []

    def build(directory: Path) -> None:
        seen.append(sorted(p.name for p in directory.iterdir()))
        (directory / "whole.txt").write_text("whole")

    path = cache.cached("thing-3", build, root=tmp_path)
    assert seen == [[]]  # a non-resumable build never sees a half-built state
    assert sorted(p.name for p in path.iterdir()) == ["whole.txt"] and hidden_names(tmp_path) == []


def test_resumable_build_continues_after_a_kill(tmp_path: Path) -> None:
    _build_and_die(tmp_path, "thing-4", resumable=True)

    def build(directory: Path) -> None:
        assert (directory / "step-1.txt").read_text() == "done"  # the killed build's progress
        (directory / "step-2.txt").write_text("done")

    path = cache.cached("thing-4", build, root=tmp_path, resumable=True)
    assert sorted(p.name for p in path.iterdir()) == ["step-1.txt", "step-2.txt"] and hidden_names(tmp_path) == []


def test_resumable_build_keeps_its_progress_on_ctrl_c(tmp_path: Path) -> None:
    steps: list[int] = []

    def build(directory: Path) -> None:
        done = len(list(directory.glob("step-*")))
        for step in range(done, 3):
            if step == 1 and not steps:
                steps.append(step)
                raise KeyboardInterrupt
            (directory / f"step-{step}").write_text("done")

    with pytest.raises(KeyboardInterrupt):
        cache.cached("thing-5", build, root=tmp_path, resumable=True)
    assert sorted(p.name for p in (tmp_path / ".thing-5.partial").iterdir()) == ["step-0"]
    path = cache.cached("thing-5", build, root=tmp_path, resumable=True)
    assert sorted(p.name for p in path.iterdir()) == ["step-0", "step-1", "step-2"]


def test_cached_concurrent_callers_build_once(tmp_path: Path) -> None:
    calls: list[int] = []

    def slow_build(directory: Path) -> None:
        calls.append(1)
        time.sleep(0.2)
        (directory / "x").write_text("x")

    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(cache.cached("shared", slow_build, root=tmp_path)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and results == [tmp_path / "shared"] * 3


def test_cached_artefact_keeps_the_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = cache.cached("thing-6", lambda d: (d / "x").write_text("x"), root=tmp_path)
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o755  # a shared AFT_BENCH_CACHE stays readable (mkdtemp gives 0o700)


@pytest.mark.parametrize("key", ["", "../escape", "a/b", ".hidden"])
def test_cached_rejects_unsafe_keys(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="cache key"):
        cache.cached(key, lambda d: None, root=tmp_path)


def test_an_encoder_saved_into_the_cache_keeps_the_umask_permissions(tmp_path: Path) -> None:
    """safetensors writes its file private to the owner; atomic_write gives it the umask's mode back."""
    from conftest import TINY_VIT_CFG, make_encoder

    from aft_bench.models.loading import save_encoder

    encoder = make_encoder(TINY_VIT_CFG, "tiny")
    old = os.umask(0o022)
    try:
        folder = cache.cached("enc-1", lambda d: save_encoder(encoder, d / "e.safetensors", encoder.card),
                              root=tmp_path)
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {"e.safetensors": 0o644, "e.json": 0o644}
