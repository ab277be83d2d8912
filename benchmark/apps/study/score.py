"""``aft-bench study score``: participants' answer files -> the AFT paper's Table 10 (appendix A.4).

Per encoder and per kind of case (``correct`` / ``incorrect`` zero-shot prediction, and ``all``): each
participant's accuracy (the share of those cases where they picked the true class's map, in %), then the mean and
the sample standard deviation over participants, as Table 10 reports, beside the chance level of HIVE's distinct
task (Kim et al. 2022): 25%, one of four maps. The one-sided exact binomial test of all the participants' answers
against 25% (``p``) treats the answers as independent trials.

An answer file is used only when it is complete and belongs to this study. A file that is unreadable, answers
another study (its study id or case ids differ), misses cases, holds an answer outside 1-4, or duplicates a file
or participant already read (the first one counts) is refused: a warning names the file and the reason, the
tables count it, and ``strict`` turns it into an error.

Outputs (under ``<out>/user_study/``): one :class:`~aft_bench.results.result.RunResult` per encoder (metrics
``correct``,
``incorrect``, ``all`` with mean, 95% interval, n participants and ``std``; never overwritten, so ``aft-bench
table`` lists them), the folder's leaderboard, and ``table10__<study id>.md`` / ``.csv``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scipy.stats import binomtest

from aft_bench.apps.study.cases import CHOICES, Case
from aft_bench.apps.study.manifest import TASK, StudyManifest
from aft_bench.apps.study.page import ANSWERS_FORMAT
from aft_bench.core.atomic import atomic_write_text
from aft_bench.metrics.base import Metric
from aft_bench.metrics.summary import RunningStat
from aft_bench.results.files import write_result
from aft_bench.results.result import RunResult
from aft_bench.results.table import write_leaderboards

log = logging.getLogger(__name__)

CHANCE = 100.0 / CHOICES
"""The accuracy (%) of guessing: one of the four maps."""
CORRECT = Metric(name="correct", higher_is_better=True, description="study cases with a correct zero-shot prediction")
INCORRECT = Metric(name="incorrect", higher_is_better=True, description="study cases with a wrong zero-shot prediction")
ALL_CASES = Metric(name="all", higher_is_better=True, description="every study case of the encoder")
SUBSETS: dict[str, Metric] = {metric.name: metric for metric in (CORRECT, INCORRECT, ALL_CASES)}
"""The rows of Table 10 per encoder, as metric objects of the results."""


@dataclass(frozen=True)
class AnswerSheet:
    """One participant's complete answers: file, participant id and the chosen position (1-4) per case id."""

    path: Path
    participant: str
    answers: dict[str, int]


@dataclass(frozen=True)
class Refusal:
    """An answer file left out: its path, the kind of problem (``unreadable``, ``not answers``, ``another study``,
    ``incomplete``, ``invalid``, ``duplicate``) and the message naming it."""

    path: Path
    kind: str
    message: str


