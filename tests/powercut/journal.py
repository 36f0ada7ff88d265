"""Directory entry operations not yet durable, in the order they happened.

Model: an entry op (create, mkdir, symlink, link, unlink, rmdir, rename)
changes the mount at once and reaches the backing dir only when a
directory it touches is fsync'ed. That fsync makes durable every pending
op on that directory, in order, and what those ops depend on:

- earlier ops on the same directories (a directory's history persists in
  order: a prefix of it, never a later op without an earlier one);
- the creation of every directory involved (an entry cannot outlive the
  creation of the directory that holds it).

A cross-directory rename touches both directories, so an fsync of either
makes it durable, atomically (old name gone and new name there). This is
no weaker than POSIX asks (fsync of the file's own directory) and a bit
stronger than the weakest real file system (dependencies come along, as a
journal would carry them); an fsync of a file never makes its name durable.

After a power cut that keeps a random subset (`choose`), the kept ops are
closed the same way: an op is kept only if every earlier op on its
directories, and the creation of its directories, were kept.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, fields

from .nodes import Node


@dataclass(eq=False)
class Link:
    """`name` in `parent` now names `node` (create, mkdir, symlink, link)."""

    parent: Node
    name: bytes
    node: Node

    def dirs(self) -> tuple[Node, ...]:
        return (self.parent,)

    def nodes(self) -> tuple[Node, ...]:
        return (self.node,)

    def made(self) -> Node | None:
        """The directory this op creates, if any."""
        return self.node if self.node.is_dir else None


@dataclass(eq=False)
class Unlink:
    """`name` in `parent` (which named `node`) is gone (unlink, rmdir)."""

    parent: Node
    name: bytes
    node: Node

    def dirs(self) -> tuple[Node, ...]:
        # rmdir needs the removal of everything inside to be durable first
        return (self.parent, self.node) if self.node.is_dir else (self.parent,)

    def nodes(self) -> tuple[Node, ...]:
        return (self.node,)

    def made(self) -> Node | None:
        return None


@dataclass(eq=False)
class Rename:
    """`src`/`sname` moved to `dst`/`dname`, replacing `replaced` if any."""

    src: Node
    sname: bytes
    dst: Node
    dname: bytes
    node: Node
    replaced: Node | None

    def dirs(self) -> tuple[Node, ...]:
        out: tuple[Node, ...] = (self.src, self.dst)
        if self.replaced is not None and self.replaced.is_dir:
            out += (self.replaced,)
        return out

    def nodes(self) -> tuple[Node, ...]:
        return (self.node,) if self.replaced is None else (self.node, self.replaced)

    def made(self) -> Node | None:
        return None


EntryOp = Link | Unlink | Rename

# POWERCUT_TRACE=FILE appends every entry op recorded, applied (made
# durable) or dropped by a crash to FILE: how a name vanished after a cut
# is then a grep away (the file must live outside the mount).
_TRACE = os.environ.get("POWERCUT_TRACE")


def trace(event: str, op: EntryOp) -> None:
    if not _TRACE:
        return
    parts = []
    for f in fields(op):
        v = getattr(op, f.name)
        parts.append(f"{f.name}={v.ino}:{v.path()}" if isinstance(v, Node) else f"{f.name}={v!r}")
    with open(_TRACE, "a") as out:
        out.write(f"{os.getpid()} {event} {type(op).__name__} {' '.join(parts)}\n")


class Journal:
    """The pending entry ops. Recording pins the nodes an op names
    (`Node.pins`); whoever applies or drops an op unpins them."""

    def __init__(self) -> None:
        self.ops: list[EntryOp] = []

    def __len__(self) -> int:
        return len(self.ops)

    def record(self, op: EntryOp) -> None:
        for node in op.nodes():
            node.pins += 1
        trace("record", op)
        self.ops.append(op)

    def take_for_dir(self, d: Node) -> list[EntryOp]:
        """Remove and return, in order, what an fsync of directory `d`
        makes durable (see the module doc)."""
        last = next((k for k in range(len(self.ops) - 1, -1, -1)
                     if d in self.ops[k].dirs()), None)
        if last is None:
            return []
        need = set(self.ops[last].dirs())
        chosen = {last}
        for j in range(last - 1, -1, -1):
            op = self.ops[j]
            if need.intersection(op.dirs()) or op.made() in need:
                chosen.add(j)
                need.update(op.dirs())
        taken = [op for k, op in enumerate(self.ops) if k in chosen]
        self.ops = [op for k, op in enumerate(self.ops) if k not in chosen]
        return taken

    def take_all(self) -> list[EntryOp]:
        taken, self.ops = self.ops, []
        return taken

    def choose(self, rng: random.Random) -> tuple[list[EntryOp], list[EntryOp]]:
        """Empty the journal into (kept, dropped): a random subset closed
        under the dependencies of the module doc, each op kept with
        probability 1/2 when it may be."""
        blocked: set[Node] = set()
        kept: list[EntryOp] = []
        dropped: list[EntryOp] = []
        for op in self.take_all():
            dirs = set(op.dirs())
            if dirs & blocked or rng.random() < 0.5:
                dropped.append(op)
                blocked |= dirs
                made = op.made()
                if made is not None:
                    blocked.add(made)
            else:
                kept.append(op)
        return kept, dropped
