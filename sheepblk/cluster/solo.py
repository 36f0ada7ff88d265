"""`solo`: a one-node cluster driver that delivers every message at once.

Why: a single sheep needs no coordination, and tests of the daemon should
not depend on a shared file or ZooKeeper. It keeps the ClusterDriver
contract (our Joined first, then our broadcasts in order).
"""

from __future__ import annotations

import trio

from ..proto import SdNode
from .driver import ClusterDriver, Event, Joined, Message


class SoloDriver(ClusterDriver):
    name = "solo"

    def __init__(self) -> None:
        self._events: trio.MemorySendChannel[Event] | None = None
        self._me: SdNode | None = None
        self._seq = 0
        self._ready = trio.Event()

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    async def run(self, me: SdNode, events: trio.MemorySendChannel[Event], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._me = me
        self._events = events
        await events.send(Joined(self._next(), me, (me,)))
        self._ready.set()
        task_status.started()
        await trio.sleep_forever()

    async def broadcast(self, payload: bytes) -> None:
        await self._ready.wait()
        assert self._events is not None and self._me is not None
        await self._events.send(Message(self._next(), self._me, payload))
