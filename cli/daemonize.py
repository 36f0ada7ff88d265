"""Go to the background only once the daemon is really up.

`sheep STORE && dog cluster info` and `sheepfs MNT && ls MNT` must work on
the next line of a script, and a daemon that cannot start must say why and
exit non-zero in the foreground, where the user sees it. So the parent of
the fork does not return at once: it waits on a pipe until the child says
it is ready (its port bound, its mount up) or why it is not, or dies.
"""

from __future__ import annotations

import os
import sys

_OK = b"ok\n"


class ReadyPipe:
    """The daemon's end of the pipe: report readiness or failure once,
    which lets the waiting parent exit; later reports are ignored."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @property
    def pending(self) -> bool:
        """True until the daemon has reported."""
        return self._fd >= 0

    def ok(self) -> None:
        """The daemon is up: the parent exits 0."""
        self._send(_OK)

    def fail(self, message: str) -> None:
        """The daemon cannot start: the parent prints `message` and exits 1."""
        # Never exactly _OK: a failure can never read as readiness.
        self._send(message.rstrip("\n").encode(errors="replace"))

    def report(self, message: str | None) -> None:
        """ok() for None, else fail(message): the shape of a `ready`
        callback (sheepblk.fs.mount.run's)."""
        if message is None:
            self.ok()
        else:
            self.fail(message)

    def _send(self, data: bytes) -> None:
        if self._fd < 0:
            return
        try:
            os.write(self._fd, data)
        finally:
            os.close(self._fd)
            self._fd = -1


def daemonize(prog: str, died: str) -> ReadyPipe | int:
    """Fork. The parent waits for the child's report and returns its own
    exit code: 0 once the child is ready, else 1 after printing
    "PROG: why" on stderr (`died` when the child exits without a word).
    The child, in a new session with stdin, stdout and stderr on
    /dev/null, gets the ReadyPipe to report on."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        chunks = []
        while chunk := os.read(r, 4096):
            chunks.append(chunk)
        os.close(r)
        msg = b"".join(chunks)
        if msg == _OK:
            return 0
        os.waitpid(pid, 0)  # exiting: let it finish (release its locks) first
        print(f"{prog}: {msg.decode(errors='replace') or died}", file=sys.stderr)
        return 1
    os.close(r)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return ReadyPipe(w)
