"""PipelinedConnection against a scripted fake sheep.

Why: the pipelined connection has no reader thread; whichever caller is
waiting reads for everyone and hands each answer to its owner by the id
the sheep echoes. A mistake there gives a caller someone else's bytes, or
hangs every caller, or writes into a buffer its owner has already reused.
A real sheep answers too promptly and in too regular an order to show
that, so these tests use a fake one that holds requests and answers them
out of order, answers ids nobody asked for, or hangs up mid-pipeline.

No test measures time: a timeout only turns a hang into a failure.
"""

from __future__ import annotations

import hashlib
import random
import select
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import pytest

from sheepblk.client import NetworkError, PipelinedConnection, PipelinedPool, SheepdogError
from sheepblk.client.pipeline import RECV_CHUNK
from sheepblk.proto import SD_REQ_SIZE, Flag, ObjArgs, Op, Request, Res, Response

KIB, MIB = 1 << 10, 1 << 20
# Bounds a wait that would otherwise be a hang; never a measurement.
HANG = 30.0
# No socket timeout on the client: it would turn a hang into a NetworkError,
# which some tests expect anyway. A hang is caught by run_all; closing the
# fake sheep then unblocks the stuck receive.
SOCK_TIMEOUT = None
# A write's answer carries, in its args, the length and digest of the
# payload the sheep received.
WRITE_RESULT = struct.Struct("<I20s4x")

T = TypeVar("T")
Answer = Callable[[Request, bytes], tuple[Response, bytes]]
Order = Callable[[list[tuple[Request, bytes]]], None]


def pattern(oid: int, n: int) -> bytes:
    """Bytes only this object's read produces: an answer delivered to the
    wrong caller, or shifted within the stream, cannot match."""
    return random.Random(oid).randbytes(n)


def digest(data: bytes | bytearray | memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=20).digest()


def oid_of(req: Request) -> int:
    return ObjArgs.unpack(req.args).oid


