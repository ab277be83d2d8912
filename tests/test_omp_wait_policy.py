"""Importing aft_bench makes idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE) unless the user chose a policy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SHOW = "import aft_bench, os; print(os.environ['OMP_WAIT_POLICY'])"


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_policy_is_set_only_when_the_environment_has_none(given: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    shown = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == expected


def test_importing_aft_bench_loads_no_torch() -> None:
    """The policy must be in the environment before torch's OpenMP runtime starts: importing the package (first, in
    the CLI and in pytest through ``-p aft_bench``) must not load torch itself."""
    assert "torch" not in subprocess.run([sys.executable, "-c", "import aft_bench, sys; print(sorted(sys.modules))"],
                                         capture_output=True, text=True, check=True).stdout.split("'")
