"""Snapshots during fine-tuning, series and grid encoder specs, a grid of training runs, and curves of a metric
against a card value (paper Figs. 5d-e, 14, 15)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from aft_bench.apps.cli import main
from aft_bench.core.registry import UnknownNameError
from aft_bench.evaluation.config import resolve_config
from aft_bench.models.series import expand_encoder_specs, snapshot_path
from aft_bench.reporting.curves import card_value, curve_points
from aft_bench.results.files import read_results
from aft_bench.training.arguments import config_from_args, run_train
from aft_bench.training.checkpoint import load_checkpoint
from aft_bench.training.grid import grid_points, parse_grid

pytestmark = pytest.mark.usefixtures("one_thread")


def _argv(ckpt: Path, out: Path, *extra: str) -> list[str]:
    return ["--encoder", f"ckpt:{ckpt}", "--data", "shapes:16", "--batch-size", "4", "--max-steps", "5",
            "--pgd-steps", "1", "--lr", "1e-3", "--threads", "1", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def series_run(tiny_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("series") / "run"
    assert run_train(_argv(tiny_ckpt, out, "--snapshot-every", "2")) == 0
    return out


# ---------------------------------------------------------------------------------------------- snapshots
def test_snapshots_keep_the_encoder_at_every_kth_step(series_run, tiny_ckpt, tmp_path, caplog):
    assert sorted(p.parent.name for p in (series_run / "snapshots").glob("*/encoder.safetensors")) == [
        "step-0000002", "step-0000004"]  # step 5 is the final encoder itself
    cards = {step: json.loads(snapshot_path(series_run, step).with_suffix(".json").read_text()) for step in (2, 4)}
    assert [cards[s]["train_steps"] for s in (2, 4)] == [2, 4] and cards[2]["snapshot"] is True
    assert cards[2]["name"].endswith("@step2")
    final = json.loads((series_run / "encoder.json").read_text())
    assert final["train_steps"] == 5 and final["snapshot"] is False
    # The step-2 snapshot holds exactly the weights of the same run stopped at step 2.
    stopped = tmp_path / "stopped"
    with caplog.at_level(logging.INFO, logger="aft_bench"):
        assert run_train(_argv(tiny_ckpt, stopped, "--snapshot-every", "2", "--stop-at-step", "2",
                               "--save-every", "2")) == 0
    assert "keeping a snapshot every 2 steps: 2 snapshots of" in caplog.text and "MB in all" in caplog.text
    model = load_checkpoint(stopped / "checkpoint.pt")["model"]
    snapshot = load_file(snapshot_path(series_run, 2))
    visual = {k: v for k, v in snapshot.items() if k.startswith("visual.")}
    assert visual and all(torch.equal(v, model[k]) for k, v in visual.items())
    assert not torch.equal(visual["visual.conv1.weight"],
                           load_file(snapshot_path(series_run, 4))["visual.conv1.weight"])


def test_snapshots_are_not_part_of_the_recipe():
    assert config_from_args(["--snapshot-every", "3"]).recipe_hash() == config_from_args([]).recipe_hash()
    with pytest.raises(ValueError, match="--snapshot-every 0 must be positive"):
        config_from_args(["--snapshot-every", "0"])


# ---------------------------------------------------------------------------------------------- series specs
def test_a_series_spec_expands_to_every_snapshot_then_the_final_encoder(series_run):
    steps = [f"ckpt:{snapshot_path(series_run, s)}" for s in (2, 4)] + [f"ckpt:{series_run / 'encoder.safetensors'}"]
    assert expand_encoder_specs(["toy", f"series:{series_run}"]) == ("toy", *steps)
    assert expand_encoder_specs([f"series:{series_run}@5,2"]) == (steps[2], steps[0])
    config = resolve_config("sparsity", {"encoders": [f"series:{series_run}"]})
    assert config.encoders == tuple(steps)
    with pytest.raises(ValueError, match=r"no encoder at step\(s\) \[3\].*steps \[2, 4, 5\]"):
        expand_encoder_specs([f"series:{series_run}@3"])
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        expand_encoder_specs([f"series:{series_run / 'nothing'}"])
    with pytest.raises(FileNotFoundError, match="--snapshot-every"):
        expand_encoder_specs([f"series:{series_run / 'snapshots'}"])


# ---------------------------------------------------------------------------------------------- grids
def test_grid_terms_parse_to_typed_values_in_order():
    assert parse_grid("eps=1,2 pgd_steps=3,5") == {"eps": [1.0, 2.0], "pgd_steps": [3, 5]}
    assert parse_grid("objective=aft,fare") == {"objective": ["aft", "fare"]}
    config = config_from_args(["--grid", "eps=1,2 lr=1e-4,1e-3", "--out", "/runs/g", "--name", "sweep"])
    points = grid_points(config)
    assert [p.folder for p in points] == ["eps=1,lr=0.0001", "eps=1,lr=0.001", "eps=2,lr=0.0001", "eps=2,lr=0.001"]
    assert (points[1].config.eps, points[1].config.lr, points[1].config.grid) == (1.0, 1e-3, None)
    assert points[1].config.out == "/runs/g/eps=1,lr=0.001" and points[1].config.name == "sweep eps=1,lr=0.001"
    assert points[0].config.recipe_hash() != points[1].config.recipe_hash()


@pytest.mark.parametrize(("grid", "error", "message"), [
    ("epss=1,2", UnknownNameError, "Did you mean 'eps'"),
    ("out=a,b", UnknownNameError, "grid key"),
    ("eps=1,2 eps=3", ValueError, "eps is given twice"),
    ("pgd_steps=1.5", ValueError, "pgd_steps takes a int"),
    ("eps", ValueError, "KEY=V1,V2"),
    ("eps=1,,2", ValueError, "KEY=V1,V2"),
    ("eps=-1,2", ValueError, "--eps -1.0 must be positive"),  # each point's recipe is checked before training
    ("missing.yaml", FileNotFoundError, "does not exist"),
])
def test_bad_grids_are_refused_before_any_training(grid, error, message):
    with pytest.raises(error, match=message):
        grid_points(config_from_args(["--grid", grid]))


def test_a_grid_file(tmp_path):
    (tmp_path / "sweep.yaml").write_text("eps: [1, 4]\nsigma: [0.5]\n")
    assert parse_grid(str(tmp_path / "sweep.yaml")) == {"eps": [1.0, 4.0], "sigma": [0.5]}
    (tmp_path / "bad.yaml").write_text("eps: 4\n")
    with pytest.raises(ValueError, match="non-empty list"):
        parse_grid(str(tmp_path / "bad.yaml"))


@pytest.fixture(scope="module")
def grid_run(tiny_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grid") / "sweep"
    assert run_train(_argv(tiny_ckpt, out, "--grid", "eps=1,8", "--max-steps", "2")) == 0
    return out


def test_a_grid_trains_one_resumable_run_per_point_and_records_its_values(grid_run, tiny_ckpt):
    manifest = json.loads((grid_run / "grid.json").read_text())
    assert [p["folder"] for p in manifest["points"]] == ["eps=1", "eps=8"]
    cards = [json.loads((grid_run / f / "encoder.json").read_text()) for f in ("eps=1", "eps=8")]
    assert [c["grid"] for c in cards] == [{"eps": 1.0}, {"eps": 8.0}]
    assert [c["recipe"]["eps"] for c in cards] == [1.0, 8.0] and cards[0]["recipe_hash"] != cards[1]["recipe_hash"]
    lines = (grid_run / "eps=8" / "metrics.jsonl").read_text()
    assert run_train(_argv(tiny_ckpt, grid_run, "--grid", "eps=1,8", "--max-steps", "2")) == 0  # finished: no steps
    assert (grid_run / "eps=8" / "metrics.jsonl").read_text() == lines
    with pytest.raises(ValueError, match="holds another grid"):
        run_train(_argv(tiny_ckpt, grid_run, "--grid", "eps=1,2", "--max-steps", "2"))
    specs = expand_encoder_specs([f"grid:{grid_run}"])
    assert specs == tuple(f"ckpt:{grid_run / f / 'encoder.safetensors'}" for f in ("eps=1", "eps=8"))
    with pytest.raises(FileNotFoundError, match="no grid.json"):
        expand_encoder_specs([f"grid:{grid_run / 'eps=1'}"])


# ---------------------------------------------------------------------------------------------- curves
def test_card_values_come_from_the_grid_then_the_recipe_then_the_card():
    card = {"grid": {"eps": 2.0}, "recipe": {"eps": 4.0, "lr": 1e-5}, "train_steps": 30, "eps": 0.0157}
    assert (card_value(card, "eps"), card_value(card, "lr"), card_value(card, "step")) == (2.0, 1e-5, 30.0)
    assert card_value(card, "sigma") is None and card_value({"recipe": {"compile": True}}, "compile") is None


def test_a_curve_of_a_metric_against_eps_over_a_grid_and_a_figure_over_it(grid_run, tmp_path, capsys):
    results = tmp_path / "results"
    argv = ["run", "--task", "sparsity", "--encoders", f"grid:{grid_run}", "toy-nothing", "--attributions",
            "simple_gradient", "--limit", "3", "--out", str(results), "--threads", "1"]
    assert main(argv) == 2  # an unknown encoder beside a grid is still refused by name
    assert main([*argv[:4], f"grid:{grid_run}", *argv[6:]]) == 0
    rows = read_results(results)
    lines = curve_points(rows, "gini", "eps")
    [(line, points)] = lines.items()
    assert line == ("sparsity", "simple_gradient") and [p.x for p in points] == [1.0, 8.0]
    by_encoder = {r.encoder: r.metrics["gini"]["mean"] for r in rows}
    assert [p.mean for p in points] == [by_encoder[p.encoder] for p in points]
    out = tmp_path / "fig" / "gini.png"
    assert main(["curve", str(results), "--metric", "gini", "--x", "eps", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_lines = out.with_suffix(".csv").read_text().splitlines()
    assert csv_lines[0] == "task,method,eps,mean,ci95,n,encoder" and len(csv_lines) == 3
    assert csv_lines[1].startswith("sparsity,simple_gradient,1,") and ",3,ckpt:" in csv_lines[1]
    assert main(["curve", str(results), "--metric", "pg", "--x", "eps", "--out", str(out)]) == 1
    assert "no result reports it; the results have gini" in capsys.readouterr().err
    figure = tmp_path / "maps.png"
    assert main(["figure", "--encoders", f"grid:{grid_run}", "--attributions", "simple_gradient", "--images", "2",
                 "--out", str(figure)]) == 0
    panels = json.loads(figure.with_suffix(".json").read_text())
    assert [row["encoder"] for row in panels["rows"]] == list(expand_encoder_specs([f"grid:{grid_run}"]))


def test_a_series_of_a_transformers_run_names_its_save_pretrained_folders(tmp_path):
    """The transformers backend writes each encoder as an ``encoder/`` folder beside its ``encoder.json`` card."""
    run = tmp_path / "hf-run"
    for folder, step in ((run / "snapshots" / "step-0000002", 2), (run, 4)):
        (folder / "encoder").mkdir(parents=True)
        (folder / "encoder.json").write_text(json.dumps({"train_steps": step}))
    (run / "snapshots" / "step-0000003" / "encoder").mkdir(parents=True)  # no card yet: not finished, left out
    assert expand_encoder_specs([f"series:{run}"]) == (f"ckpt:{run / 'snapshots' / 'step-0000002' / 'encoder'}",
                                                      f"ckpt:{run / 'encoder'}")
