"""User-facing errors: one line, pointing at a file and line, never a traceback.

Anything the user can fix (a bad config key, a malformed corpus line, a missing file) raises
`UserError`. The CLI prints `error: <message>` and exits with status 2. Messages name *where* the
problem is, never the offending clinical text itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from os import PathLike

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_PEER_LOST = 1  # a collective lost a peer: not the input's fault, so not 2


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


def run_reporting_errors(job: Callable[[], int | None]) -> int:
    """Run an entry point's job and return its exit status: a UserError becomes one `error: ...` line on stderr
    and status 2, Ctrl-C status 130. Shared by the `medtrain` command and the script entries (pretrain.py under
    deepspeed, mpirun, srun), which must answer bad input the same way without importing each other."""
    try:
        return int(job() or 0)
    except UserError as exc:
        print(f"error: {exc.format()}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
