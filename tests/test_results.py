"""Result files: atomic, never overwritten, strict JSON; the per-sample store survives a cut-off line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aft_bench.results.files import read_results, write_result
from aft_bench.results.keys import safe_name
from aft_bench.results.result import RunResult
from aft_bench.results.store import SampleStore


def _result(**changes) -> RunResult:
    base = dict(
        task="pointing_game", task_version=1, dataset="shapes", encoder="ViT-B-16:openai", attribution="gradcam",
        metrics={"pg": {"mean": 50.0, "ci95": float("nan"), "n": 1, "higher_is_better": True}}, n=1,
        excluded={}, skipped={}, config={"options": {}}, run_key="k", seed=0, samples_file="s.jsonl",
    )
    base.update(changes)
    return RunResult(**base)


def test_write_never_overwrites_and_is_strict_json(tmp_path) -> None:
    first = write_result(_result(), tmp_path)
    second = write_result(_result(), tmp_path)
    assert first != second and first.exists() and second.exists()
    assert first.parent == tmp_path / "pointing_game"
    assert first.name.startswith("ViT-B-16_openai__gradcam__shapes__")
    data = json.loads(first.read_text())  # strict: NaN written as null
    assert data["metrics"]["pg"]["ci95"] is None
    assert data["versions"]["python"] and "date" in data
    assert [r.encoder for r in read_results(tmp_path)] == ["ViT-B-16:openai"] * 2
    assert not list(tmp_path.rglob("*.tmp"))


def test_side_files_are_written_before_the_result_file(tmp_path) -> None:
    def killed(path: Path) -> None:
        path.write_text("half")
        raise KeyboardInterrupt

    result = _result()
    result.attachments = {".neurons.csv": killed}
    with pytest.raises(KeyboardInterrupt):
        write_result(result, tmp_path)
    assert [p.suffixes for p in (tmp_path / "pointing_game").iterdir()] == [[".neurons", ".csv"]]
    assert not read_results(tmp_path)  # no result file without its side files
    result.attachments = {".neurons.csv": lambda path: path.write_text("ok")}
    path = write_result(result, tmp_path)
    assert path.with_suffix(".neurons.csv").read_text() == "ok" and len(read_results(tmp_path)) == 1


def test_read_results_skips_samples_and_other_json(tmp_path) -> None:
    write_result(_result(), tmp_path)
    (tmp_path / "pointing_game" / "samples").mkdir()
    (tmp_path / "pointing_game" / "samples" / "x.json").write_text("{}")
    (tmp_path / "other.json").write_text('{"not": "a result"}')
    assert len(read_results(tmp_path)) == 1


def test_sample_store_resumes_and_ignores_cut_line(tmp_path) -> None:
    path = tmp_path / "s.jsonl"
    store = SampleStore(path)
    store.append([{"id": "a", "scores": {"pg": 1.0}}, {"id": "b", "excluded": "empty mask"}])
    with open(path, "a") as fh:
        fh.write('{"id": "c", "sco')  # a killed run's half-written line
    again = SampleStore(path)
    assert "a" in again and "b" in again and "c" not in again and len(again) == 2
    again.append([{"id": "c", "scores": {"pg": 0.0}}])
    assert SampleStore(path).get("c") == {"id": "c", "scores": {"pg": 0.0}}


def test_safe_name() -> None:
    assert safe_name("ckpt:/a/b c.safetensors") == "ckpt_a_b_c.safetensors"
    assert safe_name("///") == "unnamed"
