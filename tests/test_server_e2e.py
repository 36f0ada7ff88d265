"""The real `sheep` process, driven through sheepblk.client and raw sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import SheepFactory, SheepProcess, bin_path, free_port, wait_port

from sheepblk.client import Connection, SheepClient, SheepdogError, Vdi
from sheepblk.proto import (
    SD_NR_VDIS,
    Flag,
    ObjArgs,
    Op,
    Request,
    Res,
    Response,
    vid_to_data_oid,
)
from sheepblk.store import AlreadyRunning, PidLock

MiB = 1 << 20


def test_format_create_write_read(one_node: SheepProcess) -> None:
    with one_node.client() as c:
        vid = c.create_vdi("disk", 64 * MiB)
        assert c.lookup_vdi("disk").vid == vid
        assert [h.name for h in c.list_vdis()] == ["disk"]
        data = os.urandom(6 * MiB)
        with Vdi(c, "disk") as v:
            v.pwrite(data, 3 * MiB)
            assert v.pread(6 * MiB, 3 * MiB) == data
            assert v.pread(MiB, 0) == bytes(MiB)
            v.flush()
        with Vdi(c, "disk", cache=True) as v:
            v.pwrite(b"cached", 0)
            v.flush()
            assert v.pread(6, 0) == b"cached"
        status, logs = c.stat_cluster()
        assert status == Res.SUCCESS and logs[0].epoch == 1 and logs[0].nr_copies == 1
        assert [n.nid.port for n in c.node_list()] == [one_node.port]
        st = c.stat_sheep()
        assert st.store_size > st.store_free > 0


def test_snapshot_copy_on_write(one_node: SheepProcess) -> None:
    with one_node.client() as c:
        c.create_vdi("base", 16 * MiB)
        with Vdi(c, "base") as v:
            v.pwrite(b"A" * MiB, 0)
            old_vid = v.vid
        new_vid = c.create_vdi("base", 16 * MiB, snapshot=True, base_vid=old_vid)
        with Vdi(c, "base") as v:
            assert v.vid == new_vid
            v.pwrite(b"B" * 10, 5)
            assert v.pread(20, 0) == b"AAAAA" + b"B" * 10 + b"AAAAA"
        with Vdi(c, "base", snapid=1) as snap:
            assert snap.pread(20, 0) == b"A" * 20
        with pytest.raises(SheepdogError) as e:
            c.write_obj(vid_to_data_oid(old_vid, 0), b"x")
        assert e.value.result == Res.READONLY


def test_pipelined_requests_on_one_socket(one_node: SheepProcess) -> None:
    with one_node.client() as c:
        vid = c.create_vdi("pipe", 64 * MiB)
        for i in range(8):
            c.create_and_write_obj(vid_to_data_oid(vid, i), bytes([i + 1]) * 4096)
    with socket.create_connection(("127.0.0.1", one_node.port)) as s:
        reqs = b"".join(
            Request(Op.READ_OBJ, 0, 0, 100 + i, 4096, ObjArgs(oid=vid_to_data_oid(vid, i)).pack())
            .pack() for i in range(8))
        s.sendall(reqs)
        got: dict[int, bytes] = {}
        buf = b""
        while len(got) < 8:
            while len(buf) < 48:
                buf += s.recv(1 << 20)
            rsp = Response.unpack(buf[:48])
            while len(buf) < 48 + rsp.data_length:
                buf += s.recv(1 << 20)
            got[rsp.id] = buf[48:48 + rsp.data_length]
            buf = buf[48 + rsp.data_length:]
    assert got == {100 + i: bytes([i + 1]) * 4096 for i in range(8)}


def _answers(s: socket.socket, n: int) -> dict[int, tuple[int, bytes]]:
    got: dict[int, tuple[int, bytes]] = {}
    buf = b""
    while len(got) < n:
        while len(buf) < 48:
            buf += s.recv(1 << 20)
        rsp = Response.unpack(buf[:48])
        while len(buf) < 48 + rsp.data_length:
            buf += s.recv(1 << 20)
        got[rsp.id] = (rsp.result, buf[48:48 + rsp.data_length])
        buf = buf[48 + rsp.data_length:]
    return got


def test_pipelined_mix_of_inline_and_slow_requests(one_node: SheepProcess) -> None:
    """Small cached writes and small reads (answered inline, several per
    sendmsg), a large read (sendfile), a durable write and a missing
    object, pipelined in one buffer: every answer carries its own id, result
    and bytes, and each write is seen by the reads sent after it."""
    with one_node.client() as c:
        vid = c.create_vdi("mix", 64 * MiB)
        for i in range(4):
            c.create_and_write_obj(vid_to_data_oid(vid, i), bytes(4096))
        c.write_obj(vid_to_data_oid(vid, 2), b"z" * MiB, 3 * MiB)
    oid = [vid_to_data_oid(vid, i) for i in range(5)]

    def req(rid: int, op: int, o: int, *, length: int = 4096, data: bytes = b"",
            flags: int = 0, offset: int = 0) -> bytes:
        if data:
            flags |= Flag.CMD_WRITE
            length = len(data)
        return Request(op, flags, 0, rid, length,
                       ObjArgs(oid=o, offset=offset).pack()).pack() + data

    stream = b"".join([
        req(1, Op.WRITE_OBJ, oid[0], data=b"a" * 4096, flags=Flag.CMD_CACHE),
        req(2, Op.READ_OBJ, oid[0]),
        req(3, Op.WRITE_OBJ, oid[1], data=b"b" * 512),  # durable: not inline
        req(4, Op.READ_OBJ, oid[4]),  # never written
        req(5, Op.READ_OBJ, oid[2], length=2 * MiB, offset=2 * MiB),  # sendfile
        req(6, Op.WRITE_OBJ, oid[3], data=b"d" * 100, flags=Flag.CMD_CACHE),
        req(7, Op.READ_OBJ, oid[3], length=200),
    ])
    with socket.create_connection(("127.0.0.1", one_node.port)) as s:
        s.sendall(stream)
        got = _answers(s, 7)
        s.sendall(req(8, Op.READ_OBJ, oid[1], length=1024))
        got.update(_answers(s, 1))
    assert got[1] == (Res.SUCCESS, b"")
    assert got[2] == (Res.SUCCESS, b"a" * 4096)
    assert got[3] == (Res.SUCCESS, b"")
    assert got[4][0] == Res.NO_OBJ
    assert got[5] == (Res.SUCCESS, bytes(MiB) + b"z" * MiB)
    assert got[6] == (Res.SUCCESS, b"")
    assert got[7] == (Res.SUCCESS, b"d" * 100 + bytes(100))
    assert got[8] == (Res.SUCCESS, b"b" * 512 + bytes(512))


def test_lock_released_when_holder_disconnects(one_node: SheepProcess) -> None:
    with one_node.client() as c:
        c.create_vdi("locked", MiB)
    holder = SheepClient("127.0.0.1", one_node.port, pool_size=1)
    holder.lock_vdi("locked")
    other = SheepClient("127.0.0.1", one_node.port, pool_size=1)
    with pytest.raises(SheepdogError) as e:
        other.lock_vdi("locked")
    assert e.value.result == Res.VDI_LOCKED
    holder.close()
    for _ in range(200):  # the release travels through the cluster stream
        try:
            other.lock_vdi("locked")
            break
        except SheepdogError as err:
            assert err.result == Res.VDI_LOCKED
            time.sleep(0.05)
    else:
        pytest.fail("lock never released")
    other.close()


def test_restart_keeps_vdis(sheep_factory: SheepFactory) -> None:
    (node,) = sheep_factory.start(1)
    with node.client() as c:
        c.make_fs(copies=1)
        c.create_vdi("keep", 8 * MiB)
        with Vdi(c, "keep") as v:
            v.pwrite(b"persist", MiB)
    node.stop()
    node.start()
    node.wait_running()
    with node.client() as c:
        with Vdi(c, "keep") as v:
            assert v.pread(7, MiB) == b"persist"
        c.create_vdi("more", MiB)
        assert sorted(h.name for h in c.list_vdis()) == ["keep", "more"]


def test_bad_client_does_not_hurt_others(one_node: SheepProcess) -> None:
    with one_node.client() as c:
        c.create_vdi("safe", 8 * MiB)
        with Vdi(c, "safe") as v:
            v.pwrite(b"intact", 0)
        bitmap = c.read_vdis()
    with socket.create_connection(("127.0.0.1", one_node.port)) as s:
        s.sendall(os.urandom(10000))
    with socket.create_connection(("127.0.0.1", one_node.port)) as s:
        s.sendall(Request(Op.WRITE_OBJ, 1, 0, 1, 0xFFFFFFF0, ObjArgs(oid=1).pack()).pack())
        assert Response.unpack(s.recv(48)).result == Res.INVALID_PARMS
    with Connection("127.0.0.1", one_node.port) as conn:
        rsp, _ = conn.execute(Request(0x7D), check=False)
        assert rsp.result == Res.INVALID_PARMS
        rsp, out = conn.execute(Request(Op.READ_VDIS, data_length=SD_NR_VDIS // 8))
        assert bytes(out) == bitmap
    with one_node.client() as c, Vdi(c, "safe") as v:
        assert v.pread(6, 0) == b"intact"


def test_daemonizes_and_pid_lock_refuses_second(tmp_path: Path) -> None:
    port = free_port()
    store = tmp_path / "store"
    args = [bin_path("sheep"), "-p", str(port), "-c", f"local:{tmp_path}/shm", str(store)]
    done = subprocess.run(args, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pid = int((store / "sheep.pid").read_text())
    try:
        wait_port(port, timeout=5)  # already bound when the parent returned
        with SheepClient("127.0.0.1", port) as c:
            c.make_fs(copies=1)
        second = subprocess.run(args[:2] + [str(free_port())] + args[3:] + ["-f"],
                                capture_output=True, timeout=60)
        assert second.returncode != 0
        assert b"already" in second.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
    for _ in range(600):  # the flock goes the moment the daemon exits
        try:
            PidLock(store).release()
            break
        except AlreadyRunning:
            time.sleep(0.05)
    else:
        pytest.fail("daemon did not exit")


def test_shutdown_answers_then_exits(one_node: SheepProcess) -> None:
    with one_node.client() as c:
        c.shutdown()
    assert one_node.proc is not None
    assert one_node.proc.wait(timeout=30) == 0


# sheep.log says why it stops, as an error: that is what this test checks.
@pytest.mark.expected_errors(r"/config: (unknown store backend 'dummy'|Expecting value)")
@pytest.mark.parametrize("config", [b'{"store": "dummy"}\n', b'{"store": \n'])
def test_a_config_it_cannot_use_is_a_clear_error(tmp_path: Path, config: bytes) -> None:
    """A store whose config names a backend this sheep does not know (or
    is not JSON): the daemonised start says why on stderr and in sheep.log,
    exits 1 and serves nothing (opening it as plain would serve another
    backend's objects as garbage)."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "config").write_bytes(config)
    port = free_port()
    done = subprocess.run([bin_path("sheep"), "-p", str(port), "-c", f"local:{tmp_path}/shm",
                           str(store)], capture_output=True, timeout=60)
    assert done.returncode == 1
    assert b"Traceback" not in done.stderr
    assert str(store / "config").encode() in done.stderr, done.stderr
    if b"dummy" in config:
        assert b"unknown store backend 'dummy'" in done.stderr
    assert str(store / "config") in (store / "sheep.log").read_text()
