"""Pairing per-sample scores by sample id on hand-built stores: samples only one encoder scored (the other excluded
or skipped them, or has no record) are left out and counted with why; a store shared with a larger ``--limit`` is
cut to the run's own selection; the differences of hand-built results carry the known test answers; a request names
each encoder once with the baseline among them; an encoder every method refuses gets empty cells, not a failure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from aft_bench.apps.compare import stages
from aft_bench.apps.compare.compare import CompareRequest
from aft_bench.apps.compare.differences import (
    MCNEMAR,
    NO_PAIRS,
    NO_TEST,
    WILCOXON,
    Settings,
    compare_columns,
    per_sample_difference,
)
from aft_bench.apps.compare.pairing import pair, stored_records
from aft_bench.apps.compare.scorecard import Cell, Column, Scorecard
from aft_bench.apps.suites.suite import load_suite
from aft_bench.evaluation.config import resolve_config
from aft_bench.metrics.base import Metric
from aft_bench.metrics.paired import mcnemar_exact_p
from aft_bench.models.encoder import UnsupportedEncoderError
from aft_bench.results.result import RunResult
from aft_bench.results.store import SampleStore

HIT = Metric("pg", higher_is_better=True)
ENERGY = Metric("pg_energy", higher_is_better=True)
COUNT = Metric("detectors", higher_is_better=True, scale=1.0)


def _result(encoder: str, samples_file: str, selected: int, metrics: dict | None = None) -> RunResult:
    return RunResult(task="pointing_game", task_version=3, dataset="shapes", encoder=encoder,
                     attribution="gradcam", metrics=metrics or {}, n=selected, excluded={}, skipped={}, config={},
                     run_key=f"key-{encoder}", seed=0, samples_file=samples_file, extra={"selected": selected})


def test_samples_scored_by_one_encoder_are_left_out_and_counted() -> None:
    baseline = {"a": {"id": "a", "scores": {"pg": 1}}, "b": {"id": "b", "scores": {"pg": 0}},
                "c": {"id": "c", "scores": {"pg": 1}}, "d": {"id": "d", "excluded": "empty mask"},
                "e": {"id": "e", "skipped": "unreadable image"}, "f": {"id": "f", "scores": {"pg": 1}}}
    other = {"a": {"id": "a", "scores": {"pg": 0}}, "b": {"id": "b", "excluded": "empty mask"},
             "c": {"id": "c", "skipped": "non-finite map (3 NaN/Inf values)"}, "d": {"id": "d", "scores": {"pg": 1}},
             "e": {"id": "e", "skipped": "unreadable image"}, "g": {"id": "g", "scores": {"pg": 1}}}
    paired = pair(baseline, other, "pg")
    assert paired.ids == ("a",) and paired.baseline.tolist() == [1.0] and paired.other.tolist() == [0.0]
    assert (paired.baseline_only, paired.other_only, paired.left_out) == (3, 2, 5)  # b, c, f / d, g; e: neither
    assert paired.reasons == {"excluded: empty mask": 2, "skipped: non-finite map (3 NaN/Inf values)": 1,
                              "no stored record": 2}
    zero = per_sample_difference(Column("pg", "pointing_game", "gradcam", HIT), "x", pair({}, other, "pg"),
                                 Settings(resamples=10))
    assert zero.test == NO_PAIRS and zero.n == 0 and zero.other_only == 3 and zero.p_value is None


def test_a_metric_only_some_samples_have_is_paired_where_both_have_it() -> None:
    # zero-shot: robust scores exist only for the attacked subset, the same for both encoders: nothing left out
    a = {str(i): {"id": str(i), "scores": {"clean": 1, **({"robust": 1} if i < 3 else {})}} for i in range(6)}
    b = {str(i): {"id": str(i), "scores": {"clean": 0, **({"robust": 0} if i < 3 else {})}} for i in range(6)}
    robust = pair(a, b, "robust")
    assert robust.n == 3 and robust.left_out == 0 and pair(a, b, "clean").n == 6


def test_stored_records_keep_the_runs_own_selection(tmp_path: Path) -> None:
    store = SampleStore(tmp_path / "samples" / "s.jsonl")
    store.append([{"id": f"s{i}", "scores": {"pg": i % 2}} for i in range(10)])
    whole = stored_records(_result("toy", "samples/s.jsonl", 10), tmp_path, lambda: pytest.fail("not needed"))
    assert list(whole) == [f"s{i}" for i in range(10)]
    subset = stored_records(_result("toy", "samples/s.jsonl", 3), tmp_path, lambda: ["s7", "s2", "s4"])
    assert list(subset) == ["s7", "s2", "s4"]  # the store holds a larger --limit's samples too
    with pytest.raises(FileNotFoundError, match="--fresh"):
        stored_records(_result("toy", "samples/gone.jsonl", 3), tmp_path, list)


def test_differences_of_hand_built_results(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    hits_a, hits_b = rng.integers(0, 2, 40), rng.integers(0, 2, 40)
    hits_b[:12] = 1  # the other encoder hits more often
    energy_a, energy_b = rng.random(40), rng.random(40) * 0.8 + 0.2
    for name, hits, energy in (("a", hits_a, energy_a), ("b", hits_b, energy_b)):
        records = [{"id": f"s{i}", "scores": {"pg": int(h), "pg_energy": float(e)}}
                   for i, (h, e) in enumerate(zip(hits, energy, strict=True))]
        records.append({"id": "s40", "excluded": "empty mask"} if name == "a" else
                       {"id": "s40", "scores": {"pg": 1, "pg_energy": 0.5}})
        SampleStore(tmp_path / f"{name}.jsonl").append(records)
    base, other = _result("toy", "a.jsonl", 41, {"detectors": {"mean": 5.0}}), \
        _result("toy-b", "b.jsonl", 41, {"detectors": {"mean": 8.0}})
    columns = [Column("pointing_game", "pointing_game", "gradcam", m) for m in (HIT, ENERGY)]
    columns.append(Column("dissect", "clip_dissect", None, COUNT))
    card = Scorecard("s", "toy", ["toy", "toy-b"], columns)
    for column in columns:
        for result in (base, other):
            card.cells[(result.encoder, column.label)] = Cell(0.0)
            card.results[(result.encoder, column.label)] = result

    def records(column: Column, result: RunResult) -> dict:
        return stored_records(result, tmp_path, list)

    pg, energy, detectors = compare_columns(card, records, lambda c: c.task != "clip_dissect",
                                            Settings(resamples=500, seed=3))
    b_only, a_only = int(((hits_b == 1) & (hits_a == 0)).sum()), int(((hits_a == 1) & (hits_b == 0)).sum())
    assert (pg.test, pg.n, pg.other_only, pg.reasons) == (MCNEMAR, 40, 1, {"excluded: empty mask": 1})
    assert pg.p_value == pytest.approx(mcnemar_exact_p(a_only, b_only))
    assert pg.difference == pytest.approx(100 * (hits_b.mean() - hits_a.mean()))
    assert energy.test == WILCOXON and energy.p_value == pytest.approx(stats.wilcoxon(energy_b - energy_a).pvalue)
    assert energy.low < energy.difference < energy.high
    assert (detectors.test, detectors.difference, detectors.p_value, detectors.p_holm) == (NO_TEST, 3.0, None, None)
    smaller, larger = sorted([pg.p_value, energy.p_value])
    assert sorted([pg.p_holm, energy.p_holm]) == pytest.approx([min(1, 2 * smaller), max(min(1, 2 * smaller),
                                                                                         larger)])
    assert pg.significant == (pg.p_holm < 0.05)


def test_a_request_names_each_encoder_once_and_the_baseline_among_them() -> None:
    suite = load_suite("quick")
    assert CompareRequest(suite, ("toy", "toy-aft"), "toy-aft").out == Path("results")
    with pytest.raises(ValueError, match="--baseline toy-fare: the baseline must be one of"):
        CompareRequest(suite, ("toy", "toy-aft"), "toy-fare")
    with pytest.raises(ValueError, match="names 'toy' twice"):
        CompareRequest(suite, ("toy", "toy-aft", "toy"), "toy")


def test_an_encoder_every_method_refuses_gets_empty_cells(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Card:
        card = {"name": "cnn"}
        image_size = (32, 32)

    def refuse(config: object) -> None:
        raise UnsupportedEncoderError("rollout needs a ViT")

    monkeypatch.setattr(stages, "load_encoder", lambda spec, device: Card())
    monkeypatch.setattr(stages, "run", refuse)
    runner = stages.StageRunner(tmp_path)
    outcome = runner.results(resolve_config("sparsity", {"encoders": ["toy"], "out": str(tmp_path)}))
    assert outcome.results == [] and not outcome.reused and not (tmp_path / stages.STAGES_DIR).exists()
