"""The ``aft-bench`` command line: ``run``, ``figure``, ``curve``, ``table``, ``ls``, and ``train``, ``study``,
``compare`` and ``paper`` (each of the last four with its own parser in its own module, :data:`OWN_PARSERS`).

``--help`` and ``ls`` import neither torch nor model code (registries hold lazy entries). Unknown
names and option keys exit with status 2 and the list of known ones; bad inputs
(:data:`aft_bench.core.errors.USER_ERRORS`)
exit with status 1 and a message naming the file or value, without a traceback; any other exception is a bug:
its traceback is printed with a request to report it (status 1). ``train`` shares the same logging setup and
error handling, as do ``study`` and ``compare``.

Logging: warnings and errors by default (``train``: progress at INFO too); each ``-v`` one level more verbose,
each ``-q`` one level quieter, anywhere on the command line, before or after the subcommand. At debug level
(``-vv``; ``train -v``) a user error propagates with its traceback. Output folders (``--out``) are checked before
any work: a path under a file or in a folder that cannot be written is refused with a message.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aft_bench import __version__
from aft_bench.apps.arguments import (
    CACHE_SAMPLES_HELP,
    attribution_args,
    check_output_folder,
    cpu_threads,
    key_values,
)
from aft_bench.core.errors import USER_ERRORS
from aft_bench.core.registries import (
    ATTACKS,
    ATTRIBUTIONS,
    CLASSIFIERS,
    DATASETS,
    ENCODERS,
    FIGURES,
    METRICS,
    OBJECTIVES,
    REGULARIZERS,
    RETRAINERS,
    TARGETS,
    TASKS,
    VLMS,
)
from aft_bench.core.registry import Registry, UnknownNameError

log = logging.getLogger("aft_bench")
PROGRESS_LOG = logging.getLogger("aft_bench.core.progress")  # the progress lines of :mod:`aft_bench.core.progress`
LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
DEFAULT_LEVEL = {"train": logging.INFO}
"""The logging level of a command without ``-v``/``-q`` (WARNING for any command not named here)."""
LISTS: dict[str, Registry] = {
    "encoders": ENCODERS, "attributions": ATTRIBUTIONS, "tasks": TASKS, "datasets": DATASETS,
    "metrics": METRICS, "objectives": OBJECTIVES, "targets": TARGETS, "classifiers": CLASSIFIERS,
    "retrainers": RETRAINERS, "attacks": ATTACKS, "regularizers": REGULARIZERS, "vlms": VLMS,
}

OWN_PARSERS: dict[str, tuple[str, str]] = {
    "train": ("aft_bench.training.arguments:run_train",
              "adversarially fine-tune an encoder (AFT / FARE / TeCoA / PMG-AFT); see aft-bench train --help"),
    "study": ("aft_bench.apps.study.arguments:run_study",
              "the HIVE user study (paper appendix A.4, Table 10): build the page, score the answers; see aft-bench "
              "study --help"),
    "compare": ("aft_bench.apps.compare.arguments:run_compare",
                "compare encoders on a suite of tasks: a scorecard and paired differences against a baseline with "
                "significance; see aft-bench compare --help"),
    "paper": ("aft_bench.apps.paper.arguments:run_paper",
              "the paper's tables and figures with its numbers beside ours (list, all, table1, fig3, ...): "
              "report.md and report.html; see aft-bench paper --help"),
}
"""Subcommands that parse their own arguments: name -> (``module:function`` taking the rest of argv, help line).
Their modules are imported only when the command runs, so ``aft-bench --help`` stays light; they import the shared
command-line pieces from :mod:`aft_bench.apps.arguments`, never this module."""

SPEC_FORMS = (
    ("ARCH:TAG", "open_clip architecture + pretrained tag from your open_clip cache, e.g. ViT-B-16:openai"),
    ("hf-hub:ORG/NAME", "open_clip model from the Hugging Face cache"),
    ("hf:ORG/NAME", "transformers CLIPModel from the Hugging Face cache, or hf:/path/to/save_pretrained_folder"),
    ("timm:NAME[@PATH]", "timm classifier (pre-logits embedding, no text tower), weights from the cache or PATH"),
    ("SPEC?mean=NAME", "any spec with another normalisation: imagenet, openai, inception, or ?mean=A,B,C&std=A,B,C"),
    ("ckpt:PATH", "checkpoint written by aft-bench train (safetensors + JSON card)"),
    ("ARCH[:TAG]@PATH", "full or vision-only state dict (.pt / .safetensors), e.g. ViT-L-14:openai@fare2.pt"),
    ("series:RUN[@K,..]", "every snapshot (train --snapshot-every) and the final encoder of a run, or those steps"),
    ("grid:OUT", "the final encoder of every point of a train --grid run"),
)





def _options(args: argparse.Namespace) -> dict[str, Any]:
    """``--option`` pairs, with ``--vlm SPEC`` as ``vlm=SPEC``."""
    options = key_values(args.option, "--option")
    if args.vlm is not None:
        options["vlm"] = args.vlm
    return options




def split_verbosity(argv: Sequence[str]) -> tuple[int, list[str]]:
    """The net count of ``-v``/``-q`` flags anywhere in ``argv`` (before a ``--``; ``-vv``, ``--verbose`` and
    ``--quiet`` too) and the other arguments in order."""
    net, rest = 0, []
    for index, arg in enumerate(argv):
        if arg == "--":
            rest += argv[index:]
            break
        if re.fullmatch(r"-v+|-q+", arg):
            net += (len(arg) - 1) * (1 if arg[1] == "v" else -1)
        elif arg in ("--verbose", "--quiet"):
            net += 1 if arg == "--verbose" else -1
        else:
            rest.append(arg)
    return net, rest


def log_level(command: str, verbosity: int) -> int:
    """The logging level of ``command`` after ``verbosity`` net ``-v`` flags (negative: ``-q`` flags)."""
    base = LEVELS.index(DEFAULT_LEVEL.get(command, logging.WARNING))
    return LEVELS[min(max(base - verbosity, 0), len(LEVELS) - 1)]


def _logging_flags() -> argparse.ArgumentParser:
    """``-v``/``-q`` for every parser's help (main reads them from anywhere on the command line first)."""
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("-v", "--verbose", action="count", default=0,
                       help="more logging, anywhere on the command line: -v info (sample counts, steps), -vv "
                            "debug and the traceback of a user error (default: warnings and progress, a bar on a "
                            "terminal, a line every few seconds otherwise; train: info)")
    flags.add_argument("-q", "--quiet", action="count", default=0, help="less logging: -q errors only, no progress")
    return flags






