"""Scoring the user study into the AFT paper's Table 10 (appendix A.4): known accuracies and standard deviations
over scripted participants, the chance-level test, refused answer files (another study, incomplete, duplicates,
unreadable, invalid) named in messages, and the results folder."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from aft_bench.apps.cli import main
from aft_bench.apps.study.cases import Case, select_cases
from aft_bench.apps.study.manifest import StudyManifest, read_manifest, write_manifest
from aft_bench.apps.study.page import ANSWERS_FORMAT
from aft_bench.apps.study.score import read_sheets, score_study
from aft_bench.results.files import read_results

CLASSES = [f"class {i}" for i in range(6)]
ENCODERS = ("orig", "aft")


def _scored(offset: int) -> list[tuple[str, int, torch.Tensor]]:
    """Eight samples: even ones classified right (true class first), odd ones wrong (true class second)."""
    rows = []
    for i in range(8):
        label = (i + offset) % 6
        logits = torch.arange(6, dtype=torch.float32).flip(0)  # class 0 ranked first, then 1, ...
        order = [label, *(c for c in range(6) if c != label)] if i % 2 == 0 else \
            [(label + 1) % 6, label, *(c for c in range(6) if c not in (label, (label + 1) % 6))]
        rows.append((f"img-{i}", label, torch.zeros(6).index_put_((torch.tensor(order),), logits)))
    return rows


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """A study folder with 2 correct and 2 wrong cases of each of two encoders (no models needed)."""
    cases = [case for offset, spec in enumerate(ENCODERS)
             for case in select_cases(spec, _scored(offset), n_correct=2, n_wrong=2, seed=0)]
    config = {"encoders": list(ENCODERS), "dataset": "toyset", "attribution": "gradcam", "cases": 4, "seed": 0}
    encoders = [{"spec": spec, "name": spec, "card": {"name": spec}} for spec in ENCODERS]
    folder = tmp_path / "study"
    write_manifest(folder, StudyManifest.create(config, encoders, CLASSES, cases))
    return folder


def _answer(folder: Path, manifest: StudyManifest, participant: str, choose: Callable[[Case], int | None],
            **changes: object) -> Path:
    """Writes an answer file as the page downloads it, with ``choose(case)`` as each answer."""
    record = {"format": ANSWERS_FORMAT, "version": 1, "study_id": manifest.study_id, "participant": participant,
              "answers": {case.id: choose(case) for case in manifest.cases}, "started": "", "finished": "",
              "user_agent": "test", **changes}
    path = folder / f"answers-{participant}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def _right(case: Case) -> int:
    return case.answer


def _wrong(case: Case) -> int:
    return case.answer % 4 + 1


def _participants(study: Path, folder: Path) -> list[Path]:
    """p1 is always right; p2 is right exactly on the correct predictions; p3 exactly on the ``aft`` cases."""
    manifest = read_manifest(study)
    return [_answer(folder, manifest, "p1", _right),
            _answer(folder, manifest, "p2", lambda c: _right(c) if c.correct else _wrong(c)),
            _answer(folder, manifest, "p3", lambda c: _right(c) if c.encoder == "aft" else _wrong(c))]


def _binomial_tail(k: int, n: int, p: float = 0.25) -> float:
    return sum(math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(k, n + 1))


def test_table_10_of_scripted_participants_has_the_known_means_and_deviations(study: Path, tmp_path: Path) -> None:
    manifest = read_manifest(study)
    sheets, refusals = read_sheets(_participants(study, tmp_path / "answers"), manifest)
    assert not refusals and [s.participant for s in sheets] == ["p1", "p2", "p3"]
    rows = {(r.encoder, r.subset): r for r in score_study(manifest, sheets)}
    assert list(rows) == [(e, s) for e in ENCODERS for s in ("correct", "incorrect", "all")]
    expected = {("orig", "correct"): [100, 100, 0], ("orig", "incorrect"): [100, 0, 0],
                ("orig", "all"): [100, 50, 0], ("aft", "correct"): [100, 100, 100],
                ("aft", "incorrect"): [100, 0, 100], ("aft", "all"): [100, 50, 100]}
    for key, accuracies in expected.items():
        row = rows[key]
        mean = sum(accuracies) / 3
        std = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / 2)  # over participants, n - 1
        assert row.stat.mean == pytest.approx(mean) and row.stat.std == pytest.approx(std), key
        assert row.cases == (4 if key[1] == "all" else 2) and row.stat.n == 3
        right = sum(a * row.cases // 100 for a in accuracies)
        assert (row.right, row.answers) == (right, 3 * row.cases)
        assert row.p_value == pytest.approx(_binomial_tail(right, 3 * row.cases)), key


def test_refused_files_are_named_and_counted(study: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manifest = read_manifest(study)
    answers = tmp_path / "answers"
    good = _participants(study, answers)
    odd = tmp_path / "odd"
    first = manifest.cases[0].id
    files = [
        *good,
        _answer(odd / "a", manifest, "x1", _right, study_id="0123456789abcdef"),
        _answer(odd / "b", manifest, "x2", _right, answers={"feedbeefcafe": 1}),
        _answer(odd / "c", manifest, "x3", lambda c: None if c.id == first else _right(c)),
        _answer(odd / "d", manifest, "P1", _right),  # the same participant as p1 (ids are case-insensitive)
        good[1],  # the same file twice
        _answer(odd / "e", manifest, "x4", lambda c: 5),
        _answer(odd / "f", manifest, "x5", _right, format="something else"),
    ]
    broken = odd / "broken.json"
    broken.write_text("{not json")
    with caplog.at_level("WARNING"):
        sheets, refusals = read_sheets([*files, broken], manifest)
    assert [s.participant for s in sheets] == ["p1", "p2", "p3"]
    kinds = [(r.path, r.kind) for r in refusals]
    assert kinds == [(files[3], "another study"), (files[4], "another study"), (files[5], "incomplete"),
                     (files[6], "duplicate"), (files[7], "duplicate"), (files[8], "invalid"),
                     (files[9], "not answers"), (broken, "unreadable")]
    messages = [r.message for r in refusals]
    assert "answers study '0123456789abcdef', not this study" in messages[0]
    assert "1 cases this study does not have (feedbeefcafe)" in messages[1]
    assert "incomplete: 7 of 8 cases answered" in messages[2]
    assert f"participant 'P1' already answered in {good[0]}" in messages[3] and "listed twice" in messages[4]
    assert "answer 5 is not a position 1-4" in messages[5]
    assert all(m.startswith(str(r.path)) for m, r in zip(messages, refusals, strict=True))
    assert sum("refused" in record.getMessage() for record in caplog.records) == len(refusals)


def test_cli_prints_and_writes_table_10(study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    answers = tmp_path / "answers"
    _participants(study, answers)
    (answers / "stray.json").write_text("[]")
    out = tmp_path / "results"
    assert main(["study", "score", str(study), str(answers), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| orig | correct | 2 | 3 | 66.7 ± 57.7 | 25.0 |" in printed
    assert "| aft | all | 4 | 3 | 83.3 ± 28.9 | 25.0 |" in printed
    assert "Refused answer files (1):" in printed and "stray.json: not an answer file" in printed
    assert "3 participants scored, 1 answer files refused" in printed

    manifest = read_manifest(study)
    folder = out / "user_study"
    results = {r.encoder: r for r in read_results(folder)}
    assert set(results) == set(ENCODERS) and results["aft"].n == 3 and results["aft"].run_key == manifest.study_id
    assert results["orig"].metrics["all"]["mean"] == pytest.approx(50.0)
    assert results["orig"].metrics["all"]["std"] == pytest.approx(50.0)
    assert results["orig"].excluded == {"answer file: not answers": 1}
    assert results["orig"].extra["participants"] == ["p1", "p2", "p3"]
    table = list(csv.DictReader(io.StringIO((folder / f"table10__{manifest.study_id}.csv").read_text())))
    assert [(r["encoder"], r["subset"]) for r in table][:2] == [("orig", "correct"), ("orig", "incorrect")]
    assert float(table[5]["mean"]) == pytest.approx(250 / 3) and table[5]["chance"] == "25.0"
    assert (folder / f"table10__{manifest.study_id}.md").read_text().startswith("### User study")
    assert "user_study" in (folder / "leaderboard.md").read_text()

    assert main(["study", "score", str(study / "manifest.json"), *map(str, sorted(answers.glob("answers-*"))),
                 "--out", str(out), "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("encoder,subset,cases,participants,mean,std")
    assert len(read_results(folder)) == 4  # results are never overwritten


def test_cli_refuses_what_it_cannot_score(study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    answers = tmp_path / "answers"
    files = _participants(study, answers)
    incomplete = _answer(tmp_path / "late", read_manifest(study), "p9", lambda c: None)
    out = str(tmp_path / "results")
    assert main(["study", "score", str(study), *map(str, files), str(incomplete), "--out", out, "--strict"]) == 1
    assert f"{incomplete}: incomplete: 0 of 8 cases answered" in capsys.readouterr().err
    assert main(["study", "score", str(study), str(incomplete), "--out", out]) == 1
    assert "no usable answer file" in capsys.readouterr().err
    assert main(["study", "score", str(tmp_path / "nowhere"), str(files[0]), "--out", out]) == 1
    assert "no study manifest" in capsys.readouterr().err

    record = json.loads((study / "manifest.json").read_text())
    record["cases"][0]["sample_id"] = "another-image"
    (study / "manifest.json").write_text(json.dumps(record))
    assert main(["study", "score", str(study), str(files[0]), "--out", out]) == 1
    assert "changed after the build" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