def sheep_answer(req: Request, data: bytes) -> tuple[Response, bytes]:
    """What the fake sheep answers by default: a read gets `data_length`
    bytes of its object's pattern, a write gets the length and digest of
    the payload received."""
    if req.flags & Flag.CMD_WRITE:
        args = WRITE_RESULT.pack(len(data), digest(data))
        return Response(req.opcode, id=req.id, args=args), b""
    payload = pattern(oid_of(req), req.data_length)
    return Response(req.opcode, id=req.id, data_length=len(payload)), payload


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    """`n` bytes from `conn`, or None if the peer hung up first."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = conn.recv_into(view[got:])
        if k == 0:
            return None
        got += k
    return bytes(buf)


class FakeSheep:
    """A scripted sheep on a unix socket (`path`) or on 127.0.0.1.

    Each connection gathers `batch` requests (header, and a write's
    payload), then answers them in a shuffled order, so answers come back
    out of order and in one burst as a real sheep's batches do (`order`
    puts a burst in the order to answer it; shuffled by default). With
    `close_after`, once that many requests came in on a connection it
    answers `answer_before_close` of them (shuffled) and hangs up.
    `answer` computes each answer; what it returns is sent as is (a wrong
    id included). `answered` lists the requests answered, in the order
    their answers were sent.

    Resource handling: close() (or the context manager) shuts the listener
    and every accepted connection and joins every thread it started.
    """

    def __init__(self, path: str | None = None, *, batch: int = 1,
                 close_after: int | None = None, answer_before_close: int = 0,
                 answer: Answer = sheep_answer, order: Order | None = None,
                 seed: int = 1) -> None:
        self.order = order or random.Random(seed).shuffle
        self.batch, self.close_after = batch, close_after
        self.answer_before_close, self.answer = answer_before_close, answer
        if path is not None:
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(path)
            self.listener.listen(16)
            self.host, self.port = path, 0
        else:
            self.listener = socket.create_server(("127.0.0.1", 0))
            self.host, self.port = "127.0.0.1", self.listener.getsockname()[1]
        self.answered: list[Request] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def __enter__(self) -> FakeSheep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> PipelinedConnection:
        return PipelinedConnection(self.host, self.port, SOCK_TIMEOUT)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self._stopping:  # close()'s wake-up connection
                    conn.close()
                    return
                self.connections += 1
                self._conns.append(conn)
                t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
                self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        """Answer one connection as scripted; a client that hung up ends it quietly."""
        held: list[tuple[Request, bytes]] = []
        got = 0
        try:
            while True:
                head = _recv_exact(conn, SD_REQ_SIZE)
                if head is None:
                    return
                req = Request.unpack(head)
                data = b""
                if req.flags & Flag.CMD_WRITE and req.data_length:
                    body = _recv_exact(conn, req.data_length)
                    if body is None:
                        return
                    data = body
                held.append((req, data))
                got += 1
                if self.close_after is not None and got >= self.close_after:
                    self.order(held)
                    self._send(conn, held[:self.answer_before_close])
                    return
                if len(held) >= self.batch:
                    self.order(held)
                    self._send(conn, held)
                    held = []
        except OSError:
            return
        finally:
            conn.close()

    def _send(self, conn: socket.socket, reqs: list[tuple[Request, bytes]]) -> None:
        for req, data in reqs:
            rsp, payload = self.answer(req, data)
            with self._lock:
                self.answered.append(req)
            conn.sendall(rsp.pack() + payload)

    def close(self) -> None:
        with self._lock:
            self._stopping = True
            conns = list(self._conns)
        # A connection wakes the blocked accept(); shutdown wakes a recv().
        try:
            with socket.socket(self.listener.family, socket.SOCK_STREAM) as s:
                s.connect(self.listener.getsockname())
        except OSError:
            pass
        self._acceptor.join(HANG)
        self.listener.close()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(HANG)
        assert not self._acceptor.is_alive() and not any(t.is_alive() for t in self._threads)


@pytest.fixture
def sock_path() -> Iterator[str]:
    """A unix socket path short enough for AF_UNIX (under 108 bytes),
    which pytest's tmp_path of a parametrized test may not be."""
    d = tempfile.mkdtemp(prefix="pl-", dir="/tmp")
    try:
        yield f"{d}/sock"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run_all(calls: Sequence[Callable[[], T]]) -> list[T | Exception]:
    """Run every call in its own thread, all at once; return what each
    returned or raised. A thread still running after HANG is a hang and
    fails the test."""
    results: list[T | Exception | None] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = calls[i]()
        except Exception as e:  # noqa: BLE001 - the test inspects it
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + HANG
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = sum(t.is_alive() for t in threads)
    # A failed check in one thread can leave the others waiting for a
    # burst that never fills: show the failure, not only the hang.
    failed = [r for r in results if isinstance(r, Exception)]
    assert hung == 0, f"{hung} of {len(threads)} calls hung; first error: {failed[:1]}"
    return results  # type: ignore[return-value]


@dataclass(frozen=True)
class Job:
    """One request a caller makes and checks: a read of `size` bytes of
    object `oid`, or a write of `size` bytes; into a buffer of its own
    (`rbuf`) or a new one."""

    oid: int
    write: bool
    size: int
    rbuf: bool = False

    def data(self) -> bytes:
        return pattern(self.oid ^ 0x5A5A, self.size)


def do(conn: PipelinedConnection, job: Job, check: bool = True) -> Response:
    """Make `job`'s request and assert its answer is its own; return the
    answer's header. The caller's id (0xDEAD) must be replaced."""
    args = ObjArgs(oid=job.oid).pack()
    # Room past the answer: it must land at the buffer's start, untouched after.
    buf = bytearray(job.size + job.oid % 3 * 512) if job.rbuf else None
    if job.write:
        data: bytes | bytearray = job.data()
        if job.rbuf:
            data = bytearray(data)
        req = Request(Op.WRITE_OBJ, flags=Flag.CMD_WRITE, id=0xDEAD,
                      data_length=job.size, args=args)
        rsp, out = conn.execute(req, data, rbuf=buf, check=check)
        assert WRITE_RESULT.unpack(rsp.args) == (job.size, digest(data)), job
        assert len(out) == 0
    else:
        req = Request(Op.READ_OBJ, id=0xDEAD, data_length=job.size, args=args)
        rsp, out = conn.execute(req, rbuf=buf, check=check)
        if rsp.result != Res.SUCCESS:
            return rsp
        assert rsp.data_length == job.size and len(out) == job.size, job
        assert out == pattern(job.oid, job.size), job
    if buf is not None:
        assert out.obj is buf, "the answer did not land in the caller's buffer"
        assert not any(buf[len(out):]), "written past the answer"
    return rsp


