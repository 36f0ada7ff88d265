"""The control channel: a unix socket the FUSE process serves beside the
mount, one command a connection.

Why a socket and not a file in the mount: a crashed or wedged mount must
still take commands, and a command must not be a FUSE request of the
file system it changes.

Protocol: the client sends one line, the server answers one line,
`ok JSON` or `err MESSAGE`, and closes. Commands:

    ping                       -> {}
    crash all                  drop every unsynced change, then EIO
    crash subset SEED          keep a random subset (by SEED), then EIO
    fail-fsync COUNT [PATTERN] the next COUNT fsyncs (of paths in the
                               mount matching PATTERN) fail with EIO
    enospc on|off              writes fail with ENOSPC
    stats                      counters and what is pending
"""

from __future__ import annotations

import json
import logging
import os
import socket
from typing import Any

import trio

from .fs import CommandError, PowerCutOps

log = logging.getLogger(__name__)

# A command line is short; anything longer is not a command.
MAX_LINE = 4096
# A client that connects and says nothing is dropped after this long.
READ_TIMEOUT = 10.0


async def execute(ops: PowerCutOps, line: str) -> dict[str, Any]:
    """Run one command line. Error handling: CommandError for a bad or
    impossible command."""
    words = line.split(maxsplit=2)
    if not words:
        raise CommandError("empty command")
    cmd, args = words[0], words[1:]
    if cmd == "ping" and not args:
        return {}
    if cmd == "stats" and not args:
        return ops.stats()
    if cmd == "crash" and args == ["all"]:
        return await ops.crash(None)
    if cmd == "crash" and len(args) == 2 and args[0] == "subset":
        try:
            seed = int(args[1])
        except ValueError:
            raise CommandError(f"bad seed {args[1]!r}") from None
        return await ops.crash(seed)
    if cmd == "fail-fsync" and args:
        try:
            count = int(args[0])
        except ValueError:
            raise CommandError(f"bad count {args[0]!r}") from None
        ops.set_fail_fsync(count, args[1] if len(args) > 1 else None)
        return {}
    if cmd == "enospc" and args in (["on"], ["off"]):
        ops.set_enospc(args[0] == "on")
        return {}
    raise CommandError(f"unknown command {line!r}")


async def _serve_one(ops: PowerCutOps, stream: trio.SocketStream) -> None:
    async with stream:
        buf = b""
        with trio.move_on_after(READ_TIMEOUT):
            while b"\n" not in buf and len(buf) < MAX_LINE:
                more = await stream.receive_some(MAX_LINE)
                if not more:
                    break
                buf += more
        line = buf.split(b"\n", 1)[0].decode(errors="replace").strip()
        try:
            reply = "ok " + json.dumps(await execute(ops, line))
        except CommandError as e:
            reply = f"err {e}"
        except Exception as e:
            log.exception("command %r failed", line)
            reply = f"err {type(e).__name__}: {e}"
        log.info("control: %s -> %s", line, reply)
        try:
            await stream.send_all(reply.encode() + b"\n")
        except trio.BrokenResourceError:
            pass


async def serve_control(ops: PowerCutOps, path: str, *,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Listen on the unix socket `path` (replacing a stale one) and serve
    commands until cancelled; started() once it listens."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(16)
    listener = trio.SocketListener(sock)
    task_status.started()

    async def handler(stream: trio.SocketStream) -> None:
        await _serve_one(ops, stream)

    try:
        await trio.serve_listeners(handler, [listener])
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

