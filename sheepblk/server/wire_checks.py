"""Which request fields are acceptable, per opcode, before any handler uses them.

Why one table: a request comes from anyone who reaches the port (Sheepdog
has no authentication), and each handler reading "its" fields and checking
some of them left gaps no one could see. Here every opcode the daemon
serves has one row: the fields it reads from the wire (header, the 32-byte
argument union as sheepblk.proto unpacks it, the payload) and the check on
each, with the code answered when it fails. `Sheep.handle` asks `refused`
right after the opcode is known, before the cluster status, the stream or
the store see the request; the inline fast path (`handle_nowait`) asks the
same and leaves refusals to `handle`.

A field whose check needs state or I/O names the one place that does it
(`Field.by`): the epoch comparison that may wait, the md paths that must
exist, the buffer that must hold an answer. The header fields every
request has (protocol version, payload cap) are checked by the framing
layer before the payload is read (COMMON).

Each field also carries requests that break it (`Field.bad`), and each row
a valid request (`Row.example`): tests/test_wire_checks.py walks the table
with them and the fuzzer (tests/wire_fuzz.py) sends them to real nodes.

Codes: INVALID_PARMS as Sheepdog answers malformed requests (sheep/ops.c),
except where Sheepdog answers otherwise for the same fault: NO_STORE for an
unknown store at format (cluster_make_fs), NO_TAG for an epoch it has no
log of (local_get_epoch).

Pure functions, no I/O: cheap enough for the 4 KiB I/O path (an unpack and
a few integer comparisons for the object opcodes; refusals are constants,
so an accepted request allocates nothing here beyond the unpacked tuple).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ..proto import (
    MAX_DATA_LENGTH,
    SD_MAX_VDI_LEN,
    SD_MAX_VDI_SIZE,
    SD_MAX_VDI_TAG_LEN,
    SD_NR_VDIS,
    SD_PROTO_VER,
    SD_SHEEP_PROTO_VER,
    ClusterArgs,
    ClusterFlag,
    Flag,
    ForwArgs,
    NodeId,
    ObjArgs,
    Op,
    Request,
    Res,
    SdNode,
    VdiArgs,
    VdiStateArgs,
    get_objsize,
    vid_to_attr_oid,
    vid_to_data_oid,
    vid_to_vdi_oid,
)
from ..proto.constants import (
    SD_MAX_COPIES,
    SD_MAX_VDI_ATTR_KEY_LEN,
    SD_MAX_VDI_ATTR_VALUE_LEN,
    STORE_LEN,
)
from ..proto.records import RECOVERY_THROTTLE_SIZE, RecoveryThrottle
from ..proto.vdi_attr import SD_ATTR_HEADER_SIZE, SD_ATTR_OBJ_SIZE
from . import md_paths

# Sheepdog's limit on the nodes of a cluster (include/internal_proto.h,
# SD_MAX_NODES with the ZooKeeper driver): STAT_CLUSTER asks for at most
# this many node slots per epoch.
SD_MAX_NODES = 6144
# Object sizes a VDI or a cluster may choose (dog's -z: 1 MiB .. 2 GiB);
# 0 means the default.
MIN_BLOCK_SIZE_SHIFT = 20
MAX_BLOCK_SIZE_SHIFT = 31
# The backends MAKE_FS may name (sheepblk.store.BACKENDS; the store package
# is not imported here, this module does no I/O). "" is the default.
STORE_NAMES = frozenset({"", "plain", "tree", "farm"})
# Log levels SET_LOGLEVEL takes (LOG_EMERG .. LOG_DEBUG).
MAX_LOGLEVEL = 7

_OBJ = struct.Struct("<QQBBBBIII")  # ObjArgs, unpacked without building a NamedTuple
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_ATTR_VALUE_LEN_OFF = 2 * SD_MAX_VDI_LEN + 12
_ATTR_KEY_OFF = 2 * SD_MAX_VDI_LEN + 16
_NAME_PAYLOADS = (SD_MAX_VDI_LEN, SD_MAX_VDI_LEN + SD_MAX_VDI_TAG_LEN)
_BITMAP_BYTES = SD_NR_VDIS // 8

# Object ids: bits 59-63 say the kind (none: data), 32-55 the VDI, 0-31 the
# index; 56-58 are unused by every kind.
_KIND_SHIFT = 59
_RESERVED_BITS = 0x0700000000000000
_INODE_KIND = 1 << (63 - _KIND_SHIFT)
_LOW32 = 0xFFFFFFFF
_CLUSTER_FLAGS = int(ClusterFlag.STRICT | ClusterFlag.DISKMODE | ClusterFlag.AUTO_VNODES
                     | ClusterFlag.USE_LOCK | ClusterFlag.RECYCLE_VID
                     | ClusterFlag.AVOID_DISKFULL | ClusterFlag.STRAW2)
_LOCK_TYPES = (0, 1)  # LOCK_TYPE_NORMAL, LOCK_TYPE_SHARED


class Context(Protocol):
    """What the checks may know of the node (a Sheep is one)."""

    @property
    def epoch(self) -> int: ...

    @property
    def me(self) -> SdNode: ...

    @property
    def members(self) -> Sequence[SdNode]: ...

    def object_size(self, oid: int) -> int: ...


class Refusal(NamedTuple):
    """Why a request was refused: the field (as the table names it), the
    code to answer, and a reason for the log (no bytes from the wire)."""

    field: str
    code: int
    why: str


Check = Callable[[Request, memoryview | None, Context], Refusal | None]
Mutation = Callable[[Request, bytes], tuple[Request, bytes]]


@dataclass
class Env:
    """What a valid example request may name: the objects and VDIs its
    sender owns (a test's throwaway ones), this cluster's epoch, a member,
    and a directory md plug may take."""

    rnd: random.Random
    vids: Sequence[int]
    names: Sequence[bytes]
    epoch: int = 1
    member: NodeId = NodeId("127.0.0.1", 7000)
    disk: str = "/nonexistent-disk"


class Field(NamedTuple):
    """One field a row reads: where it sits, its rule, the code answered
    when it breaks the rule; `bad` are requests that break it (made from
    a valid one), `by` the place that checks it when this module cannot."""

    where: str
    rule: str
    code: int = Res.INVALID_PARMS
    bad: tuple[Mutation, ...] = ()
    by: str = ""


class Row(NamedTuple):
    opcode: Op
    fields: tuple[Field, ...]
    check: Check
    example: Callable[[Env], tuple[Request, bytes]]


# ---- the checks ----


def _refuse(field: str, why: str, code: int = Res.INVALID_PARMS) -> Refusal:
    return Refusal(field, code, why)


R_KIND = _refuse("obj.oid", "not an object id (unused bits or several kind bits set)")
R_INODE_IDX = _refuse("obj.oid", "an inode id with an index")
R_DATA_IDX = _refuse("obj.oid", "a data index past the largest VDI at its object size")
R_NOT_DATA = _refuse("obj.oid", "not a data object")
R_RANGE = _refuse("obj.offset+hdr.data_length", "offset + length past the object's end")
R_COPIES = _refuse("obj.copies", f"more than {SD_MAX_COPIES} copies")
R_NO_PAYLOAD = _refuse("hdr.flags", "a write whose bytes are not sent (no CMD_WRITE)")
R_COW = _refuse("obj.cow_oid", "copy-on-write source is not a data object of the same index")


def oid_refusal(oid: int, object_size: int) -> Refusal | None:
    """The kind rules of an object id; `object_size` is its VDI's (data)."""
    kind = oid >> _KIND_SHIFT
    if oid & _RESERVED_BITS or kind & (kind - 1):
        return R_KIND
    if not kind:
        if (oid & _LOW32) * object_size >= SD_MAX_VDI_SIZE:
            return R_DATA_IDX
    elif kind == _INODE_KIND and oid & _LOW32:
        return R_INODE_IDX
    return None


def _io(req: Request, ctx: Context, *, write: bool, cow: bool) -> Refusal | None:
    """Object I/O: the id, the copies, the range and (writes) the payload."""
    oid, cow_oid, copies, _, _, _, _, offset, _ = _OBJ.unpack(req.args)
    if copies > SD_MAX_COPIES:
        return R_COPIES
    size = ctx.object_size(oid)
    bad = oid_refusal(oid, size)
    if bad is not None:
        return bad
    n = req.data_length
    if write and n and not req.flags & Flag.CMD_WRITE:
        return R_NO_PAYLOAD
    if offset + n > size:
        return R_RANGE
    if cow and req.flags & Flag.CMD_COW:
        if (cow_oid >> _KIND_SHIFT or cow_oid & _RESERVED_BITS or not cow_oid
                or cow_oid & _LOW32 != oid & _LOW32 or cow_oid == oid or oid >> _KIND_SHIFT):
            return R_COW
    return None


def _read_io(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    return _io(req, ctx, write=False, cow=False)


def _write_io(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    return _io(req, ctx, write=True, cow=False)


def _create_io(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    return _io(req, ctx, write=True, cow=True)


def _obj_only(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    oid, _, copies, *_ = _OBJ.unpack(req.args)
    if copies > SD_MAX_COPIES:
        return R_COPIES
    return oid_refusal(oid, ctx.object_size(oid))


def _data_obj(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    oid = _OBJ.unpack(req.args)[0]
    if oid >> _KIND_SHIFT or oid & _RESERVED_BITS:
        return R_NOT_DATA
    return oid_refusal(oid, ctx.object_size(oid))


def _nothing(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    return None


R_NAME_LEN = _refuse("hdr.data_length", "a name payload is 256 bytes, or 512 with a tag")
R_NEW_NAME_LEN = _refuse("hdr.data_length", "NEW_VDI's payload is the 256-byte name")
R_NAME = _refuse("payload.name", "the VDI name is empty or not NUL-terminated in 256 bytes")
R_TAG = _refuse("payload.tag", "the tag is not NUL-terminated in 256 bytes")
R_SIZE = _refuse("vdi.vdi_size", "larger than SD_MAX_VDI_SIZE")
R_BASE = _refuse("vdi.base_vdi_id", "not a VDI id (24 bits)")
R_VCOPIES = _refuse("vdi.copies", f"more than {SD_MAX_COPIES} copies")
R_POLICY = _refuse("vdi.copy_policy", "not an erasure-coding policy dog can make")
R_STORE_POLICY = _refuse("vdi.store_policy", "neither 0 (plain index) nor 1 (hyper volume)")
R_SHIFT = _refuse("vdi.block_size_shift",
                  f"neither 0 nor {MIN_BLOCK_SIZE_SHIFT}..{MAX_BLOCK_SIZE_SHIFT}")
R_LOCK_TYPE = _refuse("vdi.type", "neither a normal nor a shared lock")


def _name_field(raw: memoryview, *, empty_ok: bool = False) -> bool:
    """A NUL within the field (and something before it, unless `empty_ok`)."""
    nul = bytes(raw).find(b"\0")
    return nul > 0 or (empty_ok and nul == 0)


def _names(data: memoryview | None, lengths: tuple[int, ...], short: Refusal) -> Refusal | None:
    n = len(data) if data is not None else 0
    if data is None or n not in lengths:
        return short
    if not _name_field(data[:SD_MAX_VDI_LEN]):
        return R_NAME
    if n > SD_MAX_VDI_LEN and not _name_field(data[SD_MAX_VDI_LEN:n], empty_ok=True):
        return R_TAG
    return None


def policy_ok(policy: int) -> bool:
    """0 (replication) or dog's D:P encoding: (D/2) << 4 | P, D in 2, 4,
    8, 16 and P in 1..15 (dog's parse_copy)."""
    return not policy or ((policy >> 4) in (1, 2, 4, 8) and 0 < policy & 0x0F and policy < 0x100)


def shift_ok(shift: int) -> bool:
    return not shift or MIN_BLOCK_SIZE_SHIFT <= shift <= MAX_BLOCK_SIZE_SHIFT


def _new_vdi(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    v = VdiArgs.unpack(req.args)
    bad = _names(data, (SD_MAX_VDI_LEN,), R_NEW_NAME_LEN)
    if bad is not None:
        return bad
    if v.vdi_size > SD_MAX_VDI_SIZE:
        return R_SIZE
    if v.base_vdi_id >= SD_NR_VDIS:
        return R_BASE
    if v.copies > SD_MAX_COPIES:
        return R_VCOPIES
    if not policy_ok(v.copy_policy):
        return R_POLICY
    if v.store_policy > 1:
        return R_STORE_POLICY
    if not shift_ok(v.block_size_shift):
        return R_SHIFT
    return None


def _named(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    return _names(data, _NAME_PAYLOADS, R_NAME_LEN)


def _lock(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    if VdiArgs.unpack(req.args).type not in _LOCK_TYPES:
        return R_LOCK_TYPE
    return _named(req, data, ctx)


def _release(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    v = VdiArgs.unpack(req.args)
    if v.base_vdi_id >= SD_NR_VDIS:
        return R_BASE
    if v.type not in _LOCK_TYPES:
        return R_LOCK_TYPE
    return None


R_ATTR_LEN = _refuse("hdr.data_length",
                     f"an attribute payload is {SD_ATTR_HEADER_SIZE}..{SD_ATTR_OBJ_SIZE} bytes")
R_ATTR_NAME = _refuse("payload.name", "the VDI name is empty or not NUL-terminated in 256 bytes")
R_ATTR_TAG = _refuse("payload.tag", "the tag is not NUL-terminated in 256 bytes")
R_ATTR_KEY = _refuse("payload.key", "the key is empty or not NUL-terminated in 256 bytes")
R_ATTR_VALUE = _refuse("payload.value_len", "the value length exceeds 64 KiB or the payload")


def _attr(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    n = len(data) if data is not None else 0
    if data is None or not SD_ATTR_HEADER_SIZE <= n <= SD_ATTR_OBJ_SIZE:
        return R_ATTR_LEN
    if not _name_field(data[:SD_MAX_VDI_LEN]):
        return R_ATTR_NAME
    if not _name_field(data[SD_MAX_VDI_LEN:2 * SD_MAX_VDI_LEN], empty_ok=True):
        return R_ATTR_TAG
    if not _name_field(data[_ATTR_KEY_OFF:_ATTR_KEY_OFF + SD_MAX_VDI_ATTR_KEY_LEN]):
        return R_ATTR_KEY
    (value_len,) = _U32.unpack_from(data, _ATTR_VALUE_LEN_OFF)
    if value_len > SD_MAX_VDI_ATTR_VALUE_LEN or value_len > n - SD_ATTR_HEADER_SIZE:
        return R_ATTR_VALUE
    return None


R_NEW_VID = _refuse("vdi_state.new_vid", "not a VDI id (1 .. 2^24-1)")
R_OLD_VID = _refuse("vdi_state.old_vid", "not a VDI id (24 bits)")
R_SCOPIES = _refuse("vdi_state.copies", f"more than {SD_MAX_COPIES} copies")
R_SPOLICY = _refuse("vdi_state.copy_policy", "not an erasure-coding policy dog can make")
R_SSHIFT = _refuse("vdi_state.block_size_shift",
                   f"neither 0 nor {MIN_BLOCK_SIZE_SHIFT}..{MAX_BLOCK_SIZE_SHIFT}")


def _notify_vdi_add(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    s = VdiStateArgs.unpack(req.args)
    if not 0 < s.new_vid < SD_NR_VDIS:
        return R_NEW_VID
    if s.old_vid >= SD_NR_VDIS:
        return R_OLD_VID
    if s.copies > SD_MAX_COPIES:
        return R_SCOPIES
    if not policy_ok(s.copy_policy):
        return R_SPOLICY
    if not shift_ok(s.block_size_shift):
        return R_SSHIFT
    return None


R_STORE = _refuse("payload.store", "not a store backend of this daemon", Res.NO_STORE)
R_CCOPIES = _refuse("cluster.copies", f"more than {SD_MAX_COPIES} copies")
R_CPOLICY = _refuse("cluster.copy_policy", "not an erasure-coding policy dog can make")
R_CSHIFT = _refuse("cluster.block_size_shift",
                   f"neither 0 nor {MIN_BLOCK_SIZE_SHIFT}..{MAX_BLOCK_SIZE_SHIFT}")
R_CFLAGS = _refuse("cluster.flags", "unknown cluster flags")


def store_name(data: memoryview | None) -> str | None:
    """MAKE_FS's store name ("" for none), or None when it is no name."""
    raw = bytes(data or b"").split(b"\0", 1)[0]
    if len(raw) >= STORE_LEN:
        return None
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return None


def _make_fs(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    c = ClusterArgs.unpack(req.args)
    if c.copies > SD_MAX_COPIES:
        return R_CCOPIES
    if not policy_ok(c.copy_policy):
        return R_CPOLICY
    if not shift_ok(c.block_size_shift):
        return R_CSHIFT
    if c.flags & ~_CLUSTER_FLAGS:
        return R_CFLAGS
    if store_name(data) not in STORE_NAMES:
        return R_STORE
    return None


R_ACOPIES = _refuse("cluster.copies", f"not 1 .. {SD_MAX_COPIES} copies")
R_APOLICY = _refuse("cluster.copy_policy", "erasure coding cannot be altered (0 only)")
R_ALTER_VCOPIES = _refuse("vdi_state.copies", f"not 1 .. {SD_MAX_COPIES} copies")
R_ALTER_VPOLICY = _refuse("vdi_state.copy_policy", "erasure coding cannot be altered (0 only)")


def _alter_cluster_copy(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    c = ClusterArgs.unpack(req.args)
    if not 1 <= c.copies <= SD_MAX_COPIES:
        return R_ACOPIES
    if c.copy_policy:
        return R_APOLICY
    return None


def _alter_vdi_copy(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    s = VdiStateArgs.unpack(req.args)
    if not 0 < s.new_vid < SD_NR_VDIS:
        return R_NEW_VID
    if not 1 <= s.copies <= SD_MAX_COPIES:
        return R_ALTER_VCOPIES
    if s.copy_policy:
        return R_ALTER_VPOLICY
    return None


R_NODES_NR = _refuse("cluster.nodes_nr", f"more than {SD_MAX_NODES} node slots")
R_BITMAP = _refuse("hdr.data_length", f"a VDI bitmap is {_BITMAP_BYTES} bytes")
R_EPOCH = _refuse("obj.tgt_epoch", "no such epoch here", Res.NO_TAG)
R_LEVEL_LEN = _refuse("hdr.data_length", "the log level is a 4-byte int")
R_LEVEL = _refuse("payload.level", f"not a log level (0..{MAX_LOGLEVEL})")
R_VNODES_LEN = _refuse("hdr.data_length", "the vnodes are an int32 (4 bytes, or 8 as C dog sends)")
R_VNODES = _refuse("payload.vnodes", "not a number of vnodes (1..65535)")
R_THROTTLE_LEN = _refuse("hdr.data_length",
                         f"the throttle is a {RECOVERY_THROTTLE_SIZE}-byte struct")
R_THROTTLE = _refuse("payload.throttle", "a count without an interval, or the reverse")
R_PATHS = _refuse("payload.paths", "not a list of 1..64 absolute UTF-8 paths")
R_SOURCE = _refuse("forw.addr", "the source is not a member of this cluster")


def _stat_cluster(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    if ClusterArgs.unpack(req.args).nodes_nr > SD_MAX_NODES:
        return R_NODES_NR
    return None


def _bitmap(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    return None if req.data_length == _BITMAP_BYTES else R_BITMAP


def _get_epoch(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    epoch = _OBJ.unpack(req.args)[6]
    return None if 0 < epoch <= ctx.epoch else R_EPOCH


def _set_loglevel(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    if data is None or len(data) != _I32.size:
        return R_LEVEL_LEN
    return None if 0 <= _I32.unpack(data)[0] <= MAX_LOGLEVEL else R_LEVEL


def _set_vnodes(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    if data is None or len(data) not in (4, 8):
        return R_VNODES_LEN
    return None if 1 <= _I32.unpack_from(data)[0] <= 0xFFFF else R_VNODES


def _set_recovery(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    if data is None or len(data) != RECOVERY_THROTTLE_SIZE:
        return R_THROTTLE_LEN
    t = RecoveryThrottle.unpack(data)
    if (t.max_exec_count == 0) != (t.queue_work_interval == 0):
        return R_THROTTLE  # one without the other, as dog refuses
    return None


def _md_paths(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    try:
        md_paths.parse(data)
    except md_paths.DiskPathRefused as e:
        return R_PATHS._replace(why=str(e))  # md_paths escapes what it quotes
    return None


def _repair(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    oid, src = ForwArgs.unpack(req.args)
    bad = oid_refusal(oid, ctx.object_size(oid))
    if bad is not None:
        return bad._replace(field="forw.oid")
    if src != ctx.me.nid and all(n.nid != src for n in ctx.members):
        return R_SOURCE
    return None


# ---- the requests of the table's examples and mutations ----


def _req(op: Op, args: bytes = bytes(32), payload: bytes = b"", *, flags: int = 0,
         length: int | None = None, epoch: int = 0) -> tuple[Request, bytes]:
    if payload:
        flags |= Flag.CMD_WRITE
    ver = SD_SHEEP_PROTO_VER if op >= 0x80 else SD_PROTO_VER
    n = len(payload) if length is None else length
    return Request(op, flags, epoch, 0, n, args, ver), payload


def hdr(*, flags: int | None = None, data_length: int | None = None) -> Mutation:
    """A mutation setting header fields."""

    def mutate(r: Request, p: bytes) -> tuple[Request, bytes]:
        return r._replace(flags=r.flags if flags is None else flags,
                          data_length=r.data_length if data_length is None else data_length), p

    return mutate


def obj(**kw: int) -> Mutation:
    """A mutation setting fields of the ObjArgs view."""
    return lambda r, p: (r._replace(args=ObjArgs.unpack(r.args)._replace(**kw).pack()), p)


def vdi(**kw: int) -> Mutation:
    return lambda r, p: (r._replace(args=VdiArgs.unpack(r.args)._replace(**kw).pack()), p)


def cluster(**kw: int) -> Mutation:
    return lambda r, p: (r._replace(args=ClusterArgs.unpack(r.args)._replace(**kw).pack()), p)


def state(**kw: int) -> Mutation:
    return lambda r, p: (r._replace(args=VdiStateArgs.unpack(r.args)._replace(**kw).pack()), p)


def body(change: Callable[[bytes], bytes]) -> Mutation:
    """A mutation of the payload (data_length and CMD_WRITE follow it)."""

    def mutate(r: Request, p: bytes) -> tuple[Request, bytes]:
        new = change(p)
        return r._replace(data_length=len(new), flags=r.flags | Flag.CMD_WRITE), new

    return mutate


def at(offset: int, raw: bytes) -> Callable[[bytes], bytes]:
    """A payload change: `raw` written at `offset`."""
    return lambda p: p[:offset] + raw + p[offset + len(raw):]


def both(*ms: Mutation) -> Mutation:
    def mutate(r: Request, p: bytes) -> tuple[Request, bytes]:
        for m in ms:
            r, p = m(r, p)
        return r, p

    return mutate


def _oid_of(r: Request) -> int:
    return ObjArgs.unpack(r.args).oid


def _past_end(r: Request, p: bytes) -> tuple[Request, bytes]:
    """offset so that the request's bytes end one past the object."""
    a = ObjArgs.unpack(r.args)
    n = max(r.data_length, 1)
    size = get_objsize(a.oid)
    return r._replace(data_length=n, args=a._replace(offset=size - n + 1).pack()), \
        (p.ljust(n, b"x") if p else p)


def _unsent_write(r: Request, p: bytes) -> tuple[Request, bytes]:
    return r._replace(flags=r.flags & ~Flag.CMD_WRITE, data_length=max(r.data_length, 1)), b""


BAD_OIDS = (
    obj(oid=1 << 58),  # an unused bit
    lambda r, p: obj(oid=_oid_of(r) | 1 << 63 | 1 << 61)(r, p),  # inode and attribute
    lambda r, p: obj(oid=vid_to_vdi_oid(_oid_of(r) >> 32 & 0xFFFFFF) | 7)(r, p),
)
BAD_RANGE = (_past_end, obj(offset=_LOW32))
BAD_COPIES = (obj(copies=SD_MAX_COPIES + 1), obj(copies=255))
NAME_256 = b"\0" * SD_MAX_VDI_LEN


def _no_nul(n: int) -> Callable[[bytes], bytes]:
    return lambda p: b"x" * n + p[n:]


BAD_NAMES = (
    body(lambda p: b"\0" + p[1:]),  # empty
    body(_no_nul(SD_MAX_VDI_LEN)),  # 256 bytes, no NUL
)
BAD_TAGS = (body(lambda p: p[:SD_MAX_VDI_LEN] + b"t" * SD_MAX_VDI_TAG_LEN),)
BAD_NAME_LENGTHS = (
    body(lambda p: p[:SD_MAX_VDI_LEN - 1]),
    body(lambda p: p[:SD_MAX_VDI_LEN] + b"\0"),
    body(lambda p: p.ljust(SD_MAX_VDI_LEN + SD_MAX_VDI_TAG_LEN + 1, b"\0")),
    hdr(data_length=0, flags=0),
)
BAD_POLICIES = (0x01, 0x30, 0x10, 0x100 - 1)
BAD_SHIFTS = (1, MIN_BLOCK_SIZE_SHIFT - 1, MAX_BLOCK_SIZE_SHIFT + 1, 255)


def _pick_oid(env: Env, *, data_only: bool = False) -> int:
    rnd = env.rnd
    vid = rnd.choice(env.vids)
    kind = rnd.random() if not data_only else 0.0
    if kind < 0.75:
        return vid_to_data_oid(vid, rnd.randrange(64))
    if kind < 0.95:
        return vid_to_vdi_oid(vid)
    return vid_to_attr_oid(vid, rnd.randrange(1 << 32))


def _io_args(env: Env, oid: int, n: int, **kw: int) -> bytes:
    size = get_objsize(oid)
    return ObjArgs(oid=oid, offset=env.rnd.randrange(0, size - n + 1), **kw).pack()


def _ex_read(env: Env, op: Op = Op.READ_OBJ) -> tuple[Request, bytes]:
    oid = _pick_oid(env)
    n = env.rnd.choice((512, 4096, 65536))
    epoch = env.epoch if op >= 0x80 else 0
    return _req(op, _io_args(env, oid, n), length=n, epoch=epoch)


def _ex_write(env: Env, op: Op = Op.WRITE_OBJ) -> tuple[Request, bytes]:
    oid = _pick_oid(env, data_only=True)
    payload = env.rnd.randbytes(env.rnd.choice((1, 512, 4096)))
    epoch = env.epoch if op >= 0x80 else 0
    flags = env.rnd.choice((0, Flag.CMD_CACHE))
    return _req(op, _io_args(env, oid, len(payload)), payload, flags=flags, epoch=epoch)


def _ex_create(env: Env, op: Op = Op.CREATE_AND_WRITE_OBJ) -> tuple[Request, bytes]:
    r, p = _ex_write(env, op)
    a = ObjArgs.unpack(r.args)
    if env.rnd.random() < 0.5:
        src = vid_to_data_oid(env.rnd.choice(env.vids), a.oid & _LOW32)
        if src != a.oid:
            return r._replace(flags=r.flags | Flag.CMD_COW,
                              args=a._replace(cow_oid=src).pack()), p
    return r, p


def _ex_oid(op: Op, *, data_only: bool = False) -> Callable[[Env], tuple[Request, bytes]]:
    def ex(env: Env) -> tuple[Request, bytes]:
        return _req(op, ObjArgs(oid=_pick_oid(env, data_only=data_only)).pack(),
                    epoch=env.epoch if op >= 0x80 else 0)

    return ex


def _ex_plain(op: Op, length: int = 0) -> Callable[[Env], tuple[Request, bytes]]:
    return lambda env: _req(op, length=length)


def _name(env: Env) -> bytes:
    return env.rnd.choice(env.names).ljust(SD_MAX_VDI_LEN, b"\0")


def _ex_new_vdi(env: Env) -> tuple[Request, bytes]:
    rnd = env.rnd
    args = VdiArgs(vdi_size=rnd.choice((1 << 20, 64 << 20, 1 << 40)), copies=rnd.randrange(4),
                   block_size_shift=rnd.choice((0, 22)), snapid=rnd.choice((0, 0, 1)))
    return _req(Op.NEW_VDI, args.pack(), _name(env))


def _ex_named(op: Op) -> Callable[[Env], tuple[Request, bytes]]:
    def ex(env: Env) -> tuple[Request, bytes]:
        tag = env.rnd.choice((None, b"", b"snap1"))
        payload = _name(env) if tag is None else _name(env) + tag.ljust(SD_MAX_VDI_TAG_LEN, b"\0")
        args = VdiArgs(snapid=env.rnd.choice((0, 0, 1)), type=env.rnd.choice(_LOCK_TYPES))
        return _req(op, args.pack(), payload)

    return ex


def _ex_release(env: Env) -> tuple[Request, bytes]:
    args = VdiArgs(base_vdi_id=env.rnd.choice(env.vids), type=env.rnd.choice(_LOCK_TYPES))
    return _req(Op.RELEASE_VDI, args.pack(), env.rnd.choice(env.names) + b"\0")


def _ex_attr(env: Env) -> tuple[Request, bytes]:
    rnd = env.rnd
    value = rnd.randbytes(rnd.randrange(0, 64))
    head = struct.pack(f"<{SD_MAX_VDI_LEN}s{SD_MAX_VDI_TAG_LEN}sQII{SD_MAX_VDI_ATTR_KEY_LEN}s",
                       rnd.choice(env.names), b"", 0, 0, len(value), b"key%d" % rnd.randrange(4))
    payload = head + value.ljust(SD_MAX_VDI_ATTR_VALUE_LEN, b"\0")
    flags = rnd.choice((0, Flag.CMD_WILDCARD, Flag.CMD_WILDCARD | Flag.CMD_EXCL, Flag.CMD_DEL))
    return _req(Op.GET_VDI_ATTR, VdiArgs().pack(), payload, flags=flags)


def _ex_notify(env: Env) -> tuple[Request, bytes]:
    vid = env.rnd.choice(env.vids)
    return _req(Op.NOTIFY_VDI_ADD, VdiStateArgs(old_vid=0, new_vid=vid, copies=1, set_bitmap=1,
                                                block_size_shift=22).pack())


def _ex_alter_cluster_copy(env: Env) -> tuple[Request, bytes]:
    return _req(Op.ALTER_CLUSTER_COPY, ClusterArgs(copies=env.rnd.randrange(1, 4)).pack())


def _ex_alter_vdi_copy(env: Env) -> tuple[Request, bytes]:
    vid = env.rnd.choice(env.vids)
    return _req(Op.ALTER_VDI_COPY, VdiStateArgs(new_vid=vid, copies=env.rnd.randrange(1, 4)).pack())


def _ex_make_fs(env: Env) -> tuple[Request, bytes]:
    # The auto vnodes strategy, as dog without -V asks: sheep started
    # without -V refuse to restart into a fixed cluster.
    args = ClusterArgs(ctime=env.rnd.randrange(1, 1 << 62), copies=env.rnd.randrange(1, 4),
                       block_size_shift=22, flags=ClusterFlag.AUTO_VNODES)
    return _req(Op.MAKE_FS, args.pack(), env.rnd.choice((b"plain", b"tree", b"farm")).ljust(16, b"\0"))


def _ex_stat_cluster(env: Env) -> tuple[Request, bytes]:
    return _req(Op.STAT_CLUSTER, ClusterArgs(nodes_nr=64).pack(), length=64 << 10)


def _ex_get_epoch(env: Env) -> tuple[Request, bytes]:
    return _req(Op.GET_EPOCH, ObjArgs(tgt_epoch=env.rnd.randrange(1, env.epoch + 1)).pack(),
                length=64 << 10)


def _ex_loglevel(env: Env) -> tuple[Request, bytes]:
    return _req(Op.SET_LOGLEVEL, payload=_I32.pack(env.rnd.choice((5, 6, 7))))


def _ex_vnodes(env: Env) -> tuple[Request, bytes]:
    payload = _I32.pack(env.rnd.choice((1, 100, 0xFFFF)))
    return _req(Op.SET_VNODES, payload=payload + bytes(env.rnd.choice((0, 4))))


def _ex_recovery(env: Env) -> tuple[Request, bytes]:
    on = env.rnd.random() < 0.5
    t = RecoveryThrottle(4 if on else 0, 100 if on else 0)
    return _req(Op.SET_RECOVERY, payload=t.pack())


def _ex_md(op: Op) -> Callable[[Env], tuple[Request, bytes]]:
    return lambda env: _req(op, payload=env.disk.encode() + b"\0")


def _ex_repair(env: Env) -> tuple[Request, bytes]:
    return _req(Op.REPAIR_REPLICA, ForwArgs(_pick_oid(env), env.member).pack())


# ---- the table ----

EPOCH = Field("hdr.epoch", "0, or compared with ours: older answers OLD_NODE_VER, newer waits "
              "for ours, then NEW_NODE_VER", Res.OLD_NODE_VER, by="peer_ops.check_request_epoch")
OID = Field("obj.oid", "no unused bit (56-58), at most one kind bit; an inode id has no "
            "index; a data index times the VDI's object size below SD_MAX_VDI_SIZE",
            bad=BAD_OIDS)
DATA_OID = Field("obj.oid", "a data object (no kind bit), its index as for OID",
                 bad=(obj(oid=1 << 63), obj(oid=1 << 62 | 5 << 32), *BAD_OIDS[:1]))
COPIES = Field("obj.copies", f"0 (the VDI's) .. {SD_MAX_COPIES}", bad=BAD_COPIES)
RANGE = Field("obj.offset+hdr.data_length", "within the object's size (its kind, its VDI's "
              "block size); the store checks it again (PeerOps.check_range)", bad=BAD_RANGE)
READ_RANGE = RANGE._replace(bad=(*BAD_RANGE, hdr(data_length=MAX_DATA_LENGTH)))
WRITE_LEN = Field("hdr.flags", "CMD_WRITE when data_length > 0 (the bytes written are sent)",
                  bad=(_unsent_write,))
COW = Field("obj.cow_oid", "with CMD_COW: a data object of the same index, not the object "
            "itself (nor is the object an inode)",
            bad=(both(hdr(flags=Flag.CMD_COW | Flag.CMD_WRITE), obj(cow_oid=0)),
                 lambda r, p: both(hdr(flags=r.flags | Flag.CMD_COW),
                                   obj(cow_oid=_oid_of(r) ^ 1))(r, p),
                 lambda r, p: both(hdr(flags=r.flags | Flag.CMD_COW),
                                   obj(cow_oid=_oid_of(r) | 1 << 63))(r, p)))
TGT_EPOCH = Field("obj.tgt_epoch", "any: a recovery read answers from a stale copy at least "
                  "that new, or NO_OBJ", Res.NO_OBJ, by="peer_ops.read_peer")
REPLY_LEN = Field("hdr.data_length", "the answer's room: the answer is cut to it, or "
                  "BUFFER_SMALL", Res.BUFFER_SMALL, by="each local op's handler")
NAME_LEN = Field("hdr.data_length", "256 (name) or 512 (name, tag), as vdi_init_tag",
                 bad=BAD_NAME_LENGTHS)
NAME = Field("payload.name", "1..255 bytes then NUL in the first 256 (any bytes: Sheepdog "
             "keeps names as given; logs escape them)", bad=BAD_NAMES)
TAG = Field("payload.tag", "0..255 bytes then NUL in the next 256, when sent", bad=BAD_TAGS)
SNAPID = Field("vdi.snapid", "any u32: the snapshot id looked up (0: by tag or the working "
               "VDI); no match answers NO_VDI or NO_TAG", Res.NO_VDI, by="VdiOps.lookup")
LOCK_TYPE = Field("vdi.type", "LOCK_TYPE_NORMAL (0) or LOCK_TYPE_SHARED (1)",
                  bad=(vdi(type=2), vdi(type=_LOW32)))
BASE_VID = Field("vdi.base_vdi_id", "below 2^24 (a VDI id)",
                 bad=(vdi(base_vdi_id=SD_NR_VDIS), vdi(base_vdi_id=_LOW32)))

COMMON = (
    Field("hdr.opcode", "one of the table's rows", by="Sheep.handle (unknown opcode)"),
    Field("hdr.proto_ver", "internal opcodes (>= 0x80): SD_SHEEP_PROTO_VER; public ones: at "
          "most SD_PROTO_VER (QEMU sends 0 or 1)", Res.VER_MISMATCH,
          by="framing.check_header"),
    Field("hdr.data_length", f"at most MAX_DATA_LENGTH ({MAX_DATA_LENGTH >> 20} MiB), else "
          "INVALID_PARMS and the connection closes", by="framing.check_header"),
    Field("hdr.id", "any: echoed back", by="framing.response_header"),
)

_OBJ_IO_READ = (OID, COPIES, READ_RANGE)
_OBJ_IO_WRITE = (OID, COPIES, RANGE, WRITE_LEN)
_NONE: tuple[Field, ...] = ()

ROWS: tuple[Row, ...] = (
    # gateway: any node finds the owners of the object
    Row(Op.READ_OBJ, _OBJ_IO_READ, _read_io, _ex_read),
    Row(Op.WRITE_OBJ, _OBJ_IO_WRITE, _write_io, _ex_write),
    Row(Op.CREATE_AND_WRITE_OBJ, (*_OBJ_IO_WRITE, COW), _create_io, _ex_create),
    Row(Op.REMOVE_OBJ, (OID, COPIES), _obj_only, _ex_oid(Op.REMOVE_OBJ)),
    Row(Op.DISCARD_OBJ, (DATA_OID,), _data_obj, _ex_oid(Op.DISCARD_OBJ, data_only=True)),
    Row(Op.FLUSH_VDI, _NONE, _nothing, _ex_oid(Op.FLUSH_VDI)),  # obj.oid not read: all flushed
    # peer: this node's copy, from a gateway
    Row(Op.READ_PEER, (EPOCH, *_OBJ_IO_READ, TGT_EPOCH), _read_io,
        lambda env: _ex_read(env, Op.READ_PEER)),
    Row(Op.WRITE_PEER, (EPOCH, *_OBJ_IO_WRITE), _write_io,
        lambda env: _ex_write(env, Op.WRITE_PEER)),
    Row(Op.CREATE_AND_WRITE_PEER, (EPOCH, *_OBJ_IO_WRITE, COW), _create_io,
        lambda env: _ex_create(env, Op.CREATE_AND_WRITE_PEER)),
    Row(Op.REMOVE_PEER, (EPOCH, OID, COPIES), _obj_only, _ex_oid(Op.REMOVE_PEER)),
    Row(Op.FLUSH_PEER, (EPOCH,), _nothing, _ex_plain(Op.FLUSH_PEER)),
    Row(Op.EXIST, (OID, COPIES), _obj_only, _ex_oid(Op.EXIST)),
    Row(Op.GET_HASH, (OID, COPIES), _obj_only, _ex_oid(Op.GET_HASH)),
    Row(Op.REPAIR_REPLICA, (
        Field("forw.oid", OID.rule, bad=BAD_OIDS[:2]),
        Field("forw.addr", "with forw.port: this node or a member of the cluster (a request "
              "never makes a node connect elsewhere)",
              bad=(lambda r, p: (r._replace(args=r.args[:8] + bytes(15) + b"\x01"
                                            + r.args[24:]), p),
                   lambda r, p: (r._replace(args=r.args[:24] + b"\x01\x00" + r.args[26:]), p))),
    ), _repair, _ex_repair),
    # cluster: through the ordered stream
    Row(Op.NEW_VDI, (
        Field("hdr.data_length", "256: the name (sheep/ops.c cluster_new_vdi)",
              bad=BAD_NAME_LENGTHS[:1] + BAD_NAME_LENGTHS[2:]
              + (body(lambda p: p + NAME_256),)),
        NAME,
        Field("vdi.vdi_size", "at most SD_MAX_VDI_SIZE (0 for a snapshot: its base's)",
              bad=(vdi(vdi_size=SD_MAX_VDI_SIZE + 1), vdi(vdi_size=(1 << 64) - 1))),
        BASE_VID,
        Field("vdi.copies", f"0 (the cluster's) .. {SD_MAX_COPIES}",
              bad=(vdi(copies=SD_MAX_COPIES + 1),)),
        Field("vdi.copy_policy", "0 or an erasure-coding D:P policy (policy_ok)",
              bad=tuple(vdi(copy_policy=p) for p in BAD_POLICIES)),
        Field("vdi.store_policy", "0 or 1 (hyper volume)", bad=(vdi(store_policy=2),)),
        Field("vdi.block_size_shift", "0 (the cluster's) or 20..31",
              bad=tuple(vdi(block_size_shift=s) for s in BAD_SHIFTS)),
        Field("vdi.snapid", "any: non-zero makes a snapshot", by="cluster_ops.new_vdi_work"),
    ), _new_vdi, _ex_new_vdi),
    Row(Op.DEL_VDI, (NAME_LEN, NAME, TAG, SNAPID), _named, _ex_named(Op.DEL_VDI)),
    Row(Op.GET_VDI_INFO, (NAME_LEN, NAME, TAG, SNAPID), _named, _ex_named(Op.GET_VDI_INFO)),
    Row(Op.LOCK_VDI, (NAME_LEN, NAME, TAG, SNAPID, LOCK_TYPE), _lock, _ex_named(Op.LOCK_VDI)),
    Row(Op.RELEASE_VDI, (BASE_VID, LOCK_TYPE,
                         Field("payload", "not read (QEMU sends the name)", by="not read")),
        _release, _ex_release),
    Row(Op.GET_VDI_ATTR, (
        Field("hdr.data_length", f"{SD_ATTR_HEADER_SIZE}..{SD_ATTR_OBJ_SIZE}: the attribute "
              "header, then up to 64 KiB of value",
              bad=(body(lambda p: p[:SD_ATTR_HEADER_SIZE - 1]),
                   body(lambda p: p.ljust(SD_ATTR_OBJ_SIZE + 1, b"\0")),
                   hdr(data_length=0, flags=0))),
        Field("payload.name", NAME.rule, bad=(body(at(0, b"\0")),
                                              body(at(0, b"n" * SD_MAX_VDI_LEN)))),
        Field("payload.tag", TAG.rule, bad=(body(at(SD_MAX_VDI_LEN, b"t" * SD_MAX_VDI_TAG_LEN)),)),
        Field("payload.key", "1..255 bytes then NUL in its 256",
              bad=(body(at(_ATTR_KEY_OFF, b"\0")),
                   body(at(_ATTR_KEY_OFF, b"k" * SD_MAX_VDI_ATTR_KEY_LEN)))),
        Field("payload.value_len", "at most 64 KiB and within the payload",
              bad=(body(at(_ATTR_VALUE_LEN_OFF, _U32.pack(SD_MAX_VDI_ATTR_VALUE_LEN + 1))),
                   body(lambda p: at(_ATTR_VALUE_LEN_OFF, _U32.pack(100))(
                       p[:SD_ATTR_HEADER_SIZE + 10])))),
        Field("hdr.flags", "CMD_WILDCARD creates, CMD_EXCL refuses an existing one, CMD_DEL "
              "deletes: any mix means something", by="VdiOps.attr"),
        SNAPID,
    ), _attr, _ex_attr),
    Row(Op.NOTIFY_VDI_ADD, (
        Field("vdi_state.new_vid", "1 .. 2^24-1", bad=(state(new_vid=0),
                                                       state(new_vid=SD_NR_VDIS))),
        Field("vdi_state.old_vid", "below 2^24 (0: no parent)",
              bad=(state(old_vid=SD_NR_VDIS),)),
        Field("vdi_state.copies", f"0 .. {SD_MAX_COPIES}", bad=(state(copies=SD_MAX_COPIES + 1),)),
        Field("vdi_state.copy_policy", "0 or a D:P policy",
              bad=tuple(state(copy_policy=p) for p in BAD_POLICIES)),
        Field("vdi_state.block_size_shift", "0 or 20..31",
              bad=tuple(state(block_size_shift=s) for s in BAD_SHIFTS)),
    ), _notify_vdi_add, _ex_notify),
    Row(Op.MAKE_FS, (
        Field("payload.store", "a backend name ('plain', 'tree', 'farm') NUL-terminated in 16 bytes, "
              "or none (plain)", Res.NO_STORE,
              bad=(body(lambda p: b"dummy\0"), body(lambda p: b"../../etc\0"),
                   body(lambda p: b"p" * STORE_LEN), body(lambda p: b"\xffplain\0"))),
        Field("cluster.copies", f"0 (default) .. {SD_MAX_COPIES}",
              bad=(cluster(copies=SD_MAX_COPIES + 1),)),
        Field("cluster.copy_policy", "0 or a D:P policy",
              bad=tuple(cluster(copy_policy=p) for p in BAD_POLICIES)),
        Field("cluster.block_size_shift", "0 or 20..31",
              bad=tuple(cluster(block_size_shift=s) for s in BAD_SHIFTS)),
        Field("cluster.flags", "SD_CLUSTER_FLAG_* bits only", bad=(cluster(flags=0x40),
                                                                  cluster(flags=0xFFFF))),
        Field("cluster.ctime", "any: the cluster's creation time (0: now)", by="cluster_ops.make_fs_main"),
    ), _make_fs, _ex_make_fs),
    Row(Op.SHUTDOWN, _NONE, _nothing, _ex_plain(Op.SHUTDOWN)),
    Row(Op.REWEIGHT, _NONE, _nothing, _ex_plain(Op.REWEIGHT)),
    Row(Op.ENABLE_RECOVER, _NONE, _nothing, _ex_plain(Op.ENABLE_RECOVER)),
    Row(Op.DISABLE_RECOVER, _NONE, _nothing, _ex_plain(Op.DISABLE_RECOVER)),
    Row(Op.ALTER_CLUSTER_COPY, (
        Field("cluster.copies", f"1 .. {SD_MAX_COPIES}",
              bad=(cluster(copies=0), cluster(copies=SD_MAX_COPIES + 1))),
        Field("cluster.copy_policy", "0: erasure coding is never altered",
              bad=(cluster(copy_policy=0x42),)),
    ), _alter_cluster_copy, _ex_alter_cluster_copy),
    Row(Op.ALTER_VDI_COPY, (
        Field("vdi_state.new_vid", "1 .. 2^24-1", bad=(state(new_vid=0),
                                                       state(new_vid=SD_NR_VDIS))),
        Field("vdi_state.copies", f"1 .. {SD_MAX_COPIES}",
              bad=(state(copies=0), state(copies=SD_MAX_COPIES + 1))),
        Field("vdi_state.copy_policy", "0: erasure coding is never altered",
              bad=(state(copy_policy=0x42),)),
    ), _alter_vdi_copy, _ex_alter_vdi_copy),
    # local: this node's own state
    Row(Op.READ_VDIS, (Field("hdr.data_length", "the bitmap's size (2 MiB)",
                             bad=(hdr(data_length=1), hdr(data_length=_BITMAP_BYTES + 1))),),
        _bitmap, _ex_plain(Op.READ_VDIS, _BITMAP_BYTES)),
    Row(Op.READ_DEL_VDIS, (Field("hdr.data_length", "the bitmap's size (2 MiB)",
                                 bad=(hdr(data_length=0),)),),
        _bitmap, _ex_plain(Op.READ_DEL_VDIS, _BITMAP_BYTES)),
    Row(Op.GET_VDI_COPIES, (REPLY_LEN,), _nothing, _ex_plain(Op.GET_VDI_COPIES, 1 << 20)),
    Row(Op.GET_NODE_LIST, (REPLY_LEN,), _nothing, _ex_plain(Op.GET_NODE_LIST, 64 << 10)),
    Row(Op.GET_CLUSTER_DEFAULT, _NONE, _nothing, _ex_plain(Op.GET_CLUSTER_DEFAULT)),
    Row(Op.STAT_SHEEP, _NONE, _nothing, _ex_plain(Op.STAT_SHEEP)),
    Row(Op.STAT_CLUSTER, (
        Field("cluster.nodes_nr", f"at most SD_MAX_NODES ({SD_MAX_NODES}) node slots",
              bad=(cluster(nodes_nr=SD_MAX_NODES + 1), cluster(nodes_nr=_LOW32))),
        REPLY_LEN,
    ), _stat_cluster, _ex_stat_cluster),
    Row(Op.STAT_RECOVERY, (REPLY_LEN,), _nothing, _ex_plain(Op.STAT_RECOVERY, 64)),
    Row(Op.GET_EPOCH, (
        Field("obj.tgt_epoch", "1 .. this node's epoch (local_get_epoch answers NO_TAG)",
              Res.NO_TAG, bad=(obj(tgt_epoch=0), obj(tgt_epoch=_LOW32))),
        REPLY_LEN,
    ), _get_epoch, _ex_get_epoch),
    Row(Op.GET_STORE_LIST, (REPLY_LEN,), _nothing, _ex_plain(Op.GET_STORE_LIST, 64)),
    Row(Op.CLUSTER_INFO, (REPLY_LEN,), _nothing, _ex_plain(Op.CLUSTER_INFO, 64 << 10)),
    Row(Op.KILL_NODE, _NONE, _nothing, _ex_plain(Op.KILL_NODE)),
    Row(Op.FORCE_RECOVER, _NONE, _nothing, _ex_plain(Op.FORCE_RECOVER)),
    Row(Op.GET_LOGLEVEL, _NONE, _nothing, _ex_plain(Op.GET_LOGLEVEL, 4)),
    Row(Op.SET_LOGLEVEL, (
        Field("hdr.data_length", "4: an int32", bad=(body(lambda p: p[:3]), body(lambda p: p * 2),
                                                     hdr(data_length=0, flags=0))),
        Field("payload.level", f"0 .. {MAX_LOGLEVEL}", bad=(body(lambda p: _I32.pack(8)),
                                                            body(lambda p: _I32.pack(-1)))),
    ), _set_loglevel, _ex_loglevel),
    Row(Op.GET_VNODES, _NONE, _nothing, _ex_plain(Op.GET_VNODES, 4)),
    Row(Op.SET_VNODES, (
        Field("hdr.data_length", "4 or 8: an int32 first", bad=(body(lambda p: p[:3]),
                                                               body(lambda p: p * 3),
                                                               hdr(data_length=0, flags=0))),
        Field("payload.vnodes", "1 .. 65535", bad=(body(lambda p: _I32.pack(0)),
                                                   body(lambda p: _I32.pack(65536)),
                                                   body(lambda p: _I32.pack(-1)))),
    ), _set_vnodes, _ex_vnodes),
    Row(Op.GET_DEPARTED, (REPLY_LEN,), _nothing, _ex_plain(Op.GET_DEPARTED, 1 << 16)),
    Row(Op.GET_RECOVERY, (REPLY_LEN,), _nothing, _ex_plain(Op.GET_RECOVERY, 64)),
    Row(Op.SET_RECOVERY, (
        Field("hdr.data_length", f"{RECOVERY_THROTTLE_SIZE}: struct recovery_throttling",
              bad=(body(lambda p: p[:8]), body(lambda p: p + b"\0"))),
        Field("payload.throttle", "max_exec_count and queue_work_interval both 0 or both not",
              bad=(body(lambda p: RecoveryThrottle(4, 0).pack()),
                   body(lambda p: RecoveryThrottle(0, 100).pack()))),
    ), _set_recovery, _ex_recovery),
    Row(Op.GET_OBJ_LIST, (REPLY_LEN,
                          Field("hdr.flags", "CMD_WILDCARD: stale copies instead", by="local_ops.get_obj_list")),
        _nothing, _ex_plain(Op.GET_OBJ_LIST, 1 << 20)),
    Row(Op.MD_INFO, (REPLY_LEN,), _nothing, _ex_plain(Op.MD_INFO, 1 << 20)),
    *(Row(op, (
        Field("payload.paths", "NUL-terminated, comma-separated, 1..64 absolute UTF-8 paths "
              "(md_paths.parse)",
              bad=(body(lambda p: b"relative/dir\0"), body(lambda p: b"\xff/x\0"),
                   body(lambda p: b",,\0"), body(lambda p: b",".join([b"/d"] * 65) + b"\0"),
                   hdr(data_length=0, flags=0))),
        Field("payload.paths", "existing writable directories, not system ones, not nested "
              "with a disk or the store; unplug names a disk and leaves one",
              by="md_paths.check_plug / check_unplug"),
    ), _md_paths, _ex_md(op)) for op in (Op.MD_PLUG, Op.MD_UNPLUG)),
)

TABLE: dict[int, Row] = {int(row.opcode): row for row in ROWS}


def refused(req: Request, data: memoryview | None, ctx: Context) -> Refusal | None:
    """Why `req` must not be served, or None. Opcodes without a row are
    the caller's to refuse (it knows which it serves)."""
    row = TABLE.get(req.opcode)
    if row is None:
        return None
    return row.check(req, data, ctx)
