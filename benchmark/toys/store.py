"""The toys' store: a recipe's artefact built into the user cache under the recipe's key on first use, then reused.

The toy CLIP's checkpoint (:mod:`aft_bench.toys.clip.store`) and the toy VLM's folder (:mod:`aft_bench.toys.vlm.folder`)
are built by the project's own code, once per recipe: :func:`toy_artefact` names the folder by
:meth:`aft_bench.toys.recipe.Recipe.cache_key` (which changes with every field of the recipe, the trainer's version
and what the recipe depends on), and :func:`aft_bench.core.cache.cached` builds it under a file lock into a work
folder that is renamed into place, so a reader never sees half an artefact; a resumable build (the toy VLM's)
continues from the checkpoints an interrupted one left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from aft_bench.core.cache import cached
from aft_bench.toys.recipe import Recipe

log = logging.getLogger(__name__)


def toy_artefact(recipe: Recipe, what: str, build: Callable[[Path], object], resumable: bool = False) -> Path:
    """The cache folder of ``recipe``'s artefact, built first by ``build(work_folder)`` when the cache lacks it.

    Args:
        recipe: The toy's recipe; its :meth:`~aft_bench.toys.recipe.Recipe.cache_key` names the folder.
        what: The toy, for the log line (``"bundled toy CLIP"``).
        build: Fills the work folder it is given.
        resumable: ``build`` continues from what an interrupted build left in the work folder (its checkpoints).
    """

    def train(directory: Path) -> None:
        log.info("training the %s (recipe %s) on first use; it is cached in %s", what, recipe.key(), directory.parent)
        build(directory)

    return cached(recipe.cache_key(), train, resumable=resumable)