def read(oid: int, size: int = 4 * KIB, rbuf: bool = False) -> Job:
    return Job(oid, False, size, rbuf)


SIZES = [0, 4 * KIB, 100 * KIB, MIB]  # 1 MiB is larger than RECV_CHUNK
THREADS, ROUNDS = 64, 4


def test_many_threads_each_get_their_own_answer(sock_path: str) -> None:
    """64 threads, reads and writes of 0 B to 1 MiB, with and without a
    buffer of their own, answered in shuffled bursts of 64: every caller
    gets exactly its own answer, and every request carries the
    connection's own unique id, not the caller's."""
    assert MIB > RECV_CHUNK
    # Each thread has one request in flight, so each burst of 64 holds one
    # request of every thread. Within a round the 64 threads cover all 16
    # kinds (read/write x size x own buffer or not) four times.
    def kind(t: int, r: int) -> Job:
        c = (t + 5 * r) % 16
        return Job(oid=1000 * t + r + 1, write=bool(c & 1), rbuf=bool(c & 2), size=SIZES[c >> 2])

    plans = [[kind(t, r) for r in range(ROUNDS)] for t in range(THREADS)]
    assert len({j for p in plans for j in p if j.size == MIB and j.rbuf and not j.write}) > 0
    with FakeSheep(sock_path, batch=THREADS) as sheep, sheep.connect() as conn:
        def worker(plan: list[Job]) -> int:
            for job in plan:
                do(conn, job)
            return len(plan)

        results = run_all([partial(worker, p) for p in plans])
        assert results == [ROUNDS] * THREADS
        assert not conn.closed and conn.in_flight == 0
    ids = [r.id for r in sheep.answered]
    assert len(ids) == THREADS * ROUNDS
    assert len(set(ids)) == len(ids) and 0 not in ids and 0xDEAD not in ids
    assert sorted(oid_of(r) for r in sheep.answered) == sorted(j.oid for p in plans for j in p)


def test_error_result_fails_only_its_own_call(sock_path: str) -> None:
    """A result other than SUCCESS is that request's answer, not a broken
    stream: it raises SheepdogError for its caller only, the others get
    their data, and the connection carries on (check=False returns it)."""
    def answer(req: Request, data: bytes) -> tuple[Response, bytes]:
        if oid_of(req) == 7:
            return Response(req.opcode, Res.NO_OBJ, id=req.id), b""
        return sheep_answer(req, data)

    n = 16
    with FakeSheep(sock_path, batch=n, answer=answer) as sheep, sheep.connect() as conn:
        results = run_all([partial(do, conn, read(i)) for i in range(n)])
        err = results[7]
        assert isinstance(err, SheepdogError) and err.result == Res.NO_OBJ
        assert err.context == ""
        assert all(isinstance(r, Response) and r.result == Res.SUCCESS
                   for i, r in enumerate(results) if i != 7), results
        assert not conn.closed and conn.in_flight == 0

        again = run_all([partial(do, conn, read(i, 100 * KIB, rbuf=bool(i % 2)), check=False)
                         for i in range(n)])
        assert [getattr(r, "result", r) for r in again] == [
            Res.NO_OBJ if i == 7 else Res.SUCCESS for i in range(n)]
        assert not conn.closed


def _only_answered_succeed(results: list[Response | Exception], jobs: list[Job],
                           delivered: set[int]) -> None:
    """Every call whose oid is in `delivered` got its own answer (do()
    checked the bytes); every other one failed with NetworkError."""
    for job, r in zip(jobs, results, strict=True):
        if job.oid in delivered:
            assert isinstance(r, Response), (job, r)
        else:
            assert isinstance(r, NetworkError), (job, r)


def _dead(conn: PipelinedConnection) -> None:
    """A failed connection says so and fails a new request at once."""
    assert conn.closed and conn.in_flight == 0
    (late,) = run_all([partial(do, conn, read(99))])
    assert isinstance(late, NetworkError), late


