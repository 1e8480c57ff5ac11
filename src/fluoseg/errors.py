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
        # user text (a file name, a YAML value) may hold line breaks; the error must
        # still print as one line, so control characters are shown escaped
        self.message = one_line(str(message))
        shown = self.message if self.path is None else f"{one_line(str(self.path))}: {self.message}"
        super().__init__(shown)


def one_line(text: str) -> str:
    """``text`` with line breaks, tabs and other unprintable characters escaped as in ``repr``.

    Parameters
    ----------
    text
        Any text; printable text comes back unchanged.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
