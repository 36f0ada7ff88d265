"""One node's persistent state: objects (backends), config, epochs, pid lock."""

from .backend import ObjectStore
from .errors import InvalidRange, NoObject, NoSpace, StoreError, StoreIOError
from .files import AlreadyRunning, EpochStore, NodeConfig, PidLock, write_atomic
from .plain import PlainStore

BACKENDS = {"plain": PlainStore}


def open_store(kind: str, root: str, *, nosync: bool = False) -> ObjectStore:
    """A backend by its `dog cluster format -b` name."""
    try:
        cls = BACKENDS[kind]
    except KeyError:
        raise ValueError(f"unknown store backend {kind!r}") from None
    return cls(root, nosync=nosync)


__all__ = [
    "AlreadyRunning", "BACKENDS", "EpochStore", "InvalidRange", "NoObject", "NoSpace",
    "NodeConfig", "ObjectStore", "PidLock", "PlainStore", "StoreError", "StoreIOError",
    "open_store", "write_atomic",
]
