"""``aft-bench study``'s command line: ``build`` the HIVE "distinct" study page (Kim et al. 2022; AFT paper
appendix A.4, Fig. 16) and ``score`` the participants' answers into Table 10.

Parsing imports neither torch nor the models, so ``aft-bench study --help`` and a misspelt flag answer at once.
With no options, ``build`` makes the paper's study on the embedded world: 10 cases (5 correct, 5 wrong zero-shot
predictions) of each of ``toy`` and ``toy-aft`` on the shapes test images, with Grad-CAM maps.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from aft_bench.apps.arguments import attribution_args, check_output_folder, cpu_threads, key_values


def build_parser() -> argparse.ArgumentParser:
    """The ``aft-bench study`` parser with its ``build`` and ``score`` subcommands."""
    parser = argparse.ArgumentParser(
        prog="aft-bench study", allow_abbrev=False,
        description="The user study of the AFT paper (appendix A.4, Table 10), after HIVE's distinct task: "
                    "participants pick the true class's map among four, without class names.")
    sub = parser.add_subparsers(dest="action", required=True)

    build = sub.add_parser(
        "build", allow_abbrev=False, help="select the cases and write study.html (+ manifest.json)",
        description="Per encoder, half the cases with a correct and half with a wrong zero-shot prediction, in a "
                    "seeded order; each case shows the maps of the true class and the three other top-ranked "
                    "classes in random order; the cases of all encoders shuffled into one self-contained page.")
    build.add_argument("--encoders", nargs="+", default=["toy", "toy-aft"],
                       help="encoder names or specs (default: toy toy-aft; aft-bench ls encoders)")
    build.add_argument("--dataset", default="shapes", help="dataset name (default: shapes; aft-bench ls datasets)")
    build.add_argument("--data-root", help="dataset folder on disk (real datasets)")
    build.add_argument("--dataset-arg", action="append", metavar="KEY=VALUE", help="e.g. split=val, size=1000")
    build.add_argument("--attribution", default="gradcam",
                       help="the method whose maps participants see (default: gradcam, as in the paper)")
    build.add_argument("--attr-arg", action="append", metavar="METHOD.PARAM=VALUE", help="e.g. gradcam.block=-1")
    build.add_argument("--cases", type=int, default=10,
                       help="cases per encoder, half correct and half wrong predictions (default 10, as the paper)")
    build.add_argument("--seed", type=int, default=0, help="seeds the image order, the map order and the case order")
    build.add_argument("--option", action="append", metavar="KEY=VALUE",
                       help="the zero-shot head's prompts: templates=openai_imagenet, prompt_template='a photo of "
                            "a {}.'")
    build.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    build.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per classification batch")
    build.add_argument("--threads", type=int, metavar="N", help="intra-op CPU threads (torch.set_num_threads)")
    build.add_argument("--out", default="study", help="the study folder (default: study)")

    score = sub.add_parser(
        "score", allow_abbrev=False, help="score answer files into Table 10",
        description="Mean accuracy and standard deviation over participants per encoder, for cases with correct "
                    "and wrong predictions and all cases, against the 25% chance level. Answer files of another "
                    "study, incomplete ones and duplicates are refused with a message naming the file.")
    score.add_argument("study", help="the study folder (or its manifest.json)")
    score.add_argument("answers", nargs="+", help="answer files downloaded from the page (or folders of them)")
    score.add_argument("--out", default="results", help="results folder; writes <out>/user_study/ (default: results)")
    score.add_argument("--format", choices=("md", "csv"), default="md", help="what to print (both are written)")
    score.add_argument("--strict", action="store_true", help="fail on any refused answer file instead of leaving "
                                                             "it out")
    return parser


def cmd_build(args: argparse.Namespace) -> int:
    """Builds the study and reports where it is, its size and how long it took."""
    from aft_bench.apps.study.build import StudyConfig, build_study

    config = StudyConfig(
        encoders=tuple(args.encoders), dataset=args.dataset, data_root=args.data_root,
        dataset_args=key_values(args.dataset_arg, "--dataset-arg"), attribution=args.attribution,
        attribution_args=attribution_args(args.attr_arg), cases=args.cases, seed=args.seed,
        options=key_values(args.option, "--option"), device=args.device, batch_size=args.batch_size)
    out = Path(args.out)
    check_output_folder(out)
    with cpu_threads(args.threads):
        built = build_study(config, out)
    cases = len(built.manifest.cases)
    print(f"study {built.manifest.study_id}: {cases} cases ({args.cases} per encoder x {len(config.encoders)}) in "
          f"{built.seconds:.1f} s")
    print(f"page: {built.page} ({built.page_bytes / 1e6:.2f} MB; give participants this file only)")
    print(f"manifest: {built.manifest_path} (the answer key; keep it for `aft-bench study score {out} ANSWERS...`)")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """Scores the answer files and prints Table 10."""
    from aft_bench.apps.study.manifest import read_manifest
    from aft_bench.apps.study.score import csv_table, markdown_table, score_answers, write_scores

    manifest = read_manifest(args.study)
    check_output_folder(Path(args.out))
    rows, sheets, refusals = score_answers(manifest, args.answers, strict=args.strict)
    paths = write_scores(manifest, rows, sheets, refusals, args.out)
    print(markdown_table(manifest, rows, refusals) if args.format == "md" else csv_table(rows), end="")
    print(f"\n{len(sheets)} participants scored, {len(refusals)} answer files refused; results: {paths[-2].parent}")
    return 0


ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {"build": cmd_build, "score": cmd_score}


def run_study(argv: Sequence[str] | None = None) -> int:
    """``aft-bench study``: parses ``argv`` and runs ``build`` or ``score``.

    Configures no logging and catches nothing: the caller (the ``aft-bench`` command line) does both.

    Raises:
        SystemExit: For bad flags (status 2).
        UnknownNameError: For an unknown encoder, dataset, attribution or option.
        ValueError, FileNotFoundError: For bad input, naming the file or value.
    """
    args = build_parser().parse_args(argv)
    return ACTIONS[args.action](args)
