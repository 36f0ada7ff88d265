"""Who may administer a sheep (sheepblk/server/admission.py), without a
network: the decision as a pure function, the op lists against the op
table, the rate-limited warning, and a node served over in-process streams
whose peer names say where a client would be (tests/test_admin_hosts.py
does the same over real sockets from another network namespace).

The addresses are documentation ranges (RFC 5737, RFC 3849): nothing is
sent to them; host_owns asks the routing table only.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from test_server_inproc import Raw

from sheepblk.cluster.solo import SoloDriver
from sheepblk.proto import ClusterArgs, Op, Res, VdiArgs
from sheepblk.server import Options
from sheepblk.server.admission import (
    ADMIN_OPS,
    OPEN_OPS,
    REFUSED,
    WARN_EVERY,
    Admission,
    host_owns,
    may_administer,
    parse_networks,
    peer_address,
)
from sheepblk.server.conn import serve_stream
from sheepblk.server.node import Sheep
from sheepblk.server.optable import OPS
from sheepblk.server.transport import StreamTransport
from sheepblk.store import PlainStore

ip = ipaddress.ip_address
STRANGER = "203.0.113.9:40000"
MEMBER = "198.51.100.7"


def never(_ip: object) -> bool:
    return False


def test_every_served_op_is_either_admin_or_open() -> None:
    """A new op in the table fails here until someone decides who may send it."""
    assert not ADMIN_OPS & OPEN_OPS
    assert set(OPS) - ADMIN_OPS - OPEN_OPS == set()
    assert set(OPS) - ADMIN_OPS == OPEN_OPS


def test_the_data_path_and_queries_stay_open() -> None:
    for op in (Op.READ_OBJ, Op.WRITE_OBJ, Op.CREATE_AND_WRITE_OBJ, Op.NEW_VDI, Op.DEL_VDI,
               Op.LOCK_VDI, Op.GET_VDI_INFO, Op.READ_VDIS, Op.GET_NODE_LIST, Op.STAT_CLUSTER,
               Op.CLUSTER_INFO, Op.WRITE_PEER, Op.READ_PEER, Op.FLUSH_VDI, Op.GET_LOGLEVEL):
        assert op in OPEN_OPS, op.name
    for op in (Op.MAKE_FS, Op.SHUTDOWN, Op.KILL_NODE, Op.FORCE_RECOVER, Op.MD_PLUG,
               Op.SET_LOGLEVEL, Op.SET_VNODES, Op.REWEIGHT, Op.ALTER_CLUSTER_COPY):
        assert op in ADMIN_OPS, op.name


@pytest.mark.parametrize(("peer", "expected"), [
    ("10.1.2.3:7000", "10.1.2.3"),
    ("[fd00::5]:7000", "fd00::5"),
    ("fd00::5:7000", "fd00::5"),  # how SocketTransport names an IPv6 peer
    ("::ffff:10.1.2.3:41000", "10.1.2.3"),  # a dual-stack socket's IPv4 client
    ("fe80::1%veth0:7000", "fe80::1"),
    ("unix", None),
    ("stream", None),
    ("?", None),
    ("", None),
])
def test_peer_address(peer: str, expected: str | None) -> None:
    got = peer_address(peer)
    assert got == (ip(expected) if expected else None)


def test_parse_networks() -> None:
    assert parse_networks("10.1.2.1/30, fd00::/64,192.0.2.5,") == [
        ipaddress.ip_network("10.1.2.0/30"), ipaddress.ip_network("fd00::/64"),
        ipaddress.ip_network("192.0.2.5/32")]
    assert parse_networks("") == []
    for bad in ("10.0.0.0/33", "host.example", "10.0.0.0/24;rm"):
        with pytest.raises(ValueError, match="not an IPv4 or IPv6 network"):
            parse_networks(bad)


def test_who_may_administer() -> None:
    members = {ip("198.51.100.7"), ip("2001:db8::7")}
    nets = parse_networks("192.0.2.0/28,2001:db8:1::/48")
    asked: list[object] = []

    def owns(addr: object) -> bool:
        asked.append(addr)
        return addr == ip("203.0.113.1")

    def may(peer: str) -> bool:
        return may_administer(peer, members=members, admin_from=nets, owns=owns)

    assert may("unix")
    assert may("127.0.0.1:5000") and may("127.9.9.9:5000") and may("::1:5000")
    assert may("::ffff:127.0.0.1:5000")
    assert may("198.51.100.7:7001") and may("[2001:db8::7]:7001")
    assert may("192.0.2.15:1") and may("2001:db8:1:ff::1:1")
    assert asked == []  # cheap answers first: no syscall for them
    assert may("203.0.113.1:9")  # an address of this host
    assert not may("192.0.2.16:1") and not may("198.51.100.8:7000")
    assert not may("2001:db8:2::1:1")
    assert not may("?") and not may("") and not may("stream")
    # An IPv4 network never matches an IPv6 peer, nor the other way round.
    assert not may_administer("::c000:201:1", members=(), admin_from=nets, owns=never)


def test_host_owns_asks_the_routing_table() -> None:
    assert host_owns(ip("127.0.0.1"))
    assert not host_owns(ip("203.0.113.77"))  # routed away, or no route at all
    assert not host_owns(ip("255.255.255.255"))


def test_refusal_warns_once_per_peer_and_op(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    gate = Admission(parse_networks("192.0.2.0/28"), owns=never, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="sheep.admission")
    assert gate.admits(Op.READ_OBJ, STRANGER, ())
    assert not gate.admits(Op.MAKE_FS, STRANGER, ())
    assert not gate.admits(Op.MAKE_FS, "203.0.113.9:40001", ())  # same host, another port
    assert not gate.admits(Op.SHUTDOWN, STRANGER, ())
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"refusing MAKE_FS from {STRANGER}: only this host, cluster members and "
        "192.0.2.0/28 (sheep --admin-from) may administer the cluster",
        f"refusing SHUTDOWN from {STRANGER}: only this host, cluster members and "
        "192.0.2.0/28 (sheep --admin-from) may administer the cluster"]
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    now[0] += WARN_EVERY
    assert not gate.admits(Op.MAKE_FS, STRANGER, ())
    assert len(caplog.records) == 3
    assert gate.admits(Op.MAKE_FS, "192.0.2.3:1", ())
    assert gate.admits(Op.MAKE_FS, f"{MEMBER}:1", {ip(MEMBER)})


# ---- a node served in-process, its clients named by peer address ----

Connect = Callable[[str], Awaitable[Raw]]


def run_node(tmp_path: Path, body: Callable[[Sheep, Connect], Awaitable[None]], *,
             bindaddr: str = "127.0.0.1", admin_from: str = "") -> None:
    async def main() -> None:
        opts = Options(store_dir=tmp_path / "store", port=7000, bindaddr=bindaddr,
                       admin_from=tuple(parse_networks(admin_from)))
        node = Sheep(opts, PlainStore(tmp_path / "store"), SoloDriver())
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run_cluster)

            async def connect(peer: str) -> Raw:
                client, server = trio.testing.memory_stream_pair()
                nursery.start_soon(serve_stream, StreamTransport(server), node, peer)
                return Raw(client)

            with trio.fail_after(60):
                await body(node, connect)
            nursery.cancel_scope.cancel()

    trio.run(main)


FORMAT_ARGS = ClusterArgs(copies=1, ctime=1 << 32).pack()
PLAIN = b"plain".ljust(16, b"\0")


def test_a_stranger_is_refused_every_admin_op(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Each admin op the table serves, as a bare header from a stranger:
    refused before its fields are even looked at, and nothing changes;
    the same stranger still creates, writes and lists VDIs."""
    caplog.set_level(logging.WARNING, logger="sheep.admission")

    async def body(node: Sheep, connect: Connect) -> None:
        local = await connect("unix")
        rsp, _ = await local.call(Op.MAKE_FS, FORMAT_ARGS, PLAIN)
        assert rsp.result == Res.SUCCESS
        ctime = node.config.ctime
        c = await connect(STRANGER)
        for op in sorted(ADMIN_OPS & set(OPS)):
            rsp, _ = await c.call(op)
            assert rsp.result == REFUSED, Op(op).name
        rsp, _ = await c.call(Op.MAKE_FS, ClusterArgs(copies=1, ctime=2 << 32).pack(), PLAIN)
        assert rsp.result == REFUSED
        assert node.config.ctime == ctime and not node.stopped.is_set()
        rsp, _ = await c.call(Op.NEW_VDI, VdiArgs(vdi_size=1 << 22, copies=1).pack(),
                              b"open".ljust(256, b"\0"))
        assert rsp.result == Res.SUCCESS
        for op, length in ((Op.READ_VDIS, 1 << 21), (Op.GET_NODE_LIST, 1 << 16),
                           (Op.GET_LOGLEVEL, 4), (Op.STAT_SHEEP, 0)):
            rsp, _ = await c.call(op, length=length)
            assert rsp.result == Res.SUCCESS, Op(op).name
        # The unix socket still may: the log level comes back to info.
        rsp, _ = await local.call(Op.SET_LOGLEVEL, data=(6).to_bytes(4, "little"))
        assert rsp.result == Res.SUCCESS

    run_node(tmp_path, body)
    refused = {r.getMessage().split()[1] for r in caplog.records}
    assert refused == {Op(op).name for op in ADMIN_OPS & set(OPS)}
    assert all(STRANGER in r.getMessage() for r in caplog.records)


def test_members_and_admin_networks_may(tmp_path: Path) -> None:
    """A node whose address is MEMBER takes an admin op (SET_LOGLEVEL)
    from that address (a member's) and from its --admin-from network, and
    still refuses a host outside both."""
    async def body(node: Sheep, connect: Connect) -> None:
        for peer, result in ((f"{MEMBER}:7001", Res.SUCCESS), ("192.0.2.9:1", Res.SUCCESS),
                             ("192.0.2.17:1", REFUSED)):
            c = await connect(peer)
            rsp, _ = await c.call(Op.SET_LOGLEVEL, data=(6).to_bytes(4, "little"))
            assert rsp.result == result, peer

    run_node(tmp_path, body, bindaddr=MEMBER, admin_from="192.0.2.0/28")
