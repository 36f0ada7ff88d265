"""Cluster snapshots in a directory: content-addressed, deduplicated, zstd.

The layout follows Sheepdog's farm (dog/farm/) in idea, not in bytes:

    DIR/objects/ab/cdef...   one object's bytes, zstd-compressed, named by
                             the SHA-1 of the *uncompressed* bytes (git's
                             blobs): an object unchanged between snapshots,
                             or shared by a clone, is stored once
    DIR/trunks/ab/cdef...    a trunk: every object of one snapshot, as
                             fixed records {oid, copies, copy_policy,
                             block_size_shift, sha1}, zstd-compressed and
                             named by its own SHA-1 (git's trees)
    DIR/snap_log             a header {magic, version, copies, policy,
                             block_size_shift} then one record per
                             snapshot {idx, tag, time, trunk sha1}
                             (git's commits, in order)

Every file is written to a temporary name and renamed, so an interrupted
save leaves the archive as it was (plus unreferenced objects, which the
next `delete` collects). Objects are read and written through the cluster
(sheepblk.client), never from a store directory, so any backend, any
number of nodes and any copies work, as with Sheepdog's dog.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import zstandard

from ..client import HyperTree, SheepClient, SheepdogError
from ..client.hyper import HYPER_VOLUME
from ..proto import (
    SD_INODE_HEADER_SIZE,
    InodeHeader,
    Op,
    Res,
    VdiStateArgs,
    data_vid_offset,
    get_objsize,
    is_vdi_obj,
    oid_to_vid,
    vid_to_data_oid,
    vid_to_vdi_oid,
)
from ..proto.constants import SD_MAX_SNAPSHOT_TAG_LEN

FARM_MAGIC = 0xFEE1C001
FARM_VERSION = 1
_LOG_HDR = struct.Struct("<IIBBB21x")
_LOG_REC = struct.Struct(f"<I{SD_MAX_SNAPSHOT_TAG_LEN}sQ20s")
_TRUNK_REC = struct.Struct("<QBBBx20s")
# Objects in flight at once: enough to keep a 2-core node and its disk busy
# (hashing and zstd release the GIL), bounded memory (each up to 12.5 MiB).
PARALLEL = 4
# zstd level 3 (the default): archives are written once and kept, so a
# better ratio than the live store's level 1 is worth the CPU.
ZSTD_LEVEL = 3

Progress = Callable[[int, int], None]


class ArchiveError(Exception):
    """A user-facing archive error (one line)."""


@dataclass(frozen=True)
class TrunkEntry:
    oid: int
    copies: int
    copy_policy: int
    block_size_shift: int
    sha1: bytes


@dataclass(frozen=True)
class SnapLog:
    idx: int
    tag: str
    time: int
    trunk: bytes


@dataclass
class SaveStats:
    objects: int = 0
    new_objects: int = 0
    bytes_read: int = 0
    bytes_written: int = 0


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


class Archive:
    """One archive directory. Not safe for two writers at once (as dog)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ArchiveError(f"Path is not a directory: {self.path}")
        self.objects = self.path / "objects"
        self.trunks = self.path / "trunks"
        self.log_path = self.path / "snap_log"
        self._local = threading.local()

    # ---- content-addressed files ----

    def _cctx(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "c", None)
        if c is None:
            c = self._local.c = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        return c

    @staticmethod
    def _sha_path(base: Path, sha1: bytes) -> Path:
        h = sha1.hex()
        return base / h[:2] / h[2:]

    def put(self, base: Path, data: bytes | memoryview) -> tuple[bytes, int]:
        """Store `data` under its SHA-1 unless it is there; returns (sha1,
        bytes written: 0 when deduplicated)."""
        sha1 = hashlib.sha1(data).digest()
        path = self._sha_path(base, sha1)
        if path.exists():
            return sha1, 0
        packed = self._cctx().compress(data)
        _write_atomic(path, packed)
        return sha1, len(packed)

    def get(self, base: Path, sha1: bytes) -> bytes:
        path = self._sha_path(base, sha1)
        try:
            packed = path.read_bytes()
        except FileNotFoundError:
            raise ArchiveError(f"archive object {sha1.hex()} is missing") from None
        try:
            data = zstandard.ZstdDecompressor().decompress(packed)
        except zstandard.ZstdError as e:
            raise ArchiveError(f"archive object {sha1.hex()} is damaged: {e}") from None
        if hashlib.sha1(data).digest() != sha1:
            raise ArchiveError(f"archive object {sha1.hex()} fails its SHA-1")
        return data

    # ---- the snapshot log ----

    def read_header(self) -> tuple[int, int, int] | None:
        """(copies, copy_policy, block_size_shift), or None: no archive."""
        try:
            raw = self.log_path.read_bytes()
        except FileNotFoundError:
            return None
        magic, version, copies, policy, shift = _LOG_HDR.unpack_from(raw)
        if magic != FARM_MAGIC or version != FARM_VERSION:
            raise ArchiveError(f"{self.log_path} is not a farm snapshot log")
        return copies, policy, shift

    def logs(self) -> list[SnapLog]:
        try:
            raw = self.log_path.read_bytes()
        except FileNotFoundError:
            return []
        self.read_header()
        out = []
        for off in range(_LOG_HDR.size, len(raw) - _LOG_REC.size + 1, _LOG_REC.size):
            idx, tag, when, trunk = _LOG_REC.unpack_from(raw, off)
            out.append(SnapLog(idx, tag.split(b"\0", 1)[0].decode(errors="replace"),
                               when, trunk))
        return out

    def _write_logs(self, header: tuple[int, int, int], logs: list[SnapLog]) -> None:
        body = _LOG_HDR.pack(FARM_MAGIC, FARM_VERSION, *header)
        for log in logs:
            body += _LOG_REC.pack(log.idx, log.tag.encode(), log.time, log.trunk)
        _write_atomic(self.log_path, body)

    def find(self, tag_or_idx: str) -> SnapLog:
        for log in self.logs():
            if (tag_or_idx.isdigit() and log.idx == int(tag_or_idx)) or log.tag == tag_or_idx:
                return log
        raise ArchiveError("Snapshot index or tag does not exist.")

    # ---- trunks ----

    def write_trunk(self, entries: list[TrunkEntry]) -> bytes:
        body = b"".join(_TRUNK_REC.pack(e.oid, e.copies, e.copy_policy, e.block_size_shift,
                                        e.sha1) for e in sorted(entries, key=lambda e: e.oid))
        sha1, _ = self.put(self.trunks, body)
        return sha1

    def read_trunk(self, sha1: bytes) -> list[TrunkEntry]:
        raw = self.get(self.trunks, sha1)
        return [TrunkEntry(*_TRUNK_REC.unpack_from(raw, off))
                for off in range(0, len(raw), _TRUNK_REC.size)]

    # ---- delete and garbage collection ----

    def delete(self, tag_or_idx: str) -> int:
        """Drop a snapshot from the log, then every file no snapshot left
        references. Returns how many object files were removed."""
        victim = self.find(tag_or_idx)
        header = self.read_header()
        assert header is not None
        keep = [log for log in self.logs() if log != victim]
        self._write_logs(header, keep)
        live_trunks = {log.trunk for log in keep}
        live_objects: set[bytes] = set()
        for t in live_trunks:
            live_objects.update(e.sha1 for e in self.read_trunk(t))
        removed = 0
        for base, live in ((self.objects, live_objects), (self.trunks, live_trunks)):
            for path in self._all_files(base):
                if bytes.fromhex(path.parent.name + path.name) not in live:
                    path.unlink()
                    removed += base is self.objects
        return removed

    @staticmethod
    def _all_files(base: Path) -> Iterable[Path]:
        if not base.exists():
            return []
        return [p for d in base.iterdir() if d.is_dir() for p in d.iterdir()
                if not p.name.startswith(".")]


