"""What a handler answers: a result code, the 28 result bytes and a payload."""

from __future__ import annotations

import mmap
from dataclasses import dataclass

from ..proto import Res
from .buffers import PayloadBuffer

Buffer = bytes | bytearray | memoryview | mmap.mmap
_ZERO28 = bytes(28)


@dataclass
class FileSpan:
    """A payload sent straight from an open file (sendfile): `count` bytes
    at `offset` of `fd`, then zeros up to `length`. The connection owns
    `fd` once it is in a Reply and closes it after sending."""

    fd: int
    offset: int
    count: int
    length: int


@dataclass
class Reply:
    result: int = Res.SUCCESS
    args: bytes = _ZERO28
    data: Buffer | None = None
    # A pooled buffer behind `data`, returned to the pool once sent.
    pooled: PayloadBuffer | None = None
    # Or the payload from a file, instead of `data`.
    file: FileSpan | None = None


def error(result: int) -> Reply:
    return Reply(result)


@dataclass
class Caller:
    """The client connection a request came from (lock ownership)."""

    key: str  # "NODE/CONN": unique across the cluster while it lives
    peer: str = ""
    holds_locks: bool = False
    # The client has closed its side: it reads no answer that has not
    # gone out yet (Sheep.handle lets a fenced request go then).
    closed: bool = False
