"""A sheep's Prometheus metrics, made at scrape time.

Nothing here runs per request: the counters are stats.py's plain numbers,
and state (epoch, members, recovery, locks, disks) is read from the node
as it is when scraped. Names follow Prometheus' conventions (the README's
"Metrics" section lists them): `sheepblk_` first, units in the name,
`_total` for counters.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ..proto import ClusterStatus, LockState, Op, Res
from ..store.md import MdStore
from .stats import RequestStats

if TYPE_CHECKING:
    from .context import NodeContext


def _name(enum_type: type[Op] | type[Res], value: int) -> str:
    try:
        return enum_type(value).name.lower()
    except ValueError:
        return f"{value:#x}"


def request_families(stats: RequestStats, prefix: str = "sheepblk") -> Iterator[Metric]:
    """The families of a RequestStats (also sheepfs' and the plugin's)."""
    requests = CounterMetricFamily(f"{prefix}_requests", "Requests answered, by opcode and result",
                                   labels=["op", "result"])
    for (op, res), n in sorted(dict(stats.counts).items()):
        requests.add_metric([_name(Op, op), _name(Res, res)], n)
    yield requests
    latency = HistogramMetricFamily(
        f"{prefix}_request_duration_seconds",
        "Time from a request's header to its answer, for object reads, writes and flushes",
        labels=["role", "io"])
    for (role, io), hist in stats.latency.items():
        latency.add_metric([role, io], hist.cumulative(), hist.total)
    yield latency
    for what, numbers in (("received", stats.bytes_in), ("sent", stats.bytes_out)):
        fam = CounterMetricFamily(f"{prefix}_{what}_bytes",
                                  f"Payload bytes {what}, by role (gateway: clients' object I/O, "
                                  "peer: other sheep's, other: the rest)", labels=["role"])
        for role, n in numbers.items():
            fam.add_metric([role], n)
        yield fam
    active = GaugeMetricFamily(f"{prefix}_requests_in_flight", "Requests being served, by role",
                               labels=["role"])
    for role, n in stats.active.items():
        active.add_metric([role], n)
    yield active
    yield GaugeMetricFamily(f"{prefix}_connections", "Client and peer connections open",
                            value=stats.connections)


# Walking the disks (a stat per object) takes at most 1/WALK_SHARE of the
# time: the next walk waits WALK_SHARE times as long as the last one took.
# A small store is walked at every scrape; one of a million objects, whose
# walk takes seconds, every few minutes (its per-disk numbers lag so much).
WALK_SHARE = 100


class SheepCollector:
    """Reads one sheep when scraped. `refresh` (before each scrape) walks
    the disks in a worker thread when WALK_SHARE allows; the rest is read
    in place."""

    def __init__(self, node: NodeContext) -> None:
        self.node = node
        self.disks: list[tuple[Path, int, int]] = []
        self._next_walk: float | None = None

    async def refresh(self) -> None:
        store = self.node.store
        if not isinstance(store, MdStore) or self.node.opts.gateway:
            return
        start = trio.current_time()
        if self._next_walk is not None and start < self._next_walk:
            return
        self.disks = await trio.to_thread.run_sync(store.usage)
        end = trio.current_time()
        self._next_walk = end + WALK_SHARE * (end - start)

    def collect(self) -> Iterator[Metric]:
        node = self.node
        yield from request_families(node.stats)
        yield GaugeMetricFamily("sheepblk_epoch", "The cluster's epoch as this node sees it",
                                value=node.epoch)
        status = GaugeMetricFamily("sheepblk_cluster_status",
                                   "1 for the cluster's status as this node sees it",
                                   labels=["status"])
        for s in ClusterStatus:
            status.add_metric([s.name.lower()], 1 if node.status == s else 0)
        yield status
        yield GaugeMetricFamily("sheepblk_cluster_members", "Nodes in the cluster",
                                value=len(node.members))
        yield GaugeMetricFamily("sheepblk_halted",
                                "1 while object I/O halts (too few zones for the copies)",
                                value=1 if node.formatted and node.view.halted(
                                    0, node.config.copies) else 0)
        yield from self._recovery()
        yield from self._locks()
        yield from self._disks()

    def _recovery(self) -> Iterator[Metric]:
        rec = self.node.recovery
        state = rec.state()
        yield GaugeMetricFamily("sheepblk_recovery_running", "1 while this node recovers",
                                value=state.in_recovery)
        yield GaugeMetricFamily("sheepblk_recovery_objects",
                                "Objects the running recovery has to do",
                                value=state.nr_total)
        yield GaugeMetricFamily("sheepblk_recovery_objects_done",
                                "Objects the running recovery has done", value=state.nr_finished)
        yield CounterMetricFamily("sheepblk_recovered_objects",
                                  "Objects recovery stored here since the node started",
                                  value=rec.objects_moved)
        yield CounterMetricFamily("sheepblk_recovered_bytes",
                                  "Bytes recovery stored here since the node started",
                                  value=rec.bytes_moved)

    def _locks(self) -> Iterator[Metric]:
        node = self.node
        locked = GaugeMetricFamily("sheepblk_vdi_locks", "VDIs locked in the cluster, by kind",
                                   labels=["kind"])
        states = [e.lock_state for e in list(node.table.entries.values())]
        locked.add_metric(["exclusive"], states.count(LockState.LOCKED))
        locked.add_metric(["shared"], states.count(LockState.SHARED))
        yield locked
        yield GaugeMetricFamily("sheepblk_lock_leases",
                                "Lock sessions held by this node's clients (lock_lease.py)",
                                value=len(node.leases.sessions()))

    def _disks(self) -> Iterator[Metric]:
        objects = GaugeMetricFamily("sheepblk_disk_objects", "Objects stored, per disk",
                                    labels=["disk"])
        used = GaugeMetricFamily("sheepblk_disk_used_bytes",
                                 "Bytes allocated to objects, per disk", labels=["disk"])
        for path, n, b in self.disks:
            objects.add_metric([str(path)], n)
            used.add_metric([str(path)], b)
        yield objects
        yield used


def sheep_registry(node: NodeContext) -> tuple[CollectorRegistry, SheepCollector]:
    """A registry of this node's own (not the process-wide default one, so
    several sheep in one test process keep theirs apart)."""
    registry = CollectorRegistry(auto_describe=False)
    collector = SheepCollector(node)
    registry.register(collector)
    return registry, collector
