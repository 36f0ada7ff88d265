"""A thin ctypes layer over corosync's CPG library (libcpg.so.4).

Why our own: PyPI has no maintained binding for libcpg (the old
python-corosync ones are Python 2 and unmaintained), and the driver needs
only nine calls. Layouts follow corosync 3's <corosync/cpg.h> and
<corosync/corotypes.h>.

The model: `Cpg` is one connection (one `cpg_handle_t`) to the local
corosync. Its file descriptor turns readable when corosync has something
for us; `dispatch()` then runs libcpg's dispatch, whose callbacks only
append to a list, and returns what was collected: `Delivery` (a message
multicast to the group, in the same total order on every member) and
`ConfChg` (a member joined or left: ordered with the messages, the same
on every member). Nothing here blocks for long or raises from inside a
callback (ctypes would print and swallow it).

One process may join a group once: corosync names members by (nodeid,
pid), so a second join from the same process fails with CS_ERR_EXIST.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from typing import Any

# cs_error_t (corotypes.h)
CS_OK = 1
CS_ERR_LIBRARY = 2
CS_ERR_TRY_AGAIN = 6
CS_ERR_BAD_HANDLE = 9
CS_ERR_NOT_EXIST = 12
CS_ERR_EXIST = 14
CS_ERR_SECURITY = 100
# cs_dispatch_flags_t
CS_DISPATCH_ALL = 2
# cpg_guarantee_t: AGREED is total order across the group
CPG_TYPE_AGREED = 2
# cpg_reason_t
REASONS = {1: "join", 2: "leave", 3: "nodedown", 4: "nodeup", 5: "procdown"}
CPG_MAX_NAME_LENGTH = 128

ERRORS = {1: "CS_OK", 2: "CS_ERR_LIBRARY", 3: "CS_ERR_VERSION", 4: "CS_ERR_INIT",
          5: "CS_ERR_TIMEOUT", 6: "CS_ERR_TRY_AGAIN", 7: "CS_ERR_INVALID_PARAM",
          8: "CS_ERR_NO_MEMORY", 9: "CS_ERR_BAD_HANDLE", 10: "CS_ERR_BUSY",
          11: "CS_ERR_ACCESS", 12: "CS_ERR_NOT_EXIST", 13: "CS_ERR_NAME_TOO_LONG",
          14: "CS_ERR_EXIST", 15: "CS_ERR_NO_SPACE", 16: "CS_ERR_INTERRUPT",
          17: "CS_ERR_NAME_NOT_FOUND", 18: "CS_ERR_NO_RESOURCES",
          19: "CS_ERR_NOT_SUPPORTED", 20: "CS_ERR_BAD_OPERATION",
          21: "CS_ERR_FAILED_OPERATION", 22: "CS_ERR_MESSAGE_ERROR",
          23: "CS_ERR_QUEUE_FULL", 24: "CS_ERR_QUEUE_NOT_AVAILABLE",
          25: "CS_ERR_BAD_FLAGS", 26: "CS_ERR_TOO_BIG", 27: "CS_ERR_NO_SECTIONS",
          28: "CS_ERR_CONTEXT_NOT_FOUND", 30: "CS_ERR_TOO_MANY_GROUPS",
          100: "CS_ERR_SECURITY"}


class CpgName(ctypes.Structure):
    _fields_ = [("length", ctypes.c_uint32), ("value", ctypes.c_char * CPG_MAX_NAME_LENGTH)]


class CpgAddress(ctypes.Structure):
    _fields_ = [("nodeid", ctypes.c_uint32), ("pid", ctypes.c_uint32),
                ("reason", ctypes.c_uint32)]


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


DeliverFn = ctypes.CFUNCTYPE(None, ctypes.c_uint64, ctypes.POINTER(CpgName), ctypes.c_uint32,
                             ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t)
ConfchgFn = ctypes.CFUNCTYPE(None, ctypes.c_uint64, ctypes.POINTER(CpgName),
                             ctypes.POINTER(CpgAddress), ctypes.c_size_t,
                             ctypes.POINTER(CpgAddress), ctypes.c_size_t,
                             ctypes.POINTER(CpgAddress), ctypes.c_size_t)


class CpgCallbacks(ctypes.Structure):
    _fields_ = [("cpg_deliver_fn", DeliverFn), ("cpg_confchg_fn", ConfchgFn)]


#: A group member: (corosync node id, process id).
Addr = tuple[int, int]


@dataclass(frozen=True)
class Delivery:
    """A message multicast to the group by `sender`."""

    sender: Addr
    data: bytes


@dataclass(frozen=True)
class ConfChg:
    """The group's membership changed: `members` after the change, and who
    left (with corosync's reason: leave, nodedown, procdown) or joined."""

    members: tuple[Addr, ...]
    left: tuple[tuple[Addr, str], ...]
    joined: tuple[Addr, ...]


CpgEvent = Delivery | ConfChg


class CpgError(Exception):
    """A libcpg call failed; `code` is its cs_error_t."""

    def __init__(self, call: str, code: int) -> None:
        super().__init__(f"{call} failed: {ERRORS.get(code, code)}")
        self.call, self.code = call, code


_lib: Any = None


def library() -> Any:
    """libcpg, loaded once; OSError when it is not installed."""
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("cpg") or "libcpg.so.4"
        lib = ctypes.CDLL(name, use_errno=True)
        u64, p64 = ctypes.c_uint64, ctypes.POINTER(ctypes.c_uint64)
        for fname, args in {
            "cpg_initialize": [p64, ctypes.POINTER(CpgCallbacks)],
            "cpg_finalize": [u64],
            "cpg_fd_get": [u64, ctypes.POINTER(ctypes.c_int)],
            "cpg_dispatch": [u64, ctypes.c_int],
            "cpg_join": [u64, ctypes.POINTER(CpgName)],
            "cpg_leave": [u64, ctypes.POINTER(CpgName)],
            "cpg_mcast_joined": [u64, ctypes.c_int, ctypes.POINTER(IoVec), ctypes.c_uint],
            "cpg_local_get": [u64, ctypes.POINTER(ctypes.c_uint)],
        }.items():
            fn = getattr(lib, fname)
            fn.argtypes, fn.restype = args, ctypes.c_int
        _lib = lib
    return _lib


def _addrs(arr: Any, n: int) -> list[CpgAddress]:
    return [arr[i] for i in range(n)]


def group_name(name: bytes) -> CpgName:
    if not name or len(name) > CPG_MAX_NAME_LENGTH:
        raise ValueError(f"a CPG group name is 1 to {CPG_MAX_NAME_LENGTH} bytes: {name!r}")
    return CpgName(len(name), name)


class Cpg:
    """One connection to the local corosync's CPG service.

    Raises CpgError from the constructor when corosync is not reachable
    (its IPC socket is not there: CS_ERR_LIBRARY)."""

    def __init__(self) -> None:
        self._lib = library()
        self.events: list[CpgEvent] = []
        # The ctypes function objects must outlive the handle: libcpg keeps
        # the pointers and calls them from cpg_dispatch.
        self._callbacks = CpgCallbacks(DeliverFn(self._on_deliver), ConfchgFn(self._on_confchg))
        handle = ctypes.c_uint64()
        self._check("cpg_initialize", self._lib.cpg_initialize(ctypes.byref(handle),
                                                               ctypes.byref(self._callbacks)))
        self.handle: int | None = handle.value
        fd, nodeid = ctypes.c_int(), ctypes.c_uint()
        try:
            self._check("cpg_fd_get", self._lib.cpg_fd_get(self.handle, ctypes.byref(fd)))
            self._check("cpg_local_get",
                        self._lib.cpg_local_get(self.handle, ctypes.byref(nodeid)))
        except CpgError:
            self.finalize()
            raise
        self.fd = fd.value
        #: How the group names this process once it joins.
        self.addr: Addr = (nodeid.value, os.getpid())
        self._group: CpgName | None = None

    @staticmethod
    def _check(call: str, code: int) -> None:
        if code != CS_OK:
            raise CpgError(call, code)

    def _live(self) -> int:
        if self.handle is None:
            raise CpgError("cpg (finalized)", CS_ERR_BAD_HANDLE)
        return self.handle

    # Callbacks: inside cpg_dispatch, so they only record.

    def _on_deliver(self, _h: int, _g: Any, nodeid: int, pid: int, msg: int, size: int) -> None:
        self.events.append(Delivery((nodeid, pid), ctypes.string_at(msg, size)))

    def _on_confchg(self, _h: int, _g: Any, members: Any, n_members: int, left: Any,
                    n_left: int, joined: Any, n_joined: int) -> None:
        self.events.append(ConfChg(
            tuple((a.nodeid, a.pid) for a in _addrs(members, n_members)),
            tuple(((a.nodeid, a.pid), REASONS.get(a.reason, str(a.reason)))
                  for a in _addrs(left, n_left)),
            tuple((a.nodeid, a.pid) for a in _addrs(joined, n_joined))))

    # Calls.

    def join(self, name: bytes) -> None:
        """Join the group; CS_ERR_TRY_AGAIN is raised for the caller to retry."""
        group = group_name(name)
        self._check("cpg_join", self._lib.cpg_join(self._live(), ctypes.byref(group)))
        self._group = group

    def leave(self) -> None:
        if self._group is not None:
            group, self._group = self._group, None
            self._check("cpg_leave", self._lib.cpg_leave(self._live(), ctypes.byref(group)))

    def mcast(self, data: bytes) -> None:
        """Multicast to the group in agreed (total) order; CS_ERR_TRY_AGAIN
        (flow control) is raised for the caller to retry later."""
        buf = ctypes.create_string_buffer(data, len(data))
        iov = IoVec(ctypes.cast(buf, ctypes.c_void_p), len(data))
        self._check("cpg_mcast_joined",
                    self._lib.cpg_mcast_joined(self._live(), CPG_TYPE_AGREED, ctypes.byref(iov), 1))

    def dispatch(self) -> list[CpgEvent]:
        """Run every callback pending now (never blocks); what they brought."""
        self._check("cpg_dispatch", self._lib.cpg_dispatch(self._live(), CS_DISPATCH_ALL))
        out, self.events = self.events, []
        return out

    def finalize(self) -> None:
        """Close the connection (leaving the group if still in it)."""
        if self.handle is not None:
            handle, self.handle = self.handle, None
            self._group = None
            self._lib.cpg_finalize(handle)


def reachable() -> bool:
    """Whether a corosync answers on this host (its CPG IPC service)."""
    try:
        Cpg().finalize()
    except (OSError, CpgError):
        return False
    return True
