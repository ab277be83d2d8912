"""The line between a user's mistake and a bug.

``aft-bench`` prints a user error as one line naming the file or value and exits with status 1 (2 for unknown
names and options); anything else is a bug, printed with its traceback and a request to report it. User errors
are :class:`UserError` and the standard library's input errors below: a ``ValueError`` (the project's
``DataError``, ``CheckpointError``, ``UnsupportedEncoderError``, ``ResumeError`` and bad option values derive from
it) or a missing, misplaced or unreadable file.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or setup that is not a ``ValueError`` (a non-finite training loss)."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
)
"""What the command line reports as a one-line message instead of a traceback."""
