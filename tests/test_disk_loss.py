"""A node whose only disk goes away (Sheepdog's test 043): the node leaves
the cluster, the write that found the fault goes on without it, and the
cluster carries on, with ordered operations too."""

from __future__ import annotations

import shutil

import pytest
from conftest import SheepFactory, run_dog, wait_for
from test_cluster_daemon import node_count, three

from sheepblk.client import Vdi
from sheepblk.proto import vid_to_data_oid
from sheepblk.ring import Ring

OBJ = 4 << 20
OBJECTS = 6


def _stamp(node_port_client, marker: int) -> list[bytes]:  # type: ignore[no-untyped-def]
    with node_port_client() as c, Vdi(c, "test") as v:
        for i in range(OBJECTS):
            v.pwrite(f"{marker}-{i}".encode().ljust(512, b"\0"), i * OBJ)
    return [f"{marker}-{i}".encode() for i in range(OBJECTS)]


def _stamps(node_port_client) -> list[bytes]:  # type: ignore[no-untyped-def]
    with node_port_client() as c, Vdi(c, "test", writable=False) as v:
        return [bytes(v.pread(512, i * OBJ)).rstrip(b"\0") for i in range(OBJECTS)]


# The two stores removed: each node drops its only disk and fails stop, as errors.
@pytest.mark.expected_errors(r"disk \S+/node\d/obj dropped \(object [0-9a-f]{16}\)",
                             r"leaving the cluster: every disk of this node is lost")
def test_a_node_that_lost_its_store_leaves(sheep_factory: SheepFactory,
                                           driver: str | None) -> None:
    nodes = three(sheep_factory, n=5, copies=3, cluster=driver)
    with nodes[0].client() as c:
        vid = c.create_vdi("test", OBJECTS * OBJ)
    _stamp(nodes[0].client, 0)
    with nodes[0].client() as c:
        ring = Ring(c.node_list())
    holders = {n.nid.port for i in range(OBJECTS)
               for n in ring.oid_to_nodes(vid_to_data_oid(vid, i), 3)}
    lost = next(n for n in nodes[1:] if n.port in holders)  # it holds some of them
    shutil.rmtree(lost.store / "obj")
    want = _stamp(nodes[0].client, 1)
    assert lost.proc is not None
    assert lost.proc.wait(60) == 1  # it left, and said why
    log = (lost.store / "sheep.log").read_text()
    assert "leaving the cluster: every disk of this node is lost" in log
    wait_for(lambda: node_count(nodes[0]) == 4, "4 nodes")
    rest = [n for n in nodes if n is not lost]
    for n in rest:
        assert _stamps(n.client) == want
    # Ordered operations go on without it.
    gateway = rest[0]
    run_dog(gateway, "vdi", "create", "test2", "20M")
    assert "test2" in run_dog(rest[1], "vdi", "list").stdout.decode()
    # A gateway whose peer lost its disk: the write still succeeds.
    with gateway.client() as c:
        owners = {n.nid.port for n in Ring(c.node_list()).oid_to_nodes(vid_to_data_oid(vid, 0), 3)}
    broken = next(n for n in rest[1:] if n.port in owners)
    shutil.rmtree(broken.store / "obj")
    run_dog(gateway, "vdi", "write", "test", "0", "512", input=b"hello".ljust(512, b"\0"))
    assert broken.proc is not None
    assert broken.proc.wait(60) == 1
    wait_for(lambda: node_count(gateway) == 3, "3 nodes")
    assert _stamps(gateway.client)[0] == b"hello"
