"""The study's manifest: ``manifest.json`` beside ``study.html``, the record the scorer reads.

It holds the study id (a hash of the build's settings, the encoders' cards and the cases, so a rebuild with the
same inputs keeps it and any change makes a new one), the settings and seed, each encoder's name and card, the
dataset's class names, and every case in page order with its sample, classes, zero-shot ranks and answer key (the
position of the true class's map). The answer key lives here only, never in the page: give participants
``study.html`` alone. The manifest is written atomically (:mod:`aft_bench.core.atomic`), after the page.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aft_bench.apps.study.cases import Case
from aft_bench.core.atomic import atomic_write_text
from aft_bench.results.result import package_versions

FORMAT = "aft-bench-study"
VERSION = 1
MANIFEST_NAME = "manifest.json"
PAGE_NAME = "study.html"
TASK = "user_study"
"""The study's task name in results folders (``<out>/user_study/``) and run configurations."""


def study_hash(config: Mapping[str, Any], encoders: Sequence[Mapping[str, Any]], cases: Sequence[Case]) -> str:
    """The study id: 16 hex digits of the SHA-256 of its settings, encoder cards and cases (in page order)."""
    blob = json.dumps({"config": config, "encoders": encoders, "cases": [vars(c) for c in cases]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StudyManifest:
    """What the scorer needs to know about a built study.

    Attributes:
        study_id: :func:`study_hash` of the rest. config: The build's settings (encoders, dataset, data root and
            arguments, attribution and its arguments, cases per encoder, seed, prompt options).
        encoders: ``{"spec", "name", "card"}`` per encoder, in the order given. classnames: The dataset's classes.
        cases: Every case in page order. page_sha256: The SHA-256 of the page written with it.
        created: When it was built (UTC). versions: Python and package versions of the build.
    """

    study_id: str
    config: dict[str, Any]
    encoders: list[dict[str, Any]]
    classnames: list[str]
    cases: list[Case]
    page_sha256: str = ""
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    versions: dict[str, str] = field(default_factory=package_versions)

    @classmethod
    def create(cls, config: Mapping[str, Any], encoders: Sequence[Mapping[str, Any]], classnames: Sequence[str],
               cases: Sequence[Case]) -> StudyManifest:
        """A new manifest (its id computed) of JSON-friendly ``config`` and ``encoders``."""
        plain_config = json.loads(json.dumps(dict(config), default=str))
        plain_encoders = json.loads(json.dumps([dict(e) for e in encoders], default=str))
        return cls(study_id=study_hash(plain_config, plain_encoders, cases), config=plain_config,
                   encoders=plain_encoders, classnames=list(classnames), cases=list(cases))

    def encoder_specs(self) -> list[str]:
        """The encoder specs in the order given to the build."""
        return [e["spec"] for e in self.encoders]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "study_id": self.study_id, "created": self.created,
                "config": self.config, "encoders": self.encoders, "classnames": self.classnames,
                "page": PAGE_NAME, "page_sha256": self.page_sha256, "versions": self.versions,
                "cases": [c.to_dict(self.classnames) for c in self.cases]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> StudyManifest:
        """The manifest a :meth:`to_dict` record describes.

        Raises:
            ValueError: Naming ``source``, for another kind of file or a record that lacks fields.
        """
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ValueError(f"{source}: not an aft-bench study manifest (no \"format\": \"{FORMAT}\"); give the "
                             "folder that `aft-bench study build` wrote, or its manifest.json")
        if data.get("version") != VERSION:
            raise ValueError(f"{source}: manifest version {data.get('version')!r}; this aft-bench reads version "
                             f"{VERSION}")
        try:
            manifest = cls(study_id=str(data["study_id"]), config=dict(data["config"]),
                           encoders=[dict(e) for e in data["encoders"]], classnames=list(data["classnames"]),
                           cases=[Case.from_dict(c) for c in data["cases"]], page_sha256=str(data["page_sha256"]),
                           created=str(data["created"]), versions=dict(data["versions"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: a damaged study manifest ({type(exc).__name__}: {exc}); rebuild the study "
                             "or restore the file") from exc
        if manifest.study_id != study_hash(manifest.config, manifest.encoders, manifest.cases):
            raise ValueError(f"{source}: its cases or settings were changed after the build (the study id "
                             f"{manifest.study_id} no longer matches them); restore the file as built")
        return manifest


def manifest_path(study: str | Path) -> Path:
    """The manifest of ``study``: the file itself, or ``manifest.json`` in the folder."""
    path = Path(study)
    return path / MANIFEST_NAME if path.is_dir() else path


def read_manifest(study: str | Path) -> StudyManifest:
    """The manifest of a study folder (or of the manifest file).

    Raises:
        FileNotFoundError: If there is none. ValueError: If it is no readable manifest (naming the file).
    """
    path = manifest_path(study)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no study manifest; give the folder `aft-bench study build --out` wrote")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); rebuild the study or restore the file") from exc
    return StudyManifest.from_dict(data, str(path))


def check_replace(folder: Path, study_id: str) -> None:
    """Refuses to write study ``study_id`` over another study's manifest in ``folder``.

    Raises:
        ValueError: If ``folder`` holds the manifest of another study (its answers would no longer score).
    """
    path = folder / MANIFEST_NAME
    if not path.exists():
        return
    try:
        existing = json.loads(path.read_text(encoding="utf-8")).get("study_id")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        existing = None
    if existing != study_id:
        raise ValueError(f"{path} holds study {existing!r}, not the new study {study_id}: writing over it would "
                         "orphan the answers given to it; choose another --out or delete that folder first")


def write_manifest(folder: Path, manifest: StudyManifest) -> Path:
    """Writes ``manifest`` to ``folder/manifest.json`` atomically."""
    return atomic_write_text(folder / MANIFEST_NAME, json.dumps(manifest.to_dict(), indent=2) + "\n")
