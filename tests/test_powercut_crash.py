"""Power cuts under a seeded random workload, on every store kind.

A node keeps all its state (config, epochs, objects, the local driver's
file) on power-cut mounts (tests/powercut): md nodes have one mount per
disk. At random points the node is killed with SIGKILL and its file
systems crash, dropping all unsynced data ("all") or keeping any subset
POSIX allows ("subset"); then both restart and every VDI, snapshot and
deletion is checked against the model (tests/crash_model.py).

A failing seed prints itself: replay it with
SHEEPBLK_CRASH_SEED=<seed> pytest tests/test_powercut_crash.py -k <backend>.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from conftest import SheepProcess, free_port
from crash_model import ClusterModel, Workload, verify
from powercut import PowerCutFS

from sheepblk.client import SheepClient
from sheepblk.proto import Res

CUTS = int(os.environ.get("SHEEPBLK_CRASH_CUTS", "12"))
SEEDS = [int(s) for s in os.environ.get("SHEEPBLK_CRASH_SEED", "1,2").split(",")]
STEPS = (3, 25)  # operations between two cuts


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
        node = SheepProcess(root / "store", self.port, f"local:{root}/shm")
        disks = [fs.mountpoint / "disk" for fs in self.fs[1:]]
        if disks:
            node.store_arg = lambda: ",".join(str(p) for p in [node.store, *disks])  # type: ignore[method-assign]
        return node

    def start(self) -> None:
        for fs in self.fs:
            fs.start()
        self.sheep = self._sheep().start()

    def client(self) -> SheepClient:
        return SheepClient("127.0.0.1", self.port)

    def format(self) -> None:
        with self.client() as c:
            c.make_fs(copies=1, store=("farm" if self.backend == "farm" else "plain"))

    def cut(self, mode: str, seed: int) -> None:
        assert self.sheep is not None
        self.sheep.kill9()
        for i, fs in enumerate(self.fs):
            fs.crash(mode, seed=seed + i if mode == "subset" else None)
        for fs in self.fs:
            fs.restart()
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


@pytest.fixture
def crash_node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CrashNode]:
    node = CrashNode(tmp_path, request.param)
    with ExitStack() as stack:
        stack.callback(node.stop)
        node.start()
        yield node


@pytest.mark.parametrize("crash_node", ["plain", "farm", "md"], indirect=True)
@pytest.mark.parametrize("seed", SEEDS)
def test_power_cuts_keep_what_was_flushed(crash_node: CrashNode, seed: int) -> None:
    rnd = random.Random(seed)
    model = ClusterModel()
    crash_node.format()
    log: list[str] = []
    for cut in range(CUTS):
        with crash_node.client() as c:
            work = Workload(rnd, model)
            for _ in range(rnd.randint(*STEPS)):
                log.append(work.step(c))
        mode = rnd.choice(["all", "subset"])
        cut_seed = rnd.randrange(1 << 30)
        log.append(f"--- cut {cut}: {mode} {cut_seed}")
        crash_node.cut(mode, cut_seed)
        with crash_node.client() as c:
            wrong = verify(c, model)
        assert not wrong, (f"seed {seed} ({crash_node.backend}), cut {cut}: {wrong}\n"
                           + "\n".join(log[-60:]))
