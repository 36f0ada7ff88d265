"""The in-memory inode of the mount: what the kernel sees of one file,
directory or symlink, and how to reach its durable twin in the backing dir.

Why our own inodes: the mount shows the volatile namespace (entries not
yet durable included), so its names cannot simply be the backing dir's.
A file's durable twin is an open fd (`bfd`) of its backing file, which
follows durable renames by itself; a directory's is an open fd (`dfd`)
of its backing directory, -1 while its creation is not durable. A node
loaded from the backing dir opens that fd lazily from `home`, the durable
name it was found under; any pending entry op on a node opens it first
(see Tree.pin), so `home` is never needed once it could be stale.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

from .data import FileData


@dataclass(eq=False)
class Node:
    """Resource handling: `bfd`/`dfd` are owned by the Tree that made the
    node and closed when it frees the node or unmounts."""

    ino: int
    mode: int
    uid: int = 0
    gid: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    nlink: int = 1
    # The last name the node was linked under (for fault patterns and "..").
    parent: Node | None = None
    name: bytes = b""
    lookups: int = 0
    opens: int = 0
    # Pending entry ops that name this node (it must stay reachable).
    pins: int = 0
    home: tuple[Node, bytes] | None = None
    # files
    data: FileData | None = None
    bfd: int = -1
    orphan: bytes | None = None  # its name in the orphan dir, if any
    blocks: int = 0
    # directories
    entries: dict[bytes, Node] | None = None  # None: not loaded yet
    dfd: int = -1
    # symlinks
    target: bytes = b""

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def size(self) -> int:
        if self.data is not None:
            return self.data.size
        if stat.S_ISLNK(self.mode):
            return len(self.target)
        return 4096 if self.is_dir else 0

    def path(self) -> str:
        """The node's path in the mount (its last name), without a leading
        slash: what fault patterns match."""
        parts: list[bytes] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/".join(p.decode(errors="surrogateescape") for p in reversed(parts))
