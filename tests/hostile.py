"""Random, plausible requests for a sheep, as a fuzzing client would send:
every opcode (and unknown ones), random flags, epochs, lengths and object
ids, payloads cut short or left out, one connection each.

Left out: the operations that may legitimately change the whole cluster
for anyone who asks (Sheepdog has no authentication): format, shutdown,
kill node, force recovery, md unplug, and the recovery switches. A node's
duty to them is to do them, not to survive them.
"""

from __future__ import annotations

import random
import socket
import struct

from sheepblk.proto import SD_REQ_SIZE, Op, Request

# Operations any client may use to stop or wipe the cluster on purpose.
CLUSTER_CHANGING = frozenset({
    Op.MAKE_FS, Op.SHUTDOWN, Op.KILL_NODE, Op.FORCE_RECOVER, Op.MD_UNPLUG,
    Op.MD_PLUG, Op.DISABLE_RECOVER, Op.ENABLE_RECOVER, Op.ALTER_CLUSTER_COPY,
    Op.REWEIGHT, Op.SET_VNODES, Op.SET_LOGLEVEL, Op.SET_RECOVERY, Op.CLEANUP,
    Op.RESTORE,
})
OPCODES = [int(op) for op in Op if op not in CLUSTER_CHANGING]


def random_request(rnd: random.Random, known_vids: list[int]) -> tuple[bytes, bytes]:
    """(header, payload to send) of one request."""
    op = rnd.choice(OPCODES) if rnd.random() < 0.9 else rnd.randrange(256)
    flags = rnd.choice([0, 1, 2, 3, rnd.randrange(1 << 16)])
    length = rnd.choice([0, 0, 4, 512, 4096, 65536, 1 << 20, 4 << 20,
                         rnd.randrange(1 << 32)])
    vid = rnd.choice(known_vids + [rnd.randrange(1 << 24)]) if known_vids else \
        rnd.randrange(1 << 24)
    oid = (vid << 32) | rnd.choice([0, 1, rnd.randrange(1 << 32)])
    if rnd.random() < 0.3:
        oid |= 1 << 63  # an inode
    args = struct.pack("<QQBBBBIII", oid, rnd.choice([0, oid ^ 1]), rnd.randrange(8),
                       0, 0, 0, 0, rnd.choice([0, 512, 1 << 22, rnd.randrange(1 << 32)]),
                       0) if rnd.random() < 0.7 else rnd.randbytes(32)
    epoch = rnd.choice([0, 1, 2, rnd.randrange(1 << 32)])
    ver = 2 if rnd.random() < 0.95 else rnd.randrange(256)
    head = Request(op, flags, epoch, rnd.randrange(1 << 32), length, args[:32], ver).pack()
    assert len(head) == SD_REQ_SIZE
    body = b""
    if flags & 1 and length:
        body = rnd.randbytes(min(length, rnd.choice([0, 100, 4096, 65536])))
    return head, body


def send_one(port: int, head: bytes, body: bytes, rnd: random.Random) -> None:
    """Send, maybe read the answer, close. Errors are the point: ignored."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(head + body)
            if rnd.random() < 0.5:
                s.settimeout(0.2)
                try:
                    s.recv(65536)
                except OSError:
                    pass
    except OSError:
        pass
