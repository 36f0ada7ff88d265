"""AsyncLink, the pipelined connection sheepfs sends its volume I/O over
from the trio thread: answers out of order reach their own requests, a
sheep that hangs up fails every request in flight at once (none waits for
its timeout), and the next request connects again.

The fake sheep is test_client_pipeline's: it gathers a batch of requests
and answers them shuffled; a read's answer is a pattern only its object
produces, a write's carries the length and digest of what it received.
"""

from __future__ import annotations

import trio
from test_client_pipeline import (
    HANG,
    KIB,
    WRITE_RESULT,
    FakeSheep,
    digest,
    pattern,
    sock_path,
)

from sheepblk.client import NetworkError, SheepdogError
from sheepblk.client.aio import AsyncLink
from sheepblk.proto import SD_REQ_SIZE, Flag, ObjArgs, Op, Request, Res, Response

__all__ = ["sock_path"]  # the fixture, used by name

N = 64


async def _read(link: AsyncLink, oid: int, size: int) -> bytes:
    buf = bytearray(size)
    await link.read_obj(oid, 0, memoryview(buf))
    return bytes(buf)


def test_answers_out_of_order_reach_their_own_requests(sock_path: str) -> None:
    async def main() -> None:
        with FakeSheep(sock_path, batch=N) as sheep:
            async with trio.open_nursery() as nursery:
                link = AsyncLink(sheep.host, sheep.port, nursery)
                got: dict[int, bytes] = {}
                wrote: dict[int, Response] = {}

                async def reader(oid: int) -> None:
                    got[oid] = await _read(link, oid, (oid % 3 + 1) * 4 * KIB)

                async def writer(oid: int) -> None:
                    # The fake answers a write with the digest of its payload.
                    rsp, _ = await link.execute(*_write(oid))
                    wrote[oid] = rsp

                with trio.fail_after(HANG):
                    async with trio.open_nursery() as calls:
                        for oid in range(1, N // 2 + 1):
                            calls.start_soon(reader, oid)
                        for oid in range(N // 2 + 1, N + 1):
                            calls.start_soon(writer, oid)
                for oid, data in got.items():
                    assert data == pattern(oid, (oid % 3 + 1) * 4 * KIB), oid
                for oid, rsp in wrote.items():
                    n, dg = WRITE_RESULT.unpack(rsp.args)
                    assert (n, dg) == (4 * KIB, digest(pattern(oid + 1000, 4 * KIB))), oid
                await link.aclose()

    trio.run(main)


def _write(oid: int) -> tuple[Request, bytes]:
    """A 4 KiB write as AsyncLink.write_obj sends it, through execute to
    see its answer's args."""
    data = pattern(oid + 1000, 4 * KIB)
    return (Request(Op.WRITE_OBJ, Flag.CMD_WRITE, 0, 0, len(data), ObjArgs(oid=oid).pack()),
            data)


def test_an_error_result_fails_only_its_request(sock_path: str) -> None:
    def answer(req, data):  # type: ignore[no-untyped-def]
        from test_client_pipeline import oid_of, sheep_answer
        if oid_of(req) == 7:
            return Response(req.opcode, Res.NO_OBJ, id=req.id), b""
        return sheep_answer(req, data)

    async def main() -> None:
        with FakeSheep(sock_path, batch=8, answer=answer) as sheep:
            async with trio.open_nursery() as nursery:
                link = AsyncLink(sheep.host, sheep.port, nursery)
                results: dict[int, object] = {}

                async def one(oid: int) -> None:
                    try:
                        results[oid] = await _read(link, oid, 4 * KIB)
                    except SheepdogError as e:
                        results[oid] = e

                with trio.fail_after(HANG):
                    async with trio.open_nursery() as calls:
                        for oid in range(1, 9):
                            calls.start_soon(one, oid)
                for oid, r in results.items():
                    if oid == 7:
                        assert isinstance(r, SheepdogError) and r.result == Res.NO_OBJ
                    else:
                        assert r == pattern(oid, 4 * KIB)
                await link.aclose()

    trio.run(main)


def test_a_sheep_hanging_up_fails_every_request_in_flight(sock_path: str) -> None:
    async def main() -> None:
        with FakeSheep(sock_path, batch=N, close_after=16, answer_before_close=5) as sheep:
            async with trio.open_nursery() as nursery:
                link = AsyncLink(sheep.host, sheep.port, nursery)
                results: dict[int, object] = {}

                async def one(oid: int) -> None:
                    try:
                        results[oid] = await _read(link, oid, 8 * KIB)
                    except NetworkError as e:
                        results[oid] = e

                with trio.fail_after(HANG):  # a hang, not a timing threshold
                    async with trio.open_nursery() as calls:
                        for oid in range(1, 17):
                            calls.start_soon(one, oid)
                answered = list(sheep.answered)
                ok = [o for o, r in results.items() if isinstance(r, bytes)]
                failed = [o for o, r in results.items() if isinstance(r, NetworkError)]
                assert len(ok) == 5 and len(failed) == 11, results
                assert len(answered) == 5
                for oid in ok:
                    assert results[oid] == pattern(oid, 8 * KIB)
                # The next request connects again.
                sheep.batch, sheep.close_after = 1, None
                with trio.fail_after(HANG):
                    assert await _read(link, 99, 4 * KIB) == pattern(99, 4 * KIB)
                assert sheep.connections == 2
                await link.aclose()

    trio.run(main)


def test_an_unknown_id_fails_the_stream(sock_path: str) -> None:
    def answer(req, data):  # type: ignore[no-untyped-def]
        from test_client_pipeline import sheep_answer
        rsp, payload = sheep_answer(req, data)
        return rsp._replace(id=rsp.id + 1000), payload

    async def main() -> None:
        with FakeSheep(sock_path, batch=4, answer=answer) as sheep:
            async with trio.open_nursery() as nursery:
                link = AsyncLink(sheep.host, sheep.port, nursery)
                errors: list[BaseException] = []

                async def one(oid: int) -> None:
                    try:
                        await _read(link, oid, 4 * KIB)
                    except NetworkError as e:
                        errors.append(e)

                with trio.fail_after(HANG):
                    async with trio.open_nursery() as calls:
                        for oid in range(1, 5):
                            calls.start_soon(one, oid)
                assert len(errors) == 4 and "unknown request id" in str(errors[0])
                await link.aclose()

    trio.run(main)


def test_a_request_cut_off_mid_send_closes_its_stream(sock_path: str) -> None:
    """A write cancelled while the socket was full went out in part; the
    sheep would read the next request's header as the rest of its
    payload. The link drops that connection instead, and the next
    request goes out whole on a new one."""
    import socket

    big = 16 << 20  # more than the socket buffers hold
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(4)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            link = AsyncLink(sock_path, 0, nursery)
            req = Request(Op.WRITE_OBJ, Flag.CMD_WRITE, 0, 0, big, ObjArgs(oid=1).pack())
            with trio.move_on_after(0.5) as scope:  # the sheep reads nothing meanwhile
                await link.execute(req, bytes(big))
            assert scope.cancelled_caught
            first, _ = await trio.to_thread.run_sync(listener.accept)
            # What the first connection carried ends short of the payload.
            got = 0
            while chunk := await trio.to_thread.run_sync(first.recv, 1 << 20):
                got += len(chunk)
            assert 0 < got < SD_REQ_SIZE + big
            first.close()
            # The next request goes out on a connection of its own, whole.
            got_back: list[bytes] = []

            async def read() -> None:
                got_back.append(await _read(link, 5, 4 * KIB))

            async with trio.open_nursery() as calls:
                calls.start_soon(read)
                second, _ = await trio.to_thread.run_sync(listener.accept)
                head = await trio.to_thread.run_sync(second.recv, SD_REQ_SIZE, socket.MSG_WAITALL)
                sent = Request.unpack(head)
                assert (sent.opcode, sent.data_length, ObjArgs.unpack(sent.args).oid) == \
                    (Op.READ_OBJ, 4 * KIB, 5)
                rsp = Response(sent.opcode, id=sent.id, data_length=4 * KIB)
                second.sendall(rsp.pack() + pattern(5, 4 * KIB))
            second.close()
            assert got_back == [pattern(5, 4 * KIB)]
            await link.aclose()

    async def bounded() -> None:
        with trio.fail_after(HANG):  # a hang, not a timing threshold
            await main()

    try:
        trio.run(bounded)
    finally:
        listener.close()
