"""Who holds a VDI lock, seen from the sheep the client talks to.

Sheepdog 1.0 ties a lock to the node that forwarded it and frees it only on
RELEASE_VDI, `dog vdi lock unlock` or that node leaving, so a QEMU that
dies keeps its VDI locked. Tying it to the connection that took it instead
fails QEMU outright: block/sheepdog.c's find_vdi_name() sends LOCK_VDI on a
temporary socket and closes it at once, so the lock would be gone before
the guest runs. What a live QEMU *does* keep open is its I/O socket
(sd_open() opens it with get_sheep_fd() just before the lock request, and
every read, write, inode update and flush of the guest goes over it), and
what a dead QEMU looks like is: every one of its sockets closed.

So a lock here belongs to a *session* of connections from the client's
host (the peer address without the port), and lives while any member is
open:

- the connection that took the lock;
- every connection from that host that reads or writes one of the VDI's
  objects while the lock is held (QEMU's I/O socket and its temporary
  inode reads; our client's pooled connections);
- connections from that host that were already open when the lock was
  taken and have not yet touched any VDI ("pending": QEMU's I/O socket is
  silent until the guest's first request). A pending connection that
  touches a *different* VDI leaves the session: it belongs to another VM.
  So does one that sends a VDI operation (lock, create, delete, lookup):
  QEMU's I/O socket never does, so such a connection is another client,
  e.g. a second QEMU or dog asking for the same lock.

When the last member closes, the node releases the lock cluster-wide
(RELEASE_VDI, owner-specific, through the ordered stream). An explicit
RELEASE_VDI ends the session. A node that leaves the cluster takes its
clients' locks with it (node.py, as before).

Limits (documented, tested where they matter): two clients on one host
that open the same VDI are one session (the second is refused the lock
anyway); an unrelated connection from the same host that was open and idle
when the lock was taken keeps a dead client's lock until it closes or
touches another VDI.

This module is pure bookkeeping (no I/O, no clock): the node feeds it
connection opens/closes, lock results and object touches, and acts on the
releases it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class Release(NamedTuple):
    owner: str  # the lock's owner key in the VDI table
    vid: int
    kind: int


def host_of(peer: str) -> str:
    """The client's address without its port ("unix" for the local socket)."""
    if peer.startswith("["):
        return peer[1:].split("]", 1)[0]
    return peer.rsplit(":", 1)[0] if ":" in peer else peer


@dataclass
class Session:
    owner: str
    vid: int
    kind: int
    host: str
    members: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return not self.members and not self.pending

    def release(self) -> Release:
        return Release(self.owner, self.vid, self.kind)


class LockLeases:
    def __init__(self) -> None:
        self._hosts: dict[str, str] = {}  # open connection -> client host
        self._fresh: set[str] = set()  # open connections that touched no VDI yet
        self._by_vid: dict[int, list[Session]] = {}

    # ---- connections ----

    def opened(self, key: str, peer: str) -> None:
        self._hosts[key] = host_of(peer)
        self._fresh.add(key)

    def closed(self, key: str) -> list[Release]:
        """A connection ended: the locks whose last member it was."""
        self._hosts.pop(key, None)
        self._fresh.discard(key)
        out: list[Release] = []
        for vid in list(self._by_vid):
            for s in list(self._by_vid[vid]):
                s.members.discard(key)
                s.pending.discard(key)
                if s.empty:
                    out.append(s.release())
                    self._drop(s)
        return out

    # ---- locks ----

    def locked(self, key: str, vid: int, kind: int) -> None:
        """`key` was granted the lock: start its session."""
        host = self._hosts.get(key, "")
        pending = {k for k in self._fresh if k != key and self._hosts.get(k) == host}
        s = Session(key, vid, kind, host, {key}, pending)
        self._by_vid.setdefault(vid, []).append(s)

    def released(self, key: str, vid: int, kind: int) -> None:
        """An explicit RELEASE_VDI: an exclusive lock's session ends
        whoever sends it (QEMU's sd_close() uses yet another temporary
        socket); a shared one ends for the sender's session."""
        for s in list(self._by_vid.get(vid, [])):
            if s.kind == kind and (kind == 0 or key == s.owner or key in s.members):
                self._drop(s)

    def moved(self, old_vid: int, new_vid: int) -> None:
        """The lock moved to a new working VDI (a snapshot was taken): its
        sessions go with it."""
        for s in self._by_vid.pop(old_vid, []):
            s.vid = new_vid
            self._by_vid.setdefault(new_vid, []).append(s)

    def forget(self, vid: int) -> None:
        for s in list(self._by_vid.get(vid, [])):
            self._drop(s)

    def _drop(self, s: Session) -> None:
        lst = self._by_vid.get(s.vid)
        if lst is not None and s in lst:
            lst.remove(s)
            if not lst:
                del self._by_vid[s.vid]

    # ---- I/O ----

    @property
    def active(self) -> bool:
        return bool(self._by_vid)

    def touch(self, key: str, vid: int) -> list[Release]:
        """`key` read or wrote an object of `vid`. Joins the sessions of
        `vid` from the same host; leaves the pending lists of others (and
        returns the locks that leaves without members)."""
        out = self._leave_pending(key, but=vid)
        host = self._hosts.get(key)
        for s in self._by_vid.get(vid, ()):
            if s.host == host:
                s.pending.discard(key)
                s.members.add(key)
        return out

    def fresh(self, key: str) -> bool:
        """`key` has sent nothing yet (its first I/O may release locks)."""
        return key in self._fresh

    def used(self, key: str) -> None:
        """`key` sent a request while no lock is held here: it is no
        longer a silent, fresh connection."""
        self._fresh.discard(key)

    def not_io(self, key: str) -> list[Release]:
        """`key` sent a VDI operation: it is no silent I/O socket, so it
        leaves every pending list (returns the locks left without members)."""
        return self._leave_pending(key)

    def _leave_pending(self, key: str, but: int | None = None) -> list[Release]:
        """A fresh `key` shows what it is: it leaves the pending lists of
        every VDI's sessions (but `but`'s); returns the locks that leaves
        without members. Nothing for a key that was not fresh."""
        out: list[Release] = []
        if key not in self._fresh:
            return out
        self._fresh.discard(key)
        for other, sessions in list(self._by_vid.items()):
            if other == but:
                continue
            for s in list(sessions):
                if key in s.pending:
                    s.pending.discard(key)
                    if s.empty:
                        out.append(s.release())
                        self._drop(s)
        return out

    def sessions(self) -> list[Session]:
        return [s for lst in self._by_vid.values() for s in lst]
