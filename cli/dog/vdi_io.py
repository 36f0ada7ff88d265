"""`vdi read` and `vdi write`: a VDI's bytes to stdout and from stdin.

Throughput is the point here. Both commands walk the range one object at a
time (the unit the daemons store and replicate) and keep PIPELINE_DEPTH
object requests in flight on as many connections, in a sliding window:
stdin is read into a reused object-sized buffer (`readinto`, no copies)
while earlier objects are still travelling, and stdout is written from the
buffers that objects were received into. A whole object of zeros is not
stored: it is discarded (`Vdi.zero`), so writing a sparse image leaves
holes.
"""

from __future__ import annotations

import functools
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from io import RawIOBase
from typing import Generic, TypeVar

import click

from sheepblk.client import ClientError, SheepClient, SheepdogError, Vdi
from sheepblk.proto import strerror

from .errors import EXIT_FAILURE, EXIT_SUCCESS, EXIT_SYSFAIL, QuietError
from .format import U64_MAX, parse_size
from .options import POOL_SIZE, Target, parse_snapshot, snapshot_option, target_options
from .progress import Progress
from .vdi_common import read_vdi

# Object requests in flight: one per pooled connection. More than two
# cores need to keep a replica set of disks and the network busy.
PIPELINE_DEPTH = POOL_SIZE
T = TypeVar("T")


