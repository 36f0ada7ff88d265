"""ClusterCalls (server/stream_calls.py) with a driver that records: every
caller's wait ends, with the answer or with an error, on every path."""

from __future__ import annotations

from unittest import mock

import pytest
import trio
import trio.testing

from sheepblk.cluster.driver import ClusterDriver, Event
from sheepblk.proto import Op, Request, Res, SdNode, VdiArgs
from sheepblk.server.messages import ClusterMsg
from sheepblk.server.optable import OPS
from sheepblk.server.reply import Caller, Reply
from sheepblk.server.stream_calls import ClusterCalls


class Recording(ClusterDriver):
    def __init__(self, *, fail: bool = False) -> None:
        self.sent: list[ClusterMsg] = []
        self.fail = fail

    async def run(self, me: SdNode, events: trio.MemorySendChannel[Event], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    async def broadcast(self, payload: bytes) -> None:
        if self.fail:
            raise OSError("the driver is gone")
        self.sent.append(ClusterMsg.decode(payload))


class FakeNode:
    epoch = 1

    async def wait_epoch(self, epoch: int, delay: float) -> None:
        await trio.sleep(delay)


def calls(driver: Recording, failed: list[str]) -> ClusterCalls:
    return ClusterCalls(FakeNode(), driver, "127.0.0.1:7000",  # type: ignore[arg-type]
                        in_step=lambda: True, fail_stop=failed.append)


def new_vdi() -> Request:
    return Request(Op.NEW_VDI, 0, 0, 0, 256, VdiArgs(vdi_size=1 << 30).pack())


def test_a_caller_gets_the_answer_of_its_op() -> None:
    async def main() -> None:
        driver, failed = Recording(), list[str]()
        c = calls(driver, failed)
        got: list[Reply] = []

        async def ask() -> None:
            got.append(await c.cluster_op(new_vdi(), memoryview(b"a"), Caller("me/1")))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            (sent,) = driver.sent
            assert sent.kind == "block" and sent.owner == "me/1"
            c.answer(sent.op_id, Reply(Res.VDI_EXIST))
        assert [r.result for r in got] == [Res.VDI_EXIST]

    trio.run(main)


def test_a_node_that_fails_stop_ends_every_wait_and_every_later_call() -> None:
    async def main() -> None:
        driver, failed = Recording(), list[str]()
        c = calls(driver, failed)
        got: list[int] = []

        async def ask() -> None:
            got.append((await c.cluster_op(new_vdi(), None, Caller("me/1"))).result)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            c.answer_all(Res.KILLED)
        assert got == [Res.KILLED, Res.KILLED]
        assert (await c.cluster_op(new_vdi(), None, Caller("me/1"))).result == Res.KILLED
        assert await c.force() == Res.KILLED
        assert len(driver.sent) == 2  # nothing more was sent

    trio.run(main)


# The broadcast's failure is logged with its traceback, as it should be.
@pytest.mark.expected_errors(r"cannot broadcast the result of opcode 0x11")
def test_a_notify_that_cannot_be_sent_fails_the_node_stop() -> None:
    """Every node holds the stream until a block's notify: a node that
    cannot send it must leave, or the cluster waits for ever."""
    async def work(node: object, req: Request, data: memoryview,
                   owner: str) -> tuple[Reply, dict]:
        return Reply(), {"vid": 7}

    async def main() -> None:
        failed: list[str] = []
        c = calls(Recording(fail=True), failed)
        block = ClusterMsg("block", 1, "127.0.0.1:7000", new_vdi().pack(), b"x\0")
        with mock.patch.dict(OPS, {Op.NEW_VDI: OPS[Op.NEW_VDI]._replace(work=work)}):
            await c.do_work(block)
        assert failed and "NEW_VDI" in failed[0]

    trio.run(main)
