"""The user cache: where artefacts aft-bench builds on first use (the toy CLIP, ...) are kept.

An artefact is a directory named by a key that hashes everything it depends on (a recipe change gives
a new key, so it is rebuilt rather than reused stale). :func:`cached` builds it at most once: under a
file lock, so two processes asking for the same artefact at the same time do not both build it, into a
work directory beside the final one (``.<key>.partial``), which is then renamed into place with
``os.replace``, so a reader never sees a half-written artefact.

An interrupted build (an exception, Ctrl-C, or a killed process) leaves the work directory behind.
The next build of the same key either starts over in it (after emptying it) or, for builds that can
continue from their own checkpoints (``resumable=True``, e.g. the toy AFT/FARE fine-tunes), picks up
where it stopped, so no finished training step is lost.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

ENV_CACHE = "AFT_BENCH_CACHE"
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def cache_dir() -> Path:
    """The aft-bench cache directory, created on demand.

    ``$AFT_BENCH_CACHE`` if set, else ``$XDG_CACHE_HOME/aft_bench``, else ``~/.cache/aft_bench``.
    """
    explicit = os.environ.get(ENV_CACHE)
    if explicit:
        root = Path(explicit).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "aft_bench"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(
            f"cannot create the aft-bench cache directory {root}: {exc}. "
            f"Set {ENV_CACHE} to a writable directory."
        ) from exc
    return root


def cached(key: str, build: Callable[[Path], None], root: Path | None = None, resumable: bool = False) -> Path:
    """Returns the artefact directory ``<root>/<key>``, building it first if it does not exist.

    The build runs at most once across processes: it holds ``<root>/<key>.lock`` while building, and a
    process that waits on the lock finds the finished artefact afterwards. ``build`` writes into the
    work directory ``<root>/.<key>.partial``; on success it is renamed to ``<root>/<key>``.

    Args:
        key: Directory name of the artefact (letters, digits, ``.``, ``_``, ``-``), for example
            ``"toy-<recipe hash>"``.
        build: Called with the work directory to fill.
        root: Cache directory (default :func:`cache_dir`).
        resumable: ``build`` can continue from what an interrupted build of the same key left in the
            work directory (its checkpoints). Then the work directory is kept when a build fails or
            is interrupted, and handed to the next build as it is. Otherwise a failed build's work
            directory is removed, and one left by a killed process is emptied before the next build.

    Returns:
        The artefact's directory.

    Raises:
        ValueError: If ``key`` is not a plain directory name.
    """
    if not _KEY_PATTERN.match(key):
        raise ValueError(
            f"cache key {key!r} is not a plain name: use letters, digits, '.', '_' and '-' (no path separators)"
        )
    root = cache_dir() if root is None else Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / key
    if target.is_dir():
        return target
    lock = FileLock(str(root / f"{key}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process that is building %s", target)
        lock.acquire()
    try:
        if target.is_dir():  # built by the process we waited for
            return target
        work = root / f".{key}.partial"
        if work.is_dir():
            if resumable:
                log.info("continuing the interrupted build of %s from %s", key, work)
            else:
                log.info("removing %s, left by an interrupted build of %s; building again", work, key)
                shutil.rmtree(work)
        work.mkdir(exist_ok=True)
        try:
            build(work)
            os.replace(work, target)
        except BaseException:
            if resumable:
                log.warning("the build of %s stopped; the next run continues from %s", key, work)
            else:
                shutil.rmtree(work, ignore_errors=True)
            raise
        log.info("cached %s", target)
        return target
    finally:
        lock.release()
