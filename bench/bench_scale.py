"""Many nodes on one machine: what joining, a death, recovery and an idle
node cost at 100 nodes (issue 19).

    .venv/bin/python bench/bench_scale.py [--nodes 100] [--vdis 20] [--vdi-mib 32]
                                          [--kill 5] [--add 10] [--placement sheepdog]

It starts a real ZooKeeper server and `--nodes` sheep on loopback (zones
0-9), formats copies=3, writes `--vdis` VDIs through `dog vdi write` from
several gateways, kills `--kill` nodes one after another with SIGKILL,
brings them back, adds `--add` more, and reads every VDI back. It reports:

- the time for all nodes to join, and for each later join;
- for each kill, the time until every survivor is on the new epoch;
- each recovery's time and the bytes it moved, over the ideal (the copies
  the change must re-create or hand to a newcomer, from the stores' files);
- idle CPU per node (over 10 s, from /proc) and RSS per node, idle and
  under the write load;
- one node's RSS under a storm of random requests (tests/hostile.py) at
  the end, after the data was read back (a random write may land anywhere).

The goals of issue 19 are printed beside the figures; nothing here fails on
a figure. `tests/test_scale.py` runs it at 20 nodes.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import ROOT, free_port, tool, wait_port, workdir

from sheepblk.client import SheepClient

sys.path.insert(0, str(ROOT / "tests"))
from hostile import random_request, send_one  # noqa: E402  (tests/hostile.py: the fuzz client)
from zk import ZooKeeperServer  # noqa: E402  (tests/zk.py: the tests' real ZooKeeper)

ZONES = 10
COPIES = 3
TICK = os.sysconf("SC_CLK_TCK")
WAIT = 600.0
BATCH = 10


TAKEN: set[int] = set()


def unique_port() -> int:
    """A free port no node of this run has had: free_port() alone may give
    the same one twice when a hundred are picked before any is bound."""
    while True:
        port = free_port()
        if port not in TAKEN:
            TAKEN.add(port)
            return port


class Node:
    def __init__(self, tmp: Path, index: int, cluster: str) -> None:
        self.index, self.cluster = index, cluster
        self.port = unique_port()
        self.store = tmp / f"store{index}"
        self.err = tmp / f"sheep{index}.err"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_offset = 0  # how far epoch_logged has read its log
        self.epochs_logged: list[tuple[int, float]] = []

    def start(self) -> None:
        args = [tool("sheep"), "-f", "-p", str(self.port), "-c", self.cluster,
                "-z", str(self.index % ZONES), str(self.store)]
        with open(self.err, "ab") as err:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)

    def listening(self) -> None:
        """Wait until it listens; on a port taken meanwhile by another
        program's connection, start again on another."""
        for _ in range(5):
            try:
                wait_port(self.port, timeout=WAIT)
                return
            except TimeoutError:
                if self.alive():
                    raise
            self.port = unique_port()
            self.start()
        raise RuntimeError(f"node {self.index} does not start: see {self.err}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def client(self) -> SheepClient:
        return SheepClient("127.0.0.1", self.port, pool_size=1)

    def ask(self, fn):  # type: ignore[no-untyped-def]
        with self.client() as c:
            return fn(c)

    def epoch(self) -> int:
        try:
            return int(self.ask(lambda c: c.stat_cluster()[1][0].epoch))
        except Exception:  # noqa: BLE001 - not up yet, or going away
            return -1

    def objects(self) -> dict[str, int]:
        d = self.store / "obj"
        if not d.is_dir():
            return {}
        return {e.name: e.stat().st_blocks * 512 for e in os.scandir(d)
                if e.is_file() and len(e.name) == 16}

    def cpu_seconds(self) -> float:
        f = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / TICK

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


def wait_until(pred, what: str, timeout: float = WAIT) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(what)
        time.sleep(0.05)
    return time.monotonic() - t0


EPOCH_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \[sheep\] epoch (\d+): ",
                        re.M)


