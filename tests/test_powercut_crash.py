"""Power cuts under a seeded random workload, on every store kind.

A node keeps all its state (config, epochs, objects, the local driver's
file) on power-cut mounts (tests/powercut): md nodes have one mount per
disk. At random points the node is killed with SIGKILL and its file
systems crash, dropping all unsynced data ("all") or keeping any subset
POSIX allows ("subset"); then both restart and every VDI, snapshot and
deletion is checked against the model (tests/crash_model.py).

A failing seed prints itself: replay it with
SHEEPBLK_CRASH_SEED=<seed> pytest tests/test_powercut_crash.py -k <backend>.
With POWERCUT_TRACE=FILE (outside the mounts) the power-cut file systems
log every entry op they record, make durable or drop to FILE.
SHEEPBLK_CRASH_CUTS sets the cuts per seed (two seeds per backend by
default: 50 cuts; the suite must stay well under 20 minutes, so run a
few hundred by hand after a change to the store: a torn-sector bug once
showed only at cut 70).
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
from conftest import MdSheepProcess, SheepProcess, free_port, wait_for
from crash_model import OBJ, ClusterModel, Workload, scope, verify
from powercut import PowerCutFS

from sheepblk.client import SheepClient, Vdi
from sheepblk.proto import Res

CUTS = int(os.environ.get("SHEEPBLK_CRASH_CUTS", "25"))  # per seed
CLUSTER_CUTS = int(os.environ.get("SHEEPBLK_CRASH_CLUSTER_CUTS", "6"))
SEEDS = [int(s) for s in os.environ.get("SHEEPBLK_CRASH_SEED", "1,2").split(",")]
STEPS = (2, 14)  # operations between two cuts
# Every this many cuts (and after the last) a check reads everything back;
# the others read only what changed since the previous check.
FULL_EVERY = 10


def full_check(cut: int, cuts: int) -> bool:
    return cut % FULL_EVERY == FULL_EVERY - 1 or cut == cuts - 1


def restart_all(mounts: list[PowerCutFS]) -> None:
    """Mount the crashed file systems again, side by side (each restart
    mostly waits for a new process to start)."""
    with ThreadPoolExecutor(len(mounts)) as pool:
        for done in [pool.submit(fs.restart) for fs in mounts]:
            done.result()


class CrashNode:
    """One sheep whose store (and disks) live on power-cut mounts."""

    def __init__(self, tmp: Path, backend: str) -> None:
        self.backend = backend
        disks = 2 if backend == "md" else 0
        self.fs = [PowerCutFS(tmp / f"backing{i}", tmp / f"mnt{i}") for i in range(1 + disks)]
        self.port = free_port()
        self.sheep: SheepProcess | None = None

    def _sheep(self) -> SheepProcess:
        root = self.fs[0].mountpoint
        disks = [fs.mountpoint / "disk" for fs in self.fs[1:]]
        if disks:
            return MdSheepProcess(root / "store", self.port, f"local:{root}/shm", disks)
        return SheepProcess(root / "store", self.port, f"local:{root}/shm")

    def start(self) -> None:
        for fs in self.fs:
            fs.start()
        self.sheep = self._sheep().start()

    def client(self) -> SheepClient:
        return SheepClient("127.0.0.1", self.port)

    def format(self) -> None:
        with self.client() as c:
            c.make_fs(copies=1, store=("plain" if self.backend == "md" else self.backend))

    def cut(self, mode: str, seed: int) -> None:
        assert self.sheep is not None
        self.sheep.kill9()
        for i, fs in enumerate(self.fs):
            fs.crash(mode, seed=seed + i if mode == "subset" else None)
        restart_all(self.fs)
        self.sheep = self._sheep().start()
        deadline = time.monotonic() + 60
        with self.client() as c:
            while c.stat_cluster()[0] != Res.SUCCESS:
                assert time.monotonic() < deadline, "the node never came back"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.sheep is not None:
            self.sheep.stop()
        for fs in self.fs:
            fs.stop()


def run_seed(tmp: Path, backend: str, seed: int) -> None:
    """CUTS cuts of one node under the workload of `seed`; AssertionError
    (naming the seed and the last operations) at the first wrong check."""
    rnd = random.Random(seed)
    model = ClusterModel()
    node = CrashNode(tmp, backend)
    with ExitStack() as stack:
        stack.callback(node.stop)
        node.start()
        node.format()
        log: list[str] = []
        for cut in range(CUTS):
            with node.client() as c:
                work = Workload(rnd, model)
                for _ in range(rnd.randint(*STEPS)):
                    log.append(work.step(c))
            mode = rnd.choice(["all", "subset"])
            cut_seed = rnd.randrange(1 << 30)
            log.append(f"--- cut {cut}: {mode} {cut_seed}")
            node.cut(mode, cut_seed)
            with node.client() as c:
                wrong = verify(c, model, scope(model, full=full_check(cut, CUTS)))
            assert not wrong, (f"seed {seed} ({backend}), cut {cut}: {wrong}\n"
                               + "\n".join(log[-60:]))


# 100 cuts per seed take 1.5 to 2.5 minutes alone (md is the slowest: three
# mounts per cut); a loaded machine can double that, past the default 300 s.
@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["plain", "farm", "tree", "md"])
def test_power_cuts_keep_what_was_flushed(tmp_path: Path, backend: str) -> None:
    """CUTS cuts for each seed; the seeds run side by side, each on a node
    of its own (most of a cut is waiting for processes to start)."""
    with ThreadPoolExecutor(len(SEEDS)) as pool:
        runs = [pool.submit(run_seed, tmp_path / f"seed{seed}", backend, seed)
                for seed in SEEDS]
        errors = [str(r.exception()) for r in runs if r.exception() is not None]
    assert not errors, "\n\n".join(errors)


class CrashCluster:
    """Three sheep, copies=3, each store on its own power-cut mount; the
    local driver's file on a fourth (the machine's power cut takes it)."""

    def __init__(self, tmp: Path) -> None:
        self.fs = [PowerCutFS(tmp / f"backing{i}", tmp / f"mnt{i}") for i in range(4)]
        self.ports = [free_port() for _ in range(3)]
        self.nodes: list[SheepProcess | None] = [None, None, None]

    def _node(self, i: int) -> SheepProcess:
        spec = f"local:{self.fs[3].mountpoint}/shm"
        return SheepProcess(self.fs[i].mountpoint / "store", self.ports[i], spec, zone=i)

    def start(self) -> None:
        for fs in self.fs:
            fs.start()
        for i in range(3):
            self.nodes[i] = self._node(i).start()

    def client(self, i: int = 0) -> SheepClient:
        return SheepClient("127.0.0.1", self.ports[i])

    def _count(self, i: int) -> int:
        with self.client(i) as c:
            return len(c.node_list())

    def settle(self) -> None:
        """Wait until all three run, at one epoch, with recovery done."""
        def ready(i: int) -> bool:
            with self.client(i) as c:
                return (c.stat_cluster()[0] == Res.SUCCESS and len(c.node_list()) == 3
                        and not c.stat_recovery().in_recovery)

        wait_for(lambda: all(ready(i) for i in range(3)), "the cluster to settle")

    def cut(self, which: list[int], mode: str, seed: int) -> None:
        for i in which:
            node = self.nodes[i]
            assert node is not None
            node.kill9()
        mounts = [self.fs[i] for i in which] + ([self.fs[3]] if len(which) == 3 else [])
        for k, fs in enumerate(mounts):
            fs.crash(mode, seed=seed + k if mode == "subset" else None)
        restart_all(mounts)
        for i in which:
            self.nodes[i] = self._node(i).start()
        self.settle()

    def stop(self) -> None:
        for node in self.nodes:
            if node is not None:
                node.stop()
        for fs in self.fs:
            fs.stop()


@pytest.mark.parametrize("seed", SEEDS)
def test_power_cuts_on_a_cluster(tmp_path: Path, seed: int) -> None:
    """A cut hits one node (the others go on and it rejoins) or all three
    at once (the cluster restarts by itself); copies=3."""
    rnd = random.Random(seed)
    model = ClusterModel()
    cluster = CrashCluster(tmp_path)
    with ExitStack() as stack:
        stack.callback(cluster.stop)
        cluster.start()
        wait_for(lambda: cluster._count(0) == 3, "3 nodes")
        with cluster.client() as c:
            c.make_fs(copies=3)
        cluster.settle()
        log: list[str] = []
        for cut in range(CLUSTER_CUTS):
            with cluster.client(rnd.randrange(3)) as c:
                work = Workload(rnd, model)
                for _ in range(rnd.randint(*STEPS)):
                    log.append(work.step(c))
            which = [0, 1, 2] if rnd.random() < 0.4 else [rnd.randrange(3)]
            mode = rnd.choice(["all", "subset"])
            cut_seed = rnd.randrange(1 << 30)
            log.append(f"--- cut {cut}: nodes {which} {mode} {cut_seed}")
            cluster.cut(which, mode, cut_seed)
            what = scope(model, full=full_check(cut, CLUSTER_CUTS))
            for i in range(3):
                with cluster.client(i) as c:
                    wrong = verify(c, model, what)
                assert not wrong, (f"seed {seed} (cluster), cut {cut}, read through node {i}: "
                                   f"{wrong}\n" + "\n".join(log[-60:]))


@pytest.mark.parametrize("backend", ["plain", "farm", "tree"])
def test_a_freed_object_outlives_the_cached_index_write_that_freed_it(
        tmp_path: Path, backend: str) -> None:
    """A VDI's cached write copies an object of its deleted snapshot, and
    its index stops naming that object, which nobody else names: the
    object is freed. The removal must not reach the disk before the index
    write does, or after a power cut the old index names an object that
    is gone and reads fail with "No object found" (seed 4, cut 37)."""
    model = ClusterModel()
    work = Workload(random.Random(0), model)
    node = CrashNode(tmp_path, backend)
    with ExitStack() as stack:
        stack.callback(node.stop)
        node.start()
        node.format()
        with node.client() as c:
            work._create(c)  # v1
            work._create(c)  # v2
            with Vdi(c, "v1", cache=True) as v:
                v.pwrite(b"old" * 1000, 0, fua=True)
            model.vdis["v1"].write(0, b"old" * 1000, fua=True)
            work._snapshot(c, "v1")
            work._delete_snapshot(c)  # its object 0 is named by v1 alone
            # (opened first: a cached open flushes what earlier writers left)
            with Vdi(c, "v2", cache=True) as v2, Vdi(c, "v1", cache=True) as v1:
                v1.pwrite(b"new", 0)  # copies it, then a cached index write frees it
                v2.pwrite(b"x", OBJ, fua=True)  # a synced creation: obj/ is fsync'ed
                model.vdis["v1"].write(0, b"new", fua=False)
                model.vdis["v2"].write(OBJ, b"x", fua=True)
                node.cut("all", 0)
        with node.client() as c:
            assert verify(c, model) == []
