"""Stopping a process a test started, by its pid and only it.

Why one function: every helper that starts a daemon (nbdkit, ZooKeeper,
libvirtd, qemu-storage-daemon) stops it the same way, and a copy that
forgot the SIGKILL after the grace would leave a daemon running."""

from __future__ import annotations

import os
import signal
import subprocess


def terminate(proc: subprocess.Popen, grace: float = 10.0) -> None:  # type: ignore[type-arg]
    """SIGTERM, then SIGKILL if it has not exited within `grace` seconds;
    nothing if it has exited already."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
