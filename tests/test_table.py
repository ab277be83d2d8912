"""Leaderboards: the newest result per row, the per-dataset layout of one metric (paper Table 2), the CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from aft_bench.apps.cli import main
from aft_bench.results.files import write_result
from aft_bench.results.result import RunResult
from aft_bench.results.table import latest, make_csv, make_markdown, pivot, pivot_csv


def _result(encoder: str, dataset: str, clean: float, date: str = "2026-01-01T00:00:00+00:00",
            higher: bool = True) -> RunResult:
    return RunResult(
        task="zero_shot", task_version=1, dataset=dataset, encoder=encoder, attribution="apgd-ce+apgd-t",
        metrics={"clean": {"mean": clean, "ci95": 1.0, "n": 10, "higher_is_better": higher}}, n=10,
        excluded={}, skipped={}, config={"options": {}}, run_key="k", seed=0, samples_file="s.jsonl", date=date,
    )


RESULTS = [
    _result("clip", "cifar10", 90.0), _result("clip", "stl10", 99.0), _result("clip", "pcam", 51.0),
    _result("aft", "cifar10", 80.0), _result("aft", "stl10", 96.0), _result("aft", "pcam", 50.0),
    _result("fare", "cifar10", 79.0),  # one dataset only
    _result("clip", "cifar10", 10.0, date="2025-01-01T00:00:00+00:00"),  # older: replaced by the 90.0
]


def test_latest_keeps_the_newest_result_per_row() -> None:
    chosen = latest(RESULTS)
    assert len(chosen) == 7
    assert next(r for r in chosen if (r.encoder, r.dataset) == ("clip", "cifar10")).metrics["clean"]["mean"] == 90


def test_pivot_lays_one_metric_across_datasets_with_the_average() -> None:
    header, rows = pivot(RESULTS, "clean")
    assert header == ["task", "encoder", "attribution", "cifar10 ↑", "stl10 ↑", "pcam ↑", "average"]
    cells = {row[1]: row[3:] for row in rows}
    assert cells["clip"] == ["90.00", "99.00", "51.00", "80.00"]  # (90 + 99 + 51) / 3
    assert cells["aft"] == ["80.00", "96.00", "50.00", "75.33"]
    assert cells["fare"] == ["79.00", "-", "-", "-"]  # no average over a partial row
    assert pivot_csv(RESULTS, "clean").splitlines()[1].startswith("zero_shot,clip,apgd-ce+apgd-t,90.00,99.00")


def test_pivot_keeps_runs_apart_that_differ_in_seed_limit_or_method_arguments() -> None:
    base = _result("clip", "cifar10", 90.0)
    other_seed = dataclasses.replace(base, seed=1, run_key="k1",
                                     metrics={"clean": {**base.metrics["clean"], "mean": 70.0}})
    subset = dataclasses.replace(base, config={"options": {}, "limit": 100}, run_key="k",
                                 metrics={"clean": {**base.metrics["clean"], "mean": 60.0}})
    header, rows = pivot([base, other_seed, subset], "clean")
    assert header == ["task", "encoder", "attribution", "limit", "seed", "cifar10 ↑"]
    assert [row[3:] for row in rows] == [["all", "0", "90.00"], ["all", "1", "70.00"], ["100", "0", "60.00"]]


def test_pivot_edge_cases() -> None:
    header, rows = pivot([_result("clip", "pcam", 51.0, higher=False)], "clean")
    assert header[-1] == "pcam ↓" and rows == [["zero_shot", "clip", "apgd-ce+apgd-t", "51.00"]]
    with pytest.raises(ValueError, match=r"no result has the metric 'robust@4/255'; the results have \['clean'\]"):
        pivot(RESULTS, "robust@4/255")
    assert make_markdown([]) == "No results found.\n"


def test_cli_table_by_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for result in RESULTS:
        write_result(result, tmp_path)
    assert main(["table", str(tmp_path), "--metric", "clean"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### clean by dataset")
    assert "| cifar10 ↑ | pcam ↑ | stl10 ↑ | average |" in out  # first seen in the files, read in path order
    assert "| zero_shot | aft | apgd-ce+apgd-t | 80.00 | 50.00 | 96.00 | 75.33 |" in out
    assert main(["table", str(tmp_path), "--metric", "nope"]) == 1


def _pg_result(encoder: str, pg: float, chance: dict[str, float] | None, limit: int | None = None) -> RunResult:
    metrics = {"pg": {"mean": pg, "ci95": 2.0, "n": 10, "higher_is_better": True},
               "ap": {"mean": pg / 2, "ci95": 1.0, "n": 10, "higher_is_better": True}}
    return RunResult(
        task="pointing_game", task_version=4, dataset="shapes", encoder=encoder, attribution="simple_gradient",
        metrics=metrics, n=10, excluded={}, skipped={}, config={"options": {}, "limit": limit},
        run_key=f"k-{encoder}-{limit}", seed=0, samples_file="s.jsonl", date="2026-01-01T00:00:00+00:00",
        extra={"chance": chance} if chance is not None else {},
    )


def _table_lines(markdown: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines() if line.startswith("|")]


def test_one_chance_row_per_distinct_set_of_levels_in_markdown_and_csv() -> None:
    same = {"pg": 18.25, "ap": 12.5}
    rows = [_pg_result("toy", 40.0, same), _pg_result("toy-aft", 45.0, dict(same)), _pg_result("old", 30.0, None)]
    lines = _table_lines(make_markdown(rows))
    assert lines[0] == ["encoder", "attribution", "n", "excluded", "skipped", "pg ↑", "ap ↑"]
    assert [line[0] for line in lines[2:]] == ["toy", "toy-aft", "old", "chance"]
    assert lines[-1] == ["chance", "random map (exact)", "10", "-", "-", "18.25", "12.50"]

    other = _pg_result("toy", 41.0, {"pg": 20.0}, limit=5)  # another image set: its own chance row
    lines = _table_lines(make_markdown([*rows, other]))
    chance = [line for line in lines if line[0] == "chance"]
    assert [(c[2], c[-2], c[-1]) for c in chance] == [("all", "18.25", "12.50"), ("5", "20.00", "-")]

    csv_rows = [line.split(",") for line in make_csv([*rows, other]).splitlines()]
    header = csv_rows[0]
    chance_csv = [r for r in csv_rows[1:] if r[header.index("encoder")] == "chance"]
    assert [(r[header.index("limit")], r[header.index("pg")], r[header.index("pg_ci95")], r[header.index("ap")])
            for r in chance_csv] == [("all", "18.25", "", "12.5"), ("5", "20.0", "", "")]


def test_no_chance_row_without_levels() -> None:
    assert "chance |" not in make_markdown([_pg_result("toy", 40.0, None)])
    scalar = dataclasses.replace(_pg_result("toy", 40.0, None), extra={"chance": 25.0})  # the user study's figure
    assert "chance |" not in make_markdown([scalar]) and ",chance," not in make_csv([scalar])
    assert all(",chance," not in line for line in make_csv([_pg_result("toy", 40.0, None)]).splitlines())