@pytest.mark.parametrize("close_after,answer_before_close", [(16, 5), (16, 0), (4, 0)])
def test_sheep_hanging_up_fails_every_call_in_flight(
        sock_path: str, close_after: int, answer_before_close: int) -> None:
    """The sheep hangs up with requests in flight (all 16 received, or
    only 4 with the rest still coming): the answers it sent before are
    delivered, every other call fails with NetworkError, none hangs."""
    jobs = [read(i + 1, SIZES[i % 4], rbuf=bool(i % 3)) for i in range(16)]
    with FakeSheep(sock_path, batch=16, close_after=close_after,
                   answer_before_close=answer_before_close) as sheep, sheep.connect() as conn:
        results = run_all([partial(do, conn, j) for j in jobs])
        delivered = {oid_of(r) for r in sheep.answered}
        assert len(delivered) == answer_before_close
        _only_answered_succeed(results, jobs, delivered)
        _dead(conn)


def test_answer_to_unknown_id_fails_every_call_in_flight(sock_path: str) -> None:
    """An answer nobody asked for means the stream cannot be trusted: the
    answers before it are delivered, every call still waiting fails with
    NetworkError (none gets a later answer or hangs)."""
    def answer(req: Request, data: bytes) -> tuple[Response, bytes]:
        rsp, payload = sheep_answer(req, data)
        return (rsp._replace(id=req.id | 0xFFFF0000) if oid_of(req) == 9 else rsp), payload

    jobs = [read(i + 1, SIZES[i % 4], rbuf=bool(i % 2)) for i in range(16)]
    with FakeSheep(sock_path, batch=16, answer=answer) as sheep, sheep.connect() as conn:
        results = run_all([partial(do, conn, j) for j in jobs])
        order = [oid_of(r) for r in sheep.answered]
        _only_answered_succeed(results, jobs, set(order[:order.index(9)]))
        assert "unknown request id" in str(results[8])
        _dead(conn)


@pytest.mark.parametrize("size", [8 * KIB, MIB])
def test_answer_larger_than_rbuf_fails_without_writing(sock_path: str, size: int) -> None:
    """An answer longer than its caller's buffer fails the stream (its
    payload has nowhere to go): NetworkError for every
    call still waiting, and not a byte written into the buffer, nor into
    the guard bytes around the slice that was passed."""
    guard, small = 64, 4 * KIB
    whole = bytearray(b"\xa5" * (guard + small + guard))
    victim = 5

    def victim_call(conn: PipelinedConnection) -> Response:
        req = Request(Op.READ_OBJ, data_length=size, args=ObjArgs(oid=victim).pack())
        rsp, _ = conn.execute(req, rbuf=memoryview(whole)[guard:guard + small])
        return rsp

    jobs = [read(i + 1, SIZES[i % 4], rbuf=bool(i % 2)) for i in range(8)]
    with FakeSheep(sock_path, batch=8) as sheep, sheep.connect() as conn:
        calls = [partial(do, conn, j) for j in jobs]
        calls[victim - 1] = partial(victim_call, conn)
        results = run_all(calls)
        order = [oid_of(r) for r in sheep.answered]
        assert isinstance(results[victim - 1], NetworkError)
        assert "exceeds" in str(results[victim - 1])
        _only_answered_succeed(results, jobs, set(order[:order.index(victim)]))
        assert whole == b"\xa5" * len(whole)
        _dead(conn)


def test_pipelined_pool_replaces_a_closed_connection(sock_path: str) -> None:
    """PipelinedPool lends live connections (one per slot), and a slot
    whose connection closed, by the client or because the sheep hung up,
    gets a new, working one."""
    with FakeSheep(sock_path) as sheep, PipelinedPool(host=sock_path, port=0, size=2) as pool:
        a, b = pool.get(), pool.get()
        assert a is not b and not a.closed and not b.closed
        for c in (a, b):
            do(c, read(1, 4 * KIB))

        a.close()
        c = pool.get()
        assert c is not a and c is not b and not c.closed
        do(c, read(2, 100 * KIB, rbuf=True))
        assert sheep.connections == 3

        sheep.close_after = 1  # the sheep hangs up at the next request on any connection
        d = pool.get()  # b or c: both idle and open
        assert d in (b, c)
        with pytest.raises(NetworkError):
            do(d, read(3))
        assert d.closed
        sheep.close_after = None
        e = pool.get()
        assert e not in (a, b, c) and not e.closed
        do(e, Job(4, write=True, size=MIB))
        assert sheep.connections == 4  # counted once accepted: after a round trip
    assert b.closed and e.closed  # pool.close() closed them


