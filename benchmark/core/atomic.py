"""Atomic file writes: a file that exists under its final name is complete.

Every file aft-bench writes (results, leaderboards, checkpoints, encoders, cached saliency ranks,
figures) is written to a temporary name in the same folder, flushed to disk, and renamed over the final
name with ``os.replace`` (atomic on POSIX and Windows within one file system). An interrupted write
leaves at most a hidden ``.<name>.<pid>.<token>.tmp`` file, never a truncated result, and an existing
file is replaced only by a complete new one.

The temporary file is created with the process umask's permissions, as a plain ``open`` would, and keeps
them after the writer is done (some writers, such as safetensors' ``save_file``, recreate the file private to
the owner), so outputs in a shared results folder or ``$AFT_BENCH_CACHE`` stay readable by the group
(``tempfile.mkstemp`` would make them private to the owner).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Calls ``write(tmp)`` on a new empty temp file beside ``path``, then renames it over ``path``.

    Args:
        path: Final file name; its folder is created if missing.
        write: Fills the temp file given its path (it may reopen or overwrite it, e.g. ``torch.save``,
            ``figure.savefig``, ``numpy.lib.format.open_memmap``).

    Returns:
        ``path``.

    Raises:
        Whatever ``write`` raises; the temp file is removed first and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    tmp.touch(exist_ok=False)
    mode = tmp.stat().st_mode & 0o777  # 0o666 less the umask, without changing the process umask to read it
    try:
        write(tmp)
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
