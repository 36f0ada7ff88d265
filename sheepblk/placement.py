"""Which placement a cluster uses, chosen at format and kept in its flags.

Why a flag: every member, every epoch log and dog must agree on the owners
of an object, and the cluster flags already travel with the format to
joiners and into each epoch's log. Clusters formatted without the flag,
Sheepdog's among them, keep Sheepdog's ring.
"""

from __future__ import annotations

from collections.abc import Iterable

from .proto import SdNode
from .proto.constants import ClusterFlag
from .ring import Ring
from .straw2 import Straw2Ring

PlacementRing = Ring | Straw2Ring

# Name for `dog cluster format --placement`, and the flag that records it.
PLACEMENTS = {"sheepdog": 0, "straw2": int(ClusterFlag.STRAW2)}


def placement_name(flags: int) -> str:
    return "straw2" if flags & ClusterFlag.STRAW2 else "sheepdog"


def ring_for(nodes: Iterable[SdNode], flags: int) -> PlacementRing:
    """The owners of objects for a membership, by the cluster's placement."""
    if flags & ClusterFlag.STRAW2:
        return Straw2Ring(nodes, by_space=bool(flags & ClusterFlag.AUTO_VNODES))
    return Ring(nodes)
