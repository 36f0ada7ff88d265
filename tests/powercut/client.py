"""What a test holds: `PowerCutFS`, one power-cut mount in its own
process, started, commanded and stopped by its pid.

    with PowerCutFS(tmp / "backing", tmp / "mnt") as pc:
        ...write through tmp / "mnt"...
        pc.crash()                 # or pc.crash("subset", seed=7)
        pc.restart()               # a new mount over what survived

Why a separate process: the FUSE daemon must keep serving while the test
(or a sheep it started) blocks in syscalls on the mount. Nothing here
imports pyfuse3 or trio, so a test's own process stays plain.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

# Where `python -m powercut` is found: tests/ (the parent of this package).
TESTS_DIR = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


class PowerCutError(Exception):
    """The file system refused a command, or did not start or stop."""


def command(path: str, line: str, timeout: float = 60.0) -> dict[str, Any]:
    """Send one command line to the control socket at `path` and return
    its JSON answer. Error handling: PowerCutError for an `err` answer,
    OSError if nothing listens."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(line.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            more = s.recv(65536)
            if not more:
                break
            buf += more
    reply = buf.decode(errors="replace").strip()
    if reply.startswith("ok "):
        out: dict[str, Any] = json.loads(reply[3:])
        return out
    raise PowerCutError(reply[4:] if reply.startswith("err ") else f"bad reply {reply!r}")


def is_mounted(path: Path) -> bool:
    """Whether `path` is a mount point, even of a dead FUSE daemon (where
    os.path.ismount fails on ENOTCONN)."""
    target = os.path.abspath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 1 and fields[1].replace("\\040", " ") == target:
                return True
    return False


def _fusermount(path: Path, *flags: str) -> bool:
    r = subprocess.run(["fusermount3", "-u", *flags, str(path)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return r.returncode == 0


class PowerCutFS:
    """Resource handling: owns the daemon process (stopped by its pid
    only), its mount and a short-lived control dir for the socket (unix
    socket paths must stay under 108 bytes). The daemon's log goes to
    `log` (default: beside the mount point), kept for post-mortems.
    Error handling: PowerCutError if the daemon dies or refuses."""

    def __init__(self, backing: Path, mountpoint: Path, *, log: Path | None = None,
                 debug: bool = False) -> None:
        self.backing = Path(backing)
        self.mountpoint = Path(mountpoint)
        self.log = log or self.mountpoint.with_name(self.mountpoint.name + ".powercut.log")
        self.debug = debug
        self.proc: subprocess.Popen[bytes] | None = None
        self._ctl_dir: str | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def socket(self) -> str:
        assert self._ctl_dir is not None, "not started"
        return os.path.join(self._ctl_dir, "ctl.sock")

    def start(self, timeout: float = START_TIMEOUT) -> PowerCutFS:
        """Spawn the daemon and return once the mount answers."""
        if self.proc is not None:
            raise PowerCutError("already started")
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self._ctl_dir = tempfile.mkdtemp(prefix="powercut-")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR),
                                                         env.get("PYTHONPATH")]))
        args = [sys.executable, "-m", "powercut", "mount", str(self.backing),
                str(self.mountpoint), "--control", self.socket]
        if self.debug:
            args.append("--debug")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, env=env)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise PowerCutError(f"powercut exited with {code} at start: {self.log_tail()}")
            try:
                command(self.socket, "ping", timeout=2.0)
                if is_mounted(self.mountpoint):
                    os.stat(self.mountpoint)  # the kernel's INIT is done
                    return self
            except (OSError, PowerCutError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise PowerCutError(f"powercut not up after {timeout}s: {self.log_tail()}")
            time.sleep(0.02)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def command(self, line: str) -> dict[str, Any]:
        if self.proc is None:
            raise PowerCutError("not started")
        return command(self.socket, line)

    def crash(self, mode: str = "all", seed: int | None = None) -> dict[str, Any]:
        """Cut the power: `all` drops every unsynced change, `subset`
        keeps a random subset chosen by `seed`. The mount then fails every
        request with EIO until `restart`. Returns what was kept/dropped."""
        if mode == "all":
            return self.command("crash all")
        if mode == "subset":
            return self.command(f"crash subset {0 if seed is None else int(seed)}")
        raise ValueError(f"unknown crash mode {mode!r}")

    def fail_next_fsync(self, pattern: str | None = None, count: int = 1) -> None:
        """The next `count` fsyncs (of paths in the mount matching the
        fnmatch `pattern`, e.g. 'obj/*'; any path if None) fail with EIO."""
        self.command(f"fail-fsync {int(count)}" + ("" if pattern is None else f" {pattern}"))

    def enospc(self, on: bool) -> None:
        """While on, writes fail with ENOSPC (everything else works)."""
        self.command(f"enospc {'on' if on else 'off'}")

    def stats(self) -> dict[str, Any]:
        return self.command("stats")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Unmount and wait for the daemon (by its pid). A clean stop
        makes everything pending durable; after a crash nothing more is.
        If the mount is busy it is detached lazily and the daemon told to
        stop by SIGTERM (its users then get ENOTCONN, they do not hang)."""
        proc, self.proc = self.proc, None
        try:
            if proc is not None and proc.poll() is None:
                if not _fusermount(self.mountpoint):
                    _fusermount(self.mountpoint, "-z")
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
            if is_mounted(self.mountpoint):  # a daemon that died mounted
                _fusermount(self.mountpoint, "-z")
        finally:
            if self._ctl_dir is not None:
                shutil.rmtree(self._ctl_dir, ignore_errors=True)
                self._ctl_dir = None

    def restart(self, timeout: float = START_TIMEOUT) -> PowerCutFS:
        """Stop (after a crash: unmount what is left) and mount again over
        the same backing dir."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> PowerCutFS:
        return self.start() if self.proc is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
