"""A real corosync 3 from Debian's package, for the corosync driver's tests.

One node on loopback: knet on a free UDP port, logging to a file in the
test's directory, state in that directory, no realtime scheduling (a
2-core machine shared with other tests). Started with `corosync -f -c
CONF` and stopped by its pid.

Corosync's IPC services (libqb abstract sockets "cpg", "cfg"...) and its
pid file (/run/corosync.pid) are one per host, or per network namespace
for the sockets: one corosync per test module, and tests keep apart by
CPG group (`corosync:cluster=NAME`). If a corosync already answers here
(a system service), tests use it and never stop it (`ours` is False).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from procs import terminate

TOKEN_MS = 1000  # corosync's default token timeout (a lost host is noticed after it)


def missing() -> str | None:
    """Why corosync cannot be used here, or None."""
    if shutil.which("corosync") is None:
        return "corosync is not installed (Debian's corosync package)"
    try:
        from sheepblk.cluster import cpg

        cpg.library()
    except OSError as e:
        return f"libcpg.so.4 is not loadable: {e}"
    return None


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def conf_text(workdir: Path, port: int, addrs: list[str] | None = None,
              token_ms: int = TOKEN_MS) -> str:
    """corosync.conf for a cluster of `addrs` (default: 127.0.0.1 alone)."""
    nodes = "".join(f"    node {{\n        ring0_addr: {a}\n        nodeid: {i}\n"
                    f"        name: node{i}\n    }}\n"
                    for i, a in enumerate(addrs or ["127.0.0.1"], start=1))
    return f"""\
totem {{
    version: 2
    cluster_name: sheepblk-test
    transport: knet
    crypto_cipher: none
    crypto_hash: none
    token: {token_ms}
    interface {{
        linknumber: 0
        mcastport: {port}
    }}
}}
nodelist {{
{nodes}}}
logging {{
    to_logfile: yes
    logfile: {workdir / 'corosync.log'}
    to_stderr: no
    to_syslog: no
    timestamp: on
}}
system {{
    state_dir: {workdir}
    sched_rr: no
    move_to_root_cgroup: no
}}
"""


class CorosyncServer:
    """One corosync: on this host by default; with `prefix` (a network
    namespace's exec prefix, tests/multihost.py) on that host, as the node
    of a cluster of `addrs` whose address the host has, with a /run of its
    own (corosync's pid file is /run/corosync.pid, one per file system)."""

    def __init__(self, workdir: Path, token_ms: int = TOKEN_MS, *,
                 prefix: list[str] | None = None, addrs: list[str] | None = None,
                 port: int | None = None) -> None:
        self.workdir, self.token_ms = workdir, token_ms
        self.prefix, self.addrs, self.port = prefix, addrs, port
        self.proc: subprocess.Popen[bytes] | None = None
        self.ours = False

    @property
    def log(self) -> Path:
        return self.workdir / "corosync.log"

    def start(self, timeout: float = 30.0) -> None:
        from sheepblk.cluster.cpg import reachable

        if self.prefix is None and reachable():
            return  # a corosync of this host's: use it, never stop it
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "corosync.conf"
        conf.write_text(conf_text(self.workdir, self.port or free_udp_port(), self.addrs,
                                  token_ms=self.token_ms))
        args = ["corosync", "-f", "-c", str(conf)]
        if self.prefix is not None:
            args = [*self.prefix, "unshare", "-m", "sh", "-c",
                    f"mount -t tmpfs tmpfs /run && exec corosync -f -c {conf}"]
        out = open(self.workdir / "corosync.out", "ab")
        self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        out.close()
        self.ours = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.workdir / "corosync.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"corosync exited with {self.proc.returncode}: {tail}")
            if ((self.prefix is not None or reachable())
                    and "ready to provide service" in self._log_text()):
                return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"corosync not serving after {timeout}s")

    def members(self) -> int:
        """How many corosync nodes its last membership had (from its log)."""
        found = re.findall(r"Sync members\[(\d+)\]", self._log_text())
        return int(found[-1]) if found else 0

    def _log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill9(self) -> None:
        """Crash our corosync (SIGKILL by pid)."""
        assert self.proc is not None and self.ours
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        """SIGTERM by pid, SIGKILL if it lingers; only our own process."""
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc)
