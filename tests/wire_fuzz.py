"""A fuzz campaign made from the wire-check table (sheepblk/server/wire_checks.py):
each request is a row's valid example or one of its fields' broken ones,
sent to real sheep processes on loopback, plus a few random headers
(tests/hostile.py). A broken request must be answered with its field's
code; nothing may crash or hang.

Two campaigns, each on a throwaway cluster of its own:

- *keep*: every opcode's broken requests, and the valid requests of every
  opcode except those that stop or wipe nodes (DESTRUCTIVE), which a node's
  duty is to obey. After it: every node is up and answers, no file or
  directory appeared outside the stores (the stores' parent and the nodes'
  working directory are listed before and after), a VDI no request could
  name still reads back byte for byte on every node, RSS stayed bounded.
- *destructive*: the valid requests of every opcode too (format, shutdown,
  kill, force recovery, md plug...). A node stopped by a request that was
  answered SUCCESS is restarted; one that stopped otherwise is a crash.
  After it: no crash, no hang, no stray file, every node restarted answers.

Run as a script for the long campaign:
    .venv/bin/python tests/wire_fuzz.py --requests 100000 --seed 1
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from conftest import SheepFactory, SheepProcess, wait_for  # noqa: E402
from hostile import random_request, send_one  # noqa: E402

from sheepblk.client import Vdi  # noqa: E402
from sheepblk.proto import (  # noqa: E402
    SD_RSP_SIZE,
    Flag,
    Op,
    Request,
    Res,
    Response,
)
from sheepblk.server import wire_checks as wc  # noqa: E402

MiB = 1 << 20
# Requests that stop a node, wipe or reshape the cluster, or change how a
# node runs: sent valid only in the destructive campaign.
DESTRUCTIVE = frozenset({Op.MAKE_FS, Op.SHUTDOWN, Op.KILL_NODE, Op.FORCE_RECOVER, Op.MD_PLUG,
                         Op.MD_UNPLUG, Op.SET_LOGLEVEL, Op.SET_RECOVERY, Op.ENABLE_RECOVER,
                         Op.DISABLE_RECOVER, Op.ALTER_CLUSTER_COPY, Op.ALTER_VDI_COPY})
# Share of requests broken on purpose (the rest valid, a few random headers).
MUTATE_SHARE = 0.55
RANDOM_SHARE = 0.05
# Longest a request may wait for its answer before it counts as hung: a
# peer request from a "newer" epoch waits 5 s, a repair or a hash reads a
# 12 MiB inode, a cluster op waits for the stream.
ANSWER_TIMEOUT = 150.0
# Answers slower than this are listed in the summary (not a failure).
SLOW_ANSWER = 20.0
RSS_LIMIT = 160 << 20
KEEP_SIZE = 16 * MiB
THROWAWAY = [b"t0", b"t1", b"t2", b"t3"]


@dataclass
class Tally:
    """What a campaign saw; `problems` lists what must not happen."""

    sent: int = 0
    answered: int = 0
    refused_as_expected: int = 0
    opcodes: set[int] = field(default_factory=set)
    codes: Counter[int] = field(default_factory=Counter)
    wrong_codes: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    restarts: int = 0
    random_headers: int = 0
    slow: list[str] = field(default_factory=list)
    stray: list[str] = field(default_factory=list)
    data_changed: list[str] = field(default_factory=list)
    peak_rss: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def table_opcodes(self) -> set[int]:
        return self.opcodes

    def problems(self) -> list[str]:
        out = [f"wrong code: {w}" for w in self.wrong_codes[:20]]
        out += [f"hang: {h}" for h in self.hangs[:20]]
        out += [f"crash: {c}" for c in self.crashes]
        out += [f"stray: {s}" for s in self.stray[:20]]
        out += [f"data changed: {d}" for d in self.data_changed]
        if self.codes[Res.SYSTEM_ERROR]:
            out.append(f"{self.codes[Res.SYSTEM_ERROR]} SYSTEM_ERROR answers (a handler raised)")
        if self.peak_rss >= RSS_LIMIT:
            out.append(f"RSS reached {self.peak_rss / MiB:.0f} MiB")
        return out

    def summary(self, name: str) -> str:
        ops = ", ".join(sorted(Op(o).name for o in self.table_opcodes))
        top = ", ".join(f"{_code_name(c)}={n}" for c, n in self.codes.most_common(12))
        return (f"[{name}] requests sent: {self.sent}, answered: {self.answered}, broken ones "
                f"refused with their field's code: {self.refused_as_expected}\n"
                f"[{name}] table opcodes covered: {len(self.table_opcodes)} of {len(wc.TABLE)} "
                f"({ops}); random headers (tests/hostile.py): {self.random_headers}\n"
                f"[{name}] answers: {top}\n"
                f"[{name}] wrong codes: {len(self.wrong_codes)}, hangs: {len(self.hangs)}, "
                f"crashes: {len(self.crashes)}, restarts after a legitimate stop: "
                f"{self.restarts}, stray files: {len(self.stray)}, data changes: "
                f"{len(self.data_changed)}, peak RSS: {self.peak_rss / MiB:.0f} MiB, answers "
                f"slower than {SLOW_ANSWER:.0f} s: {len(self.slow)} {self.slow[:5]}")


def _code_name(code: int) -> str:
    try:
        return Res(code).name
    except ValueError:
        return hex(code)


@dataclass
class Case:
    req: Request
    payload: bytes
    expect: int | None  # the field's code, for a broken request
    label: str


def wire(req: Request, payload: bytes) -> tuple[Request, bytes]:
    """What a client sends: a payload only with CMD_WRITE, exactly
    data_length long."""
    if not req.flags & Flag.CMD_WRITE:
        return req, b""
    return req, payload[:req.data_length].ljust(req.data_length, b"\0")


def generate(rnd: random.Random, env: wc.Env, *, destructive: bool) -> Case:
    """One request from the table: valid, or with one field broken."""
    while True:
        row = rnd.choice(wc.ROWS)
        fields = [f for f in row.fields if f.bad]
        valid_ok = destructive or row.opcode not in DESTRUCTIVE
        if not fields and not valid_ok:
            continue
        req, payload = row.example(env)
        if fields and (not valid_ok or rnd.random() < MUTATE_SHARE):
            f = rnd.choice(fields)
            req, payload = rnd.choice(f.bad)(req, payload)
            req, payload = wire(req, payload)
            return Case(req, payload, f.code, f"{row.opcode.name} {f.where}")
        req, payload = wire(req, payload)
        return Case(req, payload, None, row.opcode.name)


class Link:
    """One client connection to a node, reopened when the node closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.next_id = 1

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _recv_exact(self, n: int) -> bytes | None:
        assert self.sock is not None
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(min(n - len(out), 1 << 20))
            if not chunk:
                return None
            out += chunk
        return bytes(out)

    def call(self, req: Request, payload: bytes) -> Response | str:
        """The answer, or "refused" (nobody listens), "closed", "timeout"."""
        try:
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                self.sock.settimeout(ANSWER_TIMEOUT)
        except OSError:
            return "refused"
        rid = self.next_id
        self.next_id += 1
        try:
            self.sock.sendall(req._replace(id=rid).pack() + payload)
            head = self._recv_exact(SD_RSP_SIZE)
            if head is None:
                self.close()
                return "closed"
            rsp = Response.unpack(head)
            if rsp.data_length and self._recv_exact(rsp.data_length) is None:
                self.close()
                return "closed"
        except TimeoutError:
            self.close()
            return "timeout"
        except OSError:
            self.close()
            return "closed"
        return rsp


def rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def listing(roots: Sequence[Path], stores: Sequence[Path]) -> set[str]:
    """Every path under `roots`, those inside a store left out."""
    out: set[str] = set()
    skip = {str(s) for s in stores}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
            for name in dirnames + filenames:
                out.add(os.path.join(dirpath, name))
    return out


def owned(nodes: Sequence[SheepProcess]) -> list[Path]:
    """The directories the nodes may write to: their stores, and the local
    cluster driver's log (`local:PATH` keeps its segments in PATH.d)."""
    out = [n.store for n in nodes]
    for n in nodes:
        kind, _, path = n.cluster.partition(":")
        if kind == "local" and path:
            out.append(Path(path + ".d"))
    return out


def digest(node: SheepProcess, name: str, size: int) -> str:
    with node.client() as c, Vdi(c, name, writable=False) as v:
        return hashlib.sha1(v.pread(size, 0)).hexdigest()


def answers(node: SheepProcess) -> bool:
    link = Link(node.port)
    try:
        got = link.call(Request(Op.STAT_SHEEP, 0, 0, 0, 0, bytes(32), 0x0A), b"")
        return isinstance(got, Response)
    finally:
        link.close()


def _throwaway_env(nodes: Sequence[SheepProcess], rnd: random.Random, disk: Path) -> wc.Env:
    vids = []
    with nodes[0].client() as c:
        for name in THROWAWAY:
            vids.append(c.create_vdi(name.decode(), 64 * MiB))
        epoch = c.stat_cluster()[1][0].epoch
    return wc.Env(rnd, vids=vids, names=[*THROWAWAY, b"tnew"], epoch=epoch,
                  member=_nid(nodes[1]),
                  disk=str(disk))


