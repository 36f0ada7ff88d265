"""The ctypes layer over libcpg (sheepblk/cluster/cpg.py) and the corosync
driver's own behaviour, against a real corosync 3 (tests/corosync_server.py).

What every driver does (order, kill -9, leave, separate clusters) is in
test_cluster_drivers.py; corosync dying under a running sheep is in
test_cluster_corosync_death.py (it needs a corosync of its own to kill).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from cluster_harness import Member, check_same_order, start, wait_until
from conftest import bin_path, free_port
from procs import terminate

from cli import sheep as sheep_cli
from sheepblk.cluster import cpg
from sheepblk.cluster.corosync import NOT_RUNNING, PART_PAYLOAD, CorosyncDriver, parse_spec
from sheepblk.cluster.cpg import CS_ERR_EXIST, ConfChg, Cpg, CpgError, Delivery
from sheepblk.cluster.driver import Event, Joined, Message
from sheepblk.proto import NodeId, SdNode

ROOT = Path(__file__).parent.parent


def _collect(handle: Cpg, want: int, timeout: float = 10.0) -> list[cpg.CpgEvent]:
    """Dispatch until `want` events came (or the timeout)."""
    got: list[cpg.CpgEvent] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        select.select([handle.fd], [], [], 0.1)
        got += handle.dispatch()
    return got


def test_cpg_join_mcast_leave(corosync_server: object) -> None:
    group = f"cpgtest-{os.getpid()}".encode()
    a = Cpg()
    try:
        assert a.addr[1] == os.getpid()
        a.join(group)
        for i in range(3):
            a.mcast(b"m%d" % i)
        got = _collect(a, 4)
        assert got[0] == ConfChg(members=(a.addr,), left=(), joined=(a.addr,))
        assert got[1:] == [Delivery(a.addr, b"m%d" % i) for i in range(3)]
        # A process is one member of a group: a second join is refused.
        b = Cpg()
        try:
            with pytest.raises(CpgError) as err:
                b.join(group)
            assert err.value.code == CS_ERR_EXIST
        finally:
            b.finalize()
        a.leave()
        (left,) = _collect(a, 1)
        assert left == ConfChg(members=(), left=((a.addr, "leave"),), joined=())
    finally:
        a.finalize()
    with pytest.raises(CpgError):
        a.mcast(b"after finalize")


PEER = """
import sys, time
from sheepblk.cluster.cpg import Cpg
c = Cpg()
c.join(sys.argv[1].encode())
for i in range(5):
    c.mcast(b"p%d" % i)
print("sent", flush=True)
time.sleep(600)
"""


def test_cpg_sees_another_process_join_and_die(corosync_server: object) -> None:
    """A member process killed with -9 is a configuration change at once
    (`procdown`); its messages came before it, in the order it sent them."""
    group = f"cpgpeer-{os.getpid()}"
    a = Cpg()
    peer = subprocess.Popen([sys.executable, "-c", PEER, group], cwd=ROOT,
                            stdout=subprocess.PIPE)
    try:
        a.join(group.encode())
        assert _collect(a, 1)[0] == ConfChg((a.addr,), (), (a.addr,))
        assert peer.stdout is not None and peer.stdout.readline() == b"sent\n"
        got = _collect(a, 6)
        assert isinstance(got[0], ConfChg) and got[0].joined == ((a.addr[0], peer.pid),)
        assert got[1:] == [Delivery((a.addr[0], peer.pid), b"p%d" % i) for i in range(5)]
        peer.kill()
        peer.wait()
        (gone,) = _collect(a, 1)
        assert gone == ConfChg((a.addr,), (((a.addr[0], peer.pid), "procdown"),), ())
    finally:
        a.finalize()
        terminate(peer)
        if peer.stdout is not None:
            peer.stdout.close()


def test_parse_spec() -> None:
    assert parse_spec("") == b"sheepdog"
    assert parse_spec("cluster=a") == b"sheepdog-a"
    with pytest.raises(ValueError):
        parse_spec("color=red")
    with pytest.raises(ValueError):
        parse_spec("cluster=")


def test_a_joiner_during_a_burst_gets_the_same_stream(corosync_server: object,
                                                      spawn: list[Member]) -> None:
    """Joiners let in while messages fly: each one's fold from the
    accepter's snapshot plus its own buffer gives the same seqs."""
    spec = f"corosync:cluster=burst{os.getpid()}"
    first = [start(spawn, spec, 7700 + i, msgs=200, wait_members=2) for i in range(2)]
    wait_until(lambda: all(len(m.members()) == 2 for m in first), "the first two", members=first)
    late = [start(spawn, spec, 7710 + i) for i in range(3)]  # while the two talk
    everyone = first + late
    wait_until(lambda: all(len(m.members()) == 5 for m in everyone), "5 members",
               members=everyone)
    wait_until(lambda: all({"7700:199", "7701:199"} <= set(m.messages()) for m in everyone),
               "everyone has the last messages", members=everyone)
    assert all(len(m.messages()) == 400 for m in first)
    time.sleep(0.5)
    check_same_order(everyone)


NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="unshare -n needs root")


@NEEDS_ROOT
def test_no_corosync_is_one_clear_line(tmp_path: Path) -> None:
    """In a network namespace of its own no corosync answers (its IPC is
    abstract unix sockets): `sheep -c corosync` says so and exits."""
    out = subprocess.run(["unshare", "-n", bin_path("sheep"), "-c", "corosync",
                          "-p", str(free_port()), str(tmp_path / "store")],
                         capture_output=True, timeout=60)
    assert out.returncode != 0
    assert out.stderr.decode().strip() == f"sheep: {NOT_RUNNING}"


