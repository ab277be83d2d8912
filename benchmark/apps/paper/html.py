"""``report.html``: the report as one self-contained page (inline style, figures as data URIs, no script).

Sections: the run (world, results store, settings, versions, wall time), the suites' statuses, then one section per
suite with its table in the paper's layout (column groups as a second heading row; each cell our number, then the
paper's and the difference in grey, ``†`` where the protocol differs), its panels and its notes. Text cells are
written by :mod:`aft_bench.apps.paper.render` and escaped here.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

from aft_bench.apps.paper.layout import Cell, PaperTable
from aft_bench.apps.paper.render import LEGEND, MARK, heading, table_notes
from aft_bench.results.table import format_number

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; } td.key { text-align: left; }
.ref { color: #777; font-size: 0.85em; } .mark { color: #b00; }
.status-done { color: #060; } .status-partial { color: #a60; } .status-needs { color: #555; }
.status-failed { color: #b00; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 640px; border: 1px solid #ddd; } figcaption { font-size: 0.8em; max-width: 640px; }
.notes { font-size: 0.85em; color: #444; } .scroll { overflow-x: auto; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def data_uri(path: Path) -> str:
    """The PNG file ``path`` as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _cell(cell: Cell, decimals: int) -> str:
    ours = _e(format_number(cell.value, decimals))
    if cell.reference is None:
        return ours + (' <span class="ref">(n/a)</span>' if cell.missing else "")
    delta = "" if cell.difference is None else f", {cell.difference:+.{decimals}f}"
    mark = f'<span class="mark" title="{_e("; ".join(cell.differences))}">{MARK}</span>' if cell.differences else ""
    return f'{ours} <span class="ref">({_e(cell.reference.printed)}{_e(delta)})</span>{mark}'


def table_html(table: PaperTable) -> str:
    """The table (see the module docstring), its legend and notes."""
    keys = len(table.row_keys)
    rows = []
    if table.group_key:
        top = "".join(f'<th rowspan="2">{_e(h)}</th>' for h in table.row_headers)
        for group, columns in groupby(table.columns, key=lambda c: c.group):
            top += f'<th colspan="{len(list(columns))}">{_e(table.group_labels.get(group, group))}</th>'
        rows += [f"<tr>{top}</tr>", "<tr>" + "".join(f"<th>{_e(heading(c))}</th>" for c in table.columns) + "</tr>"]
    else:
        rows.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in table.row_headers)
                    + "".join(f"<th>{_e(heading(c))}</th>" for c in table.columns) + "</tr>")
    for row in table.rows:
        cells = "".join(f'<td class="key">{_e(label)}</td>' for label in row.labels[:keys])
        cells += "".join(f"<td>{_cell(cell, column.decimals)}</td>"
                         for cell, column in zip(row.cells, table.columns, strict=True))
        rows.append(f"<tr>{cells}</tr>")
    notes = "".join(f"<li>{_e(note)}</li>" for note in table_notes(table))
    return (f'<p class="notes">{_e(LEGEND)}</p><div class="scroll"><table class="paper">{"".join(rows)}</table></div>'
            + (f'<ul class="notes">{notes}</ul>' if notes else ""))


def _section(report: Any) -> str:
    paper = report.suite.paper
    parts = [f'<section id="{_e(report.suite.name)}"><h2>{_e(paper.item)}: {_e(paper.title)}</h2>',
             f'<p>Status: <b class="status-{_e(report.status)}">{_e(report.status)}</b>'
             + (f" - {_e(report.message)}" if report.message else "") + f" ({report.wall_s:.1f} s)</p>"]
    if report.encoders:
        parts.append("<p>Encoders: " + ", ".join(f"{_e(k)} = <code>{_e(v)}</code>" for k, v in report.encoders.items())
                     + "</p>")
    if report.table is not None:
        parts.append(table_html(report.table))
    for panel in report.panels:
        if panel.files is None:
            parts.append(f'<p class="notes">{_e(panel.figure.title or panel.figure.name)}: not drawn - '
                         f"{_e(panel.reason)}</p>")
            continue
        for path, caption in panel.files.files:
            if path.suffix == ".png":
                parts.append(f'<figure><img src="{data_uri(path)}" alt="{_e(caption)}">'
                             f"<figcaption>{_e(caption)}</figcaption></figure>")
    if report.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in report.notes) + "</ul>")
    return "".join(parts) + "</section>"


def report_html(reports: Sequence[Any], facts: Mapping[str, Any]) -> str:
    """The whole page."""
    settings = ", ".join(f"{k}={v}" for k, v in facts["settings"].items()) or "none (the defaults)"
    versions = ", ".join(f"{k} {v}" for k, v in facts["versions"].items())
    run = (f"<ul><li>World: {_e(facts['world'])}</li><li>Results store: <code>{_e(facts['results'])}</code></li>"
           f"<li>Encoders: {_e(' '.join(facts['encoders']) or 'the roles’ toy encoders (listed per suite)')}</li>"
           f"<li>Settings: {_e(settings)}</li><li>aft-bench {_e(facts['aft_bench'])} (git {_e(facts['git'])}), "
           f"{_e(facts['date'])}; {_e(versions)}</li><li>Wall time: {facts['wall_s']:.1f} s</li></ul>")
    status = ["<tr><th>suite</th><th>paper item</th><th>status</th><th>wall time (s)</th><th>stages run</th>"
              "<th>stages reused</th><th>note</th></tr>"]
    for s in facts["suites"]:
        status.append(f'<tr><td class="key"><a href="#{_e(s["suite"])}">{_e(s["suite"])}</a></td>'
                      f'<td class="key">{_e(s["item"])}</td><td class="key status-{_e(s["status"])}">'
                      f'{_e(s["status"])}</td><td>{s["wall_s"]:.1f}</td><td>{s["stages_run"]}</td>'
                      f'<td>{s["stages_reused"]}</td><td class="key">{_e(s["message"])}</td></tr>')
    body = (f'<h1>AFT paper report</h1><section id="run"><h2>Run</h2>{run}</section>'
            f'<section id="suites"><h2>Suites</h2><table class="status">{"".join(status)}</table></section>'
            + "".join(_section(r) for r in reports))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>AFT paper report</title>'
            f'<link rel="icon" href="data:,"><style>{STYLE}</style></head><body>{body}</body></html>\n')
