"""The cluster's state on this node, as a state machine without I/O.

Every sheep applies the same ordered stream of events (a node joined or
left, a message) and must reach the same state: members, epoch, cluster
status, who has claimed and synced, the VDI table. This module is that
fold, and only that: it owns the state, takes the events, and *yields*
what must happen in the world as actions (`Broadcast`, `ApplyMain`,
`WriteEpoch`, `StartRecovery`, ...), in the order it must happen. The
node (node.py) performs each action before it asks for the next, so an
action's effect lands exactly where it would if the code did it inline;
the coordinator never awaits, opens a file or touches a socket. Tests
drive it with events made by hand and read the actions back
(tests/test_coordinator.py), the way h11 and hypercorn test their
protocol cores.

The ordered stream: cluster ops arrive as `block` (a work half runs on the
asking node while every node holds the stream) or `notify` messages; a
block's notify carries its result. Membership (see membership.py): a
joiner parks its events until the `sync` message of a member brings it
the cluster's state; every membership change of a running cluster makes a
new epoch and starts recovery; a restarted cluster waits for the nodes of
its last epoch, learnt from the `claim` messages of the nodes that come
back.

A node that cannot do what the others did leaves (`fail_stop`, as C
Sheepdog aborts) rather than serve from a state that has drifted.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

from ..cluster.driver import Event, Joined, Left, Message
from ..proto import ClusterStatus, NodeId, Res, SdNode
from ..proto.constants import ClusterFlag
from ..proto.node import addr_to_bytes
from ..ring import weight_by_space
from ..store import NodeConfig
from . import membership as mship
from .messages import BadMessage, ClusterMsg
from .vdi_table import VdiTable

log = logging.getLogger("sheep")

EpochLog = tuple[list[SdNode], int]  # an epoch's nodes and when it began
DEPARTED_KEPT = 16  # nodes remembered as having left on a fault


def _strategy(auto: bool) -> str:
    return "auto" if auto else "fixed (sheep -V)"


# ---- actions: what the node must do, in order ----

@dataclass(frozen=True)
class Broadcast:
    """Send this message to the cluster (without waiting for it)."""
    msg: ClusterMsg


@dataclass(frozen=True)
class StartWork:
    """Our own block reached the head of the stream: run its work half,
    then broadcast its notify."""
    msg: ClusterMsg


@dataclass(frozen=True)
class ApplyMain:
    """Run this cluster op's main half here, then answer its caller if it
    is ours."""
    msg: ClusterMsg


@dataclass(frozen=True)
class Answer:
    """The answer to our own membership request (`dog cluster recover force`)."""
    op_id: int
    result: int


@dataclass(frozen=True)
class SaveConfig:
    config: NodeConfig


@dataclass(frozen=True)
class WriteEpoch:
    epoch: int
    nodes: list[SdNode]
    stamp: int


@dataclass(frozen=True)
class ClearEpochs:
    """Forget every epoch log (a new or an adopted cluster)."""


@dataclass(frozen=True)
class EmptyStore:
    """Empty the store, reopened as `kind` first when that is another
    backend (a node becoming a member of a formatted cluster)."""
    kind: str


@dataclass(frozen=True)
class MoveAllToStale:
    """Every object held moves to .stale/ as of `epoch` (a node that was
    away while the cluster ran; see `_apply_sync`)."""
    epoch: int


@dataclass(frozen=True)
class EpochMoved:
    """The epoch is now `epoch`: wake whoever waits for a new one."""
    epoch: int


@dataclass(frozen=True)
class StartRecovery:
    epoch: int
    reconcile: bool = False
    same_ring: bool = False


@dataclass(frozen=True)
class StopRecovery:
    pass


@dataclass(frozen=True)
class Expelled:
    """The others expelled us: connections to them, from before, may sit
    on a link that was cut (TCP backs its retries off for many seconds
    after a partition heals): drop them, so joining again talks afresh."""


@dataclass(frozen=True)
class PurgeStale:
    """Every member has recovered `epoch` (`full`: nobody missed an
    object): see stale.purge for what goes."""
    epoch: int
    full: bool


@dataclass(frozen=True)
class FailStop:
    """This node leaves the cluster for good (log `why`, then stop)."""
    why: str


@dataclass(frozen=True)
class Stop:
    """Stop once the answer that asked for it has gone out."""


Action = (Broadcast | StartWork | ApplyMain | Answer | SaveConfig | WriteEpoch | ClearEpochs
          | EmptyStore | MoveAllToStale | EpochMoved | StartRecovery | StopRecovery
          | Expelled | PurgeStale | FailStop | Stop)
Steps = Generator[Action, None, None]


@dataclass
class _JoinState:
    """Where this node is in the join protocol (see membership.py)."""
    joined: bool = False
    sync_wait: int | None = None  # seq of our Joined, until a sync came
    parked: list[Event] = field(default_factory=list)
    sync_from: set[str] = field(default_factory=set)  # members when we joined, still here
    pending_sync: dict[str, int] = field(default_factory=dict)  # joiner -> its Joined seq
    claimed: set[str] = field(default_factory=set)
    unclean_claims: set[str] = field(default_factory=set)


class Coordinator:
    """Owns members, epoch, status, config, the ordered queue and the join
    protocol; changes the VDI table as the stream says (the ops' main
    halves change it too, through the node). Every input is a generator of
    actions (`receive`, `recovered`, `format`, `shut_down`, `kill`,
    `fail_stop`); nothing changes until it is iterated, and the caller
    must perform each action before taking the next. Error handling: an
    undecodable message is logged and dropped; anything else raised is a
    bug the node answers with fail-stop."""

    def __init__(self, me: SdNode, config: NodeConfig, table: VdiTable, *, epoch: int,
                 epochs: dict[int, EpochLog], unclean: bool = False, auto_vnodes: bool = False,
                 now: Callable[[], int] = lambda: int(time.time())) -> None:
        self.me = me
        # This sheep's vnodes strategy (started without -V): what an
        # unformatted node weighs members by, and what a formatted
        # cluster's strategy must be for it to join.
        self.local_auto = auto_vnodes
        self.key = str(me.nid)
        self.config = config
        self.table = table
        self.epoch = epoch if config.ctime else 0
        # The recent epoch logs: at least the last SYNC_EPOCHS (what a sync
        # or a claim carries) and every one written since we started.
        self._epochs = dict(epochs)
        self.unclean = unclean  # the last run ended without its final flush
        # This node's last run ended with `dog cluster shutdown` (its own
        # config, before a sync replaces it): only then does a resume at
        # the same ring skip recovery, as in Sheepdog.
        self._shut_down_cleanly = config.shutdown
        self._now = now
        self.status = ClusterStatus.WAIT
        # The members as they announced themselves (their latest update,
        # see _on_update), and as the ring sees them (weighted by space
        # under the auto strategy): members.
        self._announced: list[SdNode] = []
        self._updates: dict[str, SdNode] = {}
        self.members: list[SdNode] = []
        self.failed = ""  # why this node left the cluster (fail-stop)
        self._queue: deque[ClusterMsg | Event] = deque()
        self._running_block = False
        self._join = _JoinState()
        # The others expelled us (_own_leave): nothing applies until our
        # own Joined again.
        self._expelled = False
        # Expelled, and not yet back in step: from our own Left until a
        # member's sync after our next Joined (or we are alone).
        self.rejoining = False
        self.own_joins = 0  # our own Joined events applied (see Sheep.fenced)
        self._recovered: dict[int, set[str]] = {}
        # Nodes that left on a fault, and why (the last DEPARTED_KEPT).
        self.departed: dict[str, str] = {}
        self._recovered_ok: dict[int, set[str]] = {}

    # ---- what the node reads ----

    @property
    def formatted(self) -> bool:
        return self.config.ctime != 0

    def stream_idle(self) -> bool:
        """Nothing ordered is queued or running here."""
        return not self._queue and not self._running_block

    def in_step(self) -> bool:
        """Joined, synced, one of several, and serving or waiting: where a
        local answer could be older than what another node has applied
        (see ClusterCalls.caught_up)."""
        return (self._join.joined and self._join.sync_wait is None and len(self.members) > 1
                and self.status in (ClusterStatus.OK, ClusterStatus.WAIT))

    @property
    def auto_vnodes(self) -> bool:
        """Whether members' vnodes follow their space (Sheepdog's auto
        strategy): the cluster's choice once formatted (a node whose own
        differs never gets this far), else this sheep's."""
        if self.formatted:
            return bool(self.config.flags & ClusterFlag.AUTO_VNODES)
        return self.local_auto

    def announced(self, nid: NodeId) -> SdNode | None:
        """A member as it announced itself, before any weighting."""
        return next((n for n in self._announced if n.nid == nid), None)

    def epoch_nodes(self, epoch: int) -> list[SdNode]:
        got = self._epochs.get(epoch) if epoch else None
        return got[0] if got else []

    # ---- inputs ----

    def receive(self, ev: Event) -> Steps:
        """One event of the driver's ordered stream."""
        if self._join.sync_wait is not None:
            yield from self._parked_event(ev)
            return
        if isinstance(ev, Joined) and ev.node.nid == self.me.nid:
            yield from self._own_join(ev)
            return
        if self._expelled:
            return  # not ours to apply: our next Joined brings the state (_own_leave)
        if isinstance(ev, Left) and ev.node.nid == self.me.nid and self._join.joined:
            yield from self._own_leave(ev)
            return
        if isinstance(ev, Message):
            try:
                msg = ClusterMsg.decode(ev.payload)
            except (BadMessage, KeyError, ValueError) as e:
                log.warning("dropping undecodable cluster message from %s: %s", ev.sender, e)
                return
            if msg.kind == "notify" and msg.blocked:
                yield from self._block_done(msg)
            else:
                self._queue.append(msg)
        else:
            if isinstance(ev, Left):
                head = self._queue[0] if self._queue else None
                if (isinstance(head, ClusterMsg) and head.kind == "block"
                        and head.origin == str(ev.node.nid)):
                    self._queue.popleft()
                    self._running_block = False
            self._queue.append(ev)
        yield from self._drain()

    def recovered(self, epoch: int, ok: bool) -> Steps:
        """Our recovery for `epoch` finished (`ok`: every object we own is
        here): tell everybody."""
        if epoch == self.epoch:
            yield self._send(mship.RECOVERED, {"epoch": epoch, "ok": ok})

    def format(self, config: NodeConfig) -> Steps:
        """MAKE_FS's main half, the store emptied: a new cluster at epoch 1
        with this node's members, everything before forgotten."""
        self.config = config
        self._weigh()  # the format chose the vnodes strategy
        yield SaveConfig(config)
        yield from self._clear_epochs()
        self.table.reset()
        yield StopRecovery()
        yield from self._set_epoch(0)
        yield from self._new_epoch()
        self.status = ClusterStatus.OK

    def set_auto_recovery(self, on: bool) -> None:
        """ENABLE_RECOVER / DISABLE_RECOVER's main half: the switch every
        node holds the same (stream order), that joiners take with the
        config; nothing to save (a restart enables recovery again)."""
        self.config.disable_recovery = not on

    def set_copies(self, copies: int) -> Steps:
        """ALTER_CLUSTER_COPY's main half: the copies of VDIs created from
        now on (those that exist keep theirs)."""
        self.config.copies = copies
        yield SaveConfig(self.config)

    def placement_changed(self) -> Steps:
        """ALTER_VDI_COPY's main half, the VDI's copies changed: a recovery
        at the same epoch and ring moves its objects to their new owners.
        The epoch's recovered tally starts over, so stale copies are purged
        only once every member has finished this run too."""
        if self.status != ClusterStatus.OK:
            return
        self._recovered.pop(self.epoch, None)
        self._recovered_ok.pop(self.epoch, None)
        yield StartRecovery(self.epoch, same_ring=True)

    def shut_down(self) -> Steps:
        """SHUTDOWN's main half: remember a clean cluster-wide stop, then go."""
        yield StopRecovery()
        self.status = ClusterStatus.SHUTDOWN
        self.config.shutdown = True
        if self.formatted:
            yield SaveConfig(self.config)
        yield Stop()

    def kill(self) -> Steps:
        """KILL_NODE: stop serving at once, then stop."""
        self.status = ClusterStatus.KILLED
        yield Stop()

    def fail_stop(self, why: str) -> Steps:
        """Leave the cluster for good: this node can no longer hold what
        the cluster gives it. Requests are answered KILLED from now on, a
        code gateways retry, so the write that found the fault goes on at
        the next epoch, without us (Sheepdog answers an EIO the same way
        and leaves the cluster)."""
        if self.failed:
            return
        self.failed = why
        self.status = ClusterStatus.KILLED
        yield self._send(mship.FAILED, {"why": why})  # the others keep it
        yield FailStop(why)

    # ---- the ordered stream ----

    def _block_done(self, msg: ClusterMsg) -> Steps:
        """A block's notify: its result, for every node's main half."""
        head = self._queue[0] if self._queue else None
        if (isinstance(head, ClusterMsg) and head.kind == "block"
                and head.origin == msg.origin and head.op_id == msg.op_id):
            self._queue.popleft()
            self._running_block = False
            yield ApplyMain(msg)
        elif not any(isinstance(q, ClusterMsg) and q.kind == "block"
                     and q.origin == msg.origin and q.op_id == msg.op_id
                     for q in self._queue):
            # Its block came before we joined: the sync's state may or may
            # not hold it; main halves are idempotent.
            yield ApplyMain(msg)
        else:
            log.warning("notify %s/%d matches no block", msg.origin, msg.op_id)

    def _drain(self) -> Steps:
        while self._queue and not self._running_block:
            head = self._queue[0]
            if isinstance(head, ClusterMsg) and head.kind == "block":
                alive = {str(n.nid) for n in self.members}
                if head.origin not in alive and head.origin != self.key:
                    self._queue.popleft()
                    continue
                self._running_block = True
                if head.origin == self.key:
                    yield StartWork(head)
                return
            self._queue.popleft()
            if isinstance(head, ClusterMsg):
                if head.kind in mship.KINDS:
                    yield from self._apply_member_msg(head)
                else:
                    yield ApplyMain(head)
            elif isinstance(head, Joined | Left):
                yield from self._membership(head)

    # ---- epochs ----

    def _set_epoch(self, epoch: int) -> Steps:
        self.epoch = epoch
        yield EpochMoved(epoch)

    def _write_epoch(self, epoch: int, nodes: list[SdNode], stamp: int | None = None) -> Steps:
        stamp = self._now() if stamp is None else stamp
        self._epochs[epoch] = (list(nodes), stamp)
        yield WriteEpoch(epoch, list(nodes), stamp)

    def _clear_epochs(self) -> Steps:
        self._epochs.clear()
        yield ClearEpochs()

    def _new_epoch(self) -> Steps:
        # Sorted by node id, as Sheepdog keeps an epoch's node list.
        nodes = sorted(self.members, key=lambda n: (addr_to_bytes(n.nid.addr), n.nid.port))
        yield from self._write_epoch(self.epoch + 1, nodes)
        yield from self._set_epoch(self.epoch + 1)
        log.info("epoch %d: %s", self.epoch, ", ".join(str(n.nid) for n in self.members))

    def _epoch_history(self) -> list[tuple[int, list[SdNode], int]]:
        """The last SYNC_EPOCHS epochs, for a node that takes our state."""
        out = []
        for ep in range(max(1, self.epoch - mship.SYNC_EPOCHS + 1), self.epoch + 1):
            got = self._epochs.get(ep)
            if got is not None:
                out.append((ep, got[0], got[1]))
        return out

    # ---- membership ----

    def _set_members(self, nodes: Sequence[SdNode]) -> None:
        self._announced = [self._updates.get(str(n.nid), n) for n in nodes]
        self._weigh()

    def _weigh(self) -> None:
        """members from the announced nodes: under the auto strategy each
        node's vnodes follow its share of the space (as every C sheep
        recomputes them for its vnode info, and logs them in its epochs)."""
        nodes = list(self._announced)
        self.members = weight_by_space(nodes) if self.auto_vnodes else nodes

    def _send(self, kind: str, extra: dict) -> Broadcast:
        return Broadcast(ClusterMsg(kind, 0, self.key, extra=extra))

    def _own_leave(self, ev: Left) -> Steps:
        """Our own Left: the others expelled us (our ZooKeeper session ended
        while we were cut off or stalled) and went on without us. What the
        stream holds from here until our own Joined again (our driver joins
        anew) is theirs: their epochs without us, their recovery of them,
        their "every member recovered". Applied here, it would make us
        recover for a ring we are no member of and then delete every
        object we hold as no longer ours, the last copies among them of
        objects they never saw. So we stop where we are: no recovery, no
        I/O (WAIT), our epoch the last one we were a member of, until our
        Joined and a member's sync (`_take_cluster` then sets our copies
        aside as of that epoch, for recovery to read)."""
        log.warning("expelled from the cluster at epoch %d (our cluster driver session "
                    "ended); serving nothing until we have joined again", self.epoch)
        self._expelled = True
        self.rejoining = True
        self._join.joined = False
        self._queue.clear()
        self._running_block = False
        self._set_members(ev.members)
        if self.status == ClusterStatus.OK:
            self.status = ClusterStatus.WAIT
        yield StopRecovery()
        yield Expelled()

    def _own_join(self, ev: Joined) -> Steps:
        """Our own Joined: alone, we are the cluster; else park events until
        a member's sync message brings us its state."""
        j = self._join
        self._expelled = False
        self.own_joins += 1
        self._queue.clear()
        self._running_block = False
        self._set_members(ev.members)
        j.pending_sync.clear()
        j.claimed.clear()
        j.joined = True
        if len(ev.members) > 1:
            j.sync_wait = ev.seq
            j.parked = []
            j.sync_from = {str(n.nid) for n in ev.members} - {self.key}
            if self.status == ClusterStatus.OK:
                self.status = ClusterStatus.WAIT  # a re-join after a session loss
            log.info("joined as one of %d nodes; waiting for the cluster's state",
                     len(ev.members))
            return
        log.info("joined as the first node")
        self.rejoining = False
        self._claim_alone()
        yield from self._maybe_resume()
        yield from self._after_synced()

    def _claim_alone(self) -> None:
        """We are the cluster for now: our claim is the only one counted."""
        self._join.claimed = {self.key}
        self._join.unclean_claims = {self.key} if self.unclean else set()

    def _after_synced(self) -> Steps:
        if self.formatted and self.status == ClusterStatus.WAIT:
            yield self._send(mship.CLAIM, {
                "epoch": self.epoch,
                "nodes": [mship.node_to_json(n) for n in self.epoch_nodes(self.epoch)],
                "vdis": mship.entries_to_json(self.table, locks=False),
                "config": mship.config_to_json(self.config),
                "epochs": mship.epochs_to_json(self._epoch_history()),
                "unclean": self.unclean})

    def _adopt_config(self, cfg: NodeConfig) -> Steps:
        """Become a member of the formatted cluster `cfg` describes: an
        empty store of its backend, no epochs of our own."""
        yield EmptyStore(cfg.store)
        yield from self._clear_epochs()

    def _adopt_claim(self, msg: ClusterMsg) -> Steps:
        """An unformatted node of a waiting cluster meets the claim of a
        formatted one (Sheepdog's test 070: the old nodes come back to
        new, unformatted ones): it takes that cluster's config and epochs,
        then claims like any member so the cluster can resume with it."""
        x = msg.extra
        cfg = mship.config_from_json(x["config"])
        yield from self._adopt_config(cfg)
        cfg.shutdown = False
        self.config = cfg
        self._weigh()
        yield SaveConfig(cfg)
        for ep, nodes, stamp in mship.epochs_from_json(x.get("epochs", [])):
            yield from self._write_epoch(ep, nodes, stamp)
        log.info("took the cluster of %s (created %#x) at epoch %d", msg.origin,
                 cfg.ctime, int(x["epoch"]))

    def _parked_event(self, ev: Event) -> Steps:
        j = self._join
        if isinstance(ev, Message):
            try:
                msg: ClusterMsg | None = ClusterMsg.decode(ev.payload)
            except (BadMessage, KeyError, ValueError):
                msg = None
            if (msg is not None and msg.kind == mship.SYNC
                    and msg.extra.get("to") == self.key
                    and msg.extra.get("seq") == j.sync_wait):
                parked, j.parked = j.parked, []
                j.sync_wait = None
                yield from self._apply_sync(msg)
                for p in parked:
                    yield from self.receive(p)
                return
        if isinstance(ev, Joined) and ev.node.nid == self.me.nid:
            yield from self._own_join(ev)  # joined again before the sync came
            return
        j.parked.append(ev)
        if isinstance(ev, Left):
            j.sync_from.discard(str(ev.node.nid))
            if not j.sync_from:
                yield from self._take_over()

    def _take_over(self) -> Steps:
        """Every node that was a member when we joined has left before any
        could sync us: nobody left knows more than we do. Go on as the
        first node (what the remaining later joiners will sync from): a
        formatted node waits for its last epoch's nodes, as after a restart."""
        j = self._join
        log.warning("every member left before syncing us; going on with our own state")
        self.rejoining = False
        parked, j.parked = j.parked, []
        j.sync_wait = None
        j.pending_sync.clear()
        self._claim_alone()
        yield from self._maybe_resume()
        yield from self._after_synced()
        for p in parked:
            yield from self.receive(p)

    def _apply_sync(self, msg: ClusterMsg) -> Steps:
        """A member's state, sent for our Joined: take it."""
        j = self._join
        self.rejoining = False
        x = msg.extra
        cfg = mship.config_from_json(x["config"])
        status = ClusterStatus(int(x["status"]))
        j.pending_sync = {k: int(v) for k, v in x["pending"].items()}
        for raw in x.get("updates", []):
            updated = mship.node_from_json(raw)
            self._updates[str(updated.nid)] = updated
        self._set_members(self._announced)
        if cfg.ctime and self.formatted and cfg.ctime != self.config.ctime:
            yield from self.fail_stop(
                f"refusing to join: this node's store belongs to another cluster "
                f"(created {self.config.ctime:#x}, the cluster was created {cfg.ctime:#x})")
            return
        cluster_auto = bool(cfg.flags & ClusterFlag.AUTO_VNODES)
        if cfg.ctime and self.me.nr_vnodes and cluster_auto != self.local_auto:
            # As C sheep's join check: the others have counted us in (an
            # epoch with us), and we leave again (an epoch without us).
            yield from self.fail_stop(
                "refusing to join: the cluster's vnodes strategy is "
                f"{_strategy(cluster_auto)}, this sheep's is {_strategy(self.local_auto)}")
            return
        if not cfg.ctime:
            log.info("joined an unformatted cluster")
            j.claimed = set(x.get("claimed", []))
            j.unclean_claims = set(x.get("unclean", []))
            # A formatted node brings its cluster to the unformatted ones,
            # as Sheepdog's join takes the joiner's cluster info: our claim
            # makes them adopt it (see _adopt_claim).
            yield from self._after_synced()
            return
        yield from self._take_cluster(x, cfg, status)

    def _take_cluster(self, x: dict, cfg: NodeConfig, status: ClusterStatus) -> Steps:
        """The sync of a formatted cluster: its config, epochs, VDIs and
        status become ours (a rejoin keeps what only we know)."""
        j = self._join
        rejoin = self.formatted
        ours = mship.entries_to_json(self.table, locks=False) if rejoin else []
        if not self.formatted:
            yield from self._adopt_config(cfg)
        elif status == ClusterStatus.OK:
            # We were away while the cluster ran: every copy we hold may be
            # old, and a copy left in obj/ would be served as current, to
            # clients and to other nodes' recovery, before our recovery
            # replaced it. As Sheepdog's purge_obj does, each moves to
            # .stale/ as of our last epoch: recovery pulls what we own from
            # the nodes that stayed, and one nobody else has comes back
            # from there.
            log.info("rejoining a running cluster at epoch %d (ours was %d)",
                     int(x["epoch"]), self.epoch)
            yield MoveAllToStale(self.epoch)
        cfg.shutdown = False
        self.config = cfg
        self._weigh()
        yield SaveConfig(cfg)
        history = mship.epochs_from_json(x["epochs"])
        sync_epoch = int(x["epoch"])
        if status == ClusterStatus.OK or not rejoin:
            for ep, nodes, stamp in history:
                yield from self._write_epoch(ep, nodes, stamp)
            yield from self._set_epoch(sync_epoch)
            mship.replace_entries(self.table, mship.entries_from_json(x["vdis"]))
        else:
            mship.merge_entries(self.table, mship.entries_from_json(x["vdis"]))
            if sync_epoch > self.epoch:
                for ep, nodes, stamp in history:
                    if ep > self.epoch:
                        yield from self._write_epoch(ep, nodes, stamp)
                yield from self._set_epoch(sync_epoch)
        j.claimed = set(x.get("claimed", []))
        j.unclean_claims = set(x.get("unclean", []))
        self.status = status
        log.info("joined: cluster %s at epoch %d, %d VDIs", status.name, self.epoch,
                 len(self.table.entries))
        if status == ClusterStatus.OK:
            if ours:
                yield self._send(mship.VDIS, {"vdis": ours})
            yield StartRecovery(self.epoch)
        else:
            yield from self._after_synced()  # a waiting cluster waits for our claim too

    def _syncer(self) -> str | None:
        """The member that answers joiners: the first one already in sync."""
        for n in self.members:
            if str(n.nid) not in self._join.pending_sync:
                return str(n.nid)
        return None

    def _send_sync(self, to: str, seq: int) -> Broadcast:
        j = self._join
        return self._send(mship.SYNC, {
            "to": to, "seq": seq, "config": mship.config_to_json(self.config),
            "status": int(self.status), "epoch": self.epoch,
            "epochs": mship.epochs_to_json(self._epoch_history()),
            "vdis": mship.entries_to_json(self.table, locks=True),
            "pending": {k: v for k, v in j.pending_sync.items() if k != to},
            "updates": [mship.node_to_json(n) for n in self._updates.values()],
            "claimed": sorted(j.claimed),
            "unclean": sorted(j.unclean_claims)})

    def _membership(self, ev: Joined | Left) -> Steps:
        j = self._join
        before = self._syncer()
        key = str(ev.node.nid)
        if isinstance(ev, Left):
            self._updates.pop(key, None)  # a node that comes back announces itself anew
        self._set_members(ev.members)
        if isinstance(ev, Left):
            j.pending_sync.pop(key, None)
            j.claimed.discard(key)
            freed = self.table.release_owner(f"{ev.node.nid}/")
            if freed:
                log.info("released locks of %s on %s", ev.node.nid,
                         ", ".join(f"{v:x}" for v in freed))
            if before == key and self._syncer() == self.key:
                for k, seq in list(j.pending_sync.items()):
                    yield self._send_sync(k, seq)
        else:
            j.pending_sync[key] = ev.seq
        if self.formatted and self.status == ClusterStatus.OK:
            yield from self._new_epoch()
        if isinstance(ev, Joined) and self._syncer() == self.key:
            yield self._send_sync(key, ev.seq)
        if self.formatted and self.status == ClusterStatus.OK:
            yield StartRecovery(self.epoch)
        elif self.status == ClusterStatus.WAIT:
            yield from self._maybe_resume()

    def _apply_member_msg(self, msg: ClusterMsg) -> Steps:
        handlers = {mship.SYNC: self._on_sync_seen, mship.CLAIM: self._on_claim,
                    mship.VDIS: self._on_vdis, mship.RECOVERED: self._on_recovered,
                    mship.FORCE: self._on_force, mship.FAILED: self._on_failed,
                    mship.UPDATE: self._on_update}
        yield from handlers[msg.kind](msg)

    def _on_sync_seen(self, msg: ClusterMsg) -> Steps:
        """Some member synced a joiner: that joiner is in step now."""
        self._join.pending_sync.pop(str(msg.extra.get("to")), None)
        yield from ()

    def _on_claim(self, msg: ClusterMsg) -> Steps:
        """A formatted node's claim in a waiting cluster: its epoch and VDIs."""
        x = msg.extra
        if self.status != ClusterStatus.WAIT:
            return
        adopted = False
        if not self.formatted:
            if "config" not in x:
                return
            yield from self._adopt_claim(msg)
            adopted = True
        elif x.get("config", {}).get("ctime", self.config.ctime) != self.config.ctime:
            # Two clusters' nodes met in an unformatted one: the first claim
            # in the stream made it theirs. The other claimer sees that
            # claim before its own, and refuses itself; the rest ignore its
            # claim (it is no member of theirs).
            if self.key not in self._join.claimed:
                yield from self.fail_stop(
                    f"refusing to join: the cluster became {msg.origin}'s (created "
                    f"{x['config']['ctime']:#x}), this node's store belongs to another "
                    f"(created {self.config.ctime:#x})")
            return
        mship.merge_entries(self.table, mship.entries_from_json(x["vdis"]))
        ep = int(x["epoch"])
        if ep > self.epoch:
            yield from self._write_epoch(ep, [mship.node_from_json(n) for n in x["nodes"]])
            yield from self._set_epoch(ep)
        self._join.claimed.add(msg.origin)
        if x.get("unclean"):
            self._join.unclean_claims.add(msg.origin)
        yield from self._maybe_resume()
        if adopted:
            yield from self._after_synced()  # our own claim, now of that cluster

    def update_node(self, node: SdNode) -> Steps:
        """This node announces itself anew (`dog node vnodes set`, `dog
        cluster reweight`), as C sheep's cluster driver update_node."""
        yield self._send(mship.UPDATE, {"node": mship.node_to_json(node)})

    def _on_update(self, msg: ClusterMsg) -> Steps:
        """A member's new vnodes or space: a new epoch with them (and
        recovery to the new ring), as Sheepdog's sd_update_node_handler."""
        node = mship.node_from_json(msg.extra["node"])
        if self.announced(node.nid) is None:
            return
        self._updates[str(node.nid)] = node
        self._set_members(self._announced)
        if self.formatted and self.status == ClusterStatus.OK:
            yield from self._new_epoch()
            yield StartRecovery(self.epoch)

    def _on_vdis(self, msg: ClusterMsg) -> Steps:
        if self.formatted:
            mship.merge_entries(self.table, mship.entries_from_json(msg.extra["vdis"]))
        yield from ()

    def _on_failed(self, msg: ClusterMsg) -> Steps:
        """A node fails stop: remember why (its Left follows)."""
        why = str(msg.extra.get("why", ""))[:1024]
        self.departed.pop(msg.origin, None)
        self.departed[msg.origin] = why
        while len(self.departed) > DEPARTED_KEPT:
            del self.departed[next(iter(self.departed))]
        if msg.origin != self.key:
            log.warning("%s leaves the cluster: %s", msg.origin, why)
        yield from ()

    def _on_recovered(self, msg: ClusterMsg) -> Steps:
        x = msg.extra
        ep = int(x["epoch"])
        if ep != self.epoch or self.status != ClusterStatus.OK:
            return
        done = self._recovered.setdefault(ep, set())
        done.add(msg.origin)
        ok = self._recovered_ok.setdefault(ep, set())
        if x.get("ok", True):
            ok.add(msg.origin)
        alive = {str(n.nid) for n in self.members}
        if alive <= done:
            yield PurgeStale(ep, alive <= ok)

    def _on_force(self, msg: ClusterMsg) -> Steps:
        """`dog cluster recover force`: a waiting cluster runs with the
        nodes it has."""
        result = Res.FORCE_RECOVER
        if self.status == ClusterStatus.WAIT and self.formatted:
            self.status = ClusterStatus.OK
            yield from self._new_epoch()
            yield StartRecovery(self.epoch)
            log.info("recovery forced: running with %d nodes at epoch %d",
                     len(self.members), self.epoch)
            result = Res.SUCCESS
        if msg.origin == self.key:
            yield Answer(msg.op_id, result)

    def _maybe_resume(self) -> Steps:
        """A waiting cluster runs once every node of its last epoch is back
        (and has told us what it holds)."""
        j = self._join
        if not self.formatted or self.status != ClusterStatus.WAIT or j.sync_wait is not None:
            return
        want = {str(n.nid) for n in self.epoch_nodes(self.epoch)}
        here = {str(n.nid) for n in self.members}
        # Every node here must have claimed, not only the last epoch's: a
        # node that joined but whose claim is still on its way may hold a
        # later epoch (with other nodes to wait for).
        if not want or not want <= here or not here <= j.claimed:
            return
        self.status = ClusterStatus.OK
        reconcile, j.unclean_claims = bool(j.unclean_claims), set()
        if want != here:
            yield from self._new_epoch()
            yield StartRecovery(self.epoch, reconcile=reconcile)
        elif reconcile or not self._shut_down_cleanly:
            # As Sheepdog's update_cluster_info: a cluster back from
            # anything but `dog cluster shutdown` recovers at the same ring,
            # so each node pulls what it owns but lacks (an object found
            # only in some .stale/, say). After an unclean stop, copies may
            # also differ in the writes that were never flushed: every node
            # makes its copies the first owner's (see recovery.py).
            yield StartRecovery(self.epoch, reconcile=reconcile, same_ring=True)
        self._shut_down_cleanly = False
        log.info("cluster is running at epoch %d%s", self.epoch,
                 " (comparing copies after an unclean stop)" if reconcile else "")
