"""The daemon's side of multi-disk nodes and farm loads.

- SD_OP_MD_INFO / MD_PLUG / MD_UNPLUG (local ops, `dog node md ...`), in
  Sheepdog's layouts: `struct sd_md_info` (64 x {int idx; u64 free; u64
  used; char path[4096]} then int nr) and a NUL-terminated,
  comma-separated path list.
- the disk-lost hook: MdStore calls it from an I/O thread when it drops a
  broken disk; the node then runs a recovery pass, which fetches from the
  other nodes every object it owns but no longer holds.
- SD_OP_NOTIFY_VDI_ADD's main half (`dog cluster snapshot load` registers
  the VDIs it restored), as Sheepdog's cluster_notify_vdi_add.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from ..proto import Request, Res, VdiStateArgs
from ..proto.md_info import pack_md_info
from ..store.md import DiskError, MdStore
from . import md_paths
from .reply import Caller, Reply
from .vdi_table import VdiEntry, VdiTable
from .wire_text import shown

if TYPE_CHECKING:
    from .context import NodeContext

log = logging.getLogger("sheep.md")


async def md_info(node: NodeContext, req: Request, data: memoryview | None,
                  caller: Caller) -> Reply:
    store = node.store
    if not isinstance(store, MdStore):
        return Reply(Res.NO_SUPPORT)
    body = pack_md_info(await trio.to_thread.run_sync(store.info))
    return Reply(data=body[:req.data_length])


async def md_plug(node: NodeContext, req: Request, data: memoryview | None,
                  caller: Caller) -> Reply:
    return await _plug_or_unplug(node, data, plug=True)


async def md_unplug(node: NodeContext, req: Request, data: memoryview | None,
                    caller: Caller) -> Reply:
    return await _plug_or_unplug(node, data, plug=False)


async def _plug_or_unplug(node: NodeContext, data: memoryview | None, *, plug: bool) -> Reply:
    store = node.store
    if not isinstance(store, MdStore):
        return Reply(Res.NO_SUPPORT)
    what = "plug" if plug else "unplug"
    disks = [d.path for d in store.all_disks()]

    def checked() -> list[Path]:
        paths = md_paths.parse(data)
        if plug:
            return md_paths.check_plug(paths, disks, node.root)
        return md_paths.check_unplug(paths, disks)

    try:
        paths = await trio.to_thread.run_sync(checked)
    except md_paths.DiskPathRefused as e:  # the client's mistake, as other refusals
        log.warning("md %s refused: %s", what, e)
        return Reply(Res.INVALID_PARMS)
    if not paths:  # every path named is plugged already: nothing changes,
        # which Sheepdog answers as a failure (`dog` says so)
        log.warning("md plug refused: every path is plugged already")
        return Reply(Res.INVALID_PARMS)
    fn = store.plug if plug else store.unplug
    named = ",".join(shown(str(p)) for p in paths)
    try:
        moved = await trio.to_thread.run_sync(fn, paths)
    except (DiskError, OSError) as e:
        log.error("md %s %s: %s", what, named, e)
        return Reply(Res.UNKNOWN)
    log.info("md %s %s: %d objects moved", what, named, moved)
    return Reply()


class DiskLostHook:
    """Called by MdStore (from an I/O thread) when a disk is dropped."""

    def __init__(self, node: NodeContext, nursery: trio.Nursery) -> None:
        self.node = node
        self.nursery = nursery
        self.token = trio.lowlevel.current_trio_token()

    def __call__(self, path: Path) -> None:
        try:
            trio.from_thread.run_sync(self._kick, path, trio_token=self.token)
        except RuntimeError:  # already in the trio thread
            self._kick(path)

    def _kick(self, path: Path) -> None:
        node = self.node
        if isinstance(node.store, MdStore) and not node.store.all_disks():
            node.fail_stop(f"every disk of this node is lost (the last: {path})")
            return
        if len(node.members) > 1:
            log.warning("disk %s lost: recovering its objects from other nodes", path)
            node.recovery.start(self.nursery, node.epoch)
        else:
            log.error("disk %s lost: its objects have no other copy on a single node", path)


def install(node: NodeContext, nursery: trio.Nursery) -> None:
    """Hook a node's MdStore to the node: lost disks start a recovery
    pass, corrupt objects a repair from another copy, each a task in
    `nursery` (the daemon's)."""
    from .farm_repair import Repairer

    if isinstance(node.store, MdStore):
        node.store.on_disk_lost = DiskLostHook(node, nursery)
        node.store.on_corrupt = Repairer(node, nursery)


def notify_vdi_add(table: VdiTable, req: Request) -> int:
    """Register a VDI restored by `dog cluster snapshot load`: old_vid (if
    any) becomes a snapshot, new_vid a VDI whose parent it is. old == new
    marks a snapshot that no restored VDI names as parent."""
    s = VdiStateArgs.unpack(req.args)
    if not s.new_vid:
        return Res.INVALID_PARMS
    parent = s.old_vid if s.old_vid != s.new_vid else 0
    prev = table.get(s.new_vid)
    table.add(VdiEntry(s.new_vid, s.copies, s.copy_policy, s.block_size_shift or 22,
                       snapshot=bool(prev and prev.snapshot), parent=parent))
    if s.old_vid:
        table.mark_snapshot(s.old_vid)
    return Res.SUCCESS
