"""User-facing errors.

Every mistake a user can make (a missing file, an unknown marker, a bad config key) is
raised as a :class:`FluosegError`. The CLI turns it into one line on stderr and a non-zero
exit status; anything else escaping is a bug in fluoseg and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class FluosegError(Exception):
    """An error caused by user input, reported as a single line without traceback.

    Parameters
    ----------
    message
        What is wrong and how to fix it, in one sentence.
    path
        The file the problem is in, when there is one; it prefixes the message.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)
