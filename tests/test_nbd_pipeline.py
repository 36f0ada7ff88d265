"""Many NBD requests in flight on one connection (issue 12).

nbdkit's threads serve the requests of one NBD connection at once, and
they finish in whatever order the sheep answers them. These tests keep 64
NBD requests in flight (libnbd's aio
calls, under Debian's python) of mixed reads, writes, flushes and trims,
and check every answer against a model the client keeps: a reply that
reached the wrong request would read the wrong bytes. Requests in flight at
once never overlap (the model could not say which of two overlapping
writes wins), so the model is exact.

Then a sheep dies mid-pipeline: a replica (the gateway retries on the new
layout, so every request succeeds and the bytes still match), and the
gateway nbdkit talks to (every request in flight fails, none hangs, and the
ones that succeeded before still match the model).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import SheepFactory, wait_for
from test_cluster_daemon import node_count, three, wait_settled
from test_nbd_cluster import Streamed
from test_nbd_plugin import DEBIAN_PY, MIB, Nbdkit, export, libnbd, make_vdi

pytestmark = pytest.mark.skipif(shutil.which("nbdkit") is None, reason="nbdkit not installed")

# argv: seed, operations (0: until the stop file exists), stop file,
# stop-at-first-error (0/1). Keeps 64 requests in flight on slots of 96 KiB
# (so some requests cross a 4 MiB object boundary); a slot is busy while a
# request on it is in flight. Prints "progress N" as it goes and at the end
# "done ok=N failed=M sha256=<model digest>"; exits non-zero on a wrong
# byte or on a request that neither completes nor fails within 120 s.
PIPELINE = r"""
import hashlib, time
seed, ops, stop, stop_at_error = int(argv[0]), int(argv[1]), argv[2], argv[3] == "1"
SLOT, DEPTH = 96 << 10, 64
size = h.get_size()
rnd = random.Random(seed)
model = bytearray(size)
unknown = set()  # slots a failed write or trim may or may not have changed
busy = {}        # cookie -> (kind, slot, offset, read buffer)
free = set(range(0, size - SLOT + 1, SLOT))
ok = failed = submitted = 0
deadline = None


def retire(cookie):
    # aio_command_completed retires a finished command: True, or its error.
    global ok, failed
    try:
        if not h.aio_command_completed(cookie):
            return
    except nbd.Error:
        kind, slot, off, buf = busy.pop(cookie)
        failed += 1
        if kind in ("write", "trim"):
            unknown.add(slot)
    else:
        kind, slot, off, buf = busy.pop(cookie)
        ok += 1
        if kind == "read" and slot not in unknown:
            got = buf.to_bytearray()
            if got != model[off:off + len(got)]:
                sys.exit(f"read at {off}+{len(got)}: bytes of another request, or stale")
    if slot is not None:
        free.add(slot)