def epoch_logged(node: Node, after: int) -> float | None:
    """When (wall clock, from its log) `node` first moved past epoch
    `after`. Reads on from where the last call stopped: a hundred logs
    read whole five times a second were most of this script's CPU."""
    try:
        with open(node.store / "sheep.log", "rb") as f:
            f.seek(node.log_offset)
            chunk = f.read()
    except FileNotFoundError:
        return None
    complete = chunk[:chunk.rfind(b"\n") + 1]
    node.log_offset += len(complete)
    for m in EPOCH_LINE.finditer(complete.decode(errors="replace")):
        epoch = int(m.group(2))
        stamp = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        node.epochs_logged.append((epoch, stamp))
    return next((t for e, t in node.epochs_logged if e > after), None)


def first_to_last(alive: list[Node], epoch: int, killed_at: float) -> list[float]:
    """Seconds from the kill until each survivor logged a later epoch,
    sorted. From the nodes' own logs, not by asking them: a hundred
    requests a round would delay the very nodes being timed."""
    seen: dict[int, float] = {}
    deadline = time.monotonic() + WAIT
    while len(seen) < len(alive):
        if time.monotonic() > deadline:
            raise TimeoutError("every survivor on a new epoch")
        for n in alive:
            if n.index not in seen and (t := epoch_logged(n, epoch)) is not None:
                seen[n.index] = t - killed_at
        time.sleep(0.2)
    return sorted(seen.values())


def start_in_batches(new: list[Node], first: Node, already: int = 0) -> None:
    """Start `new` BATCH at a time, each batch joined before the next: a
    hundred Python daemons starting at once on two cores starve ZooKeeper's
    heartbeats, and sessions expire before anyone has joined."""
    for i in range(0, len(new), BATCH):
        batch = new[i:i + BATCH]
        for n in batch:
            n.start()
        for n in batch:
            n.listening()
        want = already + i + len(batch)
        wait_until(lambda w=want: members(first) == w, f"{want} nodes joined")


def members(node: Node) -> int:
    try:
        return len(node.ask(lambda c: c.node_list()))
    except Exception:  # noqa: BLE001
        return -1


def recovering(nodes: list[Node]) -> bool:
    for n in nodes:
        try:
            if n.ask(lambda c: c.stat_recovery().in_recovery):
                return True
        except Exception:  # noqa: BLE001
            return True
    return False


def holdings(nodes: list[Node]) -> dict[int, dict[str, int]]:
    return {n.index: n.objects() for n in nodes}


def moved_bytes(before: dict[int, dict[str, int]], after: dict[int, dict[str, int]]) -> int:
    """Bytes of object files a node has now and did not have before."""
    return sum(size for idx, objs in after.items() for name, size in objs.items()
               if name not in before.get(idx, {}))


def total_bytes(h: dict[int, dict[str, int]]) -> int:
    return sum(sum(objs.values()) for objs in h.values())


def settle(nodes: list[Node], label: str, ideal: int, before: dict[int, dict[str, int]],
           report: list[str]) -> None:
    t = wait_until(lambda: not recovering(nodes), f"recovery after {label}")
    # Objects left behind on old owners are removed by recovery's end too;
    # count only what arrived.
    after = holdings(nodes)
    moved = moved_bytes(before, after)
    if ideal:
        versus = f"ideal {ideal / 2**20:.0f} MiB: {moved / ideal:.2f}x"
    else:
        versus = "ideal 0: the nodes came back with what they held"
    report.append(f"recovery after {label}: {t:.1f} s, moved {moved / 2**20:.0f} MiB, {versus}")


def idle_cpu(nodes: list[Node], seconds: float = 10.0) -> list[float]:
    a = [n.cpu_seconds() for n in nodes]
    t0 = time.monotonic()
    time.sleep(seconds)
    el = time.monotonic() - t0
    return [(n.cpu_seconds() - x) / el * 100 for n, x in zip(nodes, a, strict=True)]


