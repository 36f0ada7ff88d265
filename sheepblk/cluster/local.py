"""The `local` driver: sheep processes on one machine sharing a file.

Layout for `local:SHMFILE` (default /tmp/sheepdog_shm, Sheepdog's path):

- SHMFILE: a small control file holding the current log generation, and
  the lock (`flock`) every append takes. It is never replaced, so the lock
  always means the same thing.
- SHMFILE.d/log.GEN: the ordered log, one JSON record per line (see
  stream.py). Line 1 is a `base` record with the membership at the start
  of the file. When a file grows past ROTATE_BYTES, the appender writes a
  `rotate` record and starts log.GEN+1 with the membership as of the rotate;
  readers follow the rotate record. Old generations are deleted after
  KEEP_GENERATIONS more rotations.
- SHMFILE.d/UID.lock: one per member incarnation, held with an exclusive
  flock for the member's whole life. Death (even kill -9) releases it at
  once, unlike a pid that stays a zombie for seconds.

Every member appends under the control lock and reads with its own cursor,
so all members see one order. A survivor that can take a member's lock file
appends that member's `leave`, after re-reading the log under the control
lock (check-and-append: one Left however many survivors notice). A joiner
that finds no live member starts a fresh generation, so a cluster restarted
after everyone died is not blocked by stale files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

from ..proto import SdNode
from .driver import ClusterDriver, DriverError, Event, Left
from .stream import LogFormatError, Membership, decode, encode_join, encode_leave, encode_msg

DEFAULT_SHM = "/tmp/sheepdog_shm"
# How often a member looks for new records: the delay a message may wait.
# Cluster operations come in bursts (a lock is a request, then the block /
# notify pair), so right after an event a member polls fast, and it slows
# down once the log has been quiet for a while: idle nodes cost little, a
# burst is not paced at 50 ms a message.
POLL_INTERVAL = 0.05
POLL_INTERVAL_BUSY = 0.005
BUSY_FOR = 1.0
# Events read from the log and not yet taken by the node.
EVENT_BUFFER = 1024
# Liveness probes every this many polls (0.2 s): a crash is noticed fast,
# and probing N lock files 20 times a second buys nothing.
PROBE_EVERY = 4
# A log file past this size is rotated; a test-scale driver keeps it small.
ROTATE_BYTES = 1 << 20
# Generations kept behind the current one, for readers still catching up.
KEEP_GENERATIONS = 3


def _json_line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


class _Core:
    """The blocking side of one member: files, locks, cursor, fold.

    Every method runs in a worker thread; `_mutex` serialises them because
    flock does not exclude threads sharing one open file.
    """

    def __init__(self, shm: Path, me: SdNode) -> None:
        self.shm, self.dir, self.me = shm, Path(str(shm) + ".d"), me
        self.uid = uuid.uuid4().hex
        self.state = Membership()
        self.pending: list[Event] = []
        self.joined = False  # our own join record has been folded in
        self._mutex = threading.Lock()
        self._ctl_fd = -1
        self._lock_fd = -1
        self._gen = 0
        self._log_fd = -1
        self._offset = 0
        self._polls = 0

    # -- files -------------------------------------------------------------

    @contextlib.contextmanager
    def _control(self) -> Iterator[None]:
        """Hold the cluster-wide append lock (the caller holds `_mutex`)."""
        fcntl.flock(self._ctl_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._ctl_fd, fcntl.LOCK_UN)

    def _log_path(self, gen: int) -> Path:
        return self.dir / f"log.{gen}"

    def _read_gen(self) -> int | None:
        raw = os.pread(self._ctl_fd, 4096, 0)
        try:
            return int(json.loads(raw)["gen"])
        except (ValueError, KeyError, TypeError):
            return None

    def _write_gen(self, gen: int) -> None:
        data = _json_line({"gen": gen})
        os.ftruncate(self._ctl_fd, 0)
        os.pwrite(self._ctl_fd, data, 0)

    def _open_log(self, gen: int) -> None:
        if self._log_fd >= 0:
            os.close(self._log_fd)
        self._gen = gen
        self._log_fd = os.open(self._log_path(gen), os.O_RDWR | os.O_APPEND)
        self._offset = 0

    def _lines(self) -> Iterator[bytes]:
        """Complete lines after the cursor; the cursor moves past each."""
        buf = b""
        while True:
            chunk = os.pread(self._log_fd, 1 << 16, self._offset + len(buf))
            if not chunk:
                break
            buf += chunk
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            line = buf[start:end]
            start = end + 1
            self._offset += len(line) + 1
            yield line

    # -- lock files ----------------------------------------------------------

    def _member_lock(self, uid: str) -> Path:
        return self.dir / f"{uid}.lock"

    def _alive(self, uid: str) -> bool:
        """Is the member's lock file still held? A missing file means dead."""
        if uid == self.uid:
            return True
        try:
            fd = os.open(self._member_lock(uid), os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def _sweep_stale_locks(self) -> None:
        """Remove lock files nobody holds (members that died long ago)."""
        for p in self.dir.glob("*.lock"):
            uid = p.name[: -len(".lock")]
            if uid != self.uid and not self._alive(uid):
                p.unlink(missing_ok=True)

    # -- the log -------------------------------------------------------------

    def _catch_up(self) -> None:
        """Fold every complete record after the cursor into the state."""
        for line in self._lines():
            rec = decode(line)
            kind = rec["t"]
            if kind == "base":
                self.state = Membership.from_json(rec["state"])
                continue
            if kind == "rotate":
                self._open_log(int(rec["next"]))
                # The new file's base equals our state; re-reading it is harmless.
                return self._catch_up()
            events = self.state.apply(rec)
            if not self.joined:
                if kind == "join" and rec["id"] == self.uid:
                    self.joined = True
                    self.pending.append(events[-1])
                continue
            for ev in events:
                if isinstance(ev, Left) and self.uid not in self.state.members:
                    raise DriverError(f"{self.me.nid} was declared dead by the cluster")
                self.pending.append(ev)

    def _append(self, record: bytes) -> None:
        """Append under the control lock, after catching up (so the log's
        membership is known) and rotating a file grown too large."""
        self._catch_up()
        if os.fstat(self._log_fd).st_size > ROTATE_BYTES:
            self._rotate()
        os.write(self._log_fd, record + b"\n")

    def _rotate(self) -> None:
        new = self._gen + 1
        path = self._log_path(new)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(_json_line({"t": "base", "state": self.state.to_json()}))
        os.replace(tmp, path)
        os.write(self._log_fd, _json_line({"t": "rotate", "next": new}))
        self._write_gen(new)
        self._catch_up()  # follows the rotate record into the new file
        self._log_path(new - 1 - KEEP_GENERATIONS).unlink(missing_ok=True)

    def _start_generation(self, seq: int) -> None:
        """Nobody alive: throw the old logs away and start a fresh one."""
        old = self._read_gen()
        gen = (old or 0) + 1
        for p in self.dir.glob("log.*"):
            p.unlink(missing_ok=True)
        self._log_path(gen).write_bytes(_json_line({"t": "base", "state": {"seq": seq, "members": []}}))
        self._write_gen(gen)
        self._sweep_stale_locks()
        self._open_log(gen)
        self.state = Membership(seq=seq)

    # -- operations (each in a worker thread) ------------------------------

    def join(self) -> None:
        """Register our lock file, then append our join record."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._ctl_fd = os.open(self.shm, os.O_RDWR | os.O_CREAT, 0o666)
        tmp = self.dir / f"{self.uid}.tmp"
        self._lock_fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with self._mutex, self._control():
            # Renamed only now, under the control lock: a joiner sweeping
            # stale lock files never sees ours unlocked.
            os.rename(tmp, self._member_lock(self.uid))
            gen = self._read_gen()
            alive: list[str] = []
            if gen is not None and self._log_path(gen).exists():
                self._open_log(gen)
                try:
                    self._catch_up()
                    alive = [u for u in self.state.members if self._alive(u)]
                except (LogFormatError, KeyError, ValueError, FileNotFoundError):
                    alive = []
            if not alive:
                self._start_generation(self.state.seq)
            dead = [u for u in self.state.members if u not in alive]
            for uid in dead:
                os.write(self._log_fd, encode_leave(uid) + b"\n")
            self._append(encode_join(self.uid, self.me))
            self._catch_up()
        for uid in dead:
            self._member_lock(uid).unlink(missing_ok=True)

    def poll(self) -> list[Event]:
        """New events since the last poll; every PROBE_EVERY polls also
        append a leave for each member whose lock file is free."""
        with self._mutex:
            self._catch_up()
            self._polls += 1
            if self._polls % PROBE_EVERY == 0:
                dead = [u for u in self.state.members if not self._alive(u)]
                if dead:
                    with self._control():
                        self._catch_up()
                        for uid in dead:
                            if uid in self.state.members:
                                self._append(encode_leave(uid))
                    for uid in dead:
                        self._member_lock(uid).unlink(missing_ok=True)
            out, self.pending = self.pending, []
            return out

    def broadcast(self, payload: bytes) -> None:
        with self._mutex:
            if self._ctl_fd < 0:  # leave() ran: a stopping node's last messages
                raise DriverError("this node has left the cluster")
            with self._control():
                self._append(encode_msg(self.uid, payload))

    def leave(self) -> None:
        """Append our leave (if we got as far as the log), drop our lock."""
        with self._mutex:
            try:
                if self._log_fd >= 0 and self._ctl_fd >= 0:
                    with self._control():
                        self._append(encode_leave(self.uid))
            except (OSError, LogFormatError, DriverError):
                pass  # our lock file going away tells the others anyway
            finally:
                for p in (self._member_lock(self.uid), self.dir / f"{self.uid}.tmp"):
                    p.unlink(missing_ok=True)
                for fd in (self._lock_fd, self._log_fd, self._ctl_fd):
                    if fd >= 0:
                        with contextlib.suppress(OSError):
                            os.close(fd)
                self._lock_fd = self._log_fd = self._ctl_fd = -1


class LocalDriver(ClusterDriver):
    """`local[:SHMFILE]`: a cluster of processes naming the same file.

    Besides the ClusterDriver interface: `members` is the membership as of
    the last Joined/Left delivered to the consumer.
    """

    name = "local"

    def __init__(self, shm_path: str | None = None) -> None:
        self.shm = Path(shm_path or DEFAULT_SHM)
        self._core: _Core | None = None
        self._joined = trio.Event()
        self._wake = trio.Event()
        self.members: tuple[SdNode, ...] = ()

    async def run(self, me: SdNode, events: trio.MemorySendChannel[Event], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        core = _Core(self.shm, me)
        try:
            try:
                await trio.to_thread.run_sync(core.join)
            except OSError as e:
                raise DriverError(f"cannot join local cluster at {self.shm}: {e}") from e
            self._core = core
            self._joined.set()
            task_status.started()
            # Bounded: when the node applies events slower than they come,
            # the poller waits (the log keeps them) instead of buffering
            # without end.
            send, recv = trio.open_memory_channel[Event](EVENT_BUFFER)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._deliver, recv, events)
                busy_until = 0.0
                while True:
                    new = await trio.to_thread.run_sync(core.poll)
                    for ev in new:
                        await send.send(ev)
                    now = trio.current_time()
                    if new:
                        busy_until = now + BUSY_FOR
                    interval = POLL_INTERVAL_BUSY if now < busy_until else POLL_INTERVAL
                    with trio.move_on_after(interval):
                        await self._wake.wait()  # our own broadcast: read it back now
                    self._wake = trio.Event()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the consumer went away: leave quietly
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(core.leave)

    async def broadcast(self, payload: bytes) -> None:
        await self._joined.wait()
        assert self._core is not None
        try:
            await trio.to_thread.run_sync(self._core.broadcast, payload)
            self._wake.set()
        except OSError as e:
            if e.errno == errno.EBADF:
                raise DriverError("not a member any more") from e
            raise
