"""Cluster snapshots (`dog cluster snapshot`): a content-addressed archive
of every object of every VDI, read and written through sheepblk.client.

Why not "farm", as Sheepdog's dog/farm/ it follows: here farm is the name
of a store backend (sheepblk.store.farm, `dog cluster format -b farm`),
which has nothing to do with these archives."""

from .archive import Archive, ArchiveError, SaveStats, SnapLog, TrunkEntry, live_vdis, load, save

__all__ = ["Archive", "ArchiveError", "SaveStats", "SnapLog", "TrunkEntry", "live_vdis",
           "load", "save"]
