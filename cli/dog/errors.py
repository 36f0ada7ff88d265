"""Exit codes and the one error type a `dog` command raises for the user
(QuietError, shared with sheep and sheepfs in cli/errors.py).

The exit codes are Sheepdog's (include/exits.h): scripts that drive C `dog`
branch on them, so they are not ours to choose.
"""

from __future__ import annotations

from ..errors import QuietError  # shared with sheep and sheepfs

EXIT_SUCCESS = 0
EXIT_FAILURE = 1  # the command failed to execute
EXIT_SYSFAIL = 2  # something is wrong with the cluster or the local host
EXIT_EXISTS = 3  # the object already exists so cannot be created
EXIT_FULL = 4  # no more space is left in the cluster
EXIT_MISSING = 5  # the specified object does not exist
EXIT_USAGE = 64  # invalid command, arguments or options

__all__ = ["EXIT_EXISTS", "EXIT_FAILURE", "EXIT_FULL", "EXIT_MISSING", "EXIT_SUCCESS",
           "EXIT_SYSFAIL", "EXIT_USAGE", "QuietError"]
