"""Typed store errors, each mapped to the result code a client sees.

Why typed: the peer layer turns them into protocol results without looking
at errno, and a future backend (farm) raises the same ones.
"""

from __future__ import annotations

from ..proto import Res


class StoreError(Exception):
    """Base of every store error; `result` is the protocol code to answer."""

    result: int = Res.EIO


class NoObject(StoreError):
    """The object does not exist on this node."""

    result = Res.NO_OBJ


class NoSpace(StoreError):
    """The store's filesystem is full (ENOSPC)."""

    result = Res.NO_SPACE


class StoreIOError(StoreError):
    """Any other I/O failure of the underlying filesystem."""

    result = Res.EIO


class DiskLost(StoreIOError):
    """The disk that held the object failed and was dropped just now.
    Answered as NETWORK_ERROR, which gateways retry, as Sheepdog's
    md_handle_eio does: by then this node is pulling the disk's objects
    from other nodes (or, with no disk left, has left the cluster), so
    asking again succeeds, where EIO would fail the client's write."""

    result = Res.NETWORK_ERROR


class Unsupported(StoreError):
    """A call to a capability the store declares it lacks (its
    `can_open_read` or `can_reopen` is False). Why typed: a caller that
    skipped the declared flag gets a clear error, not an AttributeError."""

    result = Res.NO_SUPPORT


class UnknownBackend(StoreError, ValueError):
    """A store backend name this daemon does not know (a config written by
    another version, or edited by hand). Why an error and not plain: the
    objects of another backend read as plain would be served as garbage.
    A ValueError too, as open_store raised before it was typed."""

    result = Res.NO_STORE


class InvalidRange(StoreError):
    """An offset/length outside the object's size."""

    result = Res.INVALID_PARMS


class CorruptObject(StoreError):
    """The stored bytes fail their checksum (a bit flip on disk, a torn
    write). Never served: the gateway reads another copy and repairs this
    one; with no other copy the client gets EIO.

    Why EIO and not a code of its own: an older gateway (or Sheepdog's)
    already fails over to the next copy on EIO."""

    result = Res.EIO
