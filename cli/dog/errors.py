"""Exit codes and the one error type a `dog` command raises for the user.

The exit codes are Sheepdog's (include/exits.h): scripts that drive C `dog`
branch on them, so they are not ours to choose.
"""

from __future__ import annotations

EXIT_SUCCESS = 0
EXIT_FAILURE = 1  # the command failed to execute
EXIT_SYSFAIL = 2  # something is wrong with the cluster or the local host
EXIT_EXISTS = 3  # the object already exists so cannot be created
EXIT_FULL = 4  # no more space is left in the cluster
EXIT_MISSING = 5  # the specified object does not exist
EXIT_USAGE = 64  # invalid command, arguments or options


class QuietError(Exception):
    """An error the user caused or must act on: printed as one line on
    stderr, no traceback, and the process exits with `exitcode`."""

    def __init__(self, message: str, exitcode: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exitcode = exitcode
