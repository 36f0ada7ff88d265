"""Who may administer a real sheep, seen from another host: a network
namespace with its own address (tests/netns.py), whose clients reach the
sheep over a veth pair, as a stray host on the storage network would.

- a stranger's format, shutdown, kill, recover, reweight, alter-copy...
  (our `dog`, and bare headers sent by tests/wire_probe.py) are refused
  with "Operation is not supported" and a WARNING naming op and peer,
  while its `dog vdi list`, reads, writes and VDI creation work;
- `sheep --admin-from NET` lets that host in, over IPv4 and IPv6;
- a host whose sheep is a member administers the cluster, and the two
  members' own traffic (joining, peer I/O, the ordered stream) is never
  refused;
- this host administers through the unix socket, its own addresses and
  loopback (the rest of the suite formats and stops clusters from
  127.0.0.1).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import netns
import pytest
from conftest import SheepProcess, bin_path, free_port, wait_for

from sheepblk.client import Vdi
from sheepblk.proto import Res
from sheepblk.server import admission
from sheepblk.server.optable import OPS
from sheepblk.server.transport import UNIX_SOCKET

MiB = 1 << 20
PROBE = str(Path(__file__).with_name("wire_probe.py"))
REFUSED_TEXT = "Operation is not supported"
ADMIN = sorted(admission.ADMIN_OPS & set(OPS))


@pytest.fixture
def ns() -> Iterator[netns.NetNs]:
    why = netns.missing()
    if why is not None:
        pytest.skip(f"no network namespaces here: {why}")
    made = netns.make()
    try:
        yield made
    finally:
        made.remove()


class Sheeps:
    """The sheep a test starts on either host, each stopped (by its pid)
    before the namespace goes."""

    def __init__(self, tmp: Path, ns: netns.NetNs) -> None:
        self.tmp, self.ns = tmp, ns
        self.started: list[SheepProcess] = []

    def here(self, *extra: str, addr: str | None = None) -> SheepProcess:
        """A sheep of this host bound to its address on the link."""
        return self._start(SheepProcess(self.tmp / "here", free_port(), f"local:{self.tmp}/shm",
                                        zone=0, extra=list(extra),
                                        host=addr or self.ns.host_addr))

    def there(self, cluster: str) -> SheepProcess:
        """A sheep of the other host, in `cluster`."""
        return self._start(SheepProcess(self.tmp / "there", free_port(), cluster, zone=1,
                                        host=self.ns.ns_addr, prefix=self.ns.exec_prefix()))

    def _start(self, node: SheepProcess) -> SheepProcess:
        self.started.append(node)
        return node.start()


@pytest.fixture
def sheeps(tmp_path: Path, ns: netns.NetNs) -> Iterator[Sheeps]:
    made = Sheeps(tmp_path, ns)
    try:
        yield made
    finally:
        for node in made.started:
            node.stop()


def dog_from(ns: netns.NetNs, node: SheepProcess, *args: str,
             input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Our dog, run on the other host against `node`."""
    return ns.run(bin_path("dog"), *args, "-a", node.host, "-p", str(node.port), input=input)


def probe_from(ns: netns.NetNs, node: SheepProcess, *ops: str,
               source: str | None = None) -> dict[str, int]:
    """Bare requests sent from the other host: {op: result}."""
    src = ["--source", source] if source else []
    out = ns.run(sys.executable, PROBE, *src, node.host, str(node.port), *ops)
    assert out.returncode == 0, out.stderr.decode()
    got: dict[str, int] = json.loads(out.stdout)
    return got


