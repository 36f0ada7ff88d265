"""Cluster drivers side by side: local, ZooKeeper and corosync on 3 nodes.

    .venv/bin/python bench/bench_drivers.py [--vdis 100] [--zk-timeout SECONDS]

Measures, in one run, for each driver (3 sheep, copies=3):
- VDI creates and deletes per second (each is a cluster operation: a
  lock, then a block/notify pair through the driver's ordered stream);
- the time from `kill -9` of one sheep to the survivors' new epoch (how
  soon the driver notices a crash and the cluster moves on).

The baseline is the `local` driver in the same run; the last rows compare
corosync's crash detection with ZooKeeper's at its default session timeout
(the driver's 10 s unless --zk-timeout). The ZooKeeper server and corosync
are real (tests/zk.py, tests/corosync_server.py: a local corosync already
running is used as it is).

With --host-loss (root, `ip netns`): three hosts made of network
namespaces (tests/multihost.py), one corosync each, a CPG member on two
of them; the time from pulling one host's cable to the other member's
configuration change (`nodedown`), at corosync's default token timeout
(3000 ms) and at 1000 ms. A killed sheep and a lost host look the same
to ZooKeeper (its session expires), so its kill -9 figure is the baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench.common import print_table, sheep_cluster, workdir  # noqa: E402
from sheepblk.client import SheepClient  # noqa: E402

MiB = 1 << 20


def epoch(port: int) -> int:
    with SheepClient("127.0.0.1", port, pool_size=1) as c:
        return int(c.stat_cluster()[1][0].epoch)


def measure(tmp: Path, cluster: str | None, vdis: int) -> tuple[float, float, float]:
    """(creates/s, deletes/s, seconds from kill -9 to the new epoch)."""
    procs: list[subprocess.Popen[bytes]] = []
    with sheep_cluster(tmp, 3, 3, cluster=cluster, procs=procs) as ports:
        with SheepClient("127.0.0.1", ports[0]) as c:
            t0 = time.perf_counter()
            for i in range(vdis):
                c.create_vdi(f"v{i}", 4 * MiB)
            created = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i in range(vdis):
                c.delete_vdi(f"v{i}")
            deleted = time.perf_counter() - t0
        before = epoch(ports[0])
        t0 = time.perf_counter()
        procs[2].kill()
        procs[2].wait()
        while epoch(ports[0]) == before or epoch(ports[1]) == before:
            time.sleep(0.01)
        noticed = time.perf_counter() - t0
    return vdis / created, vdis / deleted, noticed


LISTENER = """
import select, sys, time
from sheepblk.cluster.cpg import Cpg
c = Cpg()
c.join(b"bench-host-loss")
print("ready", flush=True)
while True:
    select.select([c.fd], [], [], 1.0)
    for e in c.dispatch():
        if getattr(e, "left", None):
            print(time.time(), flush=True)
            sys.exit(0)
"""


def host_loss(tmp: Path, token_ms: int) -> float:
    """Seconds from pulling a host's cable to corosync's nodedown, on 3 hosts."""
    import multihost
    from corosync_server import CorosyncServer
    from procs import terminate

    hosts = multihost.make(["c0", "c1", "c2"])
    servers: list[CorosyncServer] = []
    members: list[subprocess.Popen[bytes]] = []
    try:
        addrs = [h.addr for h in hosts.hosts]
        for h in hosts.hosts:
            servers.append(CorosyncServer(tmp / f"token{token_ms}-{h.name}", token_ms,
                                          prefix=h.exec_prefix(), addrs=addrs, port=5405))
            servers[-1].start()
        while not all(c.members() == 3 for c in servers):
            time.sleep(0.1)
        for h in (hosts[0], hosts[2]):
            members.append(subprocess.Popen([*h.exec_prefix(), sys.executable, "-c", LISTENER],
                                            stdout=subprocess.PIPE, cwd=ROOT))
        for m in members:
            assert m.stdout is not None and m.stdout.readline() == b"ready\n"
        time.sleep(1.0)
        t0 = time.time()
        hosts.link_down(hosts[2])
        assert members[0].stdout is not None
        return float(members[0].stdout.readline()) - t0
    finally:
        for m in members:
            terminate(m)
            if m.stdout is not None:
                m.stdout.close()
        for c in servers:
            c.stop()
        hosts.remove()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vdis", type=int, default=100)
    ap.add_argument("--zk-timeout", type=float, default=None,
                    help="ZooKeeper session timeout (default: the driver's)")
    ap.add_argument("--host-loss", action="store_true",
                    help="also time a lost host with corosync (root, ip netns)")
    ap.add_argument("--drivers", default="local,zookeeper,corosync",
                    help="which drivers (local, the baseline, always runs)")
    args = ap.parse_args()
    wanted = ["local"] + [d for d in ("zookeeper", "corosync") if d in args.drivers.split(",")]

    from corosync_server import CorosyncServer
    from zk import ZooKeeperServer

    got: dict[str, tuple[float, float, float]] = {}
    lost: dict[int, float] = {}
    with workdir() as tmp, contextlib.ExitStack() as stack:
        specs: dict[str, str | None] = {"local": None}
        if "zookeeper" in wanted:
            zk = ZooKeeperServer(tmp / "zk")
            zk.start()
            stack.callback(zk.stop)
            timeout = "" if args.zk_timeout is None else f",timeout={args.zk_timeout}"
            specs["zookeeper"] = f"zookeeper:{zk.hosts}{timeout},cluster=bench"
        if "corosync" in wanted:
            coro = CorosyncServer(tmp / "corosync")
            coro.start()
            stack.callback(coro.stop)
            specs["corosync"] = f"corosync:cluster=bench{time.time_ns()}"
        got = {name: measure(tmp / name, spec, args.vdis) for name, spec in specs.items()}
        if args.host_loss:
            lost = {t: host_loss(tmp, t) for t in (3000, 1000)}
    others = wanted[1:]
    local = got["local"]
    rows = []
    for name in others:
        rows.append((f"VDI create/s {name} / local", got[name][0], local[0]))
        rows.append((f"VDI delete/s {name} / local", got[name][1], local[1]))
    print_table(f"Cluster drivers, 3 nodes, {args.vdis} VDIs", rows, unit="VDIs per second")
    ms = {name: figures[2] * 1000 for name, figures in got.items()}
    rows = [(f"kill -9 to new epoch {name} / local", ms[name], ms["local"]) for name in others]
    if "corosync" in ms and "zookeeper" in ms:
        rows.append(("kill -9 to new epoch corosync / zookeeper", ms["corosync"],
                     ms["zookeeper"]))
    base = ("zk kill -9", ms["zookeeper"]) if "zookeeper" in ms else ("local kill -9", ms["local"])
    for token, seconds in lost.items():
        rows.append((f"host lost, corosync token={token} / {base[0]}", seconds * 1000, base[1]))
    print_table("Crash detection", rows, unit="milliseconds: lower is faster")


if __name__ == "__main__":
    main()