class RefusedAnswers(ValueError):
    """An answer file the scorer cannot use (see :class:`Refusal`)."""

    def __init__(self, path: Path, kind: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.refusal = Refusal(path, kind, f"{path}: {reason}")


def read_sheet(path: Path, manifest: StudyManifest) -> AnswerSheet:
    """The answers in ``path`` if they are a complete answer file of ``manifest``'s study.

    Raises:
        RefusedAnswers: Naming the file and what is wrong with it.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RefusedAnswers(path, "unreadable", f"cannot be read as JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != ANSWERS_FORMAT or data.get("version") != 1:
        raise RefusedAnswers(path, "not answers", "not an answer file of a study page (no \"format\": "
                             f"\"{ANSWERS_FORMAT}\", version 1)")
    if data.get("study_id") != manifest.study_id:
        raise RefusedAnswers(path, "another study", f"answers study {data.get('study_id')!r}, not this study "
                             f"{manifest.study_id}; score it with that study's folder")
    participant, answers = data.get("participant"), data.get("answers")
    if not isinstance(participant, str) or not participant.strip() or not isinstance(answers, dict):
        raise RefusedAnswers(path, "invalid", "lacks a participant id or the answers object")
    known = {case.id for case in manifest.cases}
    foreign = sorted(set(answers) - known)
    if foreign:
        raise RefusedAnswers(path, "another study", f"answers {len(foreign)} cases this study does not have "
                             f"({', '.join(foreign[:3])}); it belongs to another study")
    given = {key: value for key, value in answers.items() if value is not None}
    if len(given) < len(known):
        raise RefusedAnswers(path, "incomplete", f"incomplete: {len(given)} of {len(known)} cases answered; ask "
                             "the participant to finish the study and download the answers again")
    bad = {key: value for key, value in given.items()
           if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= CHOICES}
    if bad:
        key, value = next(iter(bad.items()))
        raise RefusedAnswers(path, "invalid", f"case {key}: answer {value!r} is not a position 1-{CHOICES}")
    return AnswerSheet(path, participant.strip(), dict(given))


def read_sheets(paths: Sequence[str | Path], manifest: StudyManifest) -> tuple[list[AnswerSheet], list[Refusal]]:
    """The usable answer files among ``paths`` and the refused ones, in the order given (a folder stands for
    the ``*.json`` files in it). Each refusal is logged as a warning naming the file."""
    files: list[Path] = []
    for item in map(Path, paths):
        files += sorted(item.glob("*.json")) if item.is_dir() else [item]
    sheets: list[AnswerSheet] = []
    refusals: list[Refusal] = []
    seen_files: set[Path] = set()
    seen_people: dict[str, Path] = {}
    for path in files:
        try:
            if path.resolve() in seen_files:
                raise RefusedAnswers(path, "duplicate", "listed twice; it counts once")
            seen_files.add(path.resolve())
            sheet = read_sheet(path, manifest)
            first = seen_people.get(sheet.participant.casefold())
            if first is not None:
                raise RefusedAnswers(path, "duplicate", f"participant {sheet.participant!r} already answered in "
                                     f"{first}; only the first file counts")
        except RefusedAnswers as exc:
            log.warning("refused %s", exc.refusal.message)
            refusals.append(exc.refusal)
            continue
        seen_people[sheet.participant.casefold()] = path
        sheets.append(sheet)
    return sheets, refusals


@dataclass(frozen=True)
class SubsetScore:
    """One row of Table 10: an encoder's cases of one kind, over the participants.

    Attributes:
        encoder, subset: The encoder spec and the kind of cases (``correct``, ``incorrect``, ``all``).
        cases: Cases of that kind. stat: The participants' accuracies (%) as a running statistic.
        right, answers: Right answers and answers over all participants. p_value: One-sided binomial test > 25%.
    """

    encoder: str
    subset: str
    cases: int
    stat: RunningStat
    right: int
    answers: int
    p_value: float


def _subset_cases(cases: Sequence[Case], encoder: str, subset: str) -> list[Case]:
    mine = [c for c in cases if c.encoder == encoder]
    return mine if subset == "all" else [c for c in mine if c.correct == (subset == "correct")]


def score_study(manifest: StudyManifest, sheets: Sequence[AnswerSheet]) -> list[SubsetScore]:
    """Table 10's rows: for each encoder (in build order), its correct, incorrect and all cases.

    Raises:
        ValueError: If there is no answer sheet to score.
    """
    if not sheets:
        raise ValueError("no usable answer file: nothing to score (see the refused files above)")
    rows = []
    for encoder in manifest.encoder_specs():
        for subset in SUBSETS:
            cases = _subset_cases(manifest.cases, encoder, subset)
            stat, right = RunningStat(), 0
            for sheet in sheets:
                hits = sum(sheet.answers[c.id] == c.answer for c in cases)
                right += hits
                stat.update([100.0 * hits / len(cases)])
            answers = len(cases) * len(sheets)
            p_value = binomtest(right, answers, 1 / CHOICES, alternative="greater").pvalue
            rows.append(SubsetScore(encoder, subset, len(cases), stat, right, answers, float(p_value)))
    return rows


def _number(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def markdown_table(manifest: StudyManifest, rows: Sequence[SubsetScore], refusals: Sequence[Refusal]) -> str:
    """Table 10 as Markdown: one line per encoder and kind of case, then the chance level and the refusals."""
    participants = rows[0].stat.n if rows else 0
    lines = [f"### User study (HIVE distinct task) · study {manifest.study_id} · {manifest.config.get('dataset')} · "
             f"{manifest.config.get('attribution')}", "",
             "| encoder | cases | n cases | participants | accuracy % (mean ± std) | chance % | p (> chance) |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.encoder} | {row.subset} | {row.cases} | {row.stat.n} | {_number(row.stat.mean)} ± "
                     f"{_number(row.stat.std)} | {CHANCE:.1f} | {row.p_value:.2g} |")
    lines += ["", f"Accuracy: the share of cases where a participant picked the map of the true class, as the mean and "
              f"sample standard deviation over {participants} participants (paper Table 10); chance: one of "
              f"{CHOICES} maps; p: one-sided exact binomial test of all answers against chance."]
    if refusals:
        lines += ["", f"Refused answer files ({len(refusals)}):", *(f"- {r.message}" for r in refusals)]
    return "\n".join(lines) + "\n"


def csv_table(rows: Sequence[SubsetScore]) -> str:
    """Table 10 as CSV: encoder, subset, cases, participants, mean, std, ci95, right, answers, chance, p_value."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["encoder", "subset", "cases", "participants", "mean", "std", "ci95", "right", "answers",
                     "chance", "p_value"])
    for row in rows:
        writer.writerow([row.encoder, row.subset, row.cases, row.stat.n, _number(row.stat.mean, 4),
                         _number(row.stat.std, 4), _number(row.stat.ci95, 4), row.right, row.answers, CHANCE,
                         f"{row.p_value:.6g}"])
    return buffer.getvalue()


