"""Typed client errors: a result code from a sheep, or a broken link."""

from __future__ import annotations

import errno

from ..proto import Res, strerror


class ClientError(Exception):
    """Base of every error the client raises."""

    errno: int = errno.EIO


class SheepdogError(ClientError):
    """A sheep answered with a result code other than SUCCESS. `oid` is
    the object an object request was about (0 for other requests): dog
    names it as Sheepdog's dog does ("Failed to write object ...")."""

    oid: int = 0

    def __init__(self, result: int, context: str = "") -> None:
        self.result = result
        self.context = context
        super().__init__(f"{context}: {strerror(result)}" if context else strerror(result))

    @property
    def errno(self) -> int:  # type: ignore[override]
        return _RESULT_ERRNO.get(self.result, errno.EIO)


class NetworkError(ClientError):
    """The connection to a sheep failed or was closed mid-request."""


_RESULT_ERRNO: dict[int, int] = {
    Res.NO_OBJ: errno.ENOENT,
    Res.NO_VDI: errno.ENOENT,
    Res.NO_TAG: errno.ENOENT,
    Res.VDI_EXIST: errno.EEXIST,
    Res.INVALID_PARMS: errno.EINVAL,
    Res.VDI_LOCKED: errno.EBUSY,
    Res.NO_SPACE: errno.ENOSPC,
    Res.READONLY: errno.EROFS,
    Res.NO_MEM: errno.ENOMEM,
}
