"""30,000 random, plausible requests at one node of a 3-node cluster, one
connection each (tests/hostile.py): the node's memory stays bounded all
the while, it keeps serving, and the data stored before is unchanged."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import threading
import time
from pathlib import Path

from conftest import SheepFactory, SheepProcess, wait_for
from hostile import random_request, send_one
from test_cluster_daemon import three

from sheepblk.client import Vdi

REQUESTS = int(os.environ.get("SHEEPBLK_HOSTILE_REQUESTS", "12000"))
RSS_LIMIT = 120 << 20
SENDERS = 4
MiB = 1 << 20


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _digest(node: SheepProcess, name: str, size: int) -> str:
    with node.client() as c, Vdi(c, name, writable=False) as v:
        return hashlib.sha1(v.pread(size, 0)).hexdigest()


def test_random_requests_leave_memory_and_data_alone(sheep_factory: SheepFactory) -> None:
    nodes = three(sheep_factory, copies=3)
    target = nodes[1]
    with nodes[0].client() as c:
        c.create_vdi("keep", 16 * MiB)
        with Vdi(c, "keep") as v:
            v.pwrite(os.urandom(12 * MiB), 0)
    before = _digest(nodes[2], "keep", 16 * MiB)
    peak = [rss(target.pid)]
    stop = threading.Event()

    def watch() -> None:
        last = time.monotonic()
        while not stop.is_set():
            peak[0] = max(peak[0], rss(target.pid))
            time.sleep(0.05)
            if os.environ.get("SHEEPBLK_HOSTILE_TRACE") and time.monotonic() - last > 2:
                last = time.monotonic()
                print(f"RSS {rss(target.pid) / MiB:.0f} MiB")

    def send(seed: int, count: int) -> None:
        rnd = random.Random(seed)
        for _ in range(count):
            head, body = random_request(rnd, [])
            send_one(target.port, head, body, rnd)

    watcher = threading.Thread(target=watch)
    watcher.start()
    senders = [threading.Thread(target=send, args=(seed, REQUESTS // SENDERS))
               for seed in range(SENDERS)]
    try:
        for t in senders:
            t.start()
        for t in senders:
            t.join()
    finally:
        stop.set()
        watcher.join()
    print(f"peak RSS {peak[0] / MiB:.0f} MiB over {REQUESTS} requests")
    assert target.alive
    assert peak[0] < RSS_LIMIT, f"RSS reached {peak[0] / MiB:.0f} MiB"
    for n in nodes:
        assert _digest(n, "keep", 16 * MiB) == before


def test_connections_past_the_cap_are_closed(one_node: SheepProcess) -> None:
    """A client opening sockets without end gets the ones past the cap
    closed at once; the node keeps serving the rest, and its memory."""
    from sheepblk.server.daemon import MAX_CONNECTIONS

    socks = []
    try:
        for _ in range(MAX_CONNECTIONS + 20):
            socks.append(socket.create_connection(("127.0.0.1", one_node.port)))
        for s in socks[-20:]:  # accepted in order: the last ones are past the cap
            s.settimeout(30)
            assert s.recv(1) == b""
        assert rss(one_node.pid) < RSS_LIMIT
    finally:
        for s in socks:
            s.close()

    def serves() -> bool:
        # The node counts a closed socket as gone once it has read its
        # EOF: until then a new connection may still be past the cap.
        with one_node.client() as c:
            c.create_vdi("after", MiB)
        return True

    wait_for(serves, "the node to serve again after the sockets closed", timeout=30)
