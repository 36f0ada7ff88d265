"""The `corosync` driver: a CPG process group of the local corosync.

`corosync[:cluster=NAME]`: every sheep joins the CPG group `sheepdog` (or
`sheepdog-NAME`, so several clusters can share one corosync) through
libcpg (cpg.py). Corosync multicasts each message to the group in one
total order (CPG_TYPE_AGREED) and orders membership changes with the
messages, the same on every member: corosync itself is the ordered log.
A crash is a configuration change: a killed sheep is seen at once (its
IPC connection closes), a lost host within corosync's token timeout.

What corosync does not give is the past: a new member sees events from
its own join of the group on, and the group names members by CPG address
(node id, pid), not by the node they announce. So, as Sheepdog's
corosync driver, a joiner asks to be let in, and the oldest member lets
it in at a point of the order, handing it the state (group_state.py):

1. The joiner joins the CPG group, then multicasts `join` (its uid, node,
   and an attempt number) and buffers every later delivery.
2. Every member folds the `join` into its state as pending and keeps a
   snapshot of the state right after it (any of them may have to accept
   it); the oldest member (`GroupState.first`) multicasts `accept` (uid,
   attempt, snapshot).
3. Where the `accept` is delivered, every member applies the Joined. The
   joiner takes the snapshot, folds its buffer from its `join` on, then
   the accept: it reaches the same state and seq as everyone, and its
   first event is its own Joined.

If members leave while a joiner waits (the accepter may be among them),
the joiner asks again with a new attempt; accepts of older attempts are
ignored by everyone. If no member is left at all (a new cluster, or every
sheep died), the oldest of the waiting joiners starts the cluster: it is
the one that saw every other group member join after it and none of them
accepted (Sheepdog's "self-elect"), and it accepts itself.

If corosync goes away (stopped, crashed) run() raises DriverError: the
sheep stops instead of serving with a membership nobody updates. A node
that loses most members at once to `nodedown` (a network partition) stops
too, as Sheepdog's driver does.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import math
import uuid
from typing import Any

import trio

from ..proto import SdNode
from .cpg import CS_ERR_TRY_AGAIN, Addr, ConfChg, Cpg, CpgError, CpgEvent, Delivery
from .driver import ClusterDriver, DriverError, Event, Left
from .group_state import GroupState
from .stream import node_from_json, node_to_json

log = logging.getLogger(__name__)

DEFAULT_GROUP = "sheepdog"
NOT_RUNNING = "cannot connect to corosync: is the corosync service running?"
# A payload bigger than this goes out in parts (corosync's IPC takes about
# 1 MiB per message; base64 makes 384 KiB into 512 KiB).
PART_PAYLOAD = 384 * 1024
# Flow control (CS_ERR_TRY_AGAIN): wait this long before sending again.
RETRY_DELAY = 0.01
# The records of the handshake and the stream, and what their fields must be.
FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "join": {"node": list, "a": int},
    "accept": {"a": int, "addr": list, "state": dict},
    "msg": {"n": int, "p": str},
    "part": {"k": int, "n": int, "i": int, "p": str},
}
# Not let in after this long: say so (the join goes on waiting).
JOIN_WARN = 10.0


def parse_spec(arg: str) -> bytes:
    """`[cluster=NAME]` -> the CPG group name."""
    group = DEFAULT_GROUP
    for item in filter(None, arg.split(",")):
        key, eq, value = item.partition("=")
        if key == "cluster" and eq:
            if not value or len(value) > 100 or not value.isprintable():
                raise ValueError(f"bad cluster name {value!r}")
            group = f"{DEFAULT_GROUP}-{value}"
        else:
            raise ValueError(f"unknown corosync option {item!r} (cluster=NAME)")
    return group.encode()


def _record(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


class CorosyncDriver(ClusterDriver):
    """A member of the CPG group of one cluster.

    Besides the ClusterDriver interface: `members` is the membership as of
    the last Joined/Left delivered to the consumer."""

    name = "corosync"

    def __init__(self, spec: str = "") -> None:
        self.group = parse_spec(spec)
        self.members: tuple[SdNode, ...] = ()
        self._cpg: Cpg | None = None
        self._me: SdNode | None = None
        self._uid = uuid.uuid4().hex
        self._out: trio.MemorySendChannel[Event] | None = None
        self._outbox: list[bytes] = []  # join/accept records the run loop sends
        self._state: GroupState | None = None  # None: not yet let in
        self._streaming = False  # our own Joined went out
        self._joined = trio.Event()
        self._stopped = False
        # The joiner's side of the handshake.
        self._in_group = False
        self._attempts = itertools.count(1)
        self._delivered_attempt = 0
        self._buffer: list[CpgEvent] = []
        self._join_pos: dict[int, int] = {}
        self._seen_joined: set[Addr] = set()
        self._accepted: set[Addr] = set()
        # The accepter's side.
        self._snapshots: dict[tuple[str, int], dict[str, Any]] = {}
        self._accepts_sent: set[tuple[str, int]] = set()
        # Broadcasts waiting for their own delivery.
        self._counts = itertools.count(1)
        self._ordered: dict[int, trio.Event] = {}

    # -- the trio side --------------------------------------------------------

    async def run(self, me: SdNode, events: trio.MemorySendChannel[Event], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._me = me
        try:
            cpg = Cpg()
        except (OSError, CpgError) as e:
            raise DriverError(f"{NOT_RUNNING} ({e})") from e
        self._cpg = cpg
        try:
            await self._join_group()
            send, recv = trio.open_memory_channel[Event](math.inf)
            self._out = send
            records, to_send = trio.open_memory_channel[bytes](math.inf)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._deliver, recv, events)
                nursery.start_soon(self._send_records, to_send)
                nursery.start_soon(self._warn_if_kept_waiting)
                started = False
                while True:
                    await trio.lowlevel.wait_readable(cpg.fd)
                    try:
                        batch = cpg.dispatch()
                    except CpgError as e:
                        raise DriverError(f"lost the connection to corosync ({e}): is corosync "
                                          "still running?") from None
                    for ev in batch:
                        self._handle(ev)
                    self._queue_accepts()
                    while self._outbox:
                        records.send_nowait(self._outbox.pop(0))
                    if self._streaming and not started:
                        started = True
                        task_status.started()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the consumer went away: leave quietly
        finally:
            self._stopped = True
            for waiting in self._ordered.values():
                waiting.set()
            self._cpg = None
            try:
                cpg.leave()
            except CpgError:
                pass  # finalize leaves too, and a dead corosync needs no goodbye
            cpg.finalize()

    async def _warn_if_kept_waiting(self) -> None:
        await trio.sleep(JOIN_WARN)
        if not self._streaming:
            log.warning("not let into the cluster after %.0f s: the oldest member of the "
                        "corosync group %s does not answer (a stalled sheep?)", JOIN_WARN,
                        self.group.decode())

    async def _join_group(self) -> None:
        assert self._cpg is not None
        while True:
            try:
                self._cpg.join(self.group)
                return
            except CpgError as e:
                if e.code != CS_ERR_TRY_AGAIN:
                    raise DriverError(f"cannot join the corosync group {self.group.decode()}: "
                                      f"{e}") from e
            await trio.sleep(RETRY_DELAY * 10)

    async def _mcast(self, data: bytes) -> None:
        while True:
            cpg = self._cpg
            if cpg is None:
                raise DriverError("the corosync driver has stopped")
            try:
                cpg.mcast(data)
                return
            except CpgError as e:
                if e.code != CS_ERR_TRY_AGAIN:
                    raise DriverError(f"cannot send to corosync: {e}") from e
            await trio.sleep(RETRY_DELAY)

    async def _send_records(self, to_send: trio.MemoryReceiveChannel[bytes]) -> None:
        """Send the handshake's records in order, beside the dispatch loop:
        waiting out corosync's flow control must not stop us reading."""
        async for record in to_send:
            await self._mcast(record)

    async def broadcast(self, payload: bytes) -> None:
        """Multicast a message and wait until our own fold has ordered it."""
        await self._joined.wait()
        n = next(self._counts)
        done = self._ordered[n] = trio.Event()
        try:
            if len(payload) <= PART_PAYLOAD:
                await self._mcast(_record(t="msg", id=self._uid, n=n,
                                          p=base64.b64encode(payload).decode()))
            else:
                pieces = [payload[i:i + PART_PAYLOAD] for i in range(0, len(payload), PART_PAYLOAD)]
                for i, piece in enumerate(pieces):
                    await self._mcast(_record(t="part", id=self._uid, k=n, n=len(pieces), i=i,
                                              p=base64.b64encode(piece).decode()))
            await done.wait()
        finally:
            self._ordered.pop(n, None)
        if self._stopped:
            raise DriverError("the driver stopped before the message was ordered")

    # -- the handshake and the fold (plain functions of CPG's events) --------

    def _handle(self, ev: CpgEvent) -> None:
        if self._state is not None:
            self._fold(ev)
        else:
            self._wait_for_accept(ev)

    def _send_join(self) -> None:
        assert self._me is not None
        self._outbox.append(_record(t="join", id=self._uid, node=node_to_json(self._me),
                                    a=next(self._attempts)))

    def _wait_for_accept(self, ev: CpgEvent) -> None:
        """Not yet let in: buffer, ask (again), or start the cluster."""
        assert self._cpg is not None
        me = self._cpg.addr
        if isinstance(ev, ConfChg):
            if not self._in_group:
                if me not in ev.joined:
                    return  # (nothing comes before our own join; be safe)
                self._in_group = True
                ask = True
            else:
                self._buffer.append(ev)
                ask = bool(ev.left)  # the accepter may be gone: ask again
            self._seen_joined.update(ev.joined)
            self._accepted -= {a for a, _ in ev.left}
            if all(a in self._seen_joined and a not in self._accepted for a in ev.members):
                # Every group member came after us and none is let in: no
                # cluster here to ask. We start it, and accept ourselves.
                log.info("no cluster in the corosync group %s: starting it",
                         self.group.decode())
                self._state = GroupState()
                self._buffer.clear()
                self._join_pos.clear()
                ask = True
            if ask:
                self._send_join()
            return
        if not self._in_group:
            return
        rec = self._decode(ev)
        if rec is None:
            return
        kind = rec["t"]
        if kind == "accept":
            self._accepted.add((int(rec["addr"][0]), int(rec["addr"][1])))
            if rec["id"] == self._uid and rec["a"] == self._delivered_attempt:
                self._let_in(rec, ev)
                return
        self._buffer.append(ev)
        if kind == "join" and rec["id"] == self._uid:
            self._delivered_attempt = int(rec["a"])
            self._join_pos[self._delivered_attempt] = len(self._buffer)

    def _let_in(self, rec: dict[str, Any], accept: Delivery) -> None:
        """Our accept: the snapshot as of our join, then what came since."""
        try:
            self._state = GroupState.from_json(rec["state"])
        except (KeyError, ValueError, TypeError) as e:
            raise DriverError(f"a malformed accept from {accept.sender}: {e!r}") from None
        replay = self._buffer[self._join_pos[int(rec["a"])]:]
        self._buffer.clear()
        self._join_pos.clear()
        for old in replay:
            self._fold(old)
        self._fold(accept)

    def _decode(self, ev: Delivery) -> dict[str, Any] | None:
        """A record of ours, or None (logged) for anything else in the
        group. Every member drops the same ones, so the fold stays the
        same everywhere, and one bad message stops nobody."""
        try:
            rec = json.loads(ev.data)
            if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
                raise ValueError("not a record")
            for key, kind in FIELDS[rec["t"]].items():
                if not isinstance(rec[key], kind):
                    raise ValueError(f"bad {key}")
            if rec["t"] == "join":
                node_from_json(rec["node"])
            if rec["t"] == "accept" and len(rec["addr"]) != 2:
                raise ValueError("bad addr")
            if rec["t"] in ("msg", "part"):
                base64.b64decode(rec["p"], validate=True)
        except (ValueError, KeyError, TypeError) as e:
            log.warning("ignoring a malformed message from CPG member %s (%s): %r", ev.sender,
                        e, ev.data[:60])
            return None
        return rec

    def _fold(self, ev: CpgEvent) -> None:
        st = self._state
        assert st is not None
        if isinstance(ev, ConfChg):
            if self._streaming and st.lost_majority(ev):
                raise DriverError("most of the cluster's members went down at once with their "
                                  "corosync nodes (a network partition?)")
            self._emit(st.confchg(ev))
            for key in [k for k in self._snapshots if k[0] not in st.pending]:
                del self._snapshots[key]
            return
        rec = self._decode(ev)
        if rec is None:
            return
        kind, uid = rec["t"], rec.get("id", "")
        if kind == "join":
            if st.join(uid, ev.sender, rec["node"], int(rec["a"])):
                self._snapshots = {k: v for k, v in self._snapshots.items() if k[0] != uid}
                self._snapshots[(uid, int(rec["a"]))] = st.to_json()
        elif kind == "accept":
            out = st.accept(uid, int(rec["a"]))
            self._snapshots.pop((uid, int(rec["a"])), None)
            if uid == self._uid and out and not self._streaming:
                self._streaming = True
                self.incarnations = 1
                self._joined.set()
                out = out[-1:]  # our stream starts at our own Joined
            self._emit(out)
        elif kind in ("msg", "part"):
            out = st.message(rec)
            self._emit(out)
            if uid == self._uid and (kind == "msg" or rec["i"] == rec["n"] - 1):
                done = self._ordered.get(int(rec["n"] if kind == "msg" else rec["k"]))
                if done is not None:
                    done.set()

    def _emit(self, events: list[Event]) -> None:
        if not self._streaming:
            return
        for ev in events:
            if isinstance(ev, Left) and self._uid not in self._state_members():
                raise DriverError("this node was dropped from the corosync group")
            assert self._out is not None
            self._out.send_nowait(ev)

    def _state_members(self) -> dict[str, SdNode]:
        assert self._state is not None
        return self._state.fold.members

    def _queue_accepts(self) -> None:
        """As the oldest member (or the one starting the cluster): accept
        every pending joiner whose join we hold a snapshot for."""
        st = self._state
        if st is None:
            return
        first = st.first()
        if first is not None and first != self._uid:
            return
        for uid, p in st.pending.items():
            key = (uid, p.attempt)
            snap = self._snapshots.get(key)
            if snap is None or key in self._accepts_sent:
                continue
            self._accepts_sent.add(key)
            self._outbox.append(_record(t="accept", id=uid, a=p.attempt, addr=list(p.addr),
                                        state=snap))


