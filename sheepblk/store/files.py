"""Small node-persistent files in STORE_DIR: config, space, epoch log, pid lock.

Every write goes to a temporary file that is fsync'ed and renamed, so a
crash leaves the old version or the new one, never half of either.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..proto import SD_NODE_SIZE, SdNode, pack_nodes, unpack_nodes

_TIME = struct.Struct("<q")


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@dataclass
class NodeConfig:
    """What `dog cluster format` decided, kept across restarts (ctime 0 =
    never formatted)."""

    ctime: int = 0
    copies: int = 0
    copy_policy: int = 0
    flags: int = 0
    block_size_shift: int = 22
    store: str = "plain"
    shutdown: bool = False
    # `dog cluster recover disable`: a cluster-wide switch that joiners
    # take with the rest of the config but that no restart keeps (Sheepdog
    # holds it in sys->cinfo, not in its config file).
    disable_recovery: bool = False

    @classmethod
    def load(cls, root: Path) -> NodeConfig:
        try:
            raw = (root / "config").read_text()
        except FileNotFoundError:
            return cls()
        fields = json.loads(raw)
        known = {k: v for k, v in fields.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def save(self, root: Path) -> None:
        fields = asdict(self)
        del fields["disable_recovery"]
        write_atomic(root / "config", json.dumps(fields, indent=1).encode() + b"\n")


def load_node_space(root: Path) -> int:
    """The space this node announces (0: never measured).

    Why kept, not measured at each start: under the auto vnodes strategy
    a node's vnodes follow its space, and free space shrinks as objects
    arrive; measured anew, a restart would move objects between nodes.
    As C sheep keeps it in its config, it stays what the first start
    found until `dog cluster reweight` measures again. A file of its own
    (not NodeConfig): the config travels to joiners, this is per node."""
    try:
        return int((root / "space").read_text())
    except (FileNotFoundError, ValueError):
        return 0


def save_node_space(root: Path, space: int) -> None:
    write_atomic(root / "space", f"{space}\n".encode())


class EpochStore:
    """STORE_DIR/epoch/NNNNNNNN: the members of each epoch (packed sd_node
    array) followed by the time it began, as Sheepdog keeps them."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "epoch"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, epoch: int) -> Path:
        return self.dir / f"{epoch:08d}"

    def latest(self) -> int:
        best = 0
        for p in self.dir.iterdir():
            if p.name.isdigit():
                best = max(best, int(p.name))
        return best

    def write(self, epoch: int, nodes: list[SdNode], when: int | None = None) -> None:
        stamp = int(time.time()) if when is None else when
        write_atomic(self._path(epoch), pack_nodes(nodes) + _TIME.pack(stamp))

    def read(self, epoch: int) -> tuple[list[SdNode], int] | None:
        try:
            raw = self._path(epoch).read_bytes()
        except FileNotFoundError:
            return None
        n = (len(raw) - _TIME.size) // SD_NODE_SIZE
        stamp = _TIME.unpack_from(raw, n * SD_NODE_SIZE)[0] if len(raw) >= _TIME.size else 0
        return unpack_nodes(raw, n), stamp

    def clear(self) -> None:
        for p in self.dir.iterdir():
            p.unlink()


class AlreadyRunning(Exception):
    """Another sheep holds this store's pid lock."""


class PidLock:
    """An exclusive flock on STORE_DIR/sheep.pid for the daemon's lifetime.

    Why flock: it is released the instant its holder dies (kill -9
    included), where a pid check would still see a zombie as alive."""

    def __init__(self, root: Path) -> None:
        self.path = root / "sheep.pid"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(self.fd, 32, 0).decode(errors="replace").strip()
            os.close(self.fd)
            raise AlreadyRunning(
                f"another sheep (pid {other or '?'}) is already using {root}") from None

    def write_pid(self, pid: int | None = None) -> None:
        data = f"{os.getpid() if pid is None else pid}\n".encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
