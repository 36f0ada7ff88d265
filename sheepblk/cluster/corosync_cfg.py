"""This host's address as the local corosync knows it (libcfg.so.7).

Why: a sheep bound to a wildcard (`-b 0.0.0.0`) must announce an address
the other hosts reach it by. With corosync, C sheep announces its node's
corosync address (corosync_cfg_get_node_addrs), the one corosync.conf's
node list gives this host; so do we. Layouts follow corosync 3's
<corosync/cfg.h>.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import socket
import sys
from typing import Any

from .cpg import CS_OK

MAX_ADDRS = 8


class NodeAddress(ctypes.Structure):
    """corosync_cfg_node_address_t: a struct sockaddr in 28 bytes."""

    _fields_ = [("address_length", ctypes.c_int), ("address", ctypes.c_ubyte * 28)]


_lib: Any = None


def _library() -> Any:
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(ctypes.util.find_library("cfg") or "libcfg.so.7")
        u64 = ctypes.c_uint64
        for fname, args in {
            "corosync_cfg_initialize": [ctypes.POINTER(u64), ctypes.c_void_p],
            "corosync_cfg_finalize": [u64],
            "corosync_cfg_local_get": [u64, ctypes.POINTER(ctypes.c_uint)],
            "corosync_cfg_get_node_addrs": [u64, ctypes.c_uint, ctypes.c_size_t,
                                            ctypes.POINTER(ctypes.c_int),
                                            ctypes.POINTER(NodeAddress)],
        }.items():
            fn = getattr(lib, fname)
            fn.argtypes, fn.restype = args, ctypes.c_int
        _lib = lib
    return _lib


def _text(raw: bytes) -> str | None:
    family = int.from_bytes(raw[:2], sys.byteorder)
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return None


def local_address() -> str | None:
    """The first address corosync has for this node, or None (no
    corosync here, no libcfg, or an address family we do not know)."""
    try:
        lib = _library()
    except OSError:
        return None
    handle = ctypes.c_uint64()
    no_callbacks = (ctypes.c_void_p * 1)()  # corosync_cfg_callbacks_t, all NULL
    if lib.corosync_cfg_initialize(ctypes.byref(handle), no_callbacks) != CS_OK:
        return None
    try:
        nodeid = ctypes.c_uint()
        if lib.corosync_cfg_local_get(handle.value, ctypes.byref(nodeid)) != CS_OK:
            return None
        addrs = (NodeAddress * MAX_ADDRS)()
        count = ctypes.c_int()
        if lib.corosync_cfg_get_node_addrs(handle.value, nodeid.value, MAX_ADDRS,
                                           ctypes.byref(count), addrs) != CS_OK:
            return None
        for a in addrs[:count.value]:
            text = _text(bytes(a.address))
            if text is not None:
                return text
        return None
    finally:
        lib.corosync_cfg_finalize(handle.value)
