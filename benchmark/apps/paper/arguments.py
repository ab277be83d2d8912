"""``aft-bench paper``'s command line: the paper's tables and figures, with the paper's numbers beside ours.

``aft-bench paper list`` shows every paper suite: the item it reproduces, its entries and roles, and what the paper's
protocol needs (datasets, encoders, a GPU estimate). ``aft-bench paper table1 --encoders ViT-B-16:openai
ViT-B-16:openai@/ckpts/aft4.pt --dataset imagenet_s --data-root /data/ImageNetS919 --out report/`` runs Table 1's
protocol (resumable: stored scores and stages are reused; the encoders follow the suite's roles, or give
``ROLE=SPEC``) and writes it in the paper's layout; ``aft-bench paper all --out report/`` does every suite and writes
``report.md`` and a self-contained ``report.html``. With no options, the embedded world's toys fill the roles on the
shapes data with reduced sample counts. Parsing imports no model code.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from aft_bench.apps.arguments import check_output_folder, cpu_threads, key_values
from aft_bench.apps.compare.arguments import add_run_settings, entry_settings
from aft_bench.apps.paper.spec import PaperSuite, load_paper_suite, paper_suite_names

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The ``aft-bench paper`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="aft-bench paper", allow_abbrev=False,
        description="Reproduce the AFT paper's tables and figures: run (or reuse) each suite's tasks, lay the table "
                    "out as the paper does with the paper's number and the difference beside ours, draw the figures, "
                    "and write report.md and a self-contained report.html.")
    parser.add_argument("suites", nargs="+", metavar="SUITE",
                        help=f"list, all, or paper suites ({', '.join(paper_suite_names())}) or paper-suite files")
    parser.add_argument("--encoders", nargs="+", default=[],
                        help="encoder specs in the suite's role order (aft-bench paper list), or ROLE=SPEC "
                             "(aft@4=ckpt:/runs/aft4); default: on the embedded world, each role's toy")
    parser.add_argument("--set", action="append", metavar="ENTRY.KEY=VALUE",
                        help="change one key of a suite entry in every suite that has the entry, as aft-bench compare "
                             "--set (values as YAML), e.g. --set roar_text.per_dataset='{shapes: {limit: 8}}'")
    runs = add_run_settings(parser.add_argument_group(
        "run settings (over the suites', for every task; as for aft-bench run)"))
    runs.add_argument("--fresh", action="store_true", default=None, help="run every stage again")
    runs.add_argument("--results", default="results", help="the results store, shared with aft-bench run and "
                                                            "compare (default: results)")
    parser.add_argument("--out", default="report", help="the report folder (default: report)")
    return parser


def describe(suite: PaperSuite) -> list[str]:
    """The lines of one suite in ``aft-bench paper list``."""
    paper, needs = suite.paper, suite.paper.needs
    toy = f"embedded world: {paper.toy_world}" if paper.toy_world else \
        "embedded world: " + ", ".join(f"{r.name}={r.toy}" for r in paper.roles if r.toy)
    lines = [f"{suite.name:<9}{paper.item}: {paper.title}",
             f"{'':<9}entries: {', '.join(f'{t.label} ({t.task})' for t in suite.suite.tasks)}",
             f"{'':<9}roles: {' '.join(r.name for r in paper.roles)}",
             f"{'':<9}needs: datasets {', '.join(needs.datasets) or '-'}; encoders {needs.encoders or '-'}; "
             f"about {needs.gpu_hours:g} GPU hours"
             + (f"; tasks {', '.join(needs.tasks)}" if needs.tasks else "")
             + (f" ({needs.note})" if needs.note else ""),
             f"{'':<9}{toy}"]
    return lines


def list_suites() -> str:
    """Every paper suite, one block each."""
    lines: list[str] = []
    for name in paper_suite_names():
        lines += describe(load_paper_suite(name))
    lines.append("\nor a paper-suite file of your own (a compare suite with a 'paper' section; see the built-in ones)")
    return "\n".join(lines)


def with_entry_settings(suites: Sequence[PaperSuite], settings: Mapping[str, Mapping[str, Any]]) -> list[PaperSuite]:
    """``suites`` with ``--set`` applied to each suite that has the entry (``Suite.with_settings``).

    Raises:
        ValueError: For an entry none of the suites has.
    """
    labels = {entry.label for suite in suites for entry in suite.suite.tasks}
    unknown = sorted(set(settings) - labels)
    if unknown:
        raise ValueError(f"--set {unknown[0]}.…: no chosen suite has the entry {unknown[0]!r}; entries: "
                         f"{', '.join(sorted(labels))}")
    out = []
    for suite in suites:
        own = {entry.label for entry in suite.suite.tasks}
        changed = suite.suite.with_settings({label: values for label, values in settings.items() if label in own})
        out.append(replace(suite, suite=changed))
    return out


def run_paper(argv: Sequence[str] | None = None) -> int:
    """``aft-bench paper``: parses ``argv``, builds the report, prints each table and where the report is.

    Returns:
        0 once the report is written, 1 when a suite failed (the report says why).

    Raises:
        SystemExit: For bad flags (status 2). UnknownNameError: For an unknown suite.
        ValueError, FileNotFoundError: For a paper-suite file that is not valid.
    """
    args = build_parser().parse_args(argv)
    if args.suites == ["list"]:
        print(list_suites())
        return 0
    names = paper_suite_names() if args.suites == ["all"] else args.suites
    suites = with_entry_settings([load_paper_suite(name) for name in names], entry_settings(args.set))
    from aft_bench.apps.paper.render import table_markdown  # torch, once the flags parse
    from aft_bench.apps.paper.report import ReportRequest, build_report

    settings = {
        "dataset": args.dataset, "data_root": args.data_root, "limit": args.limit, "seed": args.seed,
        "batch_size": args.batch_size, "device": args.device, "num_workers": args.num_workers,
        "cache_samples": args.cache_samples, "out": args.results,
        "fresh": args.fresh, "dataset_args": key_values(args.dataset_arg, "--dataset-arg") or None,
    }
    request = ReportRequest(tuple(names), tuple(args.encoders), settings, Path(args.out))
    check_output_folder(Path(args.out))
    check_output_folder(Path(args.results), "--results")
    with cpu_threads(args.threads):
        reports, files = build_report(request, suites)
    for report in reports:
        if report.table is not None:
            print(table_markdown(report.table) + "\n")
        print(f"{report.suite.name}: {report.status}{f' - {report.message}' if report.message else ''} "
              f"({report.wall_s:.1f} s; {report.stages_run} stages run, {report.stages_reused} reused)")
    print(f"report: {files['report.md']} and {files['report.html']}")
    return 1 if any(report.status == "failed" for report in reports) else 0