def _result(manifest: StudyManifest, encoder: str, rows: Sequence[SubsetScore], sheets: Sequence[AnswerSheet],
            refusals: Sequence[Refusal]) -> RunResult:
    mine = [row for row in rows if row.encoder == encoder]
    excluded: dict[str, int] = {}
    for refusal in refusals:
        excluded[f"answer file: {refusal.kind}"] = excluded.get(f"answer file: {refusal.kind}", 0) + 1
    return RunResult(
        task=TASK, task_version=1, dataset=str(manifest.config.get("dataset")), encoder=encoder,
        attribution=str(manifest.config.get("attribution")),
        metrics={row.subset: {**SUBSETS[row.subset].summary(row.stat), "std": row.stat.std} for row in mine},
        n=len(sheets), excluded=excluded, skipped={}, config=manifest.config, run_key=manifest.study_id,
        seed=int(manifest.config.get("seed", 0)), samples_file="",
        extra={"study_id": manifest.study_id, "chance": CHANCE, "participants": [s.participant for s in sheets],
               "cases": {row.subset: row.cases for row in mine}, "p_value": {row.subset: row.p_value for row in mine},
               "refused": [r.message for r in refusals]})


def write_scores(manifest: StudyManifest, rows: Sequence[SubsetScore], sheets: Sequence[AnswerSheet],
                 refusals: Sequence[Refusal], out: str | Path) -> list[Path]:
    """Writes the results, the leaderboard and Table 10 under ``<out>/user_study/``; returns the paths."""
    folder = Path(out) / TASK
    paths = [write_result(_result(manifest, encoder, rows, sheets, refusals), out)
             for encoder in manifest.encoder_specs()]
    paths += list(write_leaderboards(folder).values())
    stem = folder / f"table10__{manifest.study_id}"
    paths.append(atomic_write_text(stem.with_suffix(".md"), markdown_table(manifest, rows, refusals)))
    paths.append(atomic_write_text(stem.with_suffix(".csv"), csv_table(rows)))
    return paths


def score_answers(study: StudyManifest, paths: Sequence[str | Path], strict: bool = False) -> tuple[
        list[SubsetScore], list[AnswerSheet], list[Refusal]]:
    """Reads the answer files ``paths`` of ``study`` and scores the usable ones.

    Raises:
        ValueError: With ``strict``, for the first refused file; without, if no file is usable.
    """
    sheets, refusals = read_sheets(paths, study)
    if strict and refusals:
        raise ValueError(f"{refusals[0].message} (--strict: every answer file must count)")
    return score_study(study, sheets), sheets, refusals