def pieces(offset: int, length: int, object_size: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of the parts of a range that fall in one object."""
    end = offset + length
    while offset < end:
        n = min(object_size - offset % object_size, end - offset)
        yield offset, n
        offset += n


def _range(offset_s: str | None, length_s: str | None) -> tuple[int, int]:
    offset = parse_size(offset_s) if offset_s is not None else 0
    length = parse_size(length_s) if length_s is not None else U64_MAX
    return offset, length


class Window(Generic[T]):
    """A sliding window of futures, finished in submission order.

    Resource handling: owns a small thread pool; close() waits for the
    requests still in flight (buffers they use must outlive them).
    Error handling: the first failed request's exception is raised from
    `push`/`drain`, after which nothing new is submitted.
    """

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.pool = ThreadPoolExecutor(depth, thread_name_prefix="dog-io")
        self.pending: deque[tuple[Future[object], T]] = deque()

    def push(self, fn: Callable[[], object], token: T) -> list[T]:
        """Submit; return the tokens of requests that finished meanwhile
        (at least one when the window was full)."""
        self.pending.append((self.pool.submit(fn), token))
        done = []
        while self.pending and (len(self.pending) >= self.depth or self.pending[0][0].done()):
            fut, tok = self.pending.popleft()
            fut.result()
            done.append(tok)
        return done

    def drain(self) -> Iterator[T]:
        while self.pending:
            fut, tok = self.pending.popleft()
            fut.result()
            yield tok

    def close(self) -> None:
        for fut, _ in self.pending:
            fut.cancel()
        self.pool.shutdown(wait=True)


def _nothing() -> None:
    """The request of a hole: there is nothing to fetch."""


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        n = os.write(fd, view)
        view = view[n:]


def stream_out(v: Vdi, offset: int, total: int, fd: int,
               advance: Callable[[int], None] = lambda n: None) -> None:
    """Copy [offset, offset+total) of `v` to `fd`, in order; `advance(n)`
    as each n bytes are out."""
    osize = v.object_size
    zeros = memoryview(bytes(osize))
    free = [bytearray(osize) for _ in range(PIPELINE_DEPTH + 1)]
    win: Window[memoryview] = Window(PIPELINE_DEPTH)
    try:
        for off, n in pieces(offset, total, osize):
            if not v.index[off // osize]:
                # A hole: write it when its turn comes, no request needed.
                ready = win.push(_nothing, zeros[:n])
            else:
                buf = memoryview(free.pop())[:n]
                ready = win.push(functools.partial(v.pread_into, buf, off), buf)
            for view in ready:
                _write_all(fd, view)
                advance(len(view))
                if isinstance(view.obj, bytearray):
                    free.append(view.obj)
        for view in win.drain():
            _write_all(fd, view)
            advance(len(view))
    finally:
        win.close()


def _readinto_full(src: RawIOBase, view: memoryview) -> int:
    """Fill `view` from a pipe or file; fewer bytes only at end of input."""
    got = 0
    while got < len(view):
        n = src.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def stream_in(v: Vdi, offset: int, total: int, src: RawIOBase,
              advance: Callable[[int], None] = lambda n: None) -> int:
    """Write `src` into `v` from `offset`, at most `total` bytes; returns
    how many were written. Whole objects of zeros are discarded.
    `advance(n)` as each n bytes are stored."""
    osize = v.object_size
    zeros = bytes(osize)
    free = [bytearray(osize) for _ in range(PIPELINE_DEPTH + 1)]
    win: Window[tuple[bytearray, int]] = Window(PIPELINE_DEPTH)
    written = 0

    def stored(done: list[tuple[bytearray, int]]) -> None:
        for buf, n in done:
            free.append(buf)
            advance(n)

    try:
        for off, n in pieces(offset, total, osize):
            buf = free.pop()
            view = memoryview(buf)[:n]
            got = _readinto_full(src, view)
            if not got:
                free.append(buf)
                break
            if got == osize and buf == zeros:
                job = functools.partial(v.zero, osize, off)
            else:
                job = functools.partial(v.pwrite, view[:got], off)
            stored(win.push(job, (buf, got)))
            written += got
            if got < n:
                break
        stored(list(win.drain()))
    finally:
        win.close()
    return written


@click.command("read")
@click.argument("name")
@click.argument("offset", required=False)
@click.argument("length", required=False, metavar="[LEN]")
@snapshot_option
@target_options
def read(target: Target, name: str, offset: str | None, length: str | None,
         snapshot: str | None) -> int:
    """read data from an image (to stdout)"""
    start, want = _range(offset, length)
    snapid, tag = parse_snapshot(snapshot)
    with target.client() as c:
        inode = read_vdi(c, name, snapshot, with_index=False)
        size = inode.header.vdi_size
        if start > size:
            raise QuietError("Read offset is beyond the end of the VDI", EXIT_FAILURE)
        total = min(want, size - start)
        sys.stdout.buffer.flush()
        with _open(c, name, tag=tag, snapid=snapid, writable=False) as v, \
                Progress("Reading", total, bytes_=True) as bar:
            try:
                stream_out(v, start, total, 1, bar.advance)
                bar.finish()
            except BrokenPipeError:
                raise QuietError("Failed to write to stdout: Broken pipe", EXIT_SYSFAIL) from None
            except OSError as e:
                raise QuietError(f"Failed to write to stdout: {e.strerror}", EXIT_SYSFAIL) from None
            except ClientError as e:
                raise QuietError(f"Failed to read VDI: {e}", EXIT_FAILURE) from None
    return EXIT_SUCCESS


def _open(c: SheepClient, name: str, *, tag: str = "", snapid: int = 0,
          writable: bool = True, cache: bool = False) -> Vdi:
    try:
        return Vdi(c, name, tag=tag, snapid=snapid, writable=writable, cache=cache)
    except ClientError as e:
        raise QuietError(f"Failed to open VDI {name}: {e}", EXIT_FAILURE) from None


@click.command("write")
@click.argument("name")
@click.argument("offset", required=False)
@click.argument("length", required=False, metavar="[LEN]")
@click.option("-w", "--writeback", is_flag=True,
              help="use writeback mode (cached writes, one flush at the end)")
@target_options
def write(target: Target, name: str, offset: str | None, length: str | None,
          writeback: bool) -> int:
    """write data to an image (from stdin)"""
    start, want = _range(offset, length)
    with target.client() as c:
        inode = read_vdi(c, name, None, with_index=False)
        size = inode.header.vdi_size
        if start > size:
            raise QuietError("Write offset is beyond the end of the VDI", EXIT_FAILURE)
        total = min(want, size - start)
        with _open(c, name, cache=writeback) as v, \
                open(0, "rb", buffering=0, closefd=False) as stdin, \
                Progress("Writing", total, bytes_=True) as bar:
            try:
                written = stream_in(v, start, total, stdin, bar.advance)
                if writeback:
                    v.flush()
                bar.finish(written)
            except OSError as e:
                raise QuietError(f"Failed to read from stdin: {e.strerror}",
                                 EXIT_SYSFAIL) from None
            except SheepdogError as e:
                if not e.oid:
                    raise QuietError(f"Failed to write VDI: {e}", EXIT_FAILURE) from None
                # Sheepdog's dog names the object, then the VDI.
                click.echo(f"Failed to write object {e.oid:x}: {strerror(e.result)}", err=True)
                raise QuietError("Failed to write VDI", EXIT_FAILURE) from None
            except ClientError as e:
                raise QuietError(f"Failed to write VDI: {e}", EXIT_FAILURE) from None
    return EXIT_SUCCESS
