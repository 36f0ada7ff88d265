"""Cluster snapshots (`dog cluster snapshot`): a content-addressed archive
of every object of every VDI, read and written through sheepblk.client."""

from .archive import Archive, FarmError, SaveStats, SnapLog, TrunkEntry, live_vdis, load, save

__all__ = ["Archive", "FarmError", "SaveStats", "SnapLog", "TrunkEntry", "live_vdis", "load",
           "save"]
