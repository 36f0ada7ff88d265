"""Open VDIs behind volume/ files, their cluster locks, and attachment.

Why a registry: every open of volume/NAME, and vdi/mount, must share one
`Vdi` per VDI id, so that the index of allocated objects (updated on
copy-on-write) is the same for every writer, and so that the VDI lock is
taken once (Sheepdog allows one writer per VDI in the whole cluster).

Rules:
- a write open locks the VDI in the cluster (SD_OP_LOCK_VDI); the lock is
  released when the last write handle closes, unless the VDI is attached;
- `attach` (a name written to vdi/mount) opens and locks the VDI and keeps
  it so until `detach` (vdi/unmount) or the end of the mount: no other
  client (QEMU, another sheepfs) can write it meanwhile, and its index
  stays cached;
- read-only opens need no lock; they re-read the index when nobody here
  holds the lock, since someone elsewhere may be writing;
- every close of a handle that wrote, and every detach, flushes
  (SD_OP_FLUSH_VDI) so the data is durable on every copy.

Every method blocks on the network: call them with trio.to_thread.
Error handling: ClientError from the client passes through unchanged;
misuse (writing a snapshot) raises ClientError subclasses with an errno.
"""

from __future__ import annotations

import errno
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..client import ClientError, SheepClient, Vdi
from ..client.errors import SheepdogError
from ..proto import InodeHeader, Res
from .names import VolumeRef, candidates

if TYPE_CHECKING:
    from .readahead import Readahead

log = logging.getLogger(__name__)


