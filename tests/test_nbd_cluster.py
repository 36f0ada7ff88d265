"""NBD while a node dies (issue 5): nbdkit's plugin exports a VDI of a
3-node copies=3 cluster; a stream of writes through NBD (libnbd under
Debian's python, checked against a model it keeps) goes on without an
error while another node is killed with -9 (and, in the second test,
restarted and killed again); then every byte is read back through NBD, the
node comes back and, after recovery, every object has 3 byte-identical
copies.

Every process is one this test started, stopped by its pid; the waits are
generous polls, no timing thresholds.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SheepFactory, SheepProcess
from test_cluster_daemon import node_count, three, wait_for, wait_settled
from test_nbd_plugin import DEBIAN_PY, MIB, export

pytestmark = pytest.mark.skipif(shutil.which("nbdkit") is None, reason="nbdkit not installed")

SIZE = 64 * MIB

# Writes of 4 KiB .. 256 KiB at random 4 KiB-aligned offsets until the
# stop file exists (and at least argv[2] writes), a flush every 16; then
# every byte is read back and compared with the model. Prints the number
# of writes done after each one, then "sha256 <digest of the model>".
WRITER = r"""
import hashlib, nbd, os, random, sys
h = nbd.NBD()
h.connect_unix(sys.argv[1])
stop, least = sys.argv[2], int(sys.argv[3])
size = h.get_size()
model = bytearray(size)
rng = random.Random(5)
i = 0
while i < least or not os.path.exists(stop):
    length = rng.choice((4096, 65536, 262144))
    off = rng.randrange(0, (size - length) // 4096) * 4096
    data = rng.randbytes(length)
    h.pwrite(data, off)
    model[off:off + length] = data
    i += 1
    if i % 16 == 0:
        h.flush()
    print(i, flush=True)
h.flush()
for off in range(0, size, 1 << 20):
    if h.pread(1 << 20, off) != model[off:off + (1 << 20)]:
        sys.exit(f"bytes at {off} differ from the model")
print("sha256", hashlib.sha256(model).hexdigest(), flush=True)
"""


class Streamed:
    """A client script in a subprocess that runs until its stop file exists,
    printing a count as it goes (`count` reads it from a line, None for
    other lines); `done` follows the last count printed."""

    def __init__(self, argv: list[str], stop: Path,
                 count: Callable[[str], int | None]) -> None:
        self.stop_file = stop
        self.count = count
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.done = 0
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:  # closed at EOF: the script exited
            for line in self.proc.stdout:
                self.lines.append(line)
                n = self.count(line)
                if n is not None:
                    self.done = n

    def wait_more(self, n: int) -> None:
        start = self.done
        wait_for(lambda: self.done >= start + n or self.proc.poll() is not None,
                 f"{n} more NBD requests")
        assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""

    def finish(self) -> str:
        """Stop the script; its whole output (it must exit 0)."""
        self.stop_file.touch()
        try:
            self.proc.wait(timeout=300)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.thread.join(30)  # reads stdout to its end
        assert self.proc.stderr is not None
        with self.proc.stderr:
            err = self.proc.stderr.read()
        assert self.proc.returncode == 0, err
        return "".join(self.lines)


class Writer(Streamed):
    """The libnbd write stream; finish() gives the model's digest."""

    def __init__(self, sock: Path, stop: Path) -> None:
        super().__init__([DEBIAN_PY, "-c", WRITER, str(sock), str(stop), "64"], stop,
                         lambda line: int(line) if line.strip().isdigit() else None)

    def finish(self) -> str:  # type: ignore[override]
        digests = [ln.split()[1] for ln in super().finish().splitlines()
                   if ln.startswith("sha256 ")]
        assert digests
        return digests[-1]


def vdi_sha256(node: SheepProcess) -> str:
    from sheepblk.client import Vdi

    h = hashlib.sha256()
    with node.client() as c, Vdi(c, "Alice") as v:
        for off in range(0, SIZE, 4 * MIB):
            h.update(v.pread(4 * MIB, off))
    return h.hexdigest()


def cluster(sheep_factory: SheepFactory) -> list[SheepProcess]:
    nodes = three(sheep_factory, copies=3)
    with nodes[0].client() as c:
        c.create_vdi("Alice", SIZE)
    return nodes


def test_nbd_write_stream_survives_a_node_killed(sheep_factory: SheepFactory,
                                                 tmp_path: Path) -> None:
    a, b, c = cluster(sheep_factory)
    with export(tmp_path, a.port, "vdi=Alice") as nk:
        w = Writer(nk.sock, tmp_path / "stop")
        w.wait_more(50)
        b.kill9()  # not the node nbdkit talks to
        wait_for(lambda: node_count(a) == 2, "2 nodes")
        w.wait_more(80)
        digest = w.finish()
    assert vdi_sha256(a) == digest
    b.start()
    wait_for(lambda: node_count(a) == 3, "3 nodes again")
    wait_settled([a, b, c], 3)
    assert vdi_sha256(b) == digest


def test_nbd_write_stream_while_another_node_dies_twice(sheep_factory: SheepFactory,
                                                        tmp_path: Path) -> None:
    a, b, c = cluster(sheep_factory)
    with export(tmp_path, a.port, "vdi=Alice") as nk:
        w = Writer(nk.sock, tmp_path / "stop")
        for _ in range(2):
            w.wait_more(40)
            c.kill9()
            wait_for(lambda: node_count(a) == 2, "2 nodes")
            w.wait_more(40)
            c.start()
            wait_for(lambda: node_count(a) == 3, "3 nodes")
        w.wait_more(40)
        digest = w.finish()
    assert vdi_sha256(a) == digest
    wait_settled([a, b, c], 3)
    assert vdi_sha256(c) == digest
