"""This node's side of cluster ops: sending them through the ordered
stream, running the work half of our own blocks, applying every op's main
half, and answering the callers that wait for them.

Every caller waits on a waiter keyed by the op id it sent; every path ends
it: the op's main half (or its notify's result) answers it, and a node
that fails stop answers all of them KILLED, since it will apply nothing
more. Which handlers run is the op table's business (optable.py).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING

import trio

from ..cluster.driver import ClusterDriver
from ..proto import Op, Request, Res
from ..store import StoreError
from . import membership as mship
from .gateway import RETRY_PAUSE, RETRY_TIMEOUT, GatewayError
from .messages import ClusterMsg
from .optable import OPS
from .peer import result_of
from .peer_client import PeerError
from .reply import Caller, Reply
from .vdi_ops import VdiError

if TYPE_CHECKING:
    from .context import NodeContext

log = logging.getLogger("sheep")

# What a block's work half may answer after meeting a node that is gone:
# the op goes through the stream again at the next epoch (cluster_op).
STREAM_RETRYABLE = frozenset({Res.NETWORK_ERROR, Res.OLD_NODE_VER, Res.NEW_NODE_VER})
# True in the task running a block's work half (the epoch is frozen there:
# see gateway.FROZEN_ATTEMPTS).
IN_WORK: ContextVar[bool] = ContextVar("sheep_in_work", default=False)


class _Waiter:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply = Reply(Res.SYSTEM_ERROR)


class ClusterCalls:
    """Resource handling: the waiters of the ops this node sent. Error
    handling: a work half's failure is its op's result; a main half that
    fails here fails the node stop (`fail_stop`)."""

    def __init__(self, node: NodeContext, driver: ClusterDriver, key: str, *,
                 in_step: Callable[[], bool], fail_stop: Callable[[str], None]) -> None:
        self.node = node
        self.driver = driver
        self.key = key
        self._in_step = in_step
        self._fail_stop = fail_stop
        self._waiters: dict[int, _Waiter] = {}
        self._op_ids = itertools.count(1)
        self._dead: int | None = None  # the result every caller gets once we stopped

    async def cluster_op(self, req: Request, data: memoryview | None, caller: Caller,
                         extra: dict | None = None) -> Reply:
        """Through the ordered stream. A work half that met a node that is
        gone answers at once (see gateway.FROZEN_ATTEMPTS); the op then
        goes through the stream again, after the membership change that
        was waiting behind it has moved the epoch."""
        info = OPS[req.opcode]
        payload = bytes(data) if data is not None else b""
        deadline = trio.current_time() + RETRY_TIMEOUT
        while True:
            epoch = self.node.epoch
            msg = ClusterMsg("block" if info.work else "notify", 0, self.key, req.pack(),
                             payload, caller.key, extra=extra or {})
            reply = await self._call(msg)
            if (not info.work or reply.result not in STREAM_RETRYABLE
                    or trio.current_time() > deadline):
                return reply
            await self.node.wait_epoch(epoch, RETRY_PAUSE)
            log.info("%s again at epoch %d (%s)", Op(req.opcode).name, self.node.epoch,
                     Res(reply.result).name)

    async def barrier(self) -> None:
        """Return once every cluster event ordered before this call has
        been applied here. Why: each node applies the stream at its own
        pace, and a client told "deleted" (or "created") by one node may
        ask another at once; a local answer given after this is never
        older than that. An empty notify (opcode 0, no main half) is one
        broadcast, and it blocks no one."""
        await self._call(ClusterMsg("notify", 0, self.key, bytes(48)))

    async def caught_up(self) -> None:
        """The barrier, where it can matter: on a joined node of a cluster
        of several, not parked for its join sync (alone, a node applied
        everything before it answered; parked, it applies nothing yet)."""
        if self._in_step():
            await self.barrier()

    async def force(self) -> int:
        """`dog cluster recover force`, through the stream (the
        coordinator answers it with an `Answer`)."""
        return (await self._call(ClusterMsg(mship.FORCE, 0, self.key))).result

    async def _call(self, msg: ClusterMsg) -> Reply:
        if self._dead is not None:
            return Reply(self._dead)
        op_id = next(self._op_ids)
        waiter = self._waiters[op_id] = _Waiter()
        msg.op_id = op_id
        try:
            await self.driver.broadcast(msg.encode())
            await waiter.done.wait()
        finally:
            self._waiters.pop(op_id, None)
        return waiter.reply

    def answer(self, op_id: int, reply: Reply) -> None:
        waiter = self._waiters.get(op_id)
        if waiter is not None:
            waiter.reply = reply
            waiter.done.set()

    def answer_all(self, result: int) -> None:
        """This node stopped applying the stream (fail-stop): nothing will
        answer the ops it sent, so each caller gets `result` now, and so
        does every later one."""
        self._dead = result
        for op_id in list(self._waiters):
            self.answer(op_id, Reply(result))

    async def do_work(self, msg: ClusterMsg) -> None:
        """Our block's work half; its result goes to every node in a notify."""
        IN_WORK.set(True)  # this task's own context
        req = Request.unpack(msg.req)
        try:
            work = OPS[req.opcode].work
            assert work is not None  # only a block's op comes here
            reply, extra = await work(self.node, req, memoryview(msg.data), msg.owner)
        except (VdiError, GatewayError, StoreError, PeerError) as e:
            reply, extra = Reply(result_of(e)), {}
            log.debug("%s failed: %s", Op(req.opcode).name, e)
        except Exception:
            log.exception("cluster work for opcode %#x failed", req.opcode)
            reply, extra = Reply(Res.SYSTEM_ERROR), {}
        note = ClusterMsg("notify", msg.op_id, msg.origin, msg.req, msg.data, msg.owner,
                          reply.result, reply.args, blocked=True, extra={**msg.extra, **extra})
        try:
            await self.driver.broadcast(note.encode())
        except Exception as e:
            # Every node holds the stream until this notify: without it the
            # cluster would wait forever. Leaving releases it (they drop a
            # departed node's block).
            log.exception("cannot broadcast the result of opcode %#x", req.opcode)
            self._fail_stop(f"cannot send the result of {Op(req.opcode).name}: {e!r}")

    async def apply_main(self, msg: ClusterMsg) -> None:
        """A cluster op's main half, in stream order; then its caller's
        answer if the op is ours."""
        req = Request.unpack(msg.req)
        result = msg.result
        info = OPS.get(req.opcode)
        if result == Res.SUCCESS and info is not None and info.main is not None:
            try:
                result = await info.main(self.node, req, msg)
            except Exception as e:
                # The others applied it (or will): this node's state is no
                # longer the cluster's. It leaves instead of drifting.
                log.exception("applying opcode %#x failed", req.opcode)
                self._fail_stop(f"cannot apply {Op(req.opcode).name} as the cluster did: {e!r}")
                result = Res.SYSTEM_ERROR
        if msg.origin == self.key:
            self.answer(msg.op_id, Reply(result, msg.rsp_args))
