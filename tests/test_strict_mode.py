"""Strict mode (`dog cluster format -t`, Sheepdog's test 080): writes are
taken only while every copy has a zone of its own."""

from __future__ import annotations

from conftest import SheepFactory, run_dog, wait_for
from test_cluster_daemon import node_count, running

from sheepblk.proto import vid_to_data_oid

HALT = "IO has halted as there are not enough living nodes"


def test_strict_mode_halts_writes_short_of_zones(sheep_factory: SheepFactory) -> None:
    nodes = sheep_factory.start(4)
    wait_for(lambda: node_count(nodes[0]) == 4, "4 nodes")
    run_dog(nodes[0], "cluster", "format", "-c", "3", "-t")
    wait_for(lambda: all(running(n) for n in nodes), "running")
    run_dog(nodes[0], "vdi", "create", "test", "10M")
    with nodes[0].client() as c:
        vid = c.lookup_vdi("test").vid
    run_dog(nodes[0], "vdi", "write", "test", "0", "512", input=b"a" * 512)
    nodes[3].stop()
    wait_for(lambda: node_count(nodes[0]) == 3, "3 nodes")
    run_dog(nodes[0], "vdi", "write", "test", "0", "512", input=b"b" * 512)  # 3 zones: fine
    nodes[2].stop()
    wait_for(lambda: node_count(nodes[0]) == 2, "2 nodes")
    out = run_dog(nodes[0], "vdi", "write", "test", "0", "512", input=b"c" * 512, check=False)
    assert out.returncode != 0, out
    # As Sheepdog's dog says it: the object, then the VDI.
    assert out.stderr.decode().splitlines() == [
        f"Failed to write object {vid_to_data_oid(vid, 0):x}: {HALT}", "Failed to write VDI"]
    out = run_dog(nodes[1], "vdi", "create", "test1", "10M", check=False)
    assert out.returncode != 0, out
    assert "Failed to write to requested VDI" in out.stderr.decode(), out
    # Reads go on, and show the last write that was taken.
    assert run_dog(nodes[1], "vdi", "read", "test", "0", "512").stdout == b"b" * 512
    nodes[2].start()
    wait_for(lambda: node_count(nodes[0]) == 3, "3 nodes again")
    wait_for(lambda: run_dog(nodes[0], "vdi", "write", "test", "0", "512",
                             input=b"d" * 512, check=False).returncode == 0, "writes again")
    assert run_dog(nodes[1], "vdi", "read", "test", "0", "512").stdout == b"d" * 512


def test_without_strict_a_majority_of_zones_writes(sheep_factory: SheepFactory) -> None:
    nodes = sheep_factory.start(3)
    wait_for(lambda: node_count(nodes[0]) == 3, "3 nodes")
    run_dog(nodes[0], "cluster", "format", "-c", "3")
    wait_for(lambda: all(running(n) for n in nodes), "running")
    run_dog(nodes[0], "vdi", "create", "test", "10M")
    nodes[2].stop()
    wait_for(lambda: node_count(nodes[0]) == 2, "2 nodes")
    run_dog(nodes[0], "vdi", "write", "test", "0", "512", input=b"e" * 512)
    run_dog(nodes[0], "vdi", "create", "test1", "10M")
