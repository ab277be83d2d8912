"""``aft-bench compare``'s command line: compare encoders on a suite of tasks against a baseline.

``aft-bench compare --encoders ViT-B-16:openai ckpt:/runs/mine --baseline ViT-B-16:openai --suite interpretability
--dataset imagenet_s --data-root /data/ImageNetS919`` runs every task of the suite for every encoder on the same
samples (resumably: stored scores and earlier compares' stages are reused), then writes the scorecard and the
paired differences under ``<out>/reports/compare/<suite>/`` and prints both. With no options it compares the
embedded world's ``toy``, ``toy-aft`` and ``toy-fare`` against ``toy`` on the ``interpretability`` suite.
``--list`` shows the built-in suites; ``--suite PATH.yaml`` runs a suite file of one's own
(:mod:`aft_bench.apps.suites.suite` describes the schema); ``--skip ENTRY`` leaves entries out and ``--set
ENTRY.KEY=VALUE`` changes one key of an entry (``--set network_dissection.dataset=broden``: the tasks that need
other data than the rest). Parsing imports no model code; every name, option and
headline metric is checked before any model loads.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aft_bench.apps.arguments import CACHE_SAMPLES_HELP, check_output_folder, cpu_threads, key_values
from aft_bench.apps.suites.suite import load_suite, suite_names

log = logging.getLogger(__name__)

DEFAULT_ENCODERS = ("toy", "toy-aft", "toy-fare")
DEFAULT_SUITE = "interpretability"


def add_run_settings(runs: argparse._ArgumentGroup) -> argparse._ArgumentGroup:
    """Adds the run settings a suite's tasks share (dataset, data root and arguments, limit, seed, batch size, device,
    workers, threads) to the argument group ``runs`` (``aft-bench compare`` and ``aft-bench paper``); returns it."""
    runs.add_argument("--dataset", help="dataset name for every task that does not pin its own (aft-bench ls datasets)")
    runs.add_argument("--data-root", help="dataset folder on disk (real datasets)")
    runs.add_argument("--dataset-arg", action="append", metavar="KEY=VALUE", help="a keyword argument of the dataset")
    runs.add_argument("--limit", type=int, metavar="N", help="score a seeded subset of N samples in every task")
    runs.add_argument("--seed", type=int, help="the run seed (default: the suite's, else 0)")
    runs.add_argument("--batch-size", type=int, metavar="N", help="samples per batch (default: each task's)")
    runs.add_argument("--device", help="cpu, cuda, cuda:1, ...")
    runs.add_argument("--num-workers", type=int, metavar="N",
                      help="data-loading worker processes (default: the available cores, at most 8; 0: none)")
    runs.add_argument("--cache-samples", action="store_true", default=None, help=CACHE_SAMPLES_HELP)
    runs.add_argument("--threads", type=int, metavar="N", help="intra-op CPU threads (torch.set_num_threads)")
    return runs


def build_parser() -> argparse.ArgumentParser:
    """The ``aft-bench compare`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="aft-bench compare", allow_abbrev=False,
        description="Compare encoders on every task of a suite: a scorecard (one row per encoder, one column per "
                    "headline metric) and the paired difference of each encoder against the baseline on the samples "
                    "both scored, with a 95% paired-bootstrap interval and a Holm-corrected p-value (McNemar's "
                    "exact test for binary scores, Wilcoxon's signed-rank test for continuous ones).")
    parser.add_argument("--list", action="store_true", help="list the built-in suites and exit")
    parser.add_argument("--suite", default=DEFAULT_SUITE,
                        help=f"a built-in suite ({', '.join(suite_names())}) or a suite YAML file "
                             f"(default: {DEFAULT_SUITE})")
    parser.add_argument("--encoders", nargs="+", default=list(DEFAULT_ENCODERS),
                        help=f"encoder names or specs, in scorecard order (default: {' '.join(DEFAULT_ENCODERS)})")
    parser.add_argument("--baseline", help="the encoder the others are compared with (default: the first encoder; "
                                           "one not among --encoders is put first)")
    parser.add_argument("--skip", nargs="+", default=[], metavar="ENTRY",
                        help="leave these entries of the suite out (e.g. --skip roar network_dissection)")
    parser.add_argument("--set", action="append", metavar="ENTRY.KEY=VALUE",
                        help="change one key of one suite entry, as its suite file would (values as YAML), e.g. "
                             "--set network_dissection.dataset=broden --set network_dissection.data_root=/data/broden")
    runs = add_run_settings(parser.add_argument_group(
        "run settings (over the suite's, for every task; as for aft-bench run)"))
    runs.add_argument("--on-error", choices=("raise", "skip"), help="bad samples: fail (default) or skip and count")
    runs.add_argument("--fresh", action="store_true", default=None,
                      help="run every task again, recomputing stored per-sample scores")
    runs.add_argument("--out", default="results", help="results folder, shared with aft-bench run (default: results)")
    stats = parser.add_argument_group("statistics")
    stats.add_argument("--resamples", type=int, default=10_000, metavar="N",
                       help="paired-bootstrap resamples (default: 10000)")
    stats.add_argument("--bootstrap-seed", type=int, default=0, help="the bootstrap's seed (default: 0)")
    stats.add_argument("--alpha", type=float, default=0.05,
                       help="significance level of the Holm-corrected p-values (default: 0.05)")
    return parser


def list_suites() -> str:
    """The built-in suites with their descriptions and tasks, one block per suite."""
    lines = []
    for name in suite_names():
        suite = load_suite(name)
        lines += [f"{name:<18}{suite.description}", f"{'':<18}tasks: {', '.join(t.label for t in suite.tasks)}"]
    lines.append("\nor --suite PATH.yaml: a suite file of your own in the same schema (see the built-in ones)")
    return "\n".join(lines)


def entry_settings(items: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """``--set ENTRY.KEY=VALUE`` flags as ``{entry: {key: value}}`` (values read as YAML).

    Raises:
        ValueError: For a flag that is not ``ENTRY.KEY=VALUE``.
    """
    out: dict[str, dict[str, Any]] = {}
    for key, value in key_values(items, "--set").items():
        entry, dot, name = key.partition(".")
        if not dot or not entry or not name:
            raise ValueError(f"--set expects ENTRY.KEY=VALUE (e.g. --set roar.limit=100), got {key!r}")
        out.setdefault(entry, {})[name] = value
    return out


def run_compare(argv: Sequence[str] | None = None) -> int:
    """``aft-bench compare``: parses ``argv``, compares, prints the scorecard and the paired table.

    Configures no logging and catches nothing: the caller (the ``aft-bench`` command line) does both.

    Returns:
        0 (the exit status) once the files are written.

    Raises:
        SystemExit: For bad flags (status 2).
        UnknownNameError: For an unknown suite, task, encoder, method, dataset, option key or headline metric.
        ValueError, FileNotFoundError: For bad input (a bad value, a suite file that is not valid, a missing one).
    """
    args = build_parser().parse_args(argv)
    if args.list:
        print(list_suites())
        return 0
    if args.resamples < 1:
        raise ValueError(f"--resamples {args.resamples}: give a positive number of bootstrap resamples")
    if not 0.0 < args.alpha < 1.0:
        raise ValueError(f"--alpha {args.alpha}: give a significance level between 0 and 1, e.g. 0.05")
    suite = load_suite(args.suite).with_settings(entry_settings(args.set)).without(args.skip)
    from aft_bench.apps.compare.compare import CompareRequest, compare, plan_compare  # torch, once the flags parse
    from aft_bench.apps.compare.differences import Settings
    from aft_bench.apps.compare.render import paired_markdown, scorecard_markdown

    baseline = args.baseline or args.encoders[0]
    encoders = tuple(args.encoders) if baseline in args.encoders else (baseline, *args.encoders)
    run_settings = {
        "dataset": args.dataset, "data_root": args.data_root, "limit": args.limit, "seed": args.seed,
        "batch_size": args.batch_size, "device": args.device, "num_workers": args.num_workers,
        "cache_samples": args.cache_samples, "out": args.out,
        "on_error": args.on_error, "fresh": args.fresh,
        "dataset_args": key_values(args.dataset_arg, "--dataset-arg") or None,
    }
    request = CompareRequest(suite, encoders, baseline, run_settings,
                             Settings(resamples=args.resamples, seed=args.bootstrap_seed, alpha=args.alpha))
    plans = plan_compare(request)
    check_output_folder(Path(args.out))
    with cpu_threads(args.threads):
        outcome = compare(request, plans)
    print(scorecard_markdown(outcome.scorecard, outcome.differences))
    print(paired_markdown(outcome.differences, baseline, request.statistics))
    folder = outcome.files["scorecard.md"].parent
    print(f"written to {folder}: {', '.join(sorted(outcome.files))} ({outcome.stages_run} stages run, "
          f"{outcome.stages_reused} reused from earlier compares)")
    return 0
