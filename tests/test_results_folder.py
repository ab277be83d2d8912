"""The results folder: stray or broken JSON files are skipped with a warning (by a run and by ``aft-bench table``),
a rerun with the same numbers writes no new file, and a killed run leaves a leaderboard of what it finished."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from aft_bench.apps.cli import main
from aft_bench.attributions.simple_gradient import SimpleGradient
from aft_bench.core.registries import ATTRIBUTIONS
from aft_bench.evaluation.config import resolve_config
from aft_bench.evaluation.runner import run
from aft_bench.results.files import read_results, write_result
from aft_bench.results.folder import ResultsFolder
from aft_bench.results.result import RunResult


def _result(pg: float = 50.0, **changes) -> RunResult:
    base = dict(
        task="pointing_game", task_version=3, dataset="shapes", encoder="toy", attribution="gradcam",
        metrics={"pg": {"mean": pg, "ci95": float("nan"), "n": 1, "higher_is_better": True}}, n=1,
        excluded={}, skipped={}, config={"options": {}, "limit": None}, run_key="k", seed=0, samples_file="s.jsonl",
    )
    base.update(changes)
    return RunResult(**base)


def _broken_files(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    corrupt = folder / "corrupt.json"
    corrupt.write_text('{"run_key": "k", "metr')
    incomplete = folder / "incomplete.json"
    record = json.loads(json.dumps(_result().to_dict(), default=str).replace("NaN", "null"))
    del record["n"], record["task"]
    incomplete.write_text(json.dumps(record))
    return corrupt, incomplete


def test_read_results_skips_unreadable_and_incomplete_files_naming_them(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    write_result(_result(), tmp_path)
    corrupt, incomplete = _broken_files(tmp_path / "pointing_game")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    with caplog.at_level(logging.WARNING, logger="aft_bench.results.result"):
        assert [r.n for r in read_results(tmp_path)] == [1]
    text = caplog.text
    assert f"skipping {corrupt}: not readable JSON" in text and f"skipping {tmp_path / 'binary.json'}" in text
    assert f"skipping {incomplete}: not a complete aft-bench result (it lacks the fields ['task', 'n'])" in text


def test_from_dict_refuses_a_record_whose_objects_are_not_objects() -> None:
    record = _result().to_dict()
    record["metrics"] = [1, 2]
    with pytest.raises(ValueError, match=r"its fields \['metrics'\] are not JSON objects"):
        RunResult.from_dict(record)


def test_cli_table_warns_and_skips_broken_files(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                caplog: pytest.LogCaptureFixture) -> None:
    write_result(_result(61.0), tmp_path)
    _broken_files(tmp_path / "pointing_game")
    assert main(["table", str(tmp_path)]) == 0
    assert "| toy | gradcam | 1 | 0 | 0 | 61.00 ± - |" in capsys.readouterr().out
    assert "corrupt.json: not readable JSON" in caplog.text and "incomplete.json: not a complete" in caplog.text
    assert "61.00" in (tmp_path / "leaderboard.md").read_text()


def test_folder_add_reuses_the_newest_result_with_the_same_numbers(tmp_path: Path) -> None:
    folder = ResultsFolder(tmp_path / "pointing_game")
    first, stands, reused = folder.add(_result(50.0))
    assert not reused and stands.metrics["pg"]["mean"] == 50.0
    assert folder.add(_result(50.0))[::2] == (first, True)  # NaN ci95 stored as null: still the same numbers
    changed, _, reused = folder.add(_result(51.0))
    assert changed != first and not reused
    assert folder.add(_result(50.0))[2] is False  # the newest of the row has other numbers: written
    assert folder.add(_result(50.0, config={"options": {}, "limit": 3}))[2] is False  # another row
    assert len(read_results(tmp_path)) == 4


def test_folder_add_sees_what_another_process_wrote_meanwhile(tmp_path: Path) -> None:
    folder = ResultsFolder(tmp_path / "pointing_game")
    other = write_result(_result(50.0), tmp_path)  # written after the folder was read
    assert folder.add(_result(50.0))[::2] == (other, True)
    assert [r.metrics["pg"]["mean"] for r in folder.results] == [50.0]


def _config(tiny48_ckpt: str, out: Path, **changes):
    overrides = dict(encoders=[tiny48_ckpt], attributions=["simple_gradient"], limit=4, batch_size=4, out=str(out))
    overrides.update(changes)
    return resolve_config("pointing_game", overrides)


def test_a_run_beside_broken_files_writes_its_results_and_leaderboard(tiny48_ckpt: str, tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    corrupt, _ = _broken_files(tmp_path / "pointing_game")
    argv = ["run", "--task", "pointing_game", "--encoders", tiny48_ckpt, "--attributions", "gradcam",
            "--limit", "4", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert f"skipping {corrupt}" in caplog.text
    assert len(read_results(tmp_path)) == 1
    assert "tiny48" in (tmp_path / "pointing_game" / "leaderboard.md").read_text()


def test_a_rerun_with_the_same_numbers_writes_no_new_file(tiny48_ckpt: str, tmp_path: Path) -> None:
    first = run(_config(tiny48_ckpt, tmp_path))
    again = run(_config(tiny48_ckpt, tmp_path))
    assert again.paths == again.reused == first.paths and first.reused == []
    assert again.results[0].date == first.results[0].date  # the stored result stands
    other = run(_config(tiny48_ckpt, tmp_path, limit=3))  # another subset: its own result and row
    assert other.reused == [] and len(read_results(tmp_path)) == 2
    assert (tmp_path / "pointing_game" / "leaderboard.md").read_text().count("tiny48") == 2


class _Killed(SimpleGradient):
    def attribute(self, encoder, images, target):
        raise KeyboardInterrupt


def test_a_killed_run_leaves_a_leaderboard_of_what_it_finished(registered, tiny48_ckpt: str,
                                                               tmp_path: Path) -> None:
    registered(ATTRIBUTIONS, "killed", _Killed)
    run(_config(tiny48_ckpt, tmp_path, attributions=["gradcam"]))
    with pytest.raises(KeyboardInterrupt):  # killed while its methods score in one pass: the finished pair stands
        run(_config(tiny48_ckpt, tmp_path, attributions=["gradcam", "killed"]))
    board = tmp_path / "pointing_game" / "leaderboard.md"
    assert "| gradcam |" in board.read_text()
    board.unlink()
    with pytest.raises(KeyboardInterrupt):  # killed in its first pair: the board of what the folder holds
        run(_config(tiny48_ckpt, tmp_path, attributions=["killed"]))
    assert "| gradcam |" in board.read_text()
