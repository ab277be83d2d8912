"""The study page: one self-contained HTML file that a participant opens from disk, with no server or network.

The page is ``template.html`` with ``study.css`` and ``study.js`` (package data of :mod:`aft_bench.apps.study`)
inlined, and the cases embedded as JSON in a ``<script type="application/json">`` element: per case only its
opaque id, the image and the four map pictures as ``data:`` URIs. No class name, sample id, encoder name or
answer reaches the page (the answer key is in the manifest beside it). The script asks for a participant id,
shows one case at a time (a click or the keys 1-4 answers and moves on; Back / Next and the arrow keys move
between cases; a progress bar counts the answers), keeps the answers in the browser's local storage under the
study id so that a reload loses nothing, and at the end offers the answers as a JSON download
(:data:`ANSWERS_FORMAT`, read by :mod:`aft_bench.apps.study.score`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from string import Template

ANSWERS_FORMAT = "aft-bench-study-answers"
"""The ``format`` field of the answer files the page downloads (their ``version`` is 1)."""


@dataclass(frozen=True)
class CasePictures:
    """What the page shows of one case: its id, the image and the four maps (data URIs, in page order)."""

    id: str
    image: str
    maps: tuple[str, ...]


def _asset(name: str) -> str:
    return resources.files("aft_bench.apps.study").joinpath(name).read_text(encoding="utf-8")


def _script_json(value: object) -> str:
    """JSON that is safe inside a ``<script>`` element (no ``</script>``, no HTML comment openers)."""
    return json.dumps(value, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace(
        "&", "\\u0026")


def page_html(study_id: str, cases: Sequence[CasePictures]) -> str:
    """The study page of ``cases`` (in the order participants answer them).

    Raises:
        ValueError: If there are no cases or a case does not have four maps.
    """
    if not cases:
        raise ValueError("a study page needs at least one case")
    bad = [c.id for c in cases if len(c.maps) != 4]
    if bad:
        raise ValueError(f"cases {bad} do not have 4 maps each")
    data = {"format": ANSWERS_FORMAT, "study_id": study_id,
            "cases": [{"id": c.id, "image": c.image, "maps": list(c.maps)} for c in cases]}
    return Template(_asset("template.html")).substitute(
        css=_asset("study.css"), script=_asset("study.js"), data=_script_json(data), count=len(cases))
