"""A real standalone ZooKeeper server from Debian's jars, for driver tests.

Started on a free loopback port with a temp data dir and stopped by its pid.
tickTime is 500 ms so a 4 s session timeout is allowed (ZooKeeper clamps
timeouts to 2..20 ticks).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from procs import terminate

JARS = Path("/usr/share/java")
# The server needs only these; slf4j-nop keeps it quiet.
CLASSPATH = ["zookeeper.jar", "zookeeper-jute.jar", "slf4j-api.jar", "slf4j-nop.jar",
             "metrics-core.jar", "snappy-java.jar", "commons-cli.jar"]
TICK_MS = 500


def missing() -> str | None:
    """Why a ZooKeeper server cannot be started here, or None."""
    if shutil.which("java") is None:
        return "java is not installed"
    absent = [j for j in CLASSPATH if not (JARS / j).exists()]
    if absent:
        return f"ZooKeeper jars missing from {JARS}: {', '.join(absent)}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ZooKeeperServer:
    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir, self.port = data_dir, port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cp = ":".join(str(JARS / j) for j in CLASSPATH)
        log = open(self.data_dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            ["java", "-Xmx128m", "-cp", cp, "-Dzookeeper.admin.enableServer=false",
             "-Dzookeeper.4lw.commands.whitelist=ruok",
             "org.apache.zookeeper.server.ZooKeeperServerMain",
             str(self.port), str(self.data_dir), str(TICK_MS)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ZooKeeper exited with {self.proc.returncode}")
            if self._ruok():
                return
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"ZooKeeper not serving on {self.port} after {timeout}s")

    def _ruok(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"ruok")
                return s.recv(4) == b"imok"
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM by pid, SIGKILL if it lingers; only our own process."""
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc)
