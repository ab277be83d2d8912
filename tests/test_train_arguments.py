"""``aft-bench train``'s command line, generated from TrainConfig's field metadata: flags, types, help, presets."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections import Counter

import pytest

from aft_bench.training.arguments import build_parser, config_from_args
from aft_bench.training.config import OBJECTIVE_ONLY, TEMPLATE_NAMES, TrainConfig
from aft_bench.training.presets import PRESETS

# One command line per field, with the value it must give (and its type): a new field fails until it is added.
KNOWN: dict[str, tuple[list[str], object]] = {
    "encoder": (["--encoder", "ckpt:/w/x.safetensors"], "ckpt:/w/x.safetensors"),
    "objective": (["--objective", "pmg-aft"], "pmg-aft"),  # the objective that reads every field
    "regularizer": (["--regularizer", "group-patch"], "group-patch"),
    "eps": (["--eps", "2"], 2.0),
    "eta": (["--eta", "0.5"], 0.5),
    "eps2": (["--eps2", "3"], 3.0),
    "group_patch": (["--group-patch", "8"], 8),
    "sigma": (["--sigma", "0"], 0.0),
    "outer_noise": (["--no-outer-noise"], False),
    "pgd_steps": (["--pgd-steps", "3"], 3),
    "pgd_step_size": (["--pgd-step-size", "0.25"], 0.25),
    "pgd_momentum": (["--pgd-momentum", "0.9"], 0.9),
    "random_start": (["--no-random-start"], False),
    "templates": (["--templates", "simple_imagenet"], "simple_imagenet"),
    "pmg_alpha": (["--pmg-alpha", "0.5"], 0.5),
    "pmg_beta": (["--pmg-beta", "2"], 2.0),
    "data": (["--data", "shapes:64"], "shapes:64"),
    "data_root": (["--data-root", "/data/coco"], "/data/coco"),
    "epochs": (["--epochs", "0.5"], 0.5),
    "max_steps": (["--max-steps", "7"], 7),
    "batch_size": (["--batch-size", "16"], 16),
    "lr": (["--lr", "3e-4"], 3e-4),
    "min_lr_ratio": (["--min-lr-ratio", "0.1"], 0.1),
    "warmup": (["--warmup", "0.2"], 0.2),
    "weight_decay": (["--weight-decay", "0"], 0.0),
    "beta1": (["--beta1", "0.8"], 0.8),
    "beta2": (["--beta2", "0.99"], 0.99),
    "grad_clip": (["--grad-clip", "1"], 1.0),
    "seed": (["--seed", "5"], 5),
    "precision": (["--precision", "bf16"], "bf16"),
    "compile": (["--compile"], True),
    "channels_last": (["--channels-last"], True),
    "snapshot_every": (["--snapshot-every", "50"], 50),
    "grid": (["--grid", "eps=1,2"], "eps=1,2"),
    "workers": (["--workers", "2"], 2),
    "threads": (["--threads", "3"], 3),
    "on_error": (["--on-error", "skip"], "skip"),
    "save_every": (["--save-every", "25"], 25),
    "log_every": (["--log-every", "1"], 1),
    "stop_at_step": (["--stop-at-step", "3"], 3),
    "device": (["--device", "cpu"], "cpu"),
    "out": (["--out", "runs/x"], "runs/x"),
    "name": (["--name", "mine"], "mine"),
    "preset": (["--preset", "toy-fare"], "toy-fare"),
}
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def test_every_field_has_exactly_one_flag_documented_by_its_metadata():
    assert set(KNOWN) == set(FIELDS)
    actions = [a for a in build_parser()._actions if a.dest != "help"]
    assert Counter(a.dest for a in actions) == Counter(list(FIELDS))  # one flag per field, no other flag
    assert {a.dest: a.option_strings for a in actions} == {name: [argv[0]] for name, (argv, _) in KNOWN.items()}
    for action in actions:
        assert action.help.startswith(FIELDS[action.dest].metadata["help"]), action.dest
    helps = {a.dest: a.help for a in actions}
    assert helps["eps"] == "Radius of the perturbation ball in 1/255 units (4 = 4/255). Default: 4.0."
    assert helps["outer_noise"].endswith("the published code drops it. On by default; this flag turns it off.")
    assert helps["compile"].endswith("(the PGD loop stays eager). Off by default.")
    assert helps["max_steps"] == "Total optimiser steps (overrides epochs)."  # no default to show


@pytest.mark.parametrize("name", list(KNOWN))
def test_each_flag_parses_to_its_typed_value_and_leaves_the_rest_at_the_default(name):
    argv, expected = KNOWN[name]
    users = OBJECTIVE_ONLY.get(name)  # a field only some objectives read goes with one of them
    config = config_from_args([*argv, "--objective", users[0]] if users else argv)
    value = getattr(config, name)
    assert value == expected and type(value) is type(expected)
    base = TrainConfig(**PRESETS["toy-fare"]) if name == "preset" else TrainConfig(objective=(users or ["aft"])[0])
    assert config.replace(**{name: getattr(base, name)}) == base


def test_all_flags_together_override_the_preset():
    config = config_from_args([token for argv, _ in KNOWN.values() for token in argv])
    assert dataclasses.asdict(config) == {name: expected for name, (_, expected) in KNOWN.items()}


def test_unset_flags_keep_the_default_or_the_preset_value():
    assert config_from_args([]) == TrainConfig()
    assert config_from_args(["--preset", "toy-aft"]) == TrainConfig(**PRESETS["toy-aft"], preset="toy-aft")
    config = config_from_args(["--preset", "vit-b-16-aft-eps2", "--data", "/data/imagenet/train", "--lr", "2e-5"])
    assert (config.encoder, config.eps, config.batch_size, config.lr) == ("ViT-B-16:openai", 2.0, 128, 2e-5)
    assert config.preset == "vit-b-16-aft-eps2" and config.beta2 == 0.95 and config.pgd_steps == 10
    assert config_from_args(["--preset", "vit-l-14-aft-eps4"]).batch_size == 64
    fare = config_from_args(["--preset", "vit-b-16-fare-eps4", "--no-outer-noise"])
    assert fare.objective == "fare" and fare.outer_noise is False and fare.sigma == 0.0


@pytest.mark.parametrize("argv", [
    ["--epss", "4"],  # misspelt
    ["--epoch", "3"],  # a prefix of --epochs: abbreviations are refused
    ["--outer-noise"],  # the switch of an on-by-default field is --no-outer-noise
    ["--eps", "four"],
    ["--max-steps", "1.5"],
    ["--precision", "fp16"],
    ["--preset", "toy-aftt"],
    ["--regularizer", "box_pixelnorm"],
])
def test_bad_command_lines_exit_2_with_argparse_message(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        config_from_args(argv)
    assert exit_.value.code == 2
    assert "aft-bench train: error:" in capsys.readouterr().err


def test_the_docstring_lists_every_field_with_its_help():
    for name, spec in FIELDS.items():
        assert f"        {name}: {spec.metadata['help']}\n" in TrainConfig.__doc__


def test_fixed_choices_are_checked_when_the_config_is_built():
    assert TrainConfig().on_error == "raise"  # bad input fails unless the user asks to skip
    with pytest.raises(ValueError, match="--on-error 'ignore': use one of raise, skip"):
        TrainConfig(on_error="ignore")
    with pytest.raises(ValueError, match="--precision 'fp16'"):
        TrainConfig(precision="fp16")


@pytest.mark.parametrize(("argv", "message"), [
    (["--max-steps", "0"], "--max-steps 0 must be positive"),
    (["--eps", "-4"], "--eps -4.0 must be positive"),
    (["--lr", "0"], "--lr 0.0 must be positive"),
    (["--pgd-steps", "0"], "--pgd-steps 0 must be positive"),
    (["--pgd-step-size", "-1"], "--pgd-step-size -1.0 must be positive"),
    (["--sigma", "-1"], "--sigma -1.0 must be 0 or more"),
    (["--threads", "0"], "--threads 0 must be positive"),
    (["--epochs", "0"], "--epochs 0.0 must be positive (or give --max-steps)"),
    (["--warmup", "1"], "--warmup 1.0 must be in [0, 1)"),
])
def test_non_positive_steps_radii_and_rates_name_the_flag_in_one_line(argv, message):
    with pytest.raises(ValueError) as info:
        config_from_args(argv)
    assert str(info.value) == f"invalid training option: {message}"


def test_on_error_and_threads_do_not_change_the_recipe():
    """A run stopped by a corrupt image continues with --on-error skip (same recipe hash, so the resume is allowed);
    the thread count is chosen per machine."""
    assert TrainConfig(on_error="skip").recipe_hash() == TrainConfig().recipe_hash()
    assert TrainConfig(threads=4).recipe_hash() == TrainConfig().recipe_hash()
    assert TrainConfig(eps=2.0).recipe_hash() != TrainConfig().recipe_hash()


def test_parsing_and_the_presets_import_neither_torch_nor_the_trainer():
    code = ("import sys; import aft_bench.training.presets; from aft_bench.training.arguments import "
            "config_from_args; config_from_args(['--preset', 'toy-aft']); "
            "print(sorted(m for m in ('torch', 'aft_bench.training.trainer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture()
def no_weights(monkeypatch):
    """Fails the test if training gets as far as loading an encoder."""
    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the inputs were checked")

    monkeypatch.setattr("aft_bench.training.trainer.load_encoder", refuse)


def test_misspelt_encoder_is_an_unknown_name_with_a_did_you_mean(no_weights):
    from aft_bench.core.registry import UnknownNameError
    from aft_bench.training.arguments import run_train

    with pytest.raises(UnknownNameError, match="Did you mean 'toy'"):
        run_train(["--encoder", "toyy"])


def test_cuda_without_cuda_fails_with_the_device_message(no_weights, monkeypatch):
    import torch

    from aft_bench.training.arguments import run_train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--device 'cuda': torch sees no CUDA device"):
        run_train(["--device", "cuda", "--max-steps", "1"])


@pytest.mark.parametrize(("argv", "message"), [
    (["--preset", "vit-b-16-aft-eps4"], "--data 'imagenet-train': not 'shapes"),
    (["--data", "shapes:0"], "positive number"),
    (["--data", "/no/such/rows.csv"], "does not exist"),
])
def test_data_is_checked_before_any_weights_load(no_weights, argv, message):
    from aft_bench.data.base import DataError
    from aft_bench.training.arguments import run_train

    with pytest.raises(DataError, match=message):
        run_train(argv)


def test_objective_specific_fields_are_refused_for_other_objectives_and_checked():
    assert TrainConfig(objective="pmg-aft", pmg_alpha=0.0, templates="openai_imagenet").pmg_alpha == 0.0
    with pytest.raises(ValueError, match="--pmg-alpha 2.0: only the pmg-aft objective uses it"):
        TrainConfig(objective="tecoa", pmg_alpha=2.0)
    with pytest.raises(ValueError, match="--templates 'simple_imagenet': only the tecoa and pmg-aft objectives"):
        TrainConfig(objective="aft", templates="simple_imagenet")
    with pytest.raises(ValueError, match="--pmg-beta -1.0 must be 0 or more"):
        TrainConfig(objective="pmg-aft", pmg_beta=-1.0)
    with pytest.raises(ValueError, match="--templates 'imagenet80': use one of openai_imagenet, simple_imagenet"):
        TrainConfig(objective="tecoa", templates="imagenet80")


def test_the_prompt_set_names_are_the_zero_shot_heads():
    from aft_bench.evaluation.classifiers import TEMPLATE_SETS

    assert set(TEMPLATE_NAMES) == set(TEMPLATE_SETS)


def test_fields_an_objective_does_not_read_stay_out_of_its_recipe():
    aft = TrainConfig(objective="aft").recipe()
    assert not {"templates", "pmg_alpha", "pmg_beta"} & set(aft)
    assert {"templates"} <= set(TrainConfig(objective="tecoa").recipe()) and "pmg_alpha" not in TrainConfig(
        objective="tecoa").recipe()
    pmg = TrainConfig(objective="pmg-aft")
    assert {"templates", "pmg_alpha", "pmg_beta"} <= set(pmg.recipe())
    assert pmg.replace(pmg_beta=0.5).recipe_hash() != pmg.recipe_hash()
