"""The one error type the command-line tools raise for their user.

dog, sheep and sheepfs each had to tell "the user must act on this" from a
bug: the former gets one line on stderr and an exit code, the latter a
traceback. One class for all three keeps that rule in one place.
"""

from __future__ import annotations


class QuietError(Exception):
    """An error the user caused or must act on: printed as one line on
    stderr, no traceback, and the process exits with `exitcode` (1, the
    generic failure, unless the tool has a more precise code: dog's
    follow Sheepdog's include/exits.h)."""

    def __init__(self, message: str, exitcode: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exitcode = exitcode
