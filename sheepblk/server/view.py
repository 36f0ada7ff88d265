"""What the rest of the server may know of the cluster, read-only.

The gateway, recovery, repair and the ops ask where an object lives, how
many copies it has, which ring an epoch had and whether I/O must halt;
none of them may change members, epochs or status (only the coordinator
does, as the ordered stream says). This view answers from the
coordinator's state, the VDI table and the epoch logs, and caches the
rings it builds (a ring is derived from an epoch's node list, so the
cache is dropped when the node rewrites a log: `forget_ring(s)`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..placement import PlacementRing, ring_for
from ..proto import ClusterStatus, SdNode, ec, get_objsize, is_data_obj, oid_to_vid
from ..proto.constants import SD_DEFAULT_BLOCK_SIZE_SHIFT, SD_DEFAULT_COPIES, ClusterFlag
from ..store import EpochStore, NodeConfig
from .coordinator import Coordinator
from .vdi_table import VdiTable

# Past epochs' rings kept (stale.purge looks EPOCHS_BACK = 8 epochs back
# from the one it purges, recovery at its base and target).
RINGS_KEPT = 12


class ClusterView:
    """Resource handling: holds only caches of rings."""

    def __init__(self, me: SdNode, coord: Coordinator, table: VdiTable,
                 epochs: EpochStore, fenced: Callable[[], bool] = lambda: False) -> None:
        self.me = me
        # Whether the others may have expelled us unbeknown to us (the
        # node's driver says, Sheep.fenced): no client I/O is served then.
        self.fenced = fenced
        self._coord = coord
        self._table = table
        self._epochs = epochs
        self._ring: PlacementRing | None = None
        self._ring_key: tuple[list[SdNode], int] = ([], 0)
        self._rings: dict[int, PlacementRing | None] = {}
        self._max_zones_seen, self._zones_at = 1, 0

    # ---- the coordinator's state ----

    @property
    def epoch(self) -> int:
        return self._coord.epoch

    @property
    def members(self) -> list[SdNode]:
        return self._coord.members

    @property
    def status(self) -> ClusterStatus:
        return self._coord.status

    @property
    def config(self) -> NodeConfig:
        return self._coord.config

    @property
    def formatted(self) -> bool:
        return self._coord.formatted

    def is_member(self, node: SdNode) -> bool:
        return any(m.nid == node.nid for m in self.members)

    # ---- placement and sizes ----

    def current_ring(self) -> PlacementRing:
        key = (list(self.members), self.config.flags)
        if self._ring is None or self._ring_key != key:
            self._ring = ring_for(self.members or [self.me], self.config.flags)
            self._ring_key = key
        return self._ring

    def copies_of(self, oid: int) -> int:
        e = self._table.get(oid_to_vid(oid))
        return (e.copies if e else 0) or self.config.copies or SD_DEFAULT_COPIES

    def ec_of(self, oid: int, policy: int = 0) -> tuple[int, int] | None:
        """(D, P) when `oid` is an erasure-coded data object, else None.
        Only data objects are coded; inodes and the VDI's other objects
        are replicated on D+P nodes, as Sheepdog's is_erasure_oid says.
        `policy`: what the request says (sd_req.obj.copy_policy), used
        only for a VDI not registered yet (a cluster snapshot's load
        writes objects first), as Sheepdog's gateway does."""
        if not is_data_obj(oid):
            return None
        e = self._table.get(oid_to_vid(oid))
        if e is not None:
            policy = e.copy_policy
        if not policy:
            return None
        try:
            return ec.policy_dp(policy)
        except ec.PolicyError:
            return None

    def owners_in(self, ring: PlacementRing, oid: int, copies: int = 0) -> tuple[SdNode, ...]:
        """An object's owners by `ring`. An erasure-coded object's strip i
        lives on the i-th owner, one per zone: with fewer zones than
        strips, the last strips have no owner (they are rebuilt when
        zones come back) rather than a second strip in a zone."""
        code = self.ec_of(oid)
        if code is not None:
            return ring.oid_to_nodes(oid, sum(code))[:ring.nr_zones]
        return ring.oid_to_nodes(oid, copies or self.copies_of(oid))

    def placement(self, oid: int, copies: int) -> Sequence[SdNode]:
        """The owners of an object: this node alone while it is the only
        member, else the ring of the current members."""
        if len(self.members) <= 1:
            return [self.me]
        return self.owners_in(self.current_ring(), oid, copies) or [self.me]

    def halted(self, oid: int, copies: int) -> bool:
        """Too few zones alive for a majority of the object's copies (as
        many as the cluster ever had zones for: a one-node cluster with
        copies=3 runs, a three-node one down to one zone does not). An
        erasure-coded object needs D zones: D strips give it back."""
        code = self.ec_of(oid)
        if code is not None:
            return self.current_ring().nr_zones < code[0]
        copies = min(copies or self.copies_of(oid), self._max_zones())
        return self.current_ring().nr_zones < copies // 2 + 1

    def strict_short(self, oid: int, copies: int) -> bool:
        """In strict mode, fewer live zones than the object's copies (data
        and parity strips for erasure coding): writes halt."""
        return (bool(self.config.flags & ClusterFlag.STRICT)
                and self.current_ring().nr_zones < (copies or self.copies_of(oid)))

    def _max_zones(self) -> int:
        """The most zones any epoch of this cluster had, from the epochs'
        node lists (not their rings: a hundred nodes make a hundred
        epochs, and a ring of each would be a hundred megabytes)."""
        if self._zones_at > self.epoch:
            self._max_zones_seen, self._zones_at = 1, 0  # the logs were rewritten
        while self._zones_at < self.epoch:
            self._zones_at += 1
            got = self._epochs.read(self._zones_at)
            if got and got[0]:
                zones = len({n.zone for n in got[0] if n.nr_vnodes > 0})
                self._max_zones_seen = max(self._max_zones_seen, zones)
        return self._max_zones_seen

    def ring_at(self, epoch: int) -> PlacementRing | None:
        """The ring of a past (or the current) epoch, from its log. The
        last RINGS_KEPT asked for are kept: recovery and the stale-copy
        purge look a few epochs back, and each ring of a big cluster holds
        a list per vnode and its cache of answers."""
        if epoch in self._rings:
            self._rings[epoch] = self._rings.pop(epoch)  # most recently used last
        else:
            got = self._epochs.read(epoch) if epoch > 0 else None
            self._rings[epoch] = ring_for(got[0], self.config.flags) if got and got[0] else None
            while len(self._rings) > RINGS_KEPT:
                del self._rings[next(iter(self._rings))]
        return self._rings[epoch]

    def forget_ring(self, epoch: int) -> None:
        self._rings.pop(epoch, None)
        self._zones_at = min(self._zones_at, epoch - 1)

    def forget_rings(self) -> None:
        self._rings.clear()
        self._max_zones_seen, self._zones_at = 1, 0

    def object_size(self, oid: int) -> int:
        if is_data_obj(oid):
            e = self._table.get(oid_to_vid(oid))
            shift = e.block_size_shift if e else self.config.block_size_shift
            return get_objsize(oid, 1 << (shift or SD_DEFAULT_BLOCK_SIZE_SHIFT))
        return get_objsize(oid)

    def stored_size(self, oid: int, policy: int = 0) -> int:
        """What a node stores of the object: the whole object, or for an
        erasure-coded one its strip and the strip's trailer."""
        code = self.ec_of(oid, policy)
        if code is None:
            return self.object_size(oid)
        return ec.stored_size(self.object_size(oid), code[0])
