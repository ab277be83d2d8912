"""Leaderboard rows: one per distinct run configuration (run key plus limit), the newest result of each, in a stable
order, with the fields that tell a table's rows apart as columns only where they differ; excluded and skipped
counted apart."""

from __future__ import annotations

import csv
import io
from typing import Any

from aft_bench.results.result import RunResult
from aft_bench.results.table import latest, make_csv, make_markdown


def _result(key: str = "k", pg: float = 50.0, date: str = "2026-01-01T00:00:00+00:00", encoder: str = "toy",
            **config: Any) -> RunResult:
    full = {"data_root": None, "limit": None, "options": {}, "attribution_args": {}, "dataset_args": {}, **config}
    return RunResult(
        task="pointing_game", task_version=3, dataset="shapes", encoder=encoder, attribution="gradcam",
        metrics={"pg": {"mean": pg, "ci95": 1.0, "n": 10, "higher_is_better": True}}, n=10, excluded={},
        skipped={}, config=full, run_key=key, seed=config.get("seed", 0), samples_file="s.jsonl", date=date,
    )


def _table(markdown: str) -> list[list[str]]:
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_runs_that_differ_in_what_changes_the_numbers_keep_their_own_rows() -> None:
    results = [
        _result("a", 10.0), _result("b", 20.0, data_root="/data/x"), _result("a", 30.0, limit=5),
        _result("c", 40.0, seed=1), _result("d", 50.0, dataset_args={"size": 8}),
        _result("e", 60.0, attribution_args={"gradcam": {"block": -1}}),
    ]
    assert [r.metrics["pg"]["mean"] for r in latest(results)] == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    head, *rows = _table(make_markdown(results))
    assert head[:7] == ["encoder", "attribution", "data root", "dataset args", "limit", "seed", "method args"]
    assert head[7:10] == ["n", "excluded", "skipped"]  # options, task version, run key: alike, not shown
    assert rows[0][:7] == ["toy", "gradcam", "-", "-", "all", "0", "-"]
    assert rows[1][2] == "/data/x" and rows[2][4] == "5" and rows[3][5] == "1"
    assert rows[4][3] == "size=8" and rows[5][6] == "block=-1"


def test_newest_per_row_key_and_rows_keep_their_first_seen_place() -> None:
    results = [
        _result("a", 10.0, date="2026-01-01T00:00:00+00:00"),
        _result("b", 20.0, date="2026-01-02T00:00:00+00:00"),
        _result("a", 11.0, date="2026-01-03T00:00:00+00:00"),  # a rerun of row a: replaces it, in a's place
        _result("a", 12.0, date="2026-01-04T00:00:00+00:00", limit=3),  # another subset: its own row, last
    ]
    assert [(r.run_key, r.metrics["pg"]["mean"]) for r in latest(reversed(results))] == \
        [("a", 11.0), ("b", 20.0), ("a", 12.0)]


def test_one_table_shows_no_distinguishing_column_and_rows_alike_show_the_run_key() -> None:
    head, *_ = _table(make_markdown([_result("a"), _result("b", encoder="other")]))
    assert head == ["encoder", "attribution", "n", "excluded", "skipped", "pg ↑"]
    # a checkpoint retrained under the same path: another card, another run key, nothing else differs
    head, first, second = _table(make_markdown([_result("a", 1.0), _result("b", 2.0)]))
    assert head[2] == "run key" and (first[2], second[2]) == ("a", "b")


def test_excluded_and_skipped_are_two_columns() -> None:
    result = _result()
    result.excluded, result.skipped = {"empty mask": 2, "constant map": 1}, {"unreadable": 4}
    head, row = _table(make_markdown([result]))
    assert dict(zip(head, row, strict=True))["excluded"] == "3"
    assert dict(zip(head, row, strict=True))["skipped"] == "4"


def test_csv_has_one_row_per_key_with_every_distinguishing_field() -> None:
    results = [_result("a", 10.0), _result("a", 11.0, date="2026-01-02T00:00:00+00:00"),
               _result("b", 20.0, data_root="/d", limit=4, seed=2, dataset_args={"size": 8},
                       attribution_args={"gradcam": {"block": -2}}, options={"tolerance": 15})]
    rows = list(csv.DictReader(io.StringIO(make_csv(results))))
    assert len(rows) == 2 and rows[0]["pg"] == "11.0" and rows[0]["limit"] == "all"
    assert {k: rows[1][k] for k in ("data_root", "dataset_args", "limit", "seed", "attribution_args", "options",
                                    "result_key")} == \
        {"data_root": "/d", "dataset_args": "size=8", "limit": "4", "seed": "2", "attribution_args": "block=-2",
         "options": "tolerance=15", "result_key": "b"}