# ---- reading a cluster ----


def live_vdis(client: SheepClient) -> list[InodeHeader]:
    """Every VDI and snapshot that is not deleted, in vid order."""
    out: list[InodeHeader] = []
    for vid in client.live_vdi_ids():
        h = client.read_inode_header(vid)
        if h.name and h.vdi_id == vid:
            out.append(h)
    return out


def _object_list(client: SheepClient, vdis: list[InodeHeader]) -> dict[int, InodeHeader]:
    """oid -> the inode whose copies/block size it takes: each inode, and
    every data object any index names (shared ones once)."""
    objs: dict[int, InodeHeader] = {}
    for h in vdis:
        objs[vid_to_vdi_oid(h.vdi_id)] = h
        if h.store_policy == HYPER_VOLUME:
            # Its index is a B-tree: the leaves are objects to keep too
            # (C's dog keeps only the data objects they name).
            tree = HyperTree(client, h.vdi_id)
            for oid in tree.leaf_oids():
                objs.setdefault(oid, h)
            for idx, owner in tree.records(()):
                if owner:
                    objs.setdefault(vid_to_data_oid(owner, idx), h)
            continue
        n = h.nr_objects
        if not n:
            continue
        raw = client.read_obj(vid_to_vdi_oid(h.vdi_id), 4 * n, data_vid_offset(0))
        for idx, owner in enumerate(struct.unpack(f"<{n}I", raw)):
            if owner:
                objs.setdefault(vid_to_data_oid(owner, idx), h)
    return objs


