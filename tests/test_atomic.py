"""Atomic writes: complete files or none, old content kept on failure, umask permissions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import hidden_names

from aft_bench.core.atomic import atomic_write, atomic_write_text


def test_writes_through_a_temp_file_beside_the_target(tmp_path: Path) -> None:
    seen: list[Path] = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        assert tmp.parent == tmp_path / "deep" and tmp.name.startswith(".out.bin.") and tmp.is_file()
        assert not (tmp_path / "deep" / "out.bin").exists()  # nothing under the final name yet
        tmp.write_bytes(b"\x00\x01")

    path = atomic_write(tmp_path / "deep" / "out.bin", write)
    assert path == tmp_path / "deep" / "out.bin" and path.read_bytes() == b"\x00\x01"
    assert len(seen) == 1 and not seen[0].exists() and hidden_names(path.parent) == []


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "result.json", '{"old": 1}')

    def half(tmp: Path) -> None:
        tmp.write_text('{"new": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half)
    assert path.read_text() == '{"old": 1}' and hidden_names(tmp_path) == []


def test_replaces_an_existing_file(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "t.txt", "first")
    atomic_write_text(tmp_path / "t.txt", "zweite ✓")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "zweite ✓"


def test_permissions_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "shared.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by the group, as a plain open() would make it