def _nid(node: SheepProcess) -> wc.NodeId:
    return wc.NodeId("127.0.0.1", node.port)


class RssWatch:
    """Polls the nodes' RSS on a thread until stopped."""

    def __init__(self, nodes: Sequence[SheepProcess], tally: Tally) -> None:
        self.nodes, self.tally = nodes, tally
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for n in self.nodes:
                if n.alive:
                    self.tally.peak_rss = max(self.tally.peak_rss, rss(n.pid))
            time.sleep(0.1)

    def __enter__(self) -> RssWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _record(tally: Tally, case: Case, got: Response | str, where: str) -> None:
    with tally.lock:
        tally.sent += 1
        tally.opcodes.add(case.req.opcode)
        if not isinstance(got, Response):
            return
        tally.answered += 1
        tally.codes[got.result] += 1
        if case.expect is not None:
            if got.result == case.expect:
                tally.refused_as_expected += 1
            else:
                tally.wrong_codes.append(f"{case.label} at {where}: {_code_name(got.result)}, "
                                         f"expected {_code_name(case.expect)}")


def keep_campaign(factory: SheepFactory, requests: int, seed: int, *, senders: int = 4,
                  work: Path, log: bool = False) -> Tally:
    """The non-destructive campaign on a new 3-node cluster (see the module
    docstring); returns its tally, problems included."""
    from test_cluster_daemon import three

    tally = Tally()
    nodes = three(factory, copies=3)
    keep = os.urandom(12 * MiB)
    with nodes[0].client() as c:
        c.create_vdi("keep", KEEP_SIZE)
        with Vdi(c, "keep") as v:
            v.pwrite(keep, 0)
    before_digest = hashlib.sha1(keep + bytes(KEEP_SIZE - len(keep))).hexdigest()
    roots = [factory.tmp, Path.cwd()]
    stores = owned(nodes)
    before = listing(roots, stores)
    base = _throwaway_env(nodes, random.Random(seed), work)
    per = requests // senders

    def send(i: int) -> None:
        rnd = random.Random(seed * 1000 + i)
        env = wc.Env(rnd, base.vids, base.names, base.epoch, base.member, base.disk)
        links = {n.port: Link(n.port) for n in nodes}
        try:
            for k in range(per):
                if rnd.random() < RANDOM_SHARE:
                    head, body = random_request(rnd, list(base.vids))
                    send_one(rnd.choice(nodes).port, head, body, rnd)
                    with tally.lock:
                        tally.sent += 1
                        tally.random_headers += 1
                    continue
                node = rnd.choice(nodes)
                case = generate(rnd, env, destructive=False)
                got = links[node.port].call(case.req, case.payload)
                if got == "timeout":
                    with tally.lock:
                        tally.hangs.append(f"{case.label} at {node.port}")
                _record(tally, case, got, str(node.port))
                if log and i == 0 and k % 5000 == 0:
                    print(f"  {k * senders} requests, peak RSS {tally.peak_rss / MiB:.0f} MiB",
                          flush=True)
        finally:
            for link in links.values():
                link.close()

    with RssWatch(nodes, tally):
        threads = [threading.Thread(target=send, args=(i,)) for i in range(senders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for n in nodes:
        if not n.alive:
            tally.crashes.append(f"node {n.port} exited with {n.proc and n.proc.returncode}")
        elif not answers(n):
            tally.hangs.append(f"node {n.port} does not answer after the run")
    tally.stray = sorted(listing(roots, stores) - before)
    for n in nodes:
        if n.alive:
            got = digest(n, "keep", KEEP_SIZE)
            if got != before_digest:
                tally.data_changed.append(f"VDI keep read through node {n.port}")
    return tally


def _members(node: SheepProcess) -> int:
    with node.client(pool_size=1) as c:
        return len(c.node_list())


def destructive_campaign(factory: SheepFactory, requests: int, seed: int, *,
                         work: Path) -> Tally:
    """Every opcode's valid requests too, on a new 3-node cluster; one
    sender, so each stop is known to follow the request that asked.

    A node stopped on request is restarted before the next request, once
    the others have seen it leave. Why wait: a cluster operation whose
    work half reads from a node that died before its Left was applied
    retries for the gateway's RETRY_TIMEOUT (60 s) while the Left waits
    behind it in the stream; the campaign would spend its time there (the
    summary counts answers slower than SLOW_ANSWER)."""
    from test_cluster_daemon import three

    tally = Tally()
    nodes = three(factory, copies=2)
    roots = [factory.tmp, Path.cwd()]
    stores = [*owned(nodes), work]  # md plug may make `work` a store directory
    before = listing(roots, stores)
    rnd = random.Random(seed)
    env = _throwaway_env(nodes, rnd, work)
    links = {n.port: Link(n.port) for n in nodes}

    def stopped(n: SheepProcess, why: str, *, asked: bool) -> None:
        links[n.port].close()
        assert n.proc is not None
        try:
            n.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001 - still running: stopped below
            tally.hangs.append(f"node {n.port} did not stop after {why}")
            n.stop()
        if asked:
            tally.restarts += 1
        else:
            tally.crashes.append(f"node {n.port} stopped by itself ({why}), exit "
                                 f"{n.proc.returncode}")

    def restart(down: list[SheepProcess]) -> None:
        up = [n for n in nodes if n not in down]
        for n in up:
            wait_for(lambda n=n: _members(n) == len(up), "the others to see a node leave",  # type: ignore[misc]
                     timeout=60)
        for n in down:
            n.start()
        wait_for(lambda: all(_members(n) == len(nodes) for n in nodes), "the nodes back",
                 timeout=60)

    with RssWatch(nodes, tally):
        for _ in range(requests):
            node = rnd.choice(nodes)
            case = generate(rnd, env, destructive=True)
            t0 = time.monotonic()
            got = links[node.port].call(case.req, case.payload)
            if time.monotonic() - t0 > SLOW_ANSWER:
                tally.slow.append(f"{case.label} at {node.port}: "
                                  f"{time.monotonic() - t0:.0f} s")
            _record(tally, case, got, str(node.port))
            if isinstance(got, Response):
                if got.epoch:
                    env.epoch = got.epoch
                asked = got.result == Res.SUCCESS and case.expect is None
                if asked and case.req.opcode in (Op.KILL_NODE, Op.SHUTDOWN):
                    down = [node] if case.req.opcode == Op.KILL_NODE else list(nodes)
                    for n in down:
                        stopped(n, case.label, asked=True)
                    restart(down)
                continue
            if got == "timeout":
                tally.hangs.append(f"{case.label} at {node.port}")
            if not node.alive or got != "timeout":
                stopped(node, case.label, asked=False)
                restart([node])
    for link in links.values():
        link.close()
    for n in nodes:
        try:
            wait_for(partial(answers, n), f"node {n.port} answering", timeout=30)
        except AssertionError:
            tally.hangs.append(f"node {n.port} does not answer after the run")
    tally.stray = sorted(listing(roots, stores) - before)
    return tally


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=100_000,
                   help="requests of the keep campaign (the destructive one sends a tenth)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--senders", type=int, default=4)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wire-fuzz-") as tmp:
        root = Path(tmp)
        cwd = root / "cwd"
        cwd.mkdir()
        os.chdir(cwd)  # the nodes' working directory: listed before and after
        t0 = time.monotonic()
        total = 0
        failed = False
        for name in ("keep", "destructive"):
            factory = SheepFactory(root / name)
            (root / name).mkdir()
            disk = root / name / "spare-disk"
            disk.mkdir()
            try:
                if name == "keep":
                    tally = keep_campaign(factory, args.requests, args.seed,
                                          senders=args.senders, work=disk, log=True)
                else:
                    tally = destructive_campaign(factory, max(args.requests // 10, 100),
                                                 args.seed, work=disk)
            finally:
                factory.stop_all()
            total += tally.sent
            print(tally.summary(name), flush=True)
            for problem in tally.problems():
                print(f"[{name}] PROBLEM {problem}")
                failed = True
        print(f"total requests: {total} in {time.monotonic() - t0:.0f} s; "
              f"{'PROBLEMS FOUND' if failed else 'no problems'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