def build_parser() -> argparse.ArgumentParser:
    flags = _logging_flags()
    parser = argparse.ArgumentParser(
        prog="aft-bench", parents=[flags],
        description="Interpretability benchmark for CLIP image encoders (AFT paper evaluations).",
    )
    parser.add_argument("--version", action="version", version=f"aft-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    threads_help = "intra-op CPU threads for the run (torch.set_num_threads; default: torch's choice)"

    run = sub.add_parser("run", parents=[flags],
                         help="evaluate encoders x attributions on a task, write results and a leaderboard")
    run.add_argument("--task", default="pointing_game", help="task name (aft-bench ls tasks)")
    run.add_argument("--encoders", nargs="+", help="encoder names or specs (aft-bench ls encoders)")
    run.add_argument("--attributions", nargs="+", help="attribution methods (aft-bench ls attributions)")
    run.add_argument("--dataset", help="dataset name (aft-bench ls datasets)")
    run.add_argument("--data-root", help="dataset folder on disk (real datasets)")
    run.add_argument("--limit", type=int, metavar="N",
                     help="evaluate a seeded random subset of N samples (default: all samples of the dataset; "
                          "the shapes world has 200 test images)")
    run.add_argument("--batch-size", type=int, metavar="N",
                     help="samples per batch (default: the task's); per-sample scores agree across batch sizes "
                          "to float rounding")
    run.add_argument("--device", help="cpu, cuda, cuda:1, ...")
    run.add_argument("--seed", type=int)
    run.add_argument("--num-workers", type=int, metavar="N",
                     help="data-loading worker processes (default: the available cores, at most 8; 0 loads in the "
                          "main process)")
    run.add_argument("--cache-samples", action="store_true", default=None, help=CACHE_SAMPLES_HELP)
    run.add_argument("--precision", choices=("fp32", "bf16"),
                     help="attribution forwards in fp32 (default) or bf16 autocast (maps and inputs stay fp32)")
    run.add_argument("--threads", type=int, metavar="N", help=threads_help)
    run.add_argument("--out", help="results folder (default: results)")
    run.add_argument("--on-error", choices=("raise", "skip"), help="bad samples: fail (default) or skip and count")
    run.add_argument("--fresh", action="store_true", default=None, help="recompute stored per-sample scores")
    run.add_argument("--option", action="append", metavar="KEY=VALUE", help="task option, e.g. tolerance=15")
    run.add_argument("--attr-arg", action="append", metavar="METHOD.PARAM=VALUE",
                     help="a hyperparameter of one of the run's methods, e.g. smoothgrad.n_samples=50")
    run.add_argument("--dataset-arg", action="append", metavar="KEY=VALUE",
                     help="a keyword argument of the dataset, e.g. size=1000 for shapes; classes=imagenette (or "
                          "wnids / class names) keeps those classes' samples")
    run.add_argument("--vlm", metavar="SPEC", help="shorthand for --option vlm=SPEC (task vlm_attention)")

    fig = sub.add_parser("figure", parents=[flags],
                         help="draw the saliency maps of encoders x attributions on the same images (paper Figs. 1-4)")
    fig.add_argument("--encoders", nargs="+", default=["toy", "toy-aft"], help="encoder names or specs")
    fig.add_argument("--attributions", nargs="+", default=["simple_gradient", "gradcam"], help="attribution methods")
    fig.add_argument("--dataset", default="shapes", help="dataset name (aft-bench ls datasets)")
    fig.add_argument("--data-root", help="dataset folder on disk (real datasets)")
    fig.add_argument("--images", type=int, default=6, help="number of images (a seeded subset)")
    fig.add_argument("--seed", type=int, default=0)
    fig.add_argument("--device", default="cpu")
    fig.add_argument("--threads", type=int, metavar="N", help=threads_help)
    fig.add_argument("--overlay", action="store_true", help="draw the maps over the image in grey")
    fig.add_argument("--option", action="append", metavar="KEY=VALUE", help="target=probe, probe options")
    fig.add_argument("--attr-arg", action="append", metavar="METHOD.PARAM=VALUE", help="e.g. gradcam.block=-1")
    fig.add_argument("--dataset-arg", action="append", metavar="KEY=VALUE", help="e.g. split=val")
    fig.add_argument("--task", help="draw a task's own figure instead of the saliency grid: "
                                    f"{', '.join(FIGURES.names())}")
    fig.add_argument("--vlm", metavar="SPEC", help="shorthand for --option vlm=SPEC (--task vlm_attention)")
    fig.add_argument("--out", default="figures/saliency.png",
                     help="image path: .png, .jpg, .jpeg, .pdf or .svg (a .json panel list goes beside it)")

    curve = sub.add_parser("curve", parents=[flags],
                           help="a metric of a results folder against a number in the encoders' cards, e.g. eps or "
                                "step (paper Fig. 5d-e)")
    curve.add_argument("folder", nargs="?", default="results", help="results folder (default: results)")
    curve.add_argument("--metric", required=True, help="a metric of the results, e.g. pg or gini")
    curve.add_argument("--x", required=True, help="the card value on the x axis: a grid key or training recipe "
                                                  "field (eps, lr, pgd_steps, ...) or step")
    curve.add_argument("--task", help="only this task's results (default: every task reporting the metric)")
    curve.add_argument("--out", default="figures/curve.png",
                       help="image path: .png, .jpg, .jpeg, .pdf or .svg (its points go beside it as .csv)")

    table = sub.add_parser("table", parents=[flags], help="rebuild the leaderboard from result files")
    table.add_argument("folder", nargs="?", default="results")
    table.add_argument("--format", choices=("md", "csv"), default="md")
    table.add_argument("--metric", help="one metric across datasets with their average (paper Table 2 layout), "
                                        "e.g. --metric clean")

    ls = sub.add_parser("ls", parents=[flags], help="list registered names")
    ls.add_argument("what", choices=sorted(LISTS))

    for name, (_, text) in OWN_PARSERS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def cmd_ls(args: argparse.Namespace) -> int:
    """The registry's names in alphabetical order, each with its help line (declared ones and plugins alike)."""
    registry = LISTS[args.what]
    names = sorted(registry.names())
    width = max((len(n) for n in names), default=10) + 2
    for name in names:
        print(f"{name:<{width}}{registry.help(name)}")
    if args.what == "encoders":
        print("\nany encoder by spec:")
        for form, text in SPEC_FORMS:
            print(f"  {form:<18}{text}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from aft_bench.results.files import read_results
    from aft_bench.results.table import PIVOT_RENDERERS, RENDERERS, write_leaderboards

    folder = Path(args.folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"results folder {folder} does not exist")
    results = read_results(folder)
    write_leaderboards(folder, results)
    if args.metric:
        print(PIVOT_RENDERERS[args.format](results, args.metric), end="")
    else:
        print(RENDERERS[args.format](results), end="")
    return 0


def cmd_curve(args: argparse.Namespace) -> int:
    from aft_bench.reporting.curves import write_curve
    from aft_bench.results.files import read_results

    folder = Path(args.folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"results folder {folder} does not exist")
    check_output_folder(Path(args.out).parent)
    path = write_curve(read_results(folder), args.metric, args.x, args.out, args.task)
    print(f"curve: {path} (points: {path.with_suffix('.csv')})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from aft_bench.evaluation.config import resolve_config
    from aft_bench.evaluation.runner import run

    task = TASKS.get(args.task) and args.task  # unknown task -> UnknownNameError before anything heavy
    overrides = {
        "encoders": args.encoders, "attributions": args.attributions, "dataset": args.dataset,
        "data_root": args.data_root, "limit": args.limit, "batch_size": args.batch_size, "device": args.device,
        "seed": args.seed, "num_workers": args.num_workers, "cache_samples": args.cache_samples,
        "precision": args.precision, "out": args.out, "on_error": args.on_error,
        "fresh": args.fresh, "options": _options(args) or None,
        "attribution_args": attribution_args(args.attr_arg) or None,
        "dataset_args": key_values(args.dataset_arg, "--dataset-arg") or None,
    }
    config = resolve_config(task, overrides)
    check_output_folder(Path(config.out))
    with cpu_threads(args.threads):
        outcome = run(config)
    if outcome.leaderboard is None:  # a rank other than 0 of a torchrun job: rank 0 reports
        return 0
    print(outcome.markdown, end="")
    print(f"\nresults: {len(outcome.paths)} files under {Path(config.out) / config.task}; "
          f"leaderboard: {outcome.leaderboard}")
    return 0


def cmd_figure(args: argparse.Namespace) -> int:
    from aft_bench.evaluation.config import RunConfig
    from aft_bench.models.series import expand_encoder_specs
    from aft_bench.reporting.saliency import saliency_figure

    if args.images < 1:
        raise ValueError(f"--images {args.images}: give a positive number of images")
    check_output_folder(Path(args.out).parent)
    config = RunConfig(
        task="figure", encoders=expand_encoder_specs(args.encoders), attributions=tuple(args.attributions),
        dataset=args.dataset,
        data_root=args.data_root, limit=args.images, device=args.device, seed=args.seed,
        options=_options(args), attribution_args=attribution_args(args.attr_arg),
        dataset_args=key_values(args.dataset_arg, "--dataset-arg"),
    )
    draw = (lambda: FIGURES.get(args.task)(config, args.out)) if args.task else (
        lambda: saliency_figure(config, args.out, overlay=args.overlay))
    with cpu_threads(args.threads):
        path = draw()
    print(f"figure: {path} (panels: {path.with_suffix('.json')})")
    return 0


def cmd_own_parser(name: str, argv: Sequence[str]) -> int:
    """Runs the subcommand ``name`` of :data:`OWN_PARSERS` on the arguments after its name."""
    import importlib

    module, _, function = OWN_PARSERS[name][0].partition(":")
    return int(getattr(importlib.import_module(module), function)(list(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``aft-bench`` and ``python -m aft_bench``."""
    verbosity, argv = split_verbosity(list(sys.argv[1:] if argv is None else argv))
    command: Callable[[], int]
    if argv[:1] and argv[0] in OWN_PARSERS:
        name, command = argv[0], lambda: cmd_own_parser(argv[0], argv[1:])
    else:
        args = build_parser().parse_args(argv)
        commands = {"run": cmd_run, "figure": cmd_figure, "curve": cmd_curve, "table": cmd_table, "ls": cmd_ls}
        name, command = args.command, lambda: commands[args.command](args)
    level = log_level(name, verbosity)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    before, progress_before = log.level, PROGRESS_LOG.level
    log.setLevel(level)
    PROGRESS_LOG.setLevel(min(level, logging.INFO) if verbosity >= 0 else level)  # progress shows unless -q
    try:
        return command()
    except UnknownNameError as exc:
        print(f"aft-bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aft-bench: interrupted; scores so far are saved, run the same command again to resume",
              file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if level == logging.DEBUG:
            raise
        print(f"aft-bench: error: {exc}", file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - not a user error: show everything
        traceback.print_exc()
        print("aft-bench: internal error (a bug, not a problem with your input). Please report it to the aft-bench "
              "maintainers with the command line, `aft-bench --version` and the traceback above.", file=sys.stderr)
        return 1
    finally:
        log.setLevel(before)
        PROGRESS_LOG.setLevel(progress_before)


if __name__ == "__main__":
    sys.exit(main())