def save(client: SheepClient, archive: Archive, tag: str,
         progress: Progress | None = None) -> SaveStats:
    """Snapshot every VDI of the cluster into `archive` under `tag`."""
    if tag[:1].isdigit():
        raise ArchiveError("Tag should not start with number.")
    if len(tag.encode()) >= SD_MAX_SNAPSHOT_TAG_LEN:
        raise ArchiveError("Tag is too long.")
    if any(log.tag == tag for log in archive.logs()):
        raise ArchiveError("Snapshot tag has already been used for another snapshot, "
                        "please, use another one.")
    vdis = live_vdis(client)
    if not vdis:
        raise ArchiveError("Cannot execute: the cluster has no VDIs.")
    objs = _object_list(client, vdis)
    stats = SaveStats(objects=len(objs))
    lock = threading.Lock()
    done = 0

    def one(oid: int) -> TrunkEntry:
        nonlocal done
        h = objs[oid]
        size = get_objsize(oid, h.object_size)
        data = client.read_obj(oid, size)
        sha1, written = archive.put(archive.objects, data)
        with lock:
            done += 1
            stats.bytes_read += size
            stats.bytes_written += written
            stats.new_objects += bool(written)
            if progress is not None:
                progress(done, len(objs))
        return TrunkEntry(oid, h.nr_copies, h.copy_policy, h.block_size_shift, sha1)

    with ThreadPoolExecutor(PARALLEL) as pool:
        entries = list(pool.map(one, sorted(objs)))
    trunk = archive.write_trunk(entries)
    header = archive.read_header()
    if header is None:
        c = client.get_cluster_default()
        header = (c.nr_copies, c.copy_policy, c.block_size_shift)
    logs = archive.logs()
    idx = max((log.idx for log in logs), default=0) + 1
    archive._write_logs(header, [*logs, SnapLog(idx, tag, int(time.time()), trunk)])
    return stats


def load(client: SheepClient, archive: Archive, tag_or_idx: str,
         progress: Progress | None = None) -> int:
    """Write a snapshot's objects into a (freshly formatted) cluster and
    register its VDIs. Returns how many objects were written."""
    log = archive.find(tag_or_idx)
    entries = archive.read_trunk(log.trunk)
    lock = threading.Lock()
    done = 0

    def one(e: TrunkEntry) -> None:
        nonlocal done
        data = archive.get(archive.objects, e.sha1)
        # The policy as QEMU's driver sends it: a data object of an
        # erasure-coded VDI is stored as strips although the VDI is only
        # registered after its objects.
        client.create_and_write_obj(e.oid, data, copies=e.copies, copy_policy=e.copy_policy)
        with lock:
            done += 1
            if progress is not None:
                progress(done, len(entries))

    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(one, entries))
    _register(client, [e for e in entries if is_vdi_obj(e.oid)])
    return len(entries)


def _register(client: SheepClient, inodes: list[TrunkEntry]) -> None:
    """NOTIFY_VDI_ADD for each restored inode, parents first, so every
    node's VDI table knows them and which of them are snapshots."""
    headers = {oid_to_vid(e.oid): (e, InodeHeader.unpack(
        client.read_obj(e.oid, SD_INODE_HEADER_SIZE))) for e in inodes}

    def depth(vid: int) -> int:
        d = 0
        seen = set()
        while vid in headers and headers[vid][1].parent_vdi_id and vid not in seen:
            seen.add(vid)
            vid = headers[vid][1].parent_vdi_id
            d += 1
        return d

    parents = {h.parent_vdi_id for _, h in headers.values()}
    for vid in sorted(headers, key=lambda v: (depth(v), v)):
        e, h = headers[vid]
        parent = h.parent_vdi_id if h.parent_vdi_id in headers else 0
        if h.is_snapshot and vid not in parents:
            parent_arg = vid  # a snapshot nobody descends from: mark itself
        else:
            parent_arg = parent
        args = VdiStateArgs(old_vid=parent_arg, new_vid=vid, copies=e.copies, set_bitmap=1,
                            copy_policy=e.copy_policy, block_size_shift=e.block_size_shift)
        rsp, _ = client.request(Op.NOTIFY_VDI_ADD, args.pack(), check=False)
        if rsp.result not in (Res.SUCCESS,):
            raise SheepdogError(rsp.result, f"registering VDI {h.name}")