class VolumeError(ClientError):
    """A refusal of sheepfs itself, carrying the errno to report."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


def resolve(client: SheepClient, fname: str) -> tuple[VolumeRef, InodeHeader]:
    """The VDI a volume/ file name stands for, with its inode header.

    Raises BadName for names sheepfs refuses, VolumeError(ENOENT) when no
    VDI or snapshot matches.
    """
    for ref in candidates(fname):
        try:
            info = client.lookup_vdi(ref.name, ref.tag, ref.snapid)
        except SheepdogError as e:
            if e.result in (Res.NO_VDI, Res.NO_TAG, Res.NO_OBJ, Res.INVALID_PARMS):
                continue
            raise
        hdr = client.read_inode_header(info.vid)
        if hdr.name and hdr.is_snapshot == ref.is_snapshot:
            return ref, hdr
    raise VolumeError(errno.ENOENT, f"no VDI or snapshot named {fname!r}")


@dataclass
class OpenVolume:
    """One VDI in use by this mount."""

    ref: VolumeRef
    vdi: Vdi
    readers: int = 0
    writers: int = 0
    attached: bool = False
    locked: bool = False
    dirty: bool = False
    # Owned by the trio thread (operations.py), never touched here.
    readahead: Readahead | None = None

    @property
    def vid(self) -> int:
        return self.vdi.vid

    @property
    def size(self) -> int:
        return self.vdi.size

    @property
    def read_only(self) -> bool:
        return self.ref.is_snapshot or self.vdi.inode.is_snapshot

    def pread(self, offset: int, size: int) -> bytes | bytearray:
        """Up to `size` bytes at `offset`; short (or empty) at the end."""
        size = max(0, min(size, self.size - offset))
        if size == 0:
            return b""
        buf = bytearray(size)
        self.vdi.pread_into(buf, offset)
        return buf

    def pwrite(self, offset: int, data: bytes) -> int:
        """Write all of `data` or nothing: a write reaching past the end is
        refused with ENOSPC (a full device) before any byte is sent."""
        if offset < 0 or offset + len(data) > self.size:
            raise VolumeError(errno.ENOSPC, f"write at {offset}+{len(data)} is past the "
                              f"end of {self.ref.name} ({self.size} bytes)")
        self.vdi.pwrite(data, offset)
        # Marked after the write: a flush that ran meanwhile may not cover it.
        self.dirty = True
        return len(data)

    def flush(self) -> None:
        if self.dirty:
            self.dirty = False
            try:
                self.vdi.flush()
            except BaseException:
                self.dirty = True
                raise


class Volumes:
    """The registry of open VDIs of one mount (thread-safe)."""

    def __init__(self, client: SheepClient) -> None:
        self.client = client
        self._by_vid: dict[int, OpenVolume] = {}
        # Serialises opens and closes so lock/unlock and Vdi creation for
        # one VDI never interleave; I/O does not take it.
        self._oc_lock = threading.Lock()

    # ---- open / close ----

    def open(self, fname: str, write: bool) -> tuple[OpenVolume, bool]:
        """Open a handle; also says whether this mount already held the
        VDI's lock (then cached pages of it are still valid)."""
        with self._oc_lock:
            ref, hdr = resolve(self.client, fname)
            if write and hdr.is_snapshot:
                raise VolumeError(errno.EROFS, f"{fname} is a snapshot (read-only)")
            vol = self._by_vid.get(hdr.vdi_id)
            fresh = vol is None
            held = vol is not None and vol.locked
            if write and not held:
                self.client.lock_vdi(ref.name)
                if vol is not None:
                    vol.locked = True
            try:
                if vol is None:
                    vol = OpenVolume(ref, Vdi(self.client, ref.name, tag=ref.tag,
                                              snapid=ref.snapid, writable=not hdr.is_snapshot,
                                              cache=True), locked=write)
                elif not held:
                    # Nobody here held the lock: someone elsewhere may have
                    # written, so the cached index may be stale.
                    vol.vdi.refresh()
            except BaseException:
                if write and (vol is None or vol.writers == 0 and not vol.attached):
                    self._release_quietly(hdr.vdi_id)
                    if vol is not None:
                        vol.locked = False
                raise
            if fresh:
                self._by_vid[vol.vid] = vol
            if write:
                vol.writers += 1
            else:
                vol.readers += 1
            return vol, held

    def close(self, vol: OpenVolume, write: bool) -> None:
        """Drop one handle: flush what it wrote, unlock with the last writer."""
        with self._oc_lock:
            if write:
                vol.writers -= 1
            else:
                vol.readers -= 1
            try:
                if write or vol.dirty:
                    vol.flush()
            finally:
                self._settle(vol)

    def flush(self, vol: OpenVolume) -> None:
        vol.flush()

    def write(self, vol: OpenVolume, offset: int, data: bytes) -> int:
        """Write through `vol`; if a snapshot was taken meanwhile (the VDI
        we write became read-only), follow the name to the new working VDI
        and write there, as QEMU does, instead of failing the write."""
        try:
            return vol.pwrite(offset, data)
        except SheepdogError as e:
            if e.result != Res.READONLY or vol.ref.is_snapshot:
                raise
            if not self._follow_snapshot(vol):
                raise
        return vol.pwrite(offset, data)

    def _follow_snapshot(self, vol: OpenVolume) -> bool:
        with self._oc_lock:
            info = self.client.lookup_vdi(vol.ref.name)
            if info.vid == vol.vid:
                return False
            log.info("%s was snapshotted: writing to its new working VDI %x",
                     vol.ref.name, info.vid)
            old = vol.vdi
            if vol.locked:
                # The lock belongs to the working VDI: move it along.
                self._release_quietly(old.vid)
                try:
                    self.client.lock_vdi(vol.ref.name)
                except SheepdogError as e:
                    if e.result != Res.VDI_LOCKED:
                        raise
            vol.vdi = Vdi(self.client, vol.ref.name, cache=True)
            self._by_vid.pop(old.vid, None)
            self._by_vid[vol.vid] = vol
            old.close()
            return True

    def _settle(self, vol: OpenVolume) -> None:
        if vol.writers == 0 and not vol.attached and vol.locked:
            vol.locked = False
            self._release_quietly(vol.vid)
        if vol.writers == 0 and vol.readers == 0 and not vol.attached:
            self._by_vid.pop(vol.vid, None)
            vol.vdi.close()

    def _release_quietly(self, vid: int) -> None:
        try:
            self.client.release_vdi(vid)
        except ClientError as e:
            log.warning("cannot release the lock of VDI %x: %s", vid, e)

    # ---- attach / detach (vdi/mount, vdi/unmount) ----

    def attach(self, name: str) -> None:
        """Open and lock `name` until detach; attaching twice is a no-op."""
        with self._oc_lock:
            for vol in self._by_vid.values():
                if vol.attached and vol.ref.name == name and not vol.read_only:
                    return
        vol, _ = self.open(name, write=True)
        with self._oc_lock:
            vol.attached = True
            vol.writers -= 1

    def detach(self, name: str) -> None:
        """Flush and unlock an attached VDI; ENOENT if it is not attached."""
        with self._oc_lock:
            for vol in list(self._by_vid.values()):
                if vol.attached and vol.ref.name == name:
                    vol.attached = False
                    try:
                        vol.flush()
                    finally:
                        self._settle(vol)
                    return
        raise VolumeError(errno.ENOENT, f"{name} is not attached")

    def attached(self) -> list[str]:
        with self._oc_lock:
            return sorted(v.ref.name for v in self._by_vid.values() if v.attached)

    def get(self, vid: int) -> OpenVolume | None:
        return self._by_vid.get(vid)

    # ---- end of mount ----

    def flush_all(self) -> None:
        """Flush every VDI written to; errors are logged, not raised, so one
        bad VDI does not keep the others from being flushed."""
        for vol in list(self._by_vid.values()):
            try:
                vol.flush()
            except ClientError as e:
                log.error("flushing %s failed: %s", vol.ref.name, e)

    def close_all(self) -> None:
        """Flush, unlock and close everything (at unmount)."""
        self.flush_all()
        with self._oc_lock:
            for vol in list(self._by_vid.values()):
                vol.attached = False
                vol.writers = vol.readers = 0
                self._settle(vol)
