"""Running a paper suite: its roles given encoders, its entries run (or reused) through the compare's stage runner.

:func:`assign_roles` gives each role of the suite an encoder spec: the command line's ``--encoders`` (in the
suite's role order, or ``ROLE=SPEC`` such as ``aft@4=ckpt:/runs/aft4``), else, on the embedded world (no
``--encoders`` and no ``--dataset``), each role's toy encoder; a role left without one keeps empty cells.
:func:`measure` resolves the suite into the compare's plan (:func:`aft_bench.apps.compare.plan.build_plan`: every name
and option checked before any model loads) and runs one stage per (entry, encoder) with
:class:`aft_bench.apps.compare.stages.StageRunner`, so a second report reuses every stored stage and computes nothing.
Each result's headline metrics become :class:`Measurement` records, which the tables lay out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aft_bench.apps.compare.plan import EntryPlan, build_plan
from aft_bench.apps.compare.stages import StageRunner
from aft_bench.apps.paper.spec import PaperSuite, Role
from aft_bench.results.result import RunResult


@dataclass(frozen=True)
class Measurement:
    """One measured number: a headline metric of one result of one entry, and the role whose encoder gave it.

    Attributes:
        entry: The suite entry's label. role: The encoder's role. result: The stored result. metric: The metric.
    """

    entry: str
    role: Role
    result: RunResult
    metric: str

    @property
    def summary(self) -> Mapping[str, Any]:
        return self.result.metrics.get(self.metric) or {}

    @property
    def value(self) -> float | None:
        mean = self.summary.get("mean")
        return None if mean is None else float(mean)

    @property
    def n(self) -> int:
        """The samples behind the number (the metric's own count where the result records one)."""
        return int(self.summary.get("n") or self.result.n)

    def row_value(self, key: str) -> Any:
        """The value of the reference row key ``key`` (:data:`aft_bench.apps.paper.references.ROW_KEYS`) for this
        number."""
        values = {"encoder": self.role.role, "train_eps": self.role.train_eps, "method": self.result.attribution,
                  "target": (self.result.config.get("options") or {}).get("target", "text"), "metric": self.metric,
                  "backbone": self.result.encoder, "dataset": self.result.dataset}
        return values.get(key)


@dataclass(frozen=True)
class SuiteRun:
    """What running a suite gave: its measurements, the roles' encoders, the plans, and the stages run and reused."""

    measurements: list[Measurement]
    encoders: dict[str, str]
    plans: list[EntryPlan]
    stages_run: int
    stages_reused: int


def is_toy_world(encoders: Sequence[str], command_line: Mapping[str, Any]) -> bool:
    """Whether a report runs on the embedded world: no ``--encoders`` and no ``--dataset``."""
    return not encoders and command_line.get("dataset") is None


def assign_roles(suite: PaperSuite, encoders: Sequence[str], toy_world: bool) -> dict[str, str]:
    """``{role name: encoder spec}`` for the roles that have an encoder (see the module docstring).

    Raises:
        ValueError: For more encoders than roles, a ``ROLE=SPEC`` of a role the suite lacks, or mixed forms.
    """
    roles = suite.paper.roles
    if toy_world:
        return {role.name: role.toy for role in roles if role.toy}
    named = [spec for spec in encoders if "=" in spec.split(":")[0]]
    if named and len(named) != len(encoders):
        raise ValueError("--encoders: give every encoder as ROLE=SPEC or none (then they follow the roles' order: "
                         f"{' '.join(r.name for r in roles)})")
    if named:
        known = {role.name: role for role in roles}
        out = {}
        for item in named:
            name, _, spec = item.partition("=")
            if name not in known:
                raise ValueError(f"--encoders {item}: suite {suite.name} has no role {name!r}; its roles: "
                                 f"{', '.join(known)}")
            out[name] = spec
        return out
    if len(encoders) > len(roles):
        raise ValueError(f"--encoders: suite {suite.name} has {len(roles)} roles ({' '.join(r.name for r in roles)}); "
                         f"{len(encoders)} encoders were given")
    return {role.name: spec for role, spec in zip(roles, encoders, strict=False)}


def measure(suite: PaperSuite, assigned: Mapping[str, str], command_line: Mapping[str, Any],
            runner: StageRunner) -> SuiteRun:
    """Runs (or reuses) every stage of ``suite`` for the assigned encoders.

    Raises:
        UnknownNameError: For an unknown task, encoder, method, dataset, option key or headline metric (before any
            model loads). ValueError, FileNotFoundError: For bad input, as the tasks raise them.
    """
    roles = {role.name: role for role in suite.paper.roles}
    specs = list(dict.fromkeys(assigned.values()))
    plans = build_plan(suite.suite, specs, command_line)
    measurements: list[Measurement] = []
    ran = reused = 0
    for plan in plans:
        headline = [metric.name for metric in plan.headline]
        for name, spec in assigned.items():
            stage = runner.results(plan.stage(spec))
            ran += not stage.reused
            reused += stage.reused
            for result in stage.results:
                measurements += [Measurement(plan.entry.label, roles[name], result, metric) for metric in headline
                                 if metric in result.metrics]
    return SuiteRun(measurements, dict(assigned), plans, ran, reused)
