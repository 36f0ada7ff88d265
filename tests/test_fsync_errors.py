"""A failing fsync (injected EIO through tests/powercut) fails the flush
that depended on it, never a later one; the node then leaves the cluster
(fail-stop, see the README), the others carry on with every byte, and the
node rejoins later as a copy rebuilt from theirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import SheepFactory, SheepProcess, free_port, run_dog, wait_for
from powercut import PowerCutFS
from test_cluster_daemon import node_count, running, wait_settled

from sheepblk.client import SheepdogError, Vdi
from sheepblk.proto import Res

MiB = 1 << 20


# The injected EIO drops b's only disk and b fails stop: both said as errors.
@pytest.mark.expected_errors(
    r"disk \S+/mnt/store/obj dropped \(flush failed for 1 file\(s\): \S+: Input/output error\)",
    r"leaving the cluster: every disk of this node is lost \(the last: \S+/mnt/store/obj\)")
def test_fsync_error_fails_the_flush_and_the_node_leaves(sheep_factory: SheepFactory,
                                                         tmp_path: Path) -> None:
    spec = f"local:{tmp_path}/shm"
    a, c = sheep_factory.start(2, cluster=spec)
    with PowerCutFS(tmp_path / "backing", tmp_path / "mnt") as pc:
        b = SheepProcess(pc.mountpoint / "store", free_port(), spec, zone=9)
        sheep_factory.nodes.append(b)
        b.start()
        nodes = [a, b, c]
        wait_for(lambda: node_count(a) == 3, "3 nodes")
        with a.client() as cl:
            cl.make_fs(copies=3)
        wait_for(lambda: all(running(n) for n in nodes), "running")
        flushed = os.urandom(8 * MiB)
        with a.client() as cl:
            cl.create_vdi("v", 16 * MiB)
            with Vdi(cl, "v", cache=True) as v:
                v.pwrite(flushed, 0)
                v.flush()
                later = os.urandom(4 * MiB)
                v.pwrite(later, 8 * MiB)
                pc.fail_next_fsync("store/obj/*")
                with pytest.raises(SheepdogError) as e:
                    v.flush()
                assert e.value.result == Res.EIO
        assert b.proc is not None
        assert b.proc.wait(60) == 1
        assert "leaving the cluster" in (pc.mountpoint / "store" / "sheep.log").read_text()
        wait_for(lambda: node_count(a) == 2, "b gone")
        # Every node heard why b left; dog node info says it.
        out = run_dog(a, "node", "info").stdout.decode()
        assert f"Left the cluster on a fault:\n  127.0.0.1:{b.port}: " in out, out
        assert "disk" in out.split("Left the cluster on a fault:")[1], out
        # The two that stayed flushed their copies: a flush now succeeds,
        # and it is true (both hold the bytes).
        with c.client() as cl, Vdi(cl, "v", cache=True) as v:
            v.flush()
            assert v.pread(12 * MiB, 0) == flushed + later
        # b comes back and is rebuilt from the others: every object on
        # all three, byte-identical.
        b.start()
        wait_for(lambda: node_count(a) == 3, "b back")
        wait_settled(nodes, 3)
        with b.client() as cl, Vdi(cl, "v", writable=False) as v:
            assert v.pread(12 * MiB, 0) == flushed + later
        b.stop()
