"""User-facing errors: one line, pointing at a file and line, never a traceback.

Anything the user can fix (a bad config key, a malformed corpus line, a missing file) raises
`UserError`. The CLI prints `error: <message>` and exits with status 2. Messages name *where* the
problem is, never the offending clinical text itself.
"""

from __future__ import annotations

from os import PathLike

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""

    def __init__(self, message: str, path: str | PathLike[str] | None = None, line: int | None = None):
        self.message = " ".join(message.split())  # always one line
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(self.format())

    def format(self) -> str:
        """`file:line: message`, `file: message` or just `message`."""
        if self.path is None:
            return self.message
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"