@NEEDS_ROOT
def test_default_driver_is_corosync_when_it_runs(corosync_server: object) -> None:
    settings = sheep_cli.parse(["/s"])
    assert not isinstance(settings, int) and settings.opts.cluster == "corosync"
    # Without a corosync (a namespace of its own): the local driver.
    code = ("from cli import sheep; print(sheep.parse(['/s']).opts.cluster)")
    out = subprocess.run(["unshare", "-n", sys.executable, "-c", code], cwd=ROOT,
                         capture_output=True, timeout=60, check=True)
    assert out.stdout.decode().strip() == "local"


def test_a_big_message_goes_in_parts_and_arrives_whole(corosync_server: object) -> None:
    """A payload past one CPG message (PART_PAYLOAD) is sent in parts and
    delivered as one Message, after our own Joined as the first member."""
    payload = os.urandom(2 * PART_PAYLOAD + 1000)
    seen: list[Event] = []

    async def main() -> None:
        driver = CorosyncDriver(f"cluster=big{os.getpid()}")
        send, recv = trio.open_memory_channel[Event](10)
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run, SdNode(NodeId("127.0.0.1", 7800)), send)
            await driver.broadcast(payload)
            await driver.broadcast(b"small")
            with trio.fail_after(30):
                async for ev in recv:
                    seen.append(ev)
                    if isinstance(ev, Message) and ev.payload == b"small":
                        break
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert isinstance(seen[0], Joined) and [n.nid.port for n in seen[0].members] == [7800]
    assert [e.payload for e in seen[1:] if isinstance(e, Message)] == [payload, b"small"]
    assert [e.seq for e in seen] == list(range(seen[0].seq, seen[0].seq + 3))


def _stall(m: Member) -> None:
    os.kill(m.proc.pid, signal.SIGSTOP)  # still a CPG member, but it answers nothing


def test_a_joiner_asks_again_when_its_accepter_dies(corosync_server: object,
                                                    spawn: list[Member]) -> None:
    """The oldest member, which lets joiners in, stalls and then dies with
    a join pending: the joiner asks again and the next oldest lets it in."""
    spec = f"corosync:cluster=reask{os.getpid()}"
    old = [start(spawn, spec, 7900)]
    wait_until(lambda: bool(old[0].events), "the first member", members=old)
    old.append(start(spawn, spec, 7901))  # second in the join order
    wait_until(lambda: all(len(m.members()) == 2 for m in old), "2 members", members=old)
    _stall(old[0])
    joiner = start(spawn, spec, 7902)
    time.sleep(1.0)
    assert not joiner.events  # nobody let it in: the accepter is stalled
    old[0].kill9()
    wait_until(lambda: bool(joiner.events), "the joiner let in", members=[old[1], joiner])
    assert sorted(joiner.events[0]["members"]) == [7901, 7902]
    wait_until(lambda: sorted(old[1].members()) == [7901, 7902], "the survivor sees it",
               members=[old[1]])
    check_same_order([old[1], joiner])


def test_a_joiner_starts_the_cluster_when_every_member_is_gone(corosync_server: object,
                                                               spawn: list[Member]) -> None:
    """The only member stalls, then dies, with two joiners waiting: the
    older joiner starts a new cluster and lets both in (in the order their
    requests come)."""
    spec = f"corosync:cluster=founder{os.getpid()}"
    (only,) = [start(spawn, spec, 7950)]
    wait_until(lambda: bool(only.events), "the first member", members=[only])
    _stall(only)
    first = start(spawn, spec, 7951)
    time.sleep(0.5)  # joined the CPG group before the second
    second = start(spawn, spec, 7952)
    time.sleep(1.0)
    assert not first.events and not second.events
    only.kill9()
    wait_until(lambda: all(sorted(m.members()) == [7951, 7952] for m in (first, second)),
               "a new cluster of the two joiners", members=[first, second])
    check_same_order([first, second])


def test_garbage_in_the_group_is_dropped_by_everyone(corosync_server: object,
                                                     spawn: list[Member]) -> None:
    """A process that is no sheep multicasts nonsense into the group: every
    member drops the same messages, keeps its order, and lets a new member in."""
    spec = f"corosync:cluster=junk{os.getpid()}"
    ms = [start(spawn, spec, 7960)]
    wait_until(lambda: bool(ms[0].events), "the first member", members=ms)
    ms.append(start(spawn, spec, 7961))
    wait_until(lambda: all(len(m.members()) == 2 for m in ms), "2 members", members=ms)
    junk = Cpg()
    try:
        junk.join(f"sheepdog-junk{os.getpid()}".encode())
        for data in (b"\xff not json", b"[1, 2]", b'{"t": "join", "id": "x", "node": [1], "a": 1}',
                     b'{"t": "msg", "id": "x", "n": 1, "p": "not base64!"}',
                     b'{"t": "accept", "id": "x", "a": "one"}', b'{"t": "nonsense", "id": "x"}'):
            junk.mcast(data)
        late = start(spawn, spec, 7962, msgs=3, wait_members=3)
        wait_until(lambda: all(len(m.members()) == 3 for m in ms + [late]), "3 members",
                   members=ms + [late])
        wait_until(lambda: all(len(m.messages()) == 3 for m in ms + [late]), "3 messages each",
                   members=ms + [late])
    finally:
        junk.finalize()
    check_same_order(ms + [late])
