"""Send bare Sheepdog requests from a chosen source address and print each
result code: the client side of the tests that run on "another host"
(tests/test_admin_hosts.py runs it inside a network namespace).

    python tests/wire_probe.py [--source ADDR] HOST PORT OP [OP ...]

Each OP is an opcode name (MAKE_FS, SHUTDOWN, ...). MAKE_FS is a whole
format request (dog's, copies=1, plain store), SET_LOGLEVEL sets info,
GET_NODE_LIST and READ_VDIS ask with room for the answer; any other op
is a bare header. Prints one JSON object {OP: result} on stdout. Uses
only the standard library and sheepblk.proto, so it runs wherever the
project's python does.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

from sheepblk.proto import SD_NODE_SIZE, ClusterArgs, ClusterFlag, Flag, Op, Request, Response
from sheepblk.proto.constants import SD_PROTO_VER, SD_SHEEP_PROTO_VER

TIMEOUT = 30.0


def request_for(op: Op, rid: int) -> bytes:
    """The header (and payload) the probe sends for `op`."""
    ver = SD_PROTO_VER if op < 0x80 else SD_SHEEP_PROTO_VER
    if op == Op.MAKE_FS:
        now = time.time_ns()
        args = ClusterArgs(ctime=((now // 10**9) << 32) | (now % 10**9), copies=1,
                           flags=ClusterFlag.AUTO_VNODES, block_size_shift=22).pack()
        body = b"plain".ljust(16, b"\0")
        return Request(op, Flag.CMD_WRITE, 0, rid, len(body), args, ver).pack() + body
    if op == Op.SET_LOGLEVEL:
        body = (6).to_bytes(4, "little")
        return Request(op, Flag.CMD_WRITE, 0, rid, len(body), bytes(32), ver).pack() + body
    room = {Op.GET_NODE_LIST: SD_NODE_SIZE * 1024, Op.READ_VDIS: 1 << 21}.get(op, 0)
    return Request(op, 0, 0, rid, room, bytes(32), ver).pack()


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the sheep closed the connection")
        buf += chunk
    return bytes(buf)


def probe(host: str, port: int, ops: list[Op], source: str | None = None) -> dict[str, int]:
    """Each op on one connection from `source`, in order: its result."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    out: dict[str, int] = {}
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        if source:
            sock.bind((source, 0))
        sock.connect((host, port))
        for rid, op in enumerate(ops, 1):
            sock.sendall(request_for(op, rid))
            rsp = Response.unpack(recv_exact(sock, 48))
            recv_exact(sock, rsp.data_length)
            out[op.name] = rsp.result
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("ops", nargs="+")
    a = p.parse_args(argv)
    print(json.dumps(probe(a.host, a.port, [Op[name] for name in a.ops], a.source)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
