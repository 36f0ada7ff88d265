"""A real ZooKeeper ensemble, one server per host (tests/multihost.py).

Each server is Debian's ZooKeeper run as `QuorumPeerMain zoo.cfg` in its
host's namespace (ZooKeeperServerMain, which tests/zk.py runs, is the
standalone server and ignores server.N lines). The generated zoo.cfg:
tickTime=500 ms, so a session timeout of 4 s is allowed (ZooKeeper clamps
sessions to 2..20 ticks); syncLimit=4 ticks, so followers drop a leader
they cannot hear within 2 s and elect another; clients on CLIENT_PORT,
quorum and election traffic on 2888/3888, all on the host's own address.
The four-letter words `srvr` and `ruok` are allowed: `srvr` says who
leads.

Every server is stopped by its pid (SIGKILL is the point of `kill`);
nothing else is touched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from multihost import Host
from procs import terminate
from zk import CLASSPATH, JARS, TICK_MS

CLIENT_PORT = 2181
START_TIMEOUT = 90.0  # three JVMs on two shared cores


def four_letters(addr: str, word: str, timeout: float = 2.0) -> str:
    """A four-letter word's answer, or "" when the server does not answer."""
    try:
        with socket.create_connection((addr, CLIENT_PORT), timeout=timeout) as s:
            s.sendall(word.encode())
            out = b""
            while chunk := s.recv(4096):
                out += chunk
            return out.decode(errors="replace")
    except OSError:
        return ""


class Server:
    def __init__(self, myid: int, host: Host, data_dir: Path, config: str) -> None:
        self.myid, self.host, self.data_dir, self.config = myid, host, data_dir, config
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host.addr}:{CLIENT_PORT}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "myid").write_text(f"{self.myid}\n")
        cfg = self.data_dir / "zoo.cfg"
        cfg.write_text(self.config)
        cp = ":".join(str(JARS / j) for j in CLASSPATH)
        with open(self.data_dir / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [*self.host.exec_prefix(), "java", "-Xmx128m", "-XX:+UseSerialGC",
                 "-XX:TieredStopAtLevel=1", "-cp", cp,
                 "-Dzookeeper.admin.enableServer=false",
                 "-Dzookeeper.4lw.commands.whitelist=srvr,ruok",
                 "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(cfg)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def mode(self) -> str:
        """"leader", "follower", or "" (down, or without a quorum)."""
        for line in four_letters(self.host.addr, "srvr").splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9, as a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc)


class Ensemble:
    """Resource handling: owns its servers' processes; `stop` ends them."""

    def __init__(self, hosts: list[Host], base: Path) -> None:
        servers = "".join(f"server.{i + 1}={h.addr}:2888:3888\n" for i, h in enumerate(hosts))
        self.servers = []
        for i, h in enumerate(hosts):
            data = base / f"zk{i + 1}"
            config = (f"tickTime={TICK_MS}\ninitLimit=20\nsyncLimit=4\n"
                      f"dataDir={data}\nclientPort={CLIENT_PORT}\nclientPortAddress={h.addr}\n"
                      "maxClientCnxns=0\nautopurge.purgeInterval=0\n" + servers)
            self.servers.append(Server(i + 1, h, data, config))

    def spec(self, timeout: float, cluster: str = "") -> str:
        """The `sheep -c` argument for this ensemble."""
        hosts = ",".join(s.address for s in self.servers)
        return f"zookeeper:{hosts},timeout={timeout:g}" + (f",cluster={cluster}" if cluster else "")

    def start(self, timeout: float = START_TIMEOUT) -> None:
        for s in self.servers:
            s.start()
        self.wait_quorum(timeout)

    def wait_quorum(self, timeout: float = START_TIMEOUT) -> Server:
        """Until one running server leads and every other running one
        follows; returns the leader."""
        deadline = time.monotonic() + timeout
        while True:
            for s in self.servers:
                if s.proc is not None and s.proc.poll() is not None:
                    raise RuntimeError(f"ZooKeeper {s.myid} exited with {s.proc.returncode}; "
                                       f"see {s.data_dir / 'server.log'}")
            modes = {s.myid: s.mode() for s in self.servers if s.alive}
            leaders = [i for i, m in modes.items() if m == "leader"]
            if len(leaders) == 1 and all(m in ("leader", "follower") for m in modes.values()):
                return self.servers[leaders[0] - 1]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no ZooKeeper quorum after {timeout}s: {modes}")
            time.sleep(0.3)

    def leader(self) -> Server | None:
        return next((s for s in self.servers if s.alive and s.mode() == "leader"), None)

    def stop(self) -> None:
        for s in self.servers:
            s.stop()