def probe_here(node: SheepProcess, *ops: str, source: str | None = None) -> dict[str, int]:
    """Bare requests sent from this host."""
    src = ["--source", source] if source else []
    out = subprocess.run([sys.executable, PROBE, *src, node.host, str(node.port), *ops],
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    got: dict[str, int] = json.loads(out.stdout)
    return got


def log_of(node: SheepProcess) -> str:
    return (node.store / "sheep.log").read_text()


def test_a_stranger_host_may_not_administer(sheeps: Sheeps, ns: netns.NetNs) -> None:
    node = sheeps.here()
    data = bytes(range(256)) * (8 * MiB // 256)
    with node.client() as c:  # from this host's own address on the link
        c.make_fs(copies=1)
        c.create_vdi("Alice", 8 * MiB)
        with Vdi(c, "Alice") as v:
            v.pwrite(data, 0)

    # Our dog on the other host: each admin command fails with C dog's
    # message (most of them quote the result), and nothing changes.
    for args, says in (
            (["cluster", "format", "-f"], REFUSED_TEXT),
            (["cluster", "shutdown"], REFUSED_TEXT),
            (["cluster", "reweight"], REFUSED_TEXT),
            (["cluster", "recover", "disable"], REFUSED_TEXT),
            (["cluster", "recover", "force", "-f"], REFUSED_TEXT),
            (["cluster", "alter-copy", "-c", "2", "-f"], "redundancy level failure"),
            (["vdi", "alter-copy", "Alice", "-c", "2", "-f"], "redundancy level failure"),
            (["node", "kill", "0"], REFUSED_TEXT),
            (["node", "recovery", "set-throttle", "1", "100"], "Failed to execute request")):
        out = dog_from(ns, node, *args)
        assert out.returncode != 0, args
        assert says in out.stderr.decode(), (args, out.stderr)
    out = dog_from(ns, node, "cluster", "format", "-f")
    assert out.stderr == f"Format failed: {REFUSED_TEXT}\n".encode()

    # Bare headers: a whole format request, a shutdown, then every other
    # admin op the table serves.
    got = probe_from(ns, node, "MAKE_FS", "SHUTDOWN", *(admission.Op(op).name for op in ADMIN))
    assert got == {admission.Op(op).name: Res.NO_SUPPORT for op in ADMIN}

    # The same host reads, lists and creates as before.
    listed = dog_from(ns, node, "vdi", "list", "-r")
    assert listed.returncode == 0 and b" Alice " in listed.stdout, listed
    assert dog_from(ns, node, "node", "list").returncode == 0
    assert dog_from(ns, node, "cluster", "info").stdout.startswith(b"Cluster status: running")
    read = dog_from(ns, node, "vdi", "read", "Alice", "0", str(MiB))
    assert read.returncode == 0 and read.stdout == data[:MiB]
    assert dog_from(ns, node, "vdi", "create", "Bob", "4M").returncode == 0
    assert dog_from(ns, node, "vdi", "write", "Bob", input=b"b" * 4096).returncode == 0
    assert dog_from(ns, node, "vdi", "read", "Bob", "0", "4096").stdout == b"b" * 4096
    assert probe_from(ns, node, "GET_NODE_LIST", "READ_VDIS") == {
        "GET_NODE_LIST": Res.SUCCESS, "READ_VDIS": Res.SUCCESS}

    assert node.alive
    with node.client() as c, Vdi(c, "Alice", writable=False) as v:
        assert v.pread(8 * MiB, 0) == data
    text = log_of(node)
    for op in ("MAKE_FS", "SHUTDOWN", "KILL_NODE", "FORCE_RECOVER", "REWEIGHT"):
        assert f"WARNING [sheep.admission] refusing {op} from {ns.ns_addr}:" in text, op

    # This host may: from its other address (not a member: the routing
    # table says it is ours), then through the unix socket.
    assert probe_here(node, "SET_LOGLEVEL", source=ns.host_addr2) == {"SET_LOGLEVEL": 0}
    assert f"from {ns.host_addr2}" not in log_of(node)
    sock = str(node.store / UNIX_SOCKET)
    out = subprocess.run([bin_path("dog"), "cluster", "shutdown", "-a", sock],
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert node.proc is not None and node.proc.wait(30) == 0


def test_admin_from_lets_a_network_in(sheeps: Sheeps, ns: netns.NetNs) -> None:
    node = sheeps.here("--admin-from", ns.link)
    out = dog_from(ns, node, "cluster", "format", "-c", "1")
    assert out.returncode == 0, out.stderr
    assert dog_from(ns, node, "vdi", "create", "Alice", "4M").returncode == 0
    assert dog_from(ns, node, "cluster", "recover", "disable").returncode == 0
    assert dog_from(ns, node, "cluster", "recover", "enable").returncode == 0
    out = dog_from(ns, node, "cluster", "shutdown")
    assert out.returncode == 0, out.stderr
    assert node.proc is not None and node.proc.wait(30) == 0
    assert "refusing" not in log_of(node)


def test_admin_from_an_ipv6_network(sheeps: Sheeps, ns: netns.NetNs) -> None:
    """The other host has two IPv6 addresses: --admin-from names a /120
    holding one of them."""
    node = sheeps.here("--admin-from", f"{ns.ns6}/120", addr=ns.host6)
    assert probe_from(ns, node, "MAKE_FS", "SHUTDOWN", source=ns.ns6_2) == {
        "MAKE_FS": Res.NO_SUPPORT, "SHUTDOWN": Res.NO_SUPPORT}
    assert f"refusing MAKE_FS from {ns.ns6_2}:" in log_of(node)
    assert probe_from(ns, node, "MAKE_FS", source=ns.ns6) == {"MAKE_FS": Res.SUCCESS}
    assert probe_from(ns, node, "SHUTDOWN", source=ns.ns6) == {"SHUTDOWN": Res.SUCCESS}
    assert node.proc is not None and node.proc.wait(30) == 0


def test_member_hosts_administer_the_cluster(sheeps: Sheeps, ns: netns.NetNs) -> None:
    """A sheep on each host, one cluster: the other host's dog formats and
    shuts it down (its address is a member's), and the members' own
    traffic goes between the hosts unrefused."""
    here = sheeps.here()
    there = sheeps.there(here.cluster)

    def nodes() -> int:
        with here.client() as c:
            return len(c.node_list())

    wait_for(lambda: nodes() == 2, "2 nodes", 60)
    out = dog_from(ns, here, "cluster", "format", "-c", "2")
    assert out.returncode == 0, out.stderr
    data = b"m" * (4 * MiB)
    assert dog_from(ns, here, "vdi", "create", "Alice", "8M").returncode == 0
    assert dog_from(ns, here, "vdi", "write", "Alice", input=data).returncode == 0
    for node in (here, there):  # both copies, one on each host
        with node.client() as c, Vdi(c, "Alice", writable=False) as v:
            assert v.pread(4 * MiB, 0) == data
    out = dog_from(ns, here, "cluster", "shutdown")
    assert out.returncode == 0, out.stderr
    for node in (here, there):
        assert node.proc is not None and node.proc.wait(30) == 0
        assert "refusing" not in log_of(node)
