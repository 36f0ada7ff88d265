"""A tiny cluster member for driver tests, run as its own process.

    python tests/cluster_member.py SPEC PORT [--msgs N] [--wait-members M]

Joins the cluster named by SPEC as node 127.0.0.1:PORT, prints every event
as one JSON line, and once M members are in broadcasts N messages
"PORT:i". Runs until SIGTERM/SIGINT (then leaves cleanly) or kill -9.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

import trio

from sheepblk.cluster.driver import Event, Joined, Left, Message, make_driver
from sheepblk.proto import NodeId, SdNode


def event_json(ev: Event) -> dict[str, object]:
    if isinstance(ev, Message):
        return {"ev": "msg", "seq": ev.seq, "node": ev.sender.nid.port, "payload": ev.payload.decode()}
    kind = "joined" if isinstance(ev, Joined) else "left"
    assert isinstance(ev, Joined | Left)
    return {"ev": kind, "seq": ev.seq, "node": ev.node.nid.port,
            "members": [n.nid.port for n in ev.members]}


def emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    driver = make_driver(args.spec)
    me = SdNode(NodeId("127.0.0.1", args.port), zone=args.port)
    send, recv = trio.open_memory_channel[Event](0)
    enough = trio.Event()

    async def consume() -> None:
        async for ev in recv:
            emit(event_json(ev))
            if not isinstance(ev, Message) and len(ev.members) >= args.wait_members:
                enough.set()

    async def talk() -> None:
        await enough.wait()
        for i in range(args.msgs):
            await driver.broadcast(f"{args.port}:{i}".encode())
            await trio.sleep(0.01)
        emit({"ev": "sent", "count": args.msgs})

    async def signals(cancel: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
            async for _ in sigs:
                cancel.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(signals, nursery.cancel_scope)
        nursery.start_soon(consume)
        await nursery.start(driver.run, me, send)
        emit({"ev": "started"})
        nursery.start_soon(talk)
    emit({"ev": "stopped"})


if __name__ == "__main__":
    # Warnings and errors on stderr as "LEVEL:name:message", which the
    # test's teardown checks (tests/logcheck.py).
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser()
    p.add_argument("spec")
    p.add_argument("port", type=int)
    p.add_argument("--msgs", type=int, default=0)
    p.add_argument("--wait-members", type=int, default=1)
    trio.run(main, p.parse_args())
