"""Replays, request by request, what QEMU's block/sheepdog.c sends.

Facts read from QEMU's source (v2.x and v5.2; function names cited where a
step comes from). Headers are built with sheepblk.proto and sent over plain
sockets, as QEMU does:

- QEMU fills `proto_ver` only in find_vdi_name() (0x01, SD_PROTO_VER of its
  copy of the protocol); every other header is memset to zero and keeps
  proto_ver 0 (add_aio_request, read_write_object, do_sd_create, sd_close).
- sd_open(): opens its long-lived I/O socket first (get_sheep_fd), then
  find_vdi_name(lock=true) sends LOCK_VDI on a temporary socket it closes at
  once, then reads the whole inode (header + data_vdi_id[], no gref) on
  another temporary socket.
- I/O (sd_co_rw_vector/add_aio_request) goes over the I/O socket, several
  requests in flight at once, each with its own id; answers may come in
  any order (aio_read_response finds the request by id). A write to an
  object the VDI does not own is CREATE_AND_WRITE (with SD_FLAG_CMD_COW and
  cow_oid when another VDI owns it); after the data, sd_write_done() writes
  the dirty range of data_vdi_id[] into the inode with WRITE_OBJ.
  Flags: SD_FLAG_CMD_CACHE unless opened with cache=none.
- flush: FLUSH_VDI on the I/O socket, oid = the inode (sd_co_flush_to_disk).
- discard: QEMU 2.x sends DISCARD_OBJ for each whole object, naming the
  object's owner (a snapshot's, when shared: answered READONLY, and
  aio_read_response() resends it naming its own VDI); QEMU 5.2 writes
  a zero into data_vdi_id[idx] with WRITE_OBJ (add_aio_request,
  AIOCB_DISCARD_OBJ).
- qemu-img snapshot -c (sd_snapshot_create): WRITE_OBJ of the inode header
  (tag, vm_state_size, vm_clock_nsec set) on a temporary socket, NEW_VDI
  with snapid=1 and base_vdi_id = the working VDI (do_sd_create, its own
  socket), then a READ_OBJ of the new working VDI's header on the first one.
- sd_close(): RELEASE_VDI on a temporary socket (payload: the name and its
  NUL), then the I/O socket is closed.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from sheepblk.proto import (
    Flag,
    InodeHeader,
    ObjArgs,
    Op,
    Request,
    Res,
    Response,
    VdiArgs,
    VdiResult,
    data_vid_offset,
    vid_to_data_oid,
    vid_to_vdi_oid,
)
from sheepblk.proto.constants import SD_MAX_VDI_LEN, SD_MAX_VDI_TAG_LEN
from sheepblk.proto.inode import SD_INODE_HEADER_SIZE

QEMU_PROTO_VER = 0x01  # find_vdi_name() only
# sizeof(SheepdogInode) in QEMU: header, data_vdi_id[2^20], no gref.
QEMU_INODE_SIZE = SD_INODE_HEADER_SIZE + 4 * (1 << 20)


class QemuError(Exception):
    def __init__(self, result: int, what: str) -> None:
        super().__init__(f"{what}: result {result:#x}")
        self.result = result


class Sock:
    """One plain TCP socket: send headers, read answers."""

    def __init__(self, port: int) -> None:
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, req: Request, data: bytes = b"") -> None:
        self.s.sendall(req.pack() + data)

    def _exact(self, n: int) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self.s.recv_into(view[got:])
            if not k:
                raise ConnectionError("sheep closed the connection")
            got += k
        return bytes(buf)

    def recv(self) -> tuple[Response, bytes]:
        rsp = Response.unpack(self._exact(48))
        return rsp, self._exact(rsp.data_length) if rsp.data_length else b""

    def do_req(self, req: Request, data: bytes = b"") -> tuple[Response, bytes]:
        self.send(req, data)
        return self.recv()

    def close(self) -> None:
        self.s.close()

    def __enter__(self) -> Sock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def obj_req(opcode: int, oid: int, *, length: int, offset: int = 0, flags: int = 0,
            cow_oid: int = 0, copies: int = 0, rid: int = 0) -> Request:
    return Request(opcode, flags, 0, rid, length,
                   ObjArgs(oid=oid, cow_oid=cow_oid, copies=copies, offset=offset).pack(), 0)


def find_vdi_name(port: int, name: str, snapid: int = 0, tag: str = "", *,
                  lock: bool) -> int:
    """find_vdi_name(): LOCK_VDI (or GET_VDI_INFO) on a temporary socket."""
    sock = Sock(port)
    try:
        buf = name.encode().ljust(SD_MAX_VDI_LEN, b"\0")[:SD_MAX_VDI_LEN] + \
            tag.encode().ljust(SD_MAX_VDI_TAG_LEN, b"\0")[:SD_MAX_VDI_TAG_LEN]
        req = Request(Op.LOCK_VDI if lock else Op.GET_VDI_INFO, Flag.CMD_WRITE, 0, 0,
                      len(buf), VdiArgs(snapid=snapid, type=0).pack(), QEMU_PROTO_VER)
        rsp, _ = sock.do_req(req, buf)
    finally:
        sock.close()
    if rsp.result != Res.SUCCESS:
        raise QemuError(rsp.result, "cannot get vdi info")
    return VdiResult.unpack(rsp.args).vdi_id


@dataclass
class QemuDisk:
    """An open sheepdog: drive, as BDRVSheepdogState keeps it."""

    port: int
    name: str
    cache: bool = True
    fd: Sock | None = None
    header: bytearray = field(default_factory=bytearray)
    index: list[int] = field(default_factory=list)
    seq: int = 0

    # ---- sd_open ----

    def open(self, snapid: int = 0, tag: str = "") -> QemuDisk:
        self.fd = Sock(self.port)  # get_sheep_fd(): before the lock
        try:
            vid = find_vdi_name(self.port, self.name, snapid, tag, lock=True)
        except BaseException:
            self.fd.close()
            raise
        tmp = Sock(self.port)
        try:
            rsp, body = tmp.do_req(obj_req(Op.READ_OBJ, vid_to_vdi_oid(vid),
                                           length=QEMU_INODE_SIZE, flags=self.flags))
        finally:
            tmp.close()
        if rsp.result != Res.SUCCESS:
            raise QemuError(rsp.result, "Can't read snapshot inode")
        self._load(body)
        return self

    def _load(self, body: bytes) -> None:
        self.header = bytearray(body[:SD_INODE_HEADER_SIZE])
        self.index = list(struct.unpack_from(f"<{1 << 20}I", body, SD_INODE_HEADER_SIZE))

    @property
    def inode(self) -> InodeHeader:
        return InodeHeader.unpack(self.header)

    @property
    def vid(self) -> int:
        return self.inode.vdi_id

    @property
    def flags(self) -> int:
        return Flag.CMD_CACHE if self.cache else Flag.CMD_DIRECT

    def _id(self) -> int:
        self.seq += 1
        return self.seq

    # ---- I/O on the long-lived socket, pipelined ----

    def _collect(self, pending: Mapping[int, object]) -> dict[int, tuple[Response, bytes]]:
        """aio_read_response(): answers in whatever order they come."""
        assert self.fd is not None
        out: dict[int, tuple[Response, bytes]] = {}
        while len(out) < len(pending):
            rsp, body = self.fd.recv()
            assert rsp.id in pending and rsp.id not in out, rsp
            out[rsp.id] = (rsp, body)
        return out

    def writev(self, offset: int, data: bytes) -> None:
        """sd_co_writev(): sd_co_rw_vector() then sd_write_done()."""
        assert self.fd is not None
        inode = self.inode
        size = inode.object_size
        pending: dict[int, tuple[int, bool]] = {}
        pos = 0
        while pos < len(data):
            idx, off = divmod(offset + pos, size)
            n = min(size - off, len(data) - pos)
            owner = self.index[idx]
            flags = Flag.CMD_WRITE | self.flags
            cow = 0
            create = owner != inode.vdi_id
            if owner and create:
                cow = vid_to_data_oid(owner, idx)
                flags |= Flag.CMD_COW
            op = Op.CREATE_AND_WRITE_OBJ if create else Op.WRITE_OBJ
            rid = self._id()
            self.fd.send(obj_req(op, vid_to_data_oid(inode.vdi_id, idx), length=n,
                                 offset=off, flags=flags, cow_oid=cow,
                                 copies=inode.nr_copies, rid=rid), data[pos:pos + n])
            pending[rid] = (idx, create)
            pos += n
        dirty = []
        for rid, (rsp, _) in self._collect(pending).items():
            if rsp.result != Res.SUCCESS:
                raise QemuError(rsp.result, "write")
            idx, create = pending[rid]
            if create:
                self.index[idx] = inode.vdi_id
                dirty.append(idx)
        if dirty:  # sd_write_done()
            mn, mx = min(dirty), max(dirty)
            raw = struct.pack(f"<{mx - mn + 1}I", *self.index[mn:mx + 1])
            rid = self._id()
            self.fd.send(obj_req(Op.WRITE_OBJ, vid_to_vdi_oid(inode.vdi_id), length=len(raw),
                                 offset=data_vid_offset(mn), flags=Flag.CMD_WRITE | self.flags,
                                 copies=inode.nr_copies, rid=rid), raw)
            ((rsp, _),) = self._collect({rid: None}).values()
            if rsp.result != Res.SUCCESS:
                raise QemuError(rsp.result, "inode update")

    def readv(self, offset: int, length: int) -> bytes:
        """sd_co_readv(): holes are zeros without a request."""
        assert self.fd is not None
        inode = self.inode
        size = inode.object_size
        out = bytearray(length)
        pending: dict[int, int] = {}
        pos = 0
        while pos < length:
            idx, off = divmod(offset + pos, size)
            n = min(size - off, length - pos)
            owner = self.index[idx]
            if owner:
                rid = self._id()
                self.fd.send(obj_req(Op.READ_OBJ, vid_to_data_oid(owner, idx), length=n,
                                     offset=off, flags=self.flags, copies=inode.nr_copies,
                                     rid=rid))
                pending[rid] = pos
            pos += n
        for rid, (rsp, body) in self._collect(pending).items():
            if rsp.result != Res.SUCCESS:
                raise QemuError(rsp.result, "read")
            out[pending[rid]:pending[rid] + len(body)] = body
        return bytes(out)

    def flush(self) -> None:
        """sd_co_flush_to_disk(): only in writeback mode."""
        assert self.fd is not None
        if not self.cache:
            return
        rid = self._id()
        self.fd.send(obj_req(Op.FLUSH_VDI, vid_to_vdi_oid(self.vid), length=0,
                             flags=self.flags, copies=self.inode.nr_copies, rid=rid))
        ((rsp, _),) = self._collect({rid: None}).values()
        if rsp.result != Res.SUCCESS:
            raise QemuError(rsp.result, "flush")

    def discard(self, offset: int, length: int, *, qemu52: bool = True) -> None:
        """sd_co_pdiscard(): whole allocated objects only."""
        assert self.fd is not None
        inode = self.inode
        size = inode.object_size
        pending: dict[int, int] = {}
        pos = 0
        while pos < length:
            idx, off = divmod(offset + pos, size)
            n = min(size - off, length - pos)
            if n == size and self.index[idx]:
                rid = self._id()
                data_oid = vid_to_data_oid(self.index[idx], idx)
                if qemu52:
                    self.index[idx] = 0
                    self.fd.send(obj_req(Op.WRITE_OBJ, vid_to_vdi_oid(inode.vdi_id), length=4,
                                         offset=data_vid_offset(idx),
                                         flags=Flag.CMD_WRITE | self.flags,
                                         copies=inode.nr_copies, rid=rid), bytes(4))
                else:
                    self.fd.send(obj_req(Op.DISCARD_OBJ, data_oid, length=n,
                                         flags=self.flags, copies=inode.nr_copies, rid=rid))
                pending[rid] = idx
            pos += n
        retry: dict[int, int] = {}
        for rid, (rsp, _) in self._collect(pending).items():
            idx = pending[rid]
            if rsp.result == Res.READONLY and not qemu52:
                # aio_read_response(): READONLY -> resend naming our own
                # VDI (the object belonged to a snapshot).
                rid2 = self._id()
                self.fd.send(obj_req(Op.DISCARD_OBJ, vid_to_data_oid(inode.vdi_id, idx),
                                     length=size, flags=self.flags, copies=inode.nr_copies,
                                     rid=rid2))
                retry[rid2] = idx
                continue
            if rsp.result != Res.SUCCESS:
                raise QemuError(rsp.result, "discard")
            self.index[idx] = 0
        for rid, (rsp, _) in self._collect(retry).items():
            if rsp.result != Res.SUCCESS:
                raise QemuError(rsp.result, "discard")
            self.index[retry[rid]] = 0

    # ---- qemu-img snapshot -c ----

    def snapshot(self, tag: str, vm_state_size: int = 0, vm_clock_nsec: int = 0) -> int:
        """sd_snapshot_create(); returns the new working VDI's id."""
        self.header[SD_MAX_VDI_LEN:2 * SD_MAX_VDI_LEN] = \
            tag.encode().ljust(SD_MAX_VDI_TAG_LEN, b"\0")[:SD_MAX_VDI_TAG_LEN]
        struct.pack_into("<Q", self.header, 2 * SD_MAX_VDI_LEN + 16, vm_clock_nsec)
        struct.pack_into("<Q", self.header, 2 * SD_MAX_VDI_LEN + 32, vm_state_size)
        inode = self.inode
        tmp = Sock(self.port)
        try:
            rsp, _ = tmp.do_req(obj_req(Op.WRITE_OBJ, vid_to_vdi_oid(inode.vdi_id),
                                        length=SD_INODE_HEADER_SIZE,
                                        flags=Flag.CMD_WRITE | self.flags,
                                        copies=inode.nr_copies), bytes(self.header))
            if rsp.result != Res.SUCCESS:
                raise QemuError(rsp.result, "failed to write snapshot's inode")
            new_vid = self._new_vdi(snapshot=1)
            rsp, body = tmp.do_req(obj_req(Op.READ_OBJ, vid_to_vdi_oid(new_vid),
                                           length=SD_INODE_HEADER_SIZE, flags=self.flags,
                                           copies=inode.nr_copies))
            if rsp.result != Res.SUCCESS:
                raise QemuError(rsp.result, "failed to read new inode info")
            self.header = bytearray(body)
        finally:
            tmp.close()
        return new_vid

    def _new_vdi(self, snapshot: int) -> int:
        """do_sd_create()."""
        inode = self.inode
        sock = Sock(self.port)
        try:
            buf = self.name.encode().ljust(SD_MAX_VDI_LEN, b"\0")
            args = VdiArgs(vdi_size=inode.vdi_size, base_vdi_id=inode.vdi_id,
                           copies=inode.nr_copies, copy_policy=inode.copy_policy,
                           block_size_shift=inode.block_size_shift, snapid=snapshot).pack()
            rsp, _ = sock.do_req(Request(Op.NEW_VDI, Flag.CMD_WRITE, 0, 0, len(buf), args, 0),
                                 buf)
        finally:
            sock.close()
        if rsp.result != Res.SUCCESS:
            raise QemuError(rsp.result, "create failed")
        return VdiResult.unpack(rsp.args).vdi_id

    # ---- sd_close ----

    def close(self) -> int:
        """RELEASE_VDI on a temporary socket, then the I/O socket closes.
        Returns RELEASE_VDI's result (QEMU only reports it)."""
        sock = Sock(self.port)
        try:
            buf = self.name.encode() + b"\0"
            args = VdiArgs(base_vdi_id=self.vid, type=0).pack()
            rsp, _ = sock.do_req(Request(Op.RELEASE_VDI, Flag.CMD_WRITE, 0, 0, len(buf),
                                         args, 0), buf)
        finally:
            sock.close()
        assert self.fd is not None
        self.fd.close()
        self.fd = None
        return rsp.result

    def die(self) -> None:
        """What a killed QEMU leaves: its sockets closed, nothing sent."""
        if self.fd is not None:
            self.fd.close()
            self.fd = None
