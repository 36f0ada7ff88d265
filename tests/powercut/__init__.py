"""A FUSE file system for tests that loses what a power cut would lose.

In the spirit of LazyFS (Jepsen; Ramos et al., "When Amnesia Strikes",
VLDB 2024): a passthrough mount over a backing directory that keeps its
own page cache. Writes and directory changes reach the backing dir only
when fsync (of the file, of the directory) says so; on command it crashes,
dropping all unsynced changes or keeping a random subset POSIX allows,
and it can fail fsync with EIO or writes with ENOSPC.

Why: `kill -9` of a daemon does not test durability (the kernel still
writes its page cache back); a file system that forgets on command does.

Modules: data.py (a file's unsynced bytes), nodes.py and journal.py and
tree.py (the namespace and its pending entry ops), fs.py (the FUSE
operations, faults, the crash and the durability model), control.py (the
command socket), client.py (`PowerCutFS`, what tests use), __main__.py
(the daemon: `python -m powercut mount ...`).
"""

from .client import PowerCutError, PowerCutFS, command, is_mounted

__all__ = ["PowerCutError", "PowerCutFS", "command", "is_mounted"]
