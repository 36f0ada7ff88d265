"""The `zookeeper` driver: membership and the ordered log in ZooKeeper (kazoo).

`zookeeper:HOST:PORT[,HOST:PORT...][,timeout=SECONDS][,cluster=NAME]`.
Under ROOT (`/sheepdog`, or `/sheepdog-NAME` so several clusters can share
one ensemble):

- ROOT/member/UID: an ephemeral znode per member incarnation (data: the
  node). It vanishes when the member's session ends, which is how a crash
  is seen (within the session timeout).
- ROOT/queue/UID-COUNTER-SEQ: persistent sequential znodes, one record each
  (stream.py), ordered by ZooKeeper's 10-digit sequence suffix. Every member
  reads them with a local cursor and folds them the same way, so all see
  the same events. The UID-COUNTER prefix names the writer's push, so after
  a connection loss a writer can tell whether its create went through
  before pushing again (no duplicates).
- ROOT/applied/UID: persistent, one per incarnation (data: the sequence
  number of the last queue node that incarnation has folded), written about
  once a second.
- ROOT/checkpoint: `{"floor": F, "trim": T, "state": Membership}`: the fold's
  state after queue node F, and the highest sequence number the compaction
  may have deleted (T <= F).

Compaction keeps the queue bounded. When the queue holds more than
`compact_at` nodes, the first live member (in join order) takes the minimum
of every applied/ entry (entries of incarnations that are neither live nor
written within APPLIED_GRACE are stale and removed), writes a checkpoint at
its own cursor (only where no split message is half-way, see stream.py),
then deletes the queue nodes up to that minimum. A joiner writes its
applied/ entry (-1: holds any compaction) before reading the checkpoint,
starts its fold there instead of at sequence 0, and until its own join is
folded re-checks the checkpoint after each listing: a compaction that raced
its first read restarts it from the newer checkpoint (it delivers nothing
before its own Joined, so restarting costs nothing). A member's applied/
entry is kept across a session loss until its new incarnation has one, so
the re-join still resumes at its cursor; only if it was gone for longer
than APPLIED_GRACE and the queue was compacted past it does run() fail with
DriverError (events were lost: the daemon must restart and join afresh).
Every member must run a version that writes applied/: one that does not
is invisible to the compactor, which may delete records it has not read.

A payload bigger than PART_PAYLOAD is pushed as several `part` records
(stream.py); readers deliver it as one Message at the position of its last
part.

Leaves go through the queue too, so they are ordered with everything else:
when a member's znode is gone, the first live member (in join order)
appends its `leave`; any other member does so too if it is still missing
after LEAVE_GRACE. Extra leaves are ignored by the fold, so each death
gives exactly one Left.

A member is `fenced` (its node serves no client I/O) unless it holds a
lease: a poll of ours reached ZooKeeper less than LEASE_SHARE of the
session timeout ago, in the session our member node belongs to. ZooKeeper
expires a session a whole timeout after it last heard from it, and only
then can the others see our member node go and expel us; so a member cut
off from ZooKeeper, or stalled (SIGSTOP, swap), stops serving well before
the others can write at an epoch without it, and never serves a copy they
have moved on from.

Session loss (a ZooKeeper restart longer than the session timeout) does not
end the member: kazoo opens a new session, and we register again under a
new incarnation id. Every member then sees Left for the old incarnation and
Joined for the new one (the daemon sees both for itself, too); the cursor
is kept, so no event is missed or repeated.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import trio
from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, KazooException, NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry

from ..proto import SdNode
from .driver import ClusterDriver, DriverError, Event
from .stream import (
    Membership,
    decode,
    encode_join,
    encode_leave,
    encode_msg,
    encode_parts,
    node_to_json,
)

DEFAULT_ROOT = "/sheepdog"
# Sheepdog uses 30 s; shorter notices crashes sooner at the price of
# expelling a node that stalls (GC, swap) for that long.
DEFAULT_SESSION_TIMEOUT = 10.0
# How long the first connection may take before run() gives up.
CONNECT_TIMEOUT = 30.0
# Re-read the queue at least this often even without a watch firing.
POLL_FALLBACK = 1.0
# A missing member not reported by the designated member within this long
# is reported by anyone (the designated one may be dead or slow itself).
LEAVE_GRACE = 2.0
# Compact the queue once it holds more nodes than this (a reply listing
# 100,000 names would pass ZooKeeper's 1 MB limit).
COMPACT_AT = 1000
# How often a member records its cursor in applied/, and the compactor runs.
APPLIED_EVERY = 1.0
# The applied/ entry of an incarnation that is not live holds compaction
# back this long (a member re-joining after a session loss resumes from it).
APPLIED_GRACE = 120.0
# A payload bigger than this goes out in parts (a record must stay well
# under jute.maxbuffer, ~1 MB; base64 makes 384 KiB into 512 KiB).
PART_PAYLOAD = 384 * 1024
# Retries on shutdown are bounded: leaving must not hang on a dead ensemble.
LEAVE_DEADLINE = 5.0
# A poll that reached ZooKeeper lets this member serve for this share of
# the session timeout (see the module's docstring); half leaves the other
# half for the others' notice of an expiry to overtake nothing. A
# ZooKeeper that grants a session shorter than this share of the one asked
# for (its maxSessionTimeout) would void that margin.
LEASE_SHARE = 0.5
# Polls come this many times per lease at least, so a healthy member's
# lease never lapses between two.
POLLS_PER_LEASE = 4

T = TypeVar("T")


def parse_spec(arg: str) -> tuple[str, float, str]:
    """`HOST:PORT[,HOST:PORT...][,timeout=N][,cluster=NAME]` -> hosts, timeout, root."""
    hosts, timeout, root = [], DEFAULT_SESSION_TIMEOUT, DEFAULT_ROOT
    for item in arg.split(","):
        key, eq, value = item.partition("=")
        if not eq:
            if item:
                hosts.append(item)
        elif key == "timeout":
            timeout = float(value)
        elif key == "cluster":
            if not value or "/" in value:
                raise ValueError(f"bad cluster name {value!r}")
            root = f"{DEFAULT_ROOT}-{value}"
        else:
            raise ValueError(f"unknown zookeeper option {key!r}")
    if not hosts:
        raise ValueError("zookeeper driver needs HOST:PORT[,HOST:PORT...]")
    return ",".join(hosts), timeout, root


def _seq(name: str) -> int:
    return int(name[-10:])


class ZooKeeperDriver(ClusterDriver):
    """A member of the cluster stored under one ZooKeeper root.

    Besides the ClusterDriver interface: `members` is the membership as of
    the last Joined/Left delivered to the consumer.
    """

    name = "zookeeper"

    def __init__(self, spec: str) -> None:
        self.hosts, self.session_timeout, self.root = parse_spec(spec)
        self.members: tuple[SdNode, ...] = ()
        self._client: KazooClient | None = None
        self._me: SdNode | None = None
        self._uid = ""
        self._counts = itertools.count(1)  # next() is atomic: pushes from any thread
        self._state = Membership()
        self._cursor = -1  # sequence number of the last queue node folded in
        self._joined_stream = False  # our first join has been folded in
        self._mutex = threading.Lock()  # the fold and cursor, across threads
        self._closing = False
        self._lost = False
        self._session = 0  # the session our member node belongs to
        self._missing_since: dict[str, float] = {}
        self._reported: set[str] = set()
        self._pending: list[Event] = []  # folded by _register, not yet delivered
        self._dropped: set[str] = set()  # queue names of our dropped messages
        self._token: trio.lowlevel.TrioToken | None = None
        self._wake = trio.Event()
        self._progress = trio.Event()
        self._joined = trio.Event()
        self.compact_at = COMPACT_AT
        self._my_uids: set[str] = set()  # every incarnation of ours
        self._inflight: dict[str, str] = {}  # push prefix -> its name once folded
        self._cp_version = -1  # checkpoint version our fold started from
        self._queue_len = 0
        self._applied_written = -2
        self._applied_at = 0.0
        self._compacted_at = 0.0
        self._first_live = False
        self._lease_until = 0.0  # monotonic time our lease lapses (see `fenced`)
        self._poll_every = min(POLL_FALLBACK,
                               self.session_timeout * LEASE_SHARE / POLLS_PER_LEASE)

    # -- paths and kazoo plumbing ------------------------------------------

    @property
    def _queue(self) -> str:
        return f"{self.root}/queue"

    @property
    def _member_dir(self) -> str:
        return f"{self.root}/member"

    @property
    def _applied_dir(self) -> str:
        return f"{self.root}/applied"

    @property
    def _checkpoint(self) -> str:
        return f"{self.root}/checkpoint"

    def _retry(self, func: Callable[..., T], *args: Any, deadline: float | None = None,
               **kwargs: Any) -> T:
        """Call through client.retry (a fresh copy of the command retry per
        call): retried on connection and session loss until we close, or
        for at most `deadline` seconds."""
        assert self._client is not None
        if deadline is None:
            return self._client.retry(func, *args, **kwargs)
        bounded = KazooRetry(max_tries=-1, delay=0.1, max_delay=1.0, deadline=deadline,
                             ignore_expire=True, sleep_func=self._client.handler.sleep_func)
        return bounded(func, *args, **kwargs)

    def _kick(self, *_: Any) -> None:
        """From a kazoo thread: wake the trio loop (never blocks)."""
        token = self._token
        if token is None:
            return
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(lambda: self._wake.set())

    def _on_state(self, state: str) -> None:
        """Any state change is worth a look; whether our registration is
        gone is decided in `_reconcile` (session id, member node), not
        here, so one session loss means exactly one re-registration."""
        self._kick()

    # -- blocking operations (worker threads) ------------------------------

    def _push(self, record: bytes, deadline: float | None = None) -> str:
        """Append a record; exactly once even across connection loss."""
        prefix = f"{self._uid}-{next(self._counts):08d}-"
        attempted = False
        self._inflight[prefix] = ""

        def once() -> str:
            nonlocal attempted
            assert self._client is not None
            if attempted:
                # Folded already (and maybe compacted away since), or listed.
                if self._inflight.get(prefix):
                    return self._inflight[prefix]
                for child in self._client.get_children(self._queue):
                    if child.startswith(prefix):
                        return str(child)
            attempted = True
            path = self._client.create(f"{self._queue}/{prefix}", record, sequence=True)
            return str(path).rsplit("/", 1)[1]

        try:
            return self._retry(once, deadline=deadline)
        finally:
            self._inflight.pop(prefix, None)

    def _push_message(self, payload: bytes) -> str:
        """Push a message, in parts if it is big; the name of its last record."""
        uid = self._uid
        if len(payload) <= PART_PAYLOAD:
            return self._push(encode_msg(uid, payload))
        name = ""
        for record in encode_parts(uid, next(self._counts), payload, PART_PAYLOAD):
            name = self._push(record)
        return name

    def _register(self) -> None:
        """Join under a fresh incarnation id: ephemeral member node, then
        leaves for members that died unnoticed, then our join record."""
        assert self._client is not None and self._me is not None
        client = self._client
        with self._mutex:
            old_uid = self._uid
            self._uid = uuid.uuid4().hex
            self._my_uids.add(self._uid)
            self._counts = itertools.count(1)
            for path in (self._queue, self._member_dir, self._applied_dir):
                self._retry(client.ensure_path, path)
            # Our applied/ entry before anything else: it holds compaction
            # at our cursor (a fresh joiner's -1 holds it entirely).
            self._set_applied(force=True)
            if old_uid:
                with contextlib.suppress(NoNodeError):
                    self._retry(client.delete, f"{self._applied_dir}/{old_uid}")
            if not self._joined_stream:
                self._load_checkpoint()
            else:
                cp = self._read_checkpoint()
                if cp is not None and cp[0]["trim"] > self._cursor:
                    raise DriverError(
                        f"the queue was compacted past our cursor {self._cursor} while our "
                        "session was lost: events were missed, restart and join afresh")
            path = f"{self._member_dir}/{self._uid}"
            data = json.dumps(node_to_json(self._me)).encode()
            try:
                self._retry(client.create, path, data, ephemeral=True)
            except NodeExistsError:
                # Our create went through before a connection loss; if that
                # session has since expired, the node is about to vanish.
                _, stat = self._retry(client.get, path)
                if stat.ephemeralOwner != client.client_id[0]:
                    self._retry(client.delete, path)
                    self._retry(client.create, path, data, ephemeral=True)
            # Events folded here (on a re-registration) are delivered by the
            # next poll, never dropped.
            self._pending.extend(self._fold_new())
            live = set(self._retry(client.get_children, self._member_dir))
            for uid in self._state.members:
                if uid not in live and uid not in self._reported:
                    self._reported.add(uid)
                    self._push(encode_leave(uid))
            self._session = client.client_id[0]
            # Counted before our join is pushed: our node stays fenced until
            # it has applied this incarnation's Joined, and so, first, the
            # Left of the one before (the stream holds them in that order).
            self.incarnations += 1
            self._push(encode_join(self._uid, self._me))
            self._lost = False

    def _read_checkpoint(self) -> tuple[dict[str, Any], int] | None:
        assert self._client is not None
        try:
            raw, stat = self._retry(self._client.get, self._checkpoint)
        except NoNodeError:
            return None
        return json.loads(raw), int(stat.version)

    def _load_checkpoint(self) -> None:
        """Before our own join is folded: start (again) from the checkpoint
        if it is past our cursor."""
        cp = self._read_checkpoint()
        if cp is None:
            self._cp_version = -1
            return
        data, self._cp_version = cp
        if int(data["floor"]) > self._cursor:
            self._state = Membership.from_json(data["state"])
            self._cursor = int(data["floor"])

    def _checkpoint_moved(self) -> bool:
        assert self._client is not None
        stat = self._retry(self._client.exists, self._checkpoint)
        return (-1 if stat is None else int(stat.version)) != self._cp_version

    def _fold_new(self) -> list[Event]:
        """Fold queue nodes past the cursor; arm the queue watch."""
        assert self._client is not None
        out: list[Event] = []
        while True:
            children = self._retry(self._client.get_children, self._queue, watch=self._kick)
            self._queue_len = len(children)
            # Not yet joined: a compaction may have deleted nodes after the
            # checkpoint we started from (it writes the checkpoint first).
            if not self._joined_stream and self._checkpoint_moved():
                self._load_checkpoint()
                continue
            if self._fold_names(children, out):
                return out
            if self._joined_stream:
                raise DriverError("a queue node was compacted before this member read it")
            self._load_checkpoint()

    def _fold_names(self, children: list[str], out: list[Event]) -> bool:
        """Fold the listed nodes past the cursor; False if one is gone."""
        assert self._client is not None
        for name in sorted((c for c in children if _seq(c) > self._cursor), key=_seq):
            try:
                raw, _ = self._retry(self._client.get, f"{self._queue}/{name}")
            except NoNodeError:
                return False
            rec = decode(raw)
            if name[:-10] in self._inflight:
                self._inflight[name[:-10]] = name
            was_member = self._uid in self._state.members
            events = self._state.apply(rec)
            if was_member and self._uid not in self._state.members:
                self._lost = True  # expelled without noticing: join again
            self._cursor = _seq(name)
            last = rec["t"] == "msg" or (rec["t"] == "part" and rec["i"] == rec["n"] - 1)
            if last and not events and rec["id"] in self._my_uids:
                self._dropped.add(name)
            if not self._joined_stream:
                if rec["t"] == "join" and rec["id"] == self._uid:
                    self._joined_stream = True
                    out.append(events[-1])
                continue
            out.extend(events)
        return True

    def _set_applied(self, force: bool = False) -> None:
        """Record our cursor in applied/ (at most every APPLIED_EVERY)."""
        assert self._client is not None
        now = time.monotonic()
        if not force and (self._cursor == self._applied_written
                          or now - self._applied_at < APPLIED_EVERY):
            return
        path, data = f"{self._applied_dir}/{self._uid}", str(self._cursor).encode()
        try:
            self._retry(self._client.set, path, data)
        except NoNodeError:
            with contextlib.suppress(NodeExistsError):
                self._retry(self._client.create, path, data)
        self._applied_written, self._applied_at = self._cursor, now

    def _compact(self) -> None:
        """As the first live member: checkpoint at our cursor, then delete
        the queue nodes every applied/ entry has passed."""
        assert self._client is not None
        client = self._client
        now = time.monotonic()
        if (not self._first_live or self._queue_len <= self.compact_at or self._state.busy
                or now - self._compacted_at < APPLIED_EVERY):
            return
        self._compacted_at = now
        self._set_applied(force=True)
        names = set(self._retry(client.get_children, self._applied_dir))
        live = set(self._retry(client.get_children, self._member_dir))
        entries: dict[str, tuple[int, int]] = {}
        for uid in names:
            try:
                raw, stat = self._retry(client.get, f"{self._applied_dir}/{uid}")
            except NoNodeError:
                continue  # its incarnation re-registered, or another compactor pruned it
            entries[uid] = (int(raw), int(stat.mtime))
        if not entries or set(self._retry(client.get_children, self._applied_dir)) - names:
            return  # a new entry appeared after we listed: its cursor may be lower
        newest = max(mtime for _, mtime in entries.values())
        held = []
        for uid, (value, mtime) in entries.items():
            if uid not in live and newest - mtime > APPLIED_GRACE * 1000:
                with contextlib.suppress(NoNodeError):
                    self._retry(client.delete, f"{self._applied_dir}/{uid}")
            else:
                held.append(value)
        cp = self._read_checkpoint()
        old_floor, old_trim = (-1, -1) if cp is None else (cp[0]["floor"], cp[0]["trim"])
        trim = min(min(held), self._cursor)
        if self._cursor <= old_floor or trim <= old_trim:
            return
        data = json.dumps({"floor": self._cursor, "trim": trim,
                           "state": self._state.to_json()}).encode()
        try:
            if cp is None:
                self._retry(client.create, self._checkpoint, data)
            else:
                self._retry(client.set, self._checkpoint, data, version=cp[1])
        except (BadVersionError, NodeExistsError):
            return  # another compactor got there first
        children = self._retry(client.get_children, self._queue)
        doomed = [c for c in children if _seq(c) <= trim]
        for i in range(0, len(doomed), 500):
            futures = [client.delete_async(f"{self._queue}/{c}") for c in doomed[i:i + 500]]
            for f in futures:
                with contextlib.suppress(KazooException):
                    f.get()  # gone already, or connection loss: the next round redoes it

    def _reconcile(self) -> None:
        """Append a leave for members whose ephemeral node is gone."""
        assert self._client is not None
        if not self._client.connected:
            return
        client_id = self._client.client_id
        if client_id is not None and client_id[0] != self._session:
            self._lost = True  # a new session: our ephemeral node is gone
            return
        live = set(self._retry(self._client.get_children, self._member_dir, watch=self._kick))
        if self._uid not in live:
            self._lost = True
            return
        now = time.monotonic()
        first_live = next((u for u in self._state.members if u in live), None)
        self._first_live = first_live == self._uid
        for uid in list(self._state.members):
            if uid in live:
                self._missing_since.pop(uid, None)
                continue
            since = self._missing_since.setdefault(uid, now)
            if uid in self._reported:
                continue
            if first_live == self._uid or now - since > LEAVE_GRACE:
                self._reported.add(uid)
                self._push(encode_leave(uid))

    def _poll(self) -> tuple[list[Event], bool]:
        start = time.monotonic()  # ZooKeeper hears from us after this
        with self._mutex:
            events = self._pending + self._fold_new()
            self._pending = []
            self._reconcile()
            if not self._lost and self._joined_stream:
                self._set_applied()
                self._compact()
            assert self._client is not None
            client_id = self._client.client_id
            if (not self._lost and self._client.connected and client_id is not None
                    and client_id[0] == self._session):
                self._lease_until = start + self.session_timeout * LEASE_SHARE
            return events, self._lost

    def fenced(self) -> bool:
        """No lease (see the module's docstring): cut off from ZooKeeper for
        a while, stalled, or our session is gone."""
        return self._lost or time.monotonic() > self._lease_until

    def _leave(self) -> None:
        """Best effort, bounded: our leave record, then close the session
        (which deletes our member node)."""
        client = self._client
        if client is None:
            return
        try:
            if self._uid and client.connected and not self._lost:
                self._push(encode_leave(self._uid), deadline=LEAVE_DEADLINE)
            if self._uid and client.connected:
                with contextlib.suppress(NoNodeError):
                    self._retry(client.delete, f"{self._applied_dir}/{self._uid}",
                                deadline=LEAVE_DEADLINE)
        except KazooException:
            pass
        finally:
            self._closing = True
            with contextlib.suppress(Exception):
                client.stop()
                client.close()

    # -- the trio side -------------------------------------------------------

    async def run(self, me: SdNode, events: trio.MemorySendChannel[Event], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._me = me
        self._token = trio.lowlevel.current_trio_token()
        retry = {"max_tries": -1, "delay": 0.1, "max_delay": 1.0,
                 "ignore_expire": True, "interrupt": lambda: self._closing}
        client = KazooClient(hosts=self.hosts, timeout=self.session_timeout,
                             connection_retry={"max_tries": -1, "delay": 0.1, "max_delay": 1.0},
                             command_retry=retry)
        client.add_listener(self._on_state)
        self._client = client
        try:
            try:
                await trio.to_thread.run_sync(client.start, CONNECT_TIMEOUT, abandon_on_cancel=True)
            except KazooTimeoutError as e:
                raise DriverError(f"cannot reach ZooKeeper at {self.hosts}") from e
            await trio.to_thread.run_sync(self._register, abandon_on_cancel=True)
            self._joined.set()
            task_status.started()
            send, recv = trio.open_memory_channel[Event](math.inf)
            failure: DriverError | None = None  # raised bare, not in an ExceptionGroup
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._deliver, recv, events)
                while True:
                    self._wake = trio.Event()
                    try:
                        batch, lost = await trio.to_thread.run_sync(self._poll,
                                                                    abandon_on_cancel=True)
                    except DriverError as e:
                        failure = e
                        nursery.cancel_scope.cancel()
                        break
                    for ev in batch:
                        send.send_nowait(ev)
                    self._progress.set()
                    self._progress = trio.Event()
                    if lost:
                        try:
                            await trio.to_thread.run_sync(self._register, abandon_on_cancel=True)
                        except DriverError as e:
                            failure = e
                            nursery.cancel_scope.cancel()
                            break
                        continue
                    with trio.move_on_after(self._poll_every):
                        await self._wake.wait()
            if failure is not None:
                raise failure
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the consumer went away: leave quietly
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._leave)
            self._token = None

    async def broadcast(self, payload: bytes) -> None:
        """Push a message and wait until our own fold has ordered it; if it
        was dropped (sent under an incarnation the cluster had already
        expelled, around a session loss), push it again as the new one."""
        await self._joined.wait()
        while True:
            name = await trio.to_thread.run_sync(self._push_message, payload,
                                                 abandon_on_cancel=True)
            self._wake.set()
            while self._cursor < _seq(name):
                if self._closing:
                    raise DriverError("the driver stopped before the message was ordered")
                await self._progress.wait()
            if name not in self._dropped:
                return
            self._dropped.discard(name)