def write_vdis(nodes: list[Node], tmp: Path, count: int, mib: int) -> dict[str, str]:
    """Create and fill `count` VDIs through different gateways, 4 at a time."""
    digests: dict[str, str] = {}
    lock = threading.Lock()
    sem = threading.Semaphore(4)

    def one(i: int) -> None:
        with sem:
            gw = nodes[(i * 7) % len(nodes)]
            data = os.urandom(mib << 20)
            name = f"vdi{i}"
            subprocess.run([tool("dog"), "vdi", "create", name, f"{mib}M", "-p", str(gw.port)],
                           check=True, capture_output=True)
            subprocess.run([tool("dog"), "vdi", "write", name, "-p", str(gw.port)], input=data,
                           check=True, capture_output=True)
            with lock:
                digests[name] = hashlib.sha1(data).hexdigest()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(digests) != count:
        raise RuntimeError("a VDI write failed")
    return digests


def read_back(nodes: list[Node], digests: dict[str, str]) -> None:
    for i, (name, digest) in enumerate(sorted(digests.items())):
        gw = nodes[i % len(nodes)]
        out = subprocess.run([tool("dog"), "vdi", "read", name, "-p", str(gw.port)],
                             check=True, capture_output=True).stdout
        if hashlib.sha1(out).hexdigest() != digest:
            raise RuntimeError(f"{name} read back different bytes")