def test_tcp_round_trip() -> None:
    """The same pipelining over TCP: reads and writes of every size from
    eight threads, answered in a shuffled burst."""
    jobs = [Job(i + 1, write=bool(i % 2), size=SIZES[i // 2 % 4], rbuf=bool(i // 4 % 2))
            for i in range(8)]
    with FakeSheep(batch=1) as sheep, sheep.connect() as conn:
        assert conn.where == f"127.0.0.1:{sheep.port}"
        do(conn, read(100))
        sheep.batch = 8
        results = run_all([partial(do, conn, j) for j in jobs])
        assert all(isinstance(r, Response) for r in results), results
        assert not conn.closed


# How long the socket wrapper below gives the owner of a buffer to return.
OWNER_GRACE = 2.0


class _CloseMidPayload:
    """The connection's socket, except that the first receive straight into
    `target` first lets close() run (as another thread may call it at that
    moment: PipelinedPool.close, or a send that failed) and lets the owner
    of `target` return from its failed call; then it receives as usual.
    `late` records whether that receive still wrote into `target`."""

    def __init__(self, conn: PipelinedConnection, target: bytearray,
                 owner: list[threading.Thread]) -> None:
        self._conn, self._sock, self._target, self._owner = conn, conn.sock, target, owner
        self.fired = False
        self.owner_returned = False
        self.late = False

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._sock, name)

    def recv_into(self, view: memoryview, *args: int) -> int:
        if self.fired or view.obj is not self._target:
            return self._sock.recv_into(view, *args)
        self.fired = True
        # Part of the payload is waiting in the socket, as it usually is.
        select.select([self._sock], [], [], HANG)
        self._conn.close()
        # A buggy close wakes the owner at once; a correct one leaves it
        # asleep until the reader is done with its buffer, so this wait
        # only bounds how long a correct run spends here.
        self._owner[0].join(OWNER_GRACE)
        self.owner_returned = not self._owner[0].is_alive()
        before = bytes(self._target)
        n = self._sock.recv_into(view, *args)
        self.late = self.owner_returned and bytes(self._target) != before
        return n


def test_no_write_into_the_buffer_of_a_call_that_returned(sock_path: str) -> None:
    """The module promises that nothing is written into the buffer of a
    call that has returned: the caller may reuse it at once (nbdkit hands
    it to the next request). Here the connection fails while the reader
    (another caller) receives a 1 MiB answer straight into X's buffer."""
    xbuf = bytearray(MIB)
    def x_first(held: list[tuple[Request, bytes]]) -> None:
        held.sort(key=lambda h: oid_of(h[0]))

    with FakeSheep(sock_path, batch=2, order=x_first) as sheep, sheep.connect() as conn:
        owner: list[threading.Thread] = []
        sock = _CloseMidPayload(conn, xbuf, owner)
        conn.sock = sock  # type: ignore[assignment]
        results: dict[str, object] = {}

        def call(name: str, job: Job, rbuf: bytearray | None) -> None:
            try:
                req = Request(Op.READ_OBJ, data_length=job.size, args=ObjArgs(oid=job.oid).pack())
                results[name] = conn.execute(req, rbuf=rbuf)
            except Exception as e:  # noqa: BLE001 - checked below
                results[name] = e

        # Y asks first and becomes the reader; X's answer then comes first.
        y = threading.Thread(target=call, args=("y", read(2, 4 * KIB), None), daemon=True)
        y.start()
        deadline = time.monotonic() + HANG
        while not conn._reading and time.monotonic() < deadline:
            time.sleep(0.001)
        assert conn._reading, "Y never started reading"
        x = threading.Thread(target=call, args=("x", read(1, MIB), xbuf), daemon=True)
        owner.append(x)
        x.start()
        for t in (x, y):
            t.join(HANG)
            assert not t.is_alive()
        assert sock.fired
        assert isinstance(results["x"], NetworkError), results["x"]
        assert not sock.late, "the reader wrote into X's buffer after X returned"
