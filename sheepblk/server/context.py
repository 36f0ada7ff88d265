"""What an op handler, recovery's helpers and the store hooks may use of
the node: the services, and the cluster's state only through a read-only
`ClusterView`. A `Sheep` (node.py) is one; only the daemon that wires the
node imports node.py, so these modules name this protocol instead and
cannot reach the coordinator or the stream's private state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import trio

from ..proto import ClusterStatus, SdNode
from ..store import EpochStore, NodeConfig, ObjectStore

if TYPE_CHECKING:
    from .buffers import BufferPool
    from .gateway import Gateway
    from .lock_lease import LockLeases
    from .options import Options
    from .peer import PeerOps
    from .peer_client import PeerClient
    from .recovery import Recovery
    from .stats import RequestStats
    from .stream_calls import ClusterCalls
    from .vdi_ops import VdiOps
    from .vdi_table import VdiTable
    from .view import ClusterView


class NodeContext(Protocol):
    view: ClusterView
    me: SdNode
    root: Path
    opts: Options
    store: ObjectStore
    table: VdiTable
    epochs: EpochStore
    peer: PeerOps
    peers: PeerClient
    gateway: Gateway
    vdi: VdiOps
    leases: LockLeases
    buffers: BufferPool
    recovery: Recovery
    stats: RequestStats
    loglevel: int

    # the cluster's state (read-only: the coordinator changes it)
    @property
    def epoch(self) -> int: ...

    @property
    def members(self) -> list[SdNode]: ...

    @property
    def status(self) -> ClusterStatus: ...

    @property
    def config(self) -> NodeConfig: ...

    @property
    def formatted(self) -> bool: ...

    @property
    def departed(self) -> dict[str, str]: ...

    @property
    def auto_vnodes(self) -> bool: ...

    @property
    def nr_vnodes(self) -> int: ...

    @property
    def space(self) -> int: ...

    calls: ClusterCalls  # this node's side of the ordered stream
    stopped: trio.Event

    async def wait_epoch(self, epoch: int, delay: float) -> None: ...

    def fenced(self) -> bool: ...

    def stream_idle(self) -> bool: ...

    # what cluster ops and local ops change, through the coordinator
    def adopt_format(self, config: NodeConfig) -> None: ...

    def set_auto_recovery(self, on: bool) -> None: ...

    def set_cluster_copies(self, copies: int) -> None: ...

    def placement_changed(self) -> None: ...

    def shut_down(self) -> None: ...

    def kill(self) -> None: ...

    def fail_stop(self, why: str) -> None: ...

    def set_loglevel(self, level: int) -> None: ...

    def update_node(self, *, nr_vnodes: int | None = None, space: int | None = None) -> None: ...