def storm(target: Node, others: list[Node], seconds: float, report: list[str]) -> None:
    """Random requests (every opcode and unknown ones, huge lengths, cut
    payloads) at one node from 4 threads; its RSS is sampled meanwhile."""
    before = target.rss_mib()
    stop = threading.Event()
    sent = [0] * 4
    peak = before

    def fire(k: int) -> None:
        rnd = random.Random(k)
        while not stop.is_set():
            head, body = random_request(rnd, [])
            send_one(target.port, head, body, rnd)
            sent[k] += 1

    threads = [threading.Thread(target=fire, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            time.sleep(0.5)
            peak = max(peak, target.rss_mib())
    finally:
        stop.set()
        for t in threads:
            t.join()
    serving = target.alive() and target.epoch() > 0
    rest = max(n.rss_mib() for n in others)
    report.append(f"request storm at one node for {seconds:.0f} s ({sum(sent)} requests): its "
                  f"RSS {before:.0f} -> peak {peak:.0f} MiB (largest other node {rest:.0f} MiB); "
                  f"{'still serving' if serving else 'NOT SERVING'}")


def main() -> int:
    # Stopped with SIGTERM (a background run has SIGINT ignored): clean up as on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--vdis", type=int, default=20)
    ap.add_argument("--vdi-mib", type=int, default=32)
    ap.add_argument("--kill", type=int, default=5)
    ap.add_argument("--add", type=int, default=10)
    ap.add_argument("--placement", default="sheepdog", choices=("sheepdog", "straw2"))
    ap.add_argument("--storm-seconds", type=float, default=20.0,
                    help="random requests at one node at the end, its RSS watched (0: none)")
    ap.add_argument("--idle-seconds", type=float, default=10.0,
                    help="how long idle CPU is measured over")
    ap.add_argument("--zk-timeout", type=float, default=4.0,
                    help="the sheep's ZooKeeper session timeout: a kill -9 is noticed when "
                         "the session expires (sheep's default is 10 s)")
    args = ap.parse_args()
    report: list[str] = []
    with workdir("sheepblk-scale-") as tmp:
        zk = ZooKeeperServer(tmp / "zk")
        zk.start()
        cluster = f"zookeeper:{zk.hosts},timeout={args.zk_timeout:g},cluster=scale{os.getpid()}"
        nodes = [Node(tmp, i, cluster) for i in range(args.nodes)]
        try:
            t0 = time.monotonic()
            start_in_batches(nodes, nodes[0])
            report.append(f"{args.nodes} nodes started and joined in {time.monotonic() - t0:.1f} s")
            subprocess.run([tool("dog"), "cluster", "format", f"--copies={COPIES}",
                            f"--placement={args.placement}", "-p", str(nodes[0].port)],
                           check=True, capture_output=True)
            time.sleep(3)
            cpu = idle_cpu(nodes, args.idle_seconds)
            rss = [n.rss_mib() for n in nodes]
            report.append(f"idle CPU per node: mean {sum(cpu) / len(cpu):.2f}%, max "
                          f"{max(cpu):.2f}% of a core (goal < 0.5%)")
            report.append(f"idle RSS per node: mean {sum(rss) / len(rss):.0f} MiB, max "
                          f"{max(rss):.0f} MiB (goal <= 60 MiB)")

            peak = {n.index: 0.0 for n in nodes}
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.5):
                    for n in nodes:
                        peak[n.index] = max(peak[n.index], n.rss_mib())

            sampler = threading.Thread(target=sample)
            sampler.start()
            t0 = time.monotonic()
            try:
                digests = write_vdis(nodes, tmp, args.vdis, args.vdi_mib)
            finally:
                done.set()
                sampler.join()
            wrote = time.monotonic() - t0
            report.append(f"wrote {args.vdis} x {args.vdi_mib} MiB in {wrote:.1f} s; RSS under "
                          f"load: mean {sum(peak.values()) / len(peak):.0f} MiB, max "
                          f"{max(peak.values()):.0f} MiB")

            before = holdings(nodes)
            stored = total_bytes(before)
            report.append(f"stored {stored / 2**20:.0f} MiB for "
                          f"{args.vdis * args.vdi_mib} MiB written ({COPIES} copies)")
            victims = nodes[1:1 + args.kill]
            lost = sum(sum(before[v.index].values()) for v in victims)
            detect, spread = [], []
            for v in victims:
                alive = [n for n in nodes if n.alive() and n is not v]
                epoch = max(n.epoch() for n in alive)
                killed_at = time.time()
                v.kill9()
                seen = first_to_last(alive, epoch, killed_at)
                detect.append(seen[-1])
                spread.append(seen[-1] - seen[0])
            if detect:
                report.append(f"kill -9 to the new epoch on every survivor (session timeout "
                              f"{args.zk_timeout:g} s): " + ", ".join(f"{d:.1f}" for d in detect)
                              + f" s, goal <= 5 s; first to last survivor: max "
                              f"{max(spread):.2f} s")
            alive = [n for n in nodes if n.alive()]
            settle(alive, f"{args.kill} deaths", lost, before, report)

            before = holdings(nodes)  # the killed nodes' stores as they left them
            t0 = time.monotonic()
            for v in victims:
                v.start()
            wait_until(lambda: members(nodes[0]) == args.nodes, "the killed nodes back")
            report.append(f"{args.kill} nodes restarted and joined in {time.monotonic() - t0:.1f} s")
            # Back with their old stores and the old ring: ideally nothing moves.
            settle(nodes, f"{args.kill} restarts", 0, before, report)

            before = holdings(nodes)
            newcomers = [Node(tmp, args.nodes + i, cluster) for i in range(args.add)]
            t0 = time.monotonic()
            start_in_batches(newcomers, nodes[0], already=len(nodes))
            nodes += newcomers
            report.append(f"{args.add} nodes added and joined in {time.monotonic() - t0:.1f} s")
            ideal = total_bytes(before) * args.add // len(nodes)
            settle(nodes, f"adding {args.add}", ideal, before, report)
            read_back(nodes, digests)
            report.append(f"every VDI read back the same ({args.vdis})")
            if args.storm_seconds:
                storm(nodes[-1], nodes[:-1], args.storm_seconds, report)
        finally:
            for n in nodes:
                n.stop()
            for n in nodes:
                if n.proc is not None:
                    try:
                        n.proc.wait(30)
                    except subprocess.TimeoutExpired:
                        n.proc.kill()
                        n.proc.wait()
            zk.stop()
    print(f"\nscale: {args.nodes} nodes, ZooKeeper, {ZONES} zones, {COPIES} copies, "
          f"placement {args.placement}")
    for line in report:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
