"""One multi-host run: clients on a cluster of hosts (tests/mh_cluster.py)
through a seeded series of faults (tests/mh_faults.py), each ended by a
heal, then the checks of tests/mh_history.py and the copies on disk.

The clients (tests/mh_client.py processes):

    n0 n1 n2   native protocol, from the root namespace, each starting at
               another sheep and moving on when one does not answer
    x          native protocol from inside one sheep host, through that
               host's sheep only (cut off with it)
    nbd        libnbd through nbdkit (root namespace, our plugin) to one
               sheep; the writer of the VDI nbdkit exports

Blocks of VDI mh-native are shared out among n0 n1 n2 x; mh-nbd is nbd's.
Every native client also reads any block of either VDI.

What a round checks while its fault lasts, once the sheep that still reach
ZooKeeper have expelled the others: a cut-off sheep its clients still
reach serves no I/O; a sheep left with too few zones answers HALT. After
the heal: every sheep is back in one cluster at one epoch, recovered, and
serves I/O again, by itself. At the end: the history, the final value of
every block, and each object's copies on its owners' disks.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import mh_faults
import mh_history as H
from conftest import wait_for
from mh_cluster import COPIES, PORT, SESSION, SHEEP_HOSTS, WAIT, Cluster
from test_nbd_plugin import DEBIAN_PY, Nbdkit

from sheepblk.client import SheepdogError, Vdi
from sheepblk.proto import Res, vid_to_data_oid
from sheepblk.ring import Ring

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NATIVE, NBD, PROBE = "mh-native", "mh-nbd", "mh-probe"
NATIVE_OBJS, NBD_OBJS = 10, 4
OP_TIMEOUT = 10.0  # a client gives up on a request after this (then: unknown)
PAUSE = 0.02  # between a client's operations: five clients on two shared cores
WRITE_RATIO = 0.5
EXPEL_WAIT = 60.0  # bound on the ZooKeeper side noticing a fault (session: 4 s)
FENCED_LOG = "client I/O waits"  # what a sheep cut off from ZooKeeper logs (node.py)


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    history: Path


class Workload:
    """Resource handling: owns the client processes and nbdkit; `stop`
    ends them (by pid)."""

    def __init__(self, c: Cluster, tmp: Path, rnd: random.Random) -> None:
        self.c, self.tmp, self.rnd = c, tmp, rnd
        self.workers: list[Worker] = []
        self.nbdkit: Nbdkit | None = None
        self.stop_file = tmp / "clients.stop"
        self.probe_vid = 0
        self.local_host = rnd.randrange(SHEEP_HOSTS)
        self.nbd_host = rnd.randrange(SHEEP_HOSTS)

    def prepare(self) -> None:
        """The VDIs, every block holding its "init" value (so every object
        exists and readers' indexes never change)."""
        with self.c.client(0) as cl:
            for name, objs in ((NATIVE, NATIVE_OBJS), (NBD, NBD_OBJS),
                               (PROBE, SHEEP_HOSTS)):
                cl.create_vdi(name, objs * H.OBJ)
                with Vdi(cl, name) as v:
                    for b in range(objs * H.BLOCKS_PER_OBJ):
                        v.pwrite(H.encode(name, b, H.INIT), H.offset(b))
            self.probe_vid = cl.lookup_vdi(PROBE).vid

    def _spawn(self, name: str, cfg: dict, argv: list[str]) -> None:
        hist = self.tmp / f"history-{name}.jsonl"
        cfg = dict(cfg, client=name, history=str(hist), stop=str(self.stop_file),
                   seed=self.rnd.getrandbits(32), op_timeout=OP_TIMEOUT, pause=PAUSE,
                   write_ratio=WRITE_RATIO, root=str(ROOT))
        with open(self.tmp / f"client-{name}.err", "ab") as err:
            proc = subprocess.Popen([*argv, str(HERE / "mh_client.py"), json.dumps(cfg)],
                                    stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
        self.workers.append(Worker(name, proc, hist))

    def start(self) -> None:
        native_blocks = NATIVE_OBJS * H.BLOCKS_PER_OBJ
        reads = ([[NATIVE, b] for b in range(native_blocks)]
                 + [[NBD, b] for b in range(NBD_OBJS * H.BLOCKS_PER_OBJ)])
        gws = [self.c.gateway(i) for i in range(SHEEP_HOSTS)]
        for k in range(3):
            first = (2 * k) % SHEEP_HOSTS
            self._spawn(f"n{k}", {"kind": "native", "vdi": NATIVE, "reads": reads,
                                  "own": [b for b in range(native_blocks) if b % 4 == k],
                                  "gateways": gws[first:] + gws[:first]}, [sys.executable])
        host = self.c.sheep_hosts[self.local_host]
        self._spawn("x", {"kind": "native", "vdi": NATIVE, "reads": reads,
                          "own": [b for b in range(native_blocks) if b % 4 == 3],
                          "gateways": [gws[self.local_host]]},
                    [*host.exec_prefix(), sys.executable])
        self.nbdkit = Nbdkit(self.tmp / "nbd.sock",
                             [f"vdi={NBD}", f"address={gws[self.nbd_host]}"]).start()
        self._spawn("nbd", {"kind": "nbd", "vdi": NBD, "socket": str(self.nbdkit.sock),
                            "own": list(range(NBD_OBJS * H.BLOCKS_PER_OBJ)),
                            "gateways": [gws[self.nbd_host]]}, [DEBIAN_PY])

    def ops_done(self) -> int:
        n = 0
        for w in self.workers:
            try:
                n += w.history.read_bytes().count(b"\n")
            except OSError:
                pass
        return n

    def wait_ops(self, n: int, timeout: float = WAIT) -> None:
        start = self.ops_done()
        wait_for(lambda: self.ops_done() >= start + n, f"{n} more client operations", timeout)

    def stop(self) -> list[str]:
        """End the clients (each within OP_TIMEOUT and some); what went
        wrong with them."""
        self.stop_file.touch()
        wrong = []
        deadline = time.monotonic() + 4 * OP_TIMEOUT + 30
        for w in self.workers:
            try:
                w.proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
                wrong.append(f"client {w.name} did not stop")
            if w.proc.returncode not in (0, -9):
                err = (self.tmp / f"client-{w.name}.err").read_text(errors="replace")
                wrong.append(f"client {w.name} exited {w.proc.returncode}: {err[-2000:]}")
        if self.nbdkit is not None:
            self.nbdkit.stop()
        return wrong

    def history(self) -> list[H.Op]:
        return H.load(w.history for w in self.workers)

    def final_reads(self, i: int) -> dict[tuple[str, int], str]:
        """Every block, read through sheep i ("error:..." if it fails)."""
        out = {}
        with self.c.client(i) as cl:
            for name, objs in ((NATIVE, NATIVE_OBJS), (NBD, NBD_OBJS)):
                with Vdi(cl, name, writable=False) as v:
                    for b in range(objs * H.BLOCKS_PER_OBJ):
                        try:
                            data = v.pread(H.BLOCK, H.offset(b))
                        except SheepdogError as e:
                            out[(name, b)] = f"error:{e}"
                            continue
                        out[(name, b)] = H.decode(name, b, data)
        return out

    # ---- probes (not in the history: blocks of mh-probe) ----

    def probe(self, i: int, timeout: float = OP_TIMEOUT) -> str:
        """Write and read back one block through sheep i: "ok", or what
        failed ("HALT", "timeout"...)."""
        oid = vid_to_data_oid(self.probe_vid, i)
        data = H.encode(PROBE, i * H.BLOCKS_PER_OBJ, f"probe/{time.monotonic()}")
        try:
            with self.c.client(i, timeout=timeout) as cl:
                cl.write_obj(oid, data, 0)
                if bytes(cl.read_obj(oid, len(data), 0)) != data:
                    return "read back other bytes"
            return "ok"
        except SheepdogError as e:
            return Res(e.result).name if e.result in Res._value2member_map_ else str(e)
        except Exception as e:  # noqa: BLE001 - no answer
            return type(e).__name__


@dataclass
class Round:
    schedule: str
    what: str
    findings: list[str] = field(default_factory=list)
    split: H.Split | None = None


def run_round(c: Cluster, wl: Workload, fault: mh_faults.Fault, rnd: random.Random,
              hold: float) -> Round:
    """One fault while the clients run: begin, check what it should do,
    hold, heal, check that the cluster resumes by itself."""
    t0 = time.monotonic()
    effect = fault.begin(c, rnd)
    rd = Round(fault.name, effect.what)
    try:
        rd.findings += _during(c, wl, effect)
        mh_faults.hold(max(0.0, hold - (time.monotonic() - t0)))
    finally:
        fault.end(c)
    t1 = time.monotonic()
    if effect.sides is not None:
        a, b = effect.sides
        rd.split = H.Split(t0, t1, {c.gateway(i) for i in a}, {c.gateway(i) for i in b})
    rd.findings += resumed(c, wl)
    return rd


def _during(c: Cluster, wl: Workload, effect: mh_faults.Effect) -> list[str]:
    findings = []
    gone = effect.cut_off | effect.down
    if gone and effect.connected:
        want = len(effect.connected)
        try:
            wait_for(lambda: all(c.node_count(i) == want for i in effect.connected),
                     f"{want} nodes on the sheep that reach ZooKeeper", EXPEL_WAIT)
        except AssertionError as e:
            findings.append(f"the sheep that reach ZooKeeper did not expel the others: {e}")
    with ThreadPoolExecutor(SHEEP_HOSTS) as pool:  # each may wait out its timeout
        probed = dict(zip(sorted(effect.reachable),
                          pool.map(wl.probe, sorted(effect.reachable)), strict=True))
    for i, got in probed.items():
        if got == "ok":
            findings.append(f"h{i} serves I/O though it is cut off from ZooKeeper and the "
                            f"others have expelled it ({effect.what})")
    for i in sorted(effect.cut_off):
        log = (c.sheep[i].store / "sheep.log").read_text(errors="replace")
        if FENCED_LOG not in log[-200_000:]:
            findings.append(f"h{i}'s log does not say it stopped client I/O ({effect.what})")
    for i in sorted(effect.halted):
        got = wl.probe(i)
        if got != "HALT":
            findings.append(f"h{i} answers {got} with {len(effect.connected)} zone(s) "
                            f"left, not HALT ({effect.what})")
    return findings


def _state(c: Cluster) -> list[tuple[int, int, bool, bool]]:
    out = []
    for i in range(SHEEP_HOSTS):
        out.append((c.node_count(i), c.epoch(i), c.running(i), c.in_recovery(i)))
    return out


def resumed(c: Cluster, wl: Workload) -> list[str]:
    """Every sheep back, at one epoch, recovered, and serving I/O."""
    last: list = []

    def settled() -> bool:
        last[:] = _state(c)
        return (all(n == SHEEP_HOSTS and run and not rec for n, _, run, rec in last)
                and len({e for _, e, _, _ in last}) == 1)

    try:
        wait_for(settled, "every sheep back in one running cluster", WAIT)
    except AssertionError as e:
        return [f"the cluster did not resume by itself: {e}; (nodes, epoch, running, "
                f"recovering) per sheep: {last}"]
    findings = []
    for i in range(SHEEP_HOSTS):
        got = wl.probe(i, timeout=30)
        if got != "ok":
            findings.append(f"h{i} answers {got} after the heal")
    return findings


def copies_on_disk(c: Cluster) -> list[str]:
    """Objects whose copies are not COPIES identical files on the hosts
    the ring of the cluster's nodes names."""
    with c.client(0) as cl:
        ring = Ring(cl.node_list())
    host_of = {f"{h.addr}:{PORT}": h.name for h in c.sheep_hosts}
    seen: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for h, s in zip(c.sheep_hosts, c.sheep, strict=True):
        for p in (s.store / "obj").iterdir():
            if p.is_file() and len(p.name) == 16:
                try:
                    seen[p.name].append((h.name, hashlib.sha1(p.read_bytes()).hexdigest()))
                except FileNotFoundError:
                    pass  # purged under us: the next look counts again
    wrong = []
    for name, copies in sorted(seen.items()):
        owners = {host_of.get(str(n.nid), str(n.nid)) for n in ring.oid_to_nodes(
            int(name, 16), COPIES)}
        if {h for h, _ in copies} != owners or len({d for _, d in copies}) != 1:
            wrong.append(f"object {name} (owners {','.join(sorted(owners))}): "
                         + ", ".join(f"{h}:{d[:8]}" for h, d in copies))
    return wrong


def wait_copies(c: Cluster, timeout: float = WAIT) -> list[str]:
    last: list[str] = []

    def ok() -> bool:
        last[:] = copies_on_disk(c)
        return not last

    try:
        wait_for(ok, "every object's copies to settle", timeout, interval=1.0)
        return []
    except AssertionError:
        return [f"copies differ after the heal: {w}" for w in last[:10]]


@dataclass
class Outcome:
    seed: int
    rounds: list[Round]
    report: H.Report
    findings: list[str]

    @property
    def anomalies(self) -> list[str]:
        return self.findings + [f for r in self.rounds for f in r.findings] \
            + self.report.anomalies

    def text(self) -> str:
        lines = [f"seed {self.seed}: {self.report.summary()}"]
        for r in self.rounds:
            lines.append(f"  {r.schedule}: {r.what}" + (f" -> {len(r.findings)} finding(s)"
                                                        if r.findings else ""))
        for a in self.anomalies[:30]:
            lines.append(f"  ANOMALY {a}")
        for late in self.report.late[:5]:
            lines.append(f"  late: {late}")
        return "\n".join(lines)


def run(tmp: Path, seed: int, schedules: list[str], *, hold: float = 3 * SESSION,
        warmup_ops: int = 100, after_ops: int = 100, rounds: int = 1) -> Outcome:
    """A cluster, the clients, `rounds` times each schedule (in a seeded
    order), then every check. Everything started is stopped at the end."""
    rnd = random.Random(seed)
    c = Cluster(tmp)
    done: list[Round] = []
    findings: list[str] = []
    try:
        c.start()
        wl = Workload(c, tmp, rnd)
        wl.prepare()
        wl.start()
        try:
            order = [s for s in schedules for _ in range(rounds)]
            rnd.shuffle(order)
            wl.wait_ops(warmup_ops)
            for name in order:
                done.append(run_round(c, wl, mh_faults.make(name), rnd, hold))
                wl.wait_ops(after_ops)
        finally:
            findings += wl.stop()
        final = wl.final_reads(rnd.randrange(SHEEP_HOSTS))
        findings += wait_copies(c)
        splits = [r.split for r in done if r.split is not None]
        report = H.check(wl.history(), final, splits, grace=SESSION)
    finally:
        c.stop()
    return Outcome(seed, done, report, findings)


__all__ = ["PORT", "Outcome", "Round", "Workload", "run", "run_round"]