while True:
    going = (submitted < ops) if ops else not os.path.exists(stop)
    going = going and not (stop_at_error and failed)
    if not going and not busy:
        break
    if going and len(busy) < DEPTH and free:
        kind = rnd.choices(("read", "write", "trim", "flush"), (45, 45, 6, 4))[0]
        slot = None
        if kind == "flush":
            cookie, off, buf = h.aio_flush(), 0, None
        else:
            slot = rnd.choice(tuple(free))
            free.discard(slot)
            n = rnd.choice((4096, 8192, 65536, SLOT))
            off = slot + rnd.randrange(0, (SLOT - n) // 4096 + 1) * 4096
            buf = None
            if kind == "read":
                buf = nbd.Buffer(n)
                cookie = h.aio_pread(buf, off)
            elif kind == "write":
                data = rnd.randbytes(n)
                model[off:off + n] = data  # no other request in flight touches this slot
                cookie = h.aio_pwrite(data, off)
            else:
                model[off:off + n] = bytes(n)
                cookie = h.aio_trim(n, off)
        busy[cookie] = (kind, slot, off, buf)
        submitted += 1
        if submitted % 256 == 0:
            print("progress", submitted, flush=True)
        continue
    if failed and deadline is None:
        deadline = time.monotonic() + 120
    h.poll(1000)
    for cookie in list(busy):
        retire(cookie)
    if deadline is not None and busy and time.monotonic() > deadline:
        sys.exit(f"{len(busy)} requests neither completed nor failed in 120 s")

if not failed:
    h.flush()
    for off in range(0, size, 8 << 20):
        if h.pread(min(8 << 20, size - off), off) != model[off:off + (8 << 20)]:
            sys.exit(f"bytes at {off} differ from the model")
print(f"done ok={ok} failed={failed} sha256={hashlib.sha256(model).hexdigest()}", flush=True)
"""


def outcome(stdout: str) -> dict[str, str]:
    """The last line's key=value pairs."""
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("done "), stdout[-2000:]
    return dict(kv.split("=", 1) for kv in last.split()[1:])


class Pipeline(Streamed):
    """PIPELINE in a subprocess until its stop file exists; finish() gives
    its outcome."""

    def __init__(self, sock: Path, stop: Path, *, stop_at_error: bool) -> None:
        prelude = ("import nbd, os, random, sys\n"
                   "h = nbd.NBD()\n"
                   "h.connect_unix(sys.argv[1])\n"
                   "argv = sys.argv[2:]\n")
        super().__init__([DEBIAN_PY, "-c", prelude + PIPELINE, str(sock), "11", "0", str(stop),
                          "1" if stop_at_error else "0"], stop,
                         lambda line: int(line.split()[1]) if line.startswith("progress ")
                         else None)

    def finish(self) -> dict[str, str]:  # type: ignore[override]
        return outcome(super().finish())


def test_64_mixed_requests_in_flight_match_a_model(one_node, tmp_path: Path) -> None:
    size = 24 * MIB
    make_vdi(one_node, "Alice", size)
    with export(tmp_path, one_node.port, "vdi=Alice") as nk:
        out = outcome(libnbd(nk.sock, PIPELINE, 3, 3000, tmp_path / "never", 0))
    assert out["failed"] == "0" and int(out["ok"]) == 3000
    # What a fresh export of the unix socket reads is the model too.
    nk = Nbdkit(tmp_path / "unix.sock", ["vdi=Alice", f"address=unix:{one_node.store / 'sock'}"])
    nk.start()
    try:
        assert libnbd(nk.sock, READ_ALL).strip() == out["sha256"]
    finally:
        nk.stop()


READ_ALL = r"""
import hashlib
size, d = h.get_size(), hashlib.sha256()
for off in range(0, size, 8 << 20):
    d.update(h.pread(min(8 << 20, size - off), off))
print(d.hexdigest())
"""


def test_a_replica_dies_mid_pipeline(sheep_factory: SheepFactory, tmp_path: Path) -> None:
    a, b, c = three(sheep_factory, copies=3)
    with a.client() as cl:
        cl.create_vdi("Alice", 32 * MIB)
    with export(tmp_path, a.port, "vdi=Alice") as nk:
        p = Pipeline(nk.sock, tmp_path / "stop", stop_at_error=False)
        p.wait_more(1024)
        b.kill9()  # not the node nbdkit talks to: its gateway retries
        wait_for(lambda: node_count(a) == 2, "2 nodes")
        p.wait_more(1024)
        out = p.finish()
    assert out["failed"] == "0", out
    b.start()
    wait_for(lambda: node_count(a) == 3, "3 nodes again")
    wait_settled([a, b, c], 3)


@pytest.mark.expected_errors(r"nbdkit: python\.\d+: error: ", r"ConnectionRefusedError",
                             r"NetworkError: cannot connect to",
                             r"NetworkError: \S+: Connection reset by peer",
                             r"NetworkError: \S+ closed the connection")
def test_the_gateway_dies_mid_pipeline(sheep_factory: SheepFactory, tmp_path: Path) -> None:
    a, b, c = three(sheep_factory, copies=3)
    with a.client() as cl:
        cl.create_vdi("Alice", 32 * MIB)
    with export(tmp_path, a.port, "vdi=Alice") as nk:
        p = Pipeline(nk.sock, tmp_path / "stop", stop_at_error=True)
        p.wait_more(1024)
        a.kill9()  # the sheep every request goes through
        wait_for(lambda: p.proc.poll() is not None, "the client to see its requests fail")
        out = p.finish()
    # Every request in flight failed or completed; none hung (the script
    # exits non-zero if one neither completes nor fails in 120 s), and the
    # reads that succeeded matched the model.
    assert int(out["failed"]) >= 1, out
    assert int(out["ok"]) >= 1024 - 64, out
    # The others go on as a 2-node cluster.
    wait_for(lambda: node_count(b) == 2, "2 nodes")
